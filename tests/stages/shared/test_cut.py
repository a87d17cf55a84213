"""A student cut from a model (train.cut): its kept layers are the source's bit for bit, it is
built once and cached, it loads in transformers and in vLLM, and a recipe the model cannot take
is one line (exit 2) before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from safetensors.torch import load_file

from pipeline.config import load_config
from pipeline.fields import ConfigError
from stages.shared.cut import CUT_FILE, student_dir


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer tiny model (the suite's tiny one has 2)."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("deep") / "m", layers=4, seed=3)


def _cfg(model: Path, tmp: Path, *extra: str):
    return load_config(None, [f"train.student={model}", f"cache_dir={tmp / 'cache'}", *extra])


def _weights(d: Path) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out |= load_file(f)
    return out


@pytest.mark.parametrize(("recipe", "kept"), [("train.cut.keep_every=2", [0, 2]),
                                               ("train.cut.layers=[1,2,3]", [1, 2, 3])])  # fmt: skip
def test_kept_layers_are_the_sources_bit_for_bit(deep: Path, tmp_path: Path, recipe: str,
                                                 kept: list[int]) -> None:  # fmt: skip
    import torch
    from transformers import AutoModelForCausalLM

    out = student_dir(_cfg(deep, tmp_path, recipe))
    assert out != deep and json.loads((out / CUT_FILE).read_text())["layers"] == kept
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == len(kept)
    src, cut = _weights(deep), _weights(out)
    for new, old in enumerate(kept):
        mine = {k: v for k, v in cut.items() if k.startswith(f"model.layers.{new}.")}
        assert mine, f"layer {new} missing"
        for k, v in mine.items():
            theirs = src[k.replace(f"model.layers.{new}.", f"model.layers.{old}.", 1)]
            assert v.dtype == theirs.dtype and torch.equal(v, theirs), k
    for k in cut:
        if not k.startswith("model.layers."):
            assert torch.equal(cut[k], src[k]), k  # embeddings, final norm, head
    assert not any(k.startswith(f"model.layers.{len(kept)}.") for k in cut)
    model = AutoModelForCausalLM.from_pretrained(out)
    logits = model(torch.tensor([[5, 6, 7]])).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    stamp = (out / CUT_FILE).stat().st_mtime_ns
    assert student_dir(_cfg(deep, tmp_path, recipe)) == out  # built once, then found
    assert (out / CUT_FILE).stat().st_mtime_ns == stamp


def test_no_recipe_is_the_student_itself(deep: Path, tmp_path: Path) -> None:
    assert student_dir(_cfg(deep, tmp_path)) == deep


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ("train.cut.layers=[2,1]", "ascending"),
        ("train.cut.keep_every=1", "keeps every layer"),
    ],
)
def test_a_bad_recipe_is_refused_at_config_time(deep: Path, tmp_path: Path, override: str,
                                                why: str) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match=why):
        _cfg(deep, tmp_path, override)


def test_a_layer_the_model_lacks_is_one_line_before_anything_runs(deep: Path, tmp_path) -> None:
    r = run_cli("train", f"runs_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}",
                f"train.student={deep}", f"teacher.model={deep}", "train.cut.layers=[0,4]")  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "train.cut.layers: layer 4 of a 4-layer model" in r.stderr
    assert not (tmp_path / "default").exists()  # nothing generated, nothing trained


@pytest.mark.slow
def test_the_cut_loads_in_vllm(deep: Path, tmp_path: Path) -> None:
    out = student_dir(_cfg(deep, tmp_path, "train.cut.keep_every=2"))
    r = run_cli("generate", f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}",
                f"teacher.model={out}", "teacher.serve.engine=offline", "task.max_train=2",
                "generate.n=1", "generate.sampling.max_tokens=8")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (samples,) = (tmp_path / "runs" / "default" / "generate").glob("*/samples.jsonl")
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(rows) == 2 and all(r["usage"]["completion_tokens"] > 0 for r in rows)
