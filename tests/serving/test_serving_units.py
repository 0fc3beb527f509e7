"""Serving pieces without Ray: config checks, served tasks, schemas, auth, app args, the Serve YAML, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner

from sentidistill.cli import app as cli_app
from sentidistill.config import PipelineConfig, ServeConfig, load_config
from sentidistill.engines import Completion
from sentidistill.errors import ConfigError, ModelNotFoundError
from sentidistill.serving.app import AppArgs, app_settings, build_app
from sentidistill.serving.auth import check_bearer, load_key
from sentidistill.serving.errors import ApiError, field_path
from sentidistill.serving.schemas import request_models
from sentidistill.serving.tasks import ServedTasks, softmax
from sentidistill.tasks import Example, build_prompt

REPO = Path(__file__).resolve().parents[2]
BASE = ["train.model.student=unused"]


def cfg_with(*overrides: str, data_dir: Path | None = None) -> PipelineConfig:
    extra = [f"data_dir={data_dir}"] if data_dir else []
    return load_config(None, [*BASE, *extra, *overrides])


@pytest.mark.parametrize(("override", "names"), [
    ("serve.engine.kind=openai serve.engine.openai.base_url=http://h/v1", "serve.engine.kind"),
    ("serve.max_ongoing_requests=4", "serve.max_ongoing_requests"),
    ("serve.autoscaling.min_replicas=3", "serve.autoscaling.min_replicas"),
    ("serve.k=9", "serve.max_k"),
    ("serve.engine.max_model_len=2048 serve.max_new_tokens=4096", "serve.engine.max_model_len"),
    ("serve.colour=red", "serve.colour"),
    ("serve.max_request_tokens=100", "serve.max_request_tokens"),
    ("serve.engine_stall_s=0", "serve.engine_stall_s"),
])
def test_serve_config_errors_name_the_key(override: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        cfg_with(*override.split())


def test_shipped_configs_serve_settings() -> None:
    gpu = load_config(REPO / "jobs/configs/gpu-cluster.yaml")
    assert gpu.serve.replica_max_ongoing_requests >= gpu.serve.max_batch_size
    assert load_config(REPO / "jobs/configs/local.yaml").serve.engine.kind == "hf"


@pytest.fixture(scope="module")
def served_tasks(shared_data: Path) -> ServedTasks:
    return ServedTasks.load(cfg_with("serve.tasks=[sst2,pstance,atsa_rest16]", data_dir=shared_data))


def test_aliases_resolve_only_to_served_tasks(served_tasks: ServedTasks) -> None:
    assert served_tasks.resolve("sentiment", "classify").name == "sst2"
    assert served_tasks.resolve("atsa", "extract").name == "atsa_rest16"
    assert served_tasks.names("classify") == ["sentiment", "stance", "sst2", "pstance"]
    with pytest.raises(ApiError, match="Unknown task 'emotion'.*Available: sentiment, stance") as e:
        served_tasks.resolve("emotion", "classify")  # alias of an unserved task
    assert (e.value.status, e.value.param) == (422, "task")


def test_prompts_follow_the_evaluation_sampler(served_tasks: ServedTasks) -> None:
    task = served_tasks.specs["sst2"]
    zero, k, seed = served_tasks.prompts(task, ["nice"], None, 0, None)
    assert (zero, k, seed) == ([build_prompt(task, [], Example.query("nice"))], 0, 0)
    a, _, _ = served_tasks.prompts(task, ["one", "two"], None, 4, 3)
    b, _, _ = served_tasks.prompts(task, ["one"], None, 4, 3)
    assert a[0] == b[0] and a[1] != b[0].replace("one", "two")  # position i always gets the same demos
    stance = served_tasks.specs["pstance"]
    (p,), _, _ = served_tasks.prompts(stance, ["vote!"], "Joe Biden", 1, None)
    assert '"Joe Biden"' in p and p.endswith("Sentence: vote!\nLabel:")
    with pytest.raises(ApiError, match="target"):
        served_tasks.prompts(task, ["x"], "Joe Biden", 0, None)


def test_extraction_result_reports_tuples_drops_and_failures(served_tasks: ServedTasks) -> None:
    task = served_tasks.specs["atsa_rest16"]
    ok = served_tasks.extraction_result(task, Completion("[('sushi', 'Positive'), ('x', 'tasty')]\nmore", "stop"))
    assert ok.tuples == [{"aspect": "sushi", "polarity": "positive"}] and ok.dropped == 1 and not ok.parse_failed
    bad = served_tasks.extraction_result(task, Completion("no idea", "length"))
    assert bad.parse_failed and bad.tuples == [] and bad.raw == "no idea" and bad.finish_reason == "length"


def test_label_probabilities_are_a_softmax(served_tasks: ServedTasks) -> None:
    task = served_tasks.specs["sst2"]
    (res,) = served_tasks.label_results(task, [[1.0, 3.0]])
    assert res.label == "positive"
    assert res.probabilities["positive"] == pytest.approx(1 / (1 + math.exp(-2)))
    assert softmax([0.0, -math.inf]) == [1.0, 0.0]


@pytest.mark.parametrize(("override", "names"), [
    ("serve.tasks=[sst3]", "serve.tasks: Unknown task 'sst3'"),
    ("serve.task_aliases={sst2: imdb}", "serve.task_aliases.sst2"),
    ("serve.task_aliases={mood: moody}", "serve.task_aliases.mood"),
])
def test_served_task_errors_name_the_key(shared_data: Path, override: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.").replace("[", r"\[")):
        ServedTasks.load(cfg_with("serve.tasks=[sst2]", override, data_dir=shared_data))


def test_request_models_carry_the_configured_limits() -> None:
    models = request_models(ServeConfig(max_texts=2, max_text_chars=5, k=0, max_k=1))
    with pytest.raises(ValidationError, match="at most 2 items"):
        models.sentiment.model_validate({"texts": ["a", "b", "c"]})
    with pytest.raises(ValidationError, match="at most 5 characters"):
        models.sentiment.model_validate({"texts": ["abcdef"]})
    with pytest.raises(ValidationError, match="give 1 to 2 prompts"):
        models.completion.model_validate({"model": "m", "prompt": ["a", "b", "c"]})
    chat = models.chat.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    assert chat.as_messages() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert field_path(("body", "messages", 0, "role")) == "messages[0].role"


def test_logprobs_fields_follow_openai_limits() -> None:
    models = request_models(ServeConfig())
    assert models.completion.model_validate({"model": "m", "prompt": "a", "logprobs": 5}).logprobs == 5
    for bad, match in [({"logprobs": 6}, "less than or equal to 5"), ({"logprobs": 1, "echo": True}, "with echo")]:
        with pytest.raises(ValidationError, match=match):
            models.completion.model_validate({"model": "m", "prompt": "a", **bad})
    chat = {"model": "m", "messages": [{"role": "user", "content": "a"}]}
    assert models.chat.model_validate({**chat, "logprobs": True, "top_logprobs": 20}).top_n() == 20
    assert models.chat.model_validate({**chat, "logprobs": True}).top_n() == 0
    assert models.chat.model_validate({**chat, "logprobs": False, "top_logprobs": 0}).top_n() is None
    for bad, match in [({"logprobs": True, "top_logprobs": 21}, "less than or equal to 20"),
                       ({"top_logprobs": 2}, "needs logprobs: true")]:
        with pytest.raises(ValidationError, match=match):
            models.chat.model_validate({**chat, **bad})


def test_auth_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SD_UNIT_KEY", raising=False)
    assert load_key(None) is None
    with pytest.raises(ConfigError, match="SD_UNIT_KEY"):
        load_key("SD_UNIT_KEY")
    monkeypatch.setenv("SD_UNIT_KEY", "s3cret")
    key = load_key("SD_UNIT_KEY")
    assert "s3cret" not in repr(key)
    check_bearer(key, "Bearer s3cret")
    check_bearer(None, None)
    for header in (None, "s3cret", "Basic s3cret", "Bearer s3cre", "Bearer s3cret2"):
        with pytest.raises(ApiError) as e:
            check_bearer(key, header)
        assert e.value.status == 401 and "s3cret" not in e.value.message


def test_build_app_args(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"model": {"student": "unused"}}, "run_dir": str(tmp_path / "run")}))
    with pytest.raises(ConfigError, match="args.bogus"):
        build_app({"config": str(config), "bogus": 1})
    assert isinstance(build_app({"config": str(config), "model": "org/any-model"}), Application)  # binds, loads nothing
    with pytest.raises(ModelNotFoundError, match="--model"):
        app_settings(load_config(config))  # no serve.model and nothing trained in the run dir


def test_serve_yaml_is_a_valid_serve_config_for_build_app() -> None:
    doc = yaml.safe_load((REPO / "serve/student.yaml").read_text())
    ServeDeploySchema.model_validate(doc)
    (entry,) = doc["applications"]
    assert entry["import_path"] == "sentidistill.serving.app:build_app"
    args = AppArgs.model_validate(entry["args"])
    assert args.config and (REPO / args.config).is_file()


def test_cli_detach_needs_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\ntrain: {{model: {{student: unused}}}}\n")  # logs out of the repo
    result = CliRunner().invoke(cli_app, ["serve", str(config), "--model", "x", "--detach"])
    assert result.exit_code == 2 and "--detach" in result.output.strip().splitlines()[-1], result.output
