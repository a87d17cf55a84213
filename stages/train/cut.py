"""A smaller student cut from a model (train.cut): depth and width pruning, built once, cached.

    student_dir(cfg)   the dir training starts from: train.student, or the cut of it

Depth: the cut keeps the source's embeddings, final norm and head, and the decoder layers the
recipe names (`keep_every: k` keeps 0, k, 2k, ...; `layers: [...]` keeps those), renumbered in
order. Width (`mlp_shrink: k`): every kept layer's MLP keeps W/k of its W neurons, the ones
most active on the task's first 64 train questions (Minitron's activation-based importance:
the mean |input to down_proj| of each neuron over every token, measured on the whole source
before any layer is dropped); their rows of gate_proj and up_proj and columns of down_proj are
kept in their order. Every kept tensor, or kept slice, is the source's, bit for bit (the
weights keep their dtype). The config says the new depth (num_hidden_layers, and layer_types
where the architecture lists one per layer) and width (intermediate_size).
It lives in `<cache_dir>/cut/<sha of the source's identity and the recipe>/`, written to a
temporary dir and renamed, under a lock, so two runs build it once; `cut.json` there names the
source, the layers and the width. It loads in transformers and vLLM like any model dir.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from pipeline.cache import StageLock
from pipeline.config import Config, CutConfig
from pipeline.fields import ConfigError
from pipeline.models import cache_root, identity_of
from pipeline.records import canonical_json, sha256_text
from pipeline.tasks import load_task
from stages.shared.models import local_model

CUT_FILE = "cut.json"
CALIBRATION = 64  # train questions the width cut ranks neurons on


def num_layers(model_dir: Path) -> int:
    """The source's decoder depth, from its config.json."""
    cfg = json.loads((model_dir / "config.json").read_text())
    text = cfg.get("text_config", cfg)
    return int(text["num_hidden_layers"])


def cut_layers(cfg: Config) -> list[int] | None:
    """The kept layers of train.student (None without a cut); a bad recipe for this model is
    a ConfigError naming its key, raised when the train stage is keyed, before anything runs."""
    cut = cfg.train.cut
    if not cut.active:
        return None
    source = local_model(cfg.train.student, cfg.cache_dir, key="train.student")
    cut_width(cut, source)  # refused now too, not when the cut is built
    return cut.kept(num_layers(source))


def cut_width(cut: CutConfig, source: Path) -> int | None:
    """The MLP width the cut keeps (None: no width cut), or a ConfigError naming the key."""
    if not cut.mlp_shrink:
        return None
    conf = json.loads((source / "config.json").read_text())
    width = conf.get("text_config", conf).get("intermediate_size")
    if not isinstance(width, int):
        raise ConfigError(
            f"{conf.get('model_type', '?')} names no intermediate_size: width pruning knows "
            "MLPs of gate, up and down projections (Llama, Qwen2, Mistral, SmolLM...)",
            "train.cut.mlp_shrink",
        )
    if width % cut.mlp_shrink:
        divisors = [k for k in range(2, 17) if width % k == 0]
        raise ConfigError(
            f"{cut.mlp_shrink} does not divide the MLP width {width} of {source.name}; give a "
            f"divisor of it ({', '.join(map(str, divisors)) or 'none from 2 to 16'})",
            "train.cut.mlp_shrink",
        )
    return width // cut.mlp_shrink


def student_dir(cfg: Config) -> Path:
    """The model dir training starts from: train.student, or its cut (built on first use).
    A cut of the trained student (train.cut.source: trained) is the train stage's to make,
    from its input: stages/train resolves it with cut_from before anything calls this."""
    source = local_model(cfg.train.student, cfg.cache_dir, key="train.student")
    if cut_layers(cfg) is None:
        return source
    identity = identity_of(cfg.train.student, cfg.cache_dir, key="train.student")
    return cut_from(cfg, source, identity)


def cut_from(cfg: Config, source: Path, identity: str) -> Path:
    """The cut train.cut names of `source` (whose weights `identity` names)."""
    cut = cfg.train.cut
    width = cut_width(cut, source)
    calibration = [q.question for q in load_task(cfg.task).train[:CALIBRATION]] if width else []
    return cut_of(source, identity, cut.kept(num_layers(source)), cfg.cache_dir, width, calibration)


def cut_of(
    source: Path,
    identity: str,
    layers: list[int],
    cache_dir: str,
    width: int | None = None,
    calibration: list[str] = (),  # type: ignore[assignment]
) -> Path:
    """The cut of `source` (whose weights `identity` names) keeping `layers` (and `width` MLP
    neurons, ranked on the `calibration` texts): found in the cache, or built there once."""
    recipe: dict = {"source": identity, "layers": layers}
    if width:  # a depth cut keys as it always has
        recipe |= {"mlp_width": width, "calibration": sha256_text(canonical_json(calibration))}
    key = sha256_text(canonical_json(recipe))[:16]
    out = cache_root(cache_dir) / "cut" / key
    if (out / CUT_FILE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with StageLock(out.parent / f".{key}.lock"):
        if not (out / CUT_FILE).is_file():
            what = f"{len(layers)} of {num_layers(source)} layers"
            what += f", {width} MLP neurons a layer" if width else ""
            print(f"train: cutting {what} of {source} into {out} (once)", flush=True)
            build_cut(source, layers, out, identity, width, list(calibration))
    return out


def build_cut(
    source: Path,
    layers: list[int],
    out: Path,
    identity: str = "",
    width: int | None = None,
    calibration: list[str] = (),  # type: ignore[assignment]
) -> None:
    """Write the cut of `source` keeping `layers` (and the `width` neurons of each MLP most
    active on `calibration`) to `out`, atomically: a temp dir renamed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    tok = AutoTokenizer.from_pretrained(source)
    decoder = model.get_decoder()
    scores = neuron_importance(model, tok, calibration) if width else None
    decoder.layers = torch.nn.ModuleList(decoder.layers[i] for i in layers)
    for new, layer in enumerate(decoder.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new  # the KV cache is indexed by it
    conf = model.config
    conf.num_hidden_layers = len(layers)
    if isinstance(getattr(conf, "layer_types", None), list):
        conf.layer_types = [conf.layer_types[i] for i in layers]
    if isinstance(getattr(conf, "max_window_layers", None), int):
        conf.max_window_layers = min(conf.max_window_layers, len(layers))
    if width and scores is not None:
        for layer, old in zip(decoder.layers, layers, strict=True):
            keep = torch.topk(scores[old], width).indices.sort().values
            narrow_mlp(layer.mlp, keep)
        (getattr(conf, "text_config", None) or conf).intermediate_size = width
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    for extra in ("chat_template.jinja", "chat_template.json"):  # where a tokenizer keeps it
        if (source / extra).is_file() and not (tmp / extra).is_file():
            shutil.copy2(source / extra, tmp / extra)
    (tmp / CUT_FILE).write_text(
        json.dumps(
            {
                "source": str(source),
                "source_identity": identity,
                "layers": layers,
                **({"mlp_width": width, "calibration_texts": len(calibration)} if width else {}),
            }
        )
        + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def neuron_importance(model: Any, tok: Any, texts: list[str]) -> list[Any]:
    """Per decoder layer, each MLP neuron's mean |input to down_proj| over every token of
    `texts` (each text alone: no padding to mask), in float32."""
    import torch

    layers = model.get_decoder().layers
    sums = [None] * len(layers)
    count = [0]

    def hook(i: int) -> Any:
        def grab(module: Any, args: tuple) -> None:
            x = args[0].detach().float().abs().reshape(-1, args[0].shape[-1])
            sums[i] = x.sum(0) if sums[i] is None else sums[i] + x.sum(0)
            if i == 0:
                count[0] += x.shape[0]

        return grab

    for layer in layers:
        _mlp_parts(layer.mlp)
    handles = [
        layer.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            for text in texts:
                ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
                if ids.shape[-1]:
                    model(ids)
    finally:
        for h in handles:
            h.remove()
    if not count[0]:
        raise ConfigError(
            "no calibration tokens: the task's train questions are empty", "train.cut.mlp_shrink"
        )
    return [s / count[0] for s in sums]


def narrow_mlp(mlp: Any, keep: Any) -> None:
    """Keep the neurons `keep` (ascending indices) of a gate/up/down MLP: rows of gate and up,
    columns of down, sliced from the source's tensors."""
    import torch

    gate, up, down = _mlp_parts(mlp)
    for proj in (gate, up):
        proj.weight = torch.nn.Parameter(proj.weight.data[keep].clone())
        if proj.bias is not None:
            proj.bias = torch.nn.Parameter(proj.bias.data[keep].clone())
        proj.out_features = len(keep)
    down.weight = torch.nn.Parameter(down.weight.data[:, keep].clone())
    down.in_features = len(keep)


def _mlp_parts(mlp: Any) -> tuple[Any, Any, Any]:
    parts = tuple(getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj"))
    if any(p is None for p in parts):
        raise ConfigError(
            f"{type(mlp).__name__} is not an MLP of gate, up and down projections: width "
            "pruning cannot cut it",
            "train.cut.mlp_shrink",
        )
    return parts  # type: ignore[return-value]
