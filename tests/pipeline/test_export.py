"""The export's parts without a chain: the dataset half of two exports loads as itself, the
filter card's config does the same for two filter dirs, and the student's weights are cast to
the trained dtype with no pickle left. The whole export is checked end to end in
tests/e2e/test_chain.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.records import atomic_write_jsonl, sha256_file
from stages.filter.hub import write_dataset
from stages.shared.cards import KEPT_CONFIG_PREFIX, data_config, render
from stages.shared.layout import KEPT
from stages.train.hub import cast_weights, write_model


def _filter_dir(root: Path, n: int) -> tuple[Path, str]:
    """A filter stage dir as filter writes it, named alike under every root: `n` kept rows and
    a card whose config points `datasets` at kept.jsonl."""
    d = root / "filter" / "0123456789ab"
    d.mkdir(parents=True)
    rows = [
        {"prompt": [{"role": "user", "content": f"q{i} {root.name}"}], "completion": [], "i": i}
        for i in range(n)
    ]
    atomic_write_jsonl(d / KEPT, rows)
    sha = sha256_file(d / KEPT)
    meta = {"configs": [data_config(KEPT_CONFIG_PREFIX + sha[:12], KEPT)], "distill": {}}
    (d / "README.md").write_text(render(meta, "# kept rows"))
    return d, sha


def test_two_exports_of_other_rows_each_load_as_themselves(tmp_path: Path):
    import datasets

    loaded = {}
    for name, n in (("A", 3), ("B", 5)):
        fdir, sha = _filter_dir(tmp_path / name, n)
        assert len(datasets.load_dataset(str(fdir), split="train")) == n  # the filter's card
        out = tmp_path / name / "export" / "dataset"
        write_dataset(fdir, sha, out)
        ds = datasets.load_dataset(str(out), split="train")  # the README's one line
        loaded[name] = sorted(ds["i"])
        assert (out / f"data/train-{sha[:12]}.parquet").is_file()
    assert loaded == {"A": [0, 1, 2], "B": [0, 1, 2, 3, 4]}


@pytest.mark.parametrize("dtype, size", [("bfloat16", 2), ("float32", 4)])
def test_model_export_casts_and_leaves_pickles_behind(
    tiny_model: Path, tmp_path: Path, dtype: str, size: int
):
    from safetensors.torch import load_file

    train = tmp_path / "train"
    shutil.copytree(tiny_model, train / "model")
    (train / "model" / "training_args.bin").write_bytes(b"pickle")
    out = tmp_path / "out"
    write_model(train, out, dtype)
    assert not (out / "training_args.bin").exists()
    tensors = load_file(out / "model.safetensors")
    assert {v.element_size() for v in tensors.values() if v.is_floating_point()} == {size}
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype


def test_cast_keeps_values_to_bf16_rounding(tiny_model: Path, tmp_path: Path):
    import torch
    from safetensors.torch import load_file

    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    before = load_file(d / "model.safetensors")
    cast_weights(d, "bfloat16")
    after = load_file(d / "model.safetensors")
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v.to(torch.bfloat16)), k


def test_the_dataset_is_written_in_batches_under_one_schema(tmp_path: Path):
    """Batches of 2 rows whose fields differ (a key some rows lack, a struct whose keys vary,
    an int in one batch and a float in the next) write one parquet that loads every row."""
    import datasets

    d = tmp_path / "filter"
    d.mkdir()
    rows = [
        {"i": 0, "scores": {"tokens": 3}, "pass_rate": 1},
        {"i": 1, "scores": {"tokens": 4}, "pass_rate": 1},
        {"i": 2, "scores": {"repetition": 0.5}, "pass_rate": 0.25, "logprobs": {"sha": "ab"}},
        {"i": 3, "scores": {}, "pass_rate": 0.5},
        {"i": 4, "scores": {"tokens": 9, "answer": "7"}, "pass_rate": 0.75},
    ]
    atomic_write_jsonl(d / KEPT, rows)
    (d / "README.md").write_text(render({"configs": []}, "# kept rows"))
    out = tmp_path / "dataset"
    write_dataset(d, sha256_file(d / KEPT), out, batch=2)
    got = datasets.load_dataset(str(out), split="train").to_list()
    assert [r["i"] for r in got] == [0, 1, 2, 3, 4]
    assert [r["pass_rate"] for r in got] == [1.0, 1.0, 0.25, 0.5, 0.75]
    assert got[2]["scores"] == {"tokens": None, "repetition": 0.5, "answer": None}
    assert got[4]["scores"] == {"tokens": 9, "repetition": None, "answer": "7"}
    assert got[2]["logprobs"] == {"sha": "ab"} and got[0]["logprobs"] is None
