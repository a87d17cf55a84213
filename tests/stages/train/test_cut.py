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
from stages.train.cut import CUT_FILE, student_dir


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


@pytest.mark.parametrize(
    ("recipe", "kept"),
    [("train.cut.keep_every=2", [0, 2]), ("train.cut.layers=[1,2,3]", [1, 2, 3])],
)
def test_kept_layers_are_the_sources_bit_for_bit(
    deep: Path, tmp_path: Path, recipe: str, kept: list[int]
) -> None:
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
def test_a_bad_recipe_is_refused_at_config_time(
    deep: Path, tmp_path: Path, override: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        _cfg(deep, tmp_path, override)


def _refused(deep: Path, tmp_path: Path, cut: str) -> str:
    """`distill train` with this cut of `deep`: refused in one line, exit 2, with nothing
    generated or trained; returns that line."""
    run = [f"runs_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", f"train.student={deep}"]
    r = run_cli("train", *run, f"teacher.model={deep}", cut)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "default").exists()  # nothing generated, nothing trained
    return r.stderr


def test_a_layer_the_model_lacks_is_one_line_before_anything_runs(deep: Path, tmp_path) -> None:
    line = _refused(deep, tmp_path, "train.cut.layers=[0,4]")
    assert "train.cut.layers: layer 4 of a 4-layer model" in line


@pytest.fixture(scope="module")
def half_idle(deep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`deep` with every odd MLP neuron silenced (its up_proj row zeroed: act(gate) * 0 is 0 on
    every token), so an activation ranking must keep exactly the even ones."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("idle") / "m"
    model = AutoModelForCausalLM.from_pretrained(deep)
    for layer in model.model.layers:
        layer.mlp.up_proj.weight.data[1::2] = 0
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(deep).save_pretrained(out)
    return out


@pytest.mark.parametrize(
    ("depth", "kept"), [([], [0, 1, 2, 3]), (["train.cut.keep_every=2"], [0, 2])]
)
def test_a_width_cut_keeps_the_most_active_neurons_bit_for_bit(
    half_idle: Path, tmp_path: Path, depth: list, kept: list
) -> None:
    """mlp_shrink 2 of a 256-wide MLP keeps 128 neurons: the active (even) ones, their rows of
    gate and up and columns of down as the source has them; the silenced ones gave nothing, so
    without a depth cut the cut model computes what the source does."""
    import torch
    from transformers import AutoModelForCausalLM

    out = student_dir(_cfg(half_idle, tmp_path, "train.cut.mlp_shrink=2", *depth))
    meta = json.loads((out / CUT_FILE).read_text())
    assert meta["mlp_width"] == 128 and meta["layers"] == kept and meta["calibration_texts"] == 64
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 128
    src, cut = _weights(half_idle), _weights(out)
    even = torch.arange(0, 256, 2)
    for new, old in enumerate(kept):
        for part, sliced in (
            ("gate_proj", lambda w: w[even]),
            ("up_proj", lambda w: w[even]),
            ("down_proj", lambda w: w[:, even]),
        ):
            name = f"model.layers.{{}}.mlp.{part}.weight"
            assert torch.equal(cut[name.format(new)], sliced(src[name.format(old)])), (new, part)
    if not depth:
        ids = torch.tensor([[5, 6, 7, 8, 9]])
        with torch.no_grad():
            a = AutoModelForCausalLM.from_pretrained(half_idle)(ids).logits
            b = AutoModelForCausalLM.from_pretrained(out)(ids).logits
        assert torch.allclose(a, b, atol=1e-5)


def test_a_width_that_does_not_divide_is_one_line_before_anything_runs(
    deep: Path, tmp_path
) -> None:
    line = _refused(deep, tmp_path, "train.cut.mlp_shrink=3")
    assert "train.cut.mlp_shrink: 3 does not divide the MLP width 256" in line
    with pytest.raises(ConfigError, match="keeps every neuron"):
        _cfg(deep, tmp_path, "train.cut.mlp_shrink=1")


@pytest.mark.slow
def test_the_cut_loads_in_vllm(deep: Path, tmp_path: Path) -> None:
    """Cut in depth and in width (half the layers, half of each MLP): vLLM serves it."""
    out = student_dir(_cfg(deep, tmp_path, "train.cut.keep_every=2", "train.cut.mlp_shrink=2"))
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 128
    r = run_cli(
        "generate",
        f"runs_dir={tmp_path / 'runs'}",
        f"cache_dir={tmp_path / 'cache'}",
        f"teacher.model={out}",
        "teacher.serve.engine=offline",
        "task.max_train=2",
        "generate.n=1",
        "generate.sampling.max_tokens=8",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (samples,) = (tmp_path / "runs" / "default" / "generate").glob("*/samples.jsonl")
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(rows) == 2 and all(r["usage"]["completion_tokens"] > 0 for r in rows)
