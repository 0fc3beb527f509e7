"""Wire format of `POST {base_url}/score`: first-token label logits over HTTP.

Shared by the openai engine (client) and the Serve app (server) so the two cannot drift apart.
Not part of the OpenAI API: endpoints without this route answer 404 and the openai engine falls
back to `/completions` logprobs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SCORE_ROUTE = "/score"


class ScoreRequest(BaseModel):
    """Score the first token of each candidate after each prompt (one forward pass per prompt)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Served model name; None = the endpoint's only model.")
    prompts: list[str] = Field(..., min_length=1, description="Raw prompt texts (no chat template applied).")
    candidates: list[str] = Field(
        ..., min_length=1, description="Label strings as they follow the prompt, e.g. ' positive'."
    )


class ScoreResponse(BaseModel):
    """`logits[i][j]`: next-token logit of candidate j's first token after prompt i."""

    model_config = ConfigDict(extra="forbid")

    logits: list[list[float]] = Field(..., description="One row per prompt, one value per candidate.")

    def check_shape(self, n_prompts: int, n_candidates: int) -> ScoreResponse:
        """Raise ValueError unless the matrix is n_prompts x n_candidates (a server bug, not a user one)."""
        shape_ok = len(self.logits) == n_prompts and all(len(r) == n_candidates for r in self.logits)
        if not shape_ok:
            got = [len(r) for r in self.logits]
            raise ValueError(f"/score returned rows of lengths {got}; expected {n_prompts} rows of {n_candidates}")
        return self
