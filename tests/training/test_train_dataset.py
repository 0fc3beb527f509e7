"""Training data on Ray Data: packed parts written by the workers, counts from a stats pass, the same rows
for a seed whatever the tokenizer pool size, a complete folder reused, and a clear error without kept rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from train_helpers import knowdist_rows, write_stage_data

from sentidistill.config import TrainDataConfig
from sentidistill.errors import StageInputError
from sentidistill.training.dataset import TokenizeSpec, prepare, seeded_order


def rows_of(data) -> list[tuple]:
    return [(tuple(r["input_ids"]), tuple(r["labels"]), tuple(r["position_ids"])) for r in data.dataset.take_all()]


def test_packed_parts_counts_and_determinism(tmp_path: Path, tiny_model: Path, ray_local) -> None:
    rows = knowdist_rows() * 8  # 128 examples: several tokenizer batches and pack windows
    write_stage_data(tmp_path / "run", "knowdist", rows, with_manifest=True)
    data_uri = str(tmp_path / "run" / "knowdist" / "data")
    spec = TokenizeSpec(student=str(tiny_model), cache_dir=None, max_seq_len=256, apply_chat_template=True,
                        trust_remote_code=False)

    def build(name: str, workers: int | tuple[int, int], seed: int = 0):
        return prepare(data_uri, spec, packing=True, pack_window=32, seed=seed, out_uri=str(tmp_path / name),
                       resources=TrainDataConfig(tokenize_workers=workers, batch_size=16))

    one, two = build("one", 1), build("two", (1, 2))
    kept = sum(r["qc"] == "kept" for r in rows)
    assert one.counts["stage_examples"] == kept and one.counts["train_examples"] == kept
    assert one.counts == two.counts and one.teachers == ["tiny-teacher"]
    assert sorted((tmp_path / "one").glob("*.parquet")), "packed rows are Parquet parts written by Ray Data"
    assert rows_of(one) == rows_of(two)  # same seed, same rows, in the same order, for any pool size
    assert one.counts["rows"] == len(rows_of(one))
    # the seed alone decides each example's window and place (a whole rebuild would add ~25 s)
    table = pa.Table.from_pylist([{"id": r["id"], "response": r["response"]} for r in rows])
    assert seeded_order(table, 0, 4).to_pylist() == seeded_order(table, 0, 4).to_pylist()
    assert seeded_order(table, 1, 4).column("order").to_pylist() != seeded_order(table, 0, 4).column("order").to_pylist()

    again = build("one", 2)  # a complete folder is reused, not rebuilt
    assert again.counts == one.counts and rows_of(again) == rows_of(one)


def test_no_kept_rows_is_a_clear_error(tmp_path: Path, tiny_model: Path, ray_local) -> None:
    rows = [{**r, "qc": "refusal"} for r in knowdist_rows()]
    write_stage_data(tmp_path / "run", "knowdist", rows, with_manifest=True)
    spec = TokenizeSpec(student=str(tiny_model), cache_dir=None, max_seq_len=256, apply_chat_template=True,
                        trust_remote_code=False)
    with pytest.raises(StageInputError, match="no rows with qc == 'kept'"):
        prepare(str(tmp_path / "run" / "knowdist" / "data"), spec, packing=True, pack_window=32, seed=0,
                out_uri=str(tmp_path / "packed"), resources=TrainDataConfig())
