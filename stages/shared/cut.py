"""A smaller student cut from a model (train.cut): depth pruning, built once and cached.

    student_dir(cfg)   the dir training starts from: train.student, or the cut of it

The cut keeps the source's embeddings, final norm and head, and the decoder layers the recipe
names (`keep_every: k` keeps 0, k, 2k, ...; `layers: [...]` keeps those), renumbered in order;
every kept tensor is the source's, bit for bit (the weights keep their dtype). The config says
the new depth (num_hidden_layers, and layer_types where the architecture lists one per layer).
It lives in `<cache_dir>/cut/<sha of the source's identity and the kept layers>/`, written to a
temporary dir and renamed, under a lock, so two runs build it once; `cut.json` there names the
source and the layers. It loads in transformers and vLLM like any model dir.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipeline.cache import StageLock
from pipeline.config import Config
from pipeline.models import cache_root, identity_of
from pipeline.records import canonical_json, sha256_text
from stages.shared.models import local_model

CUT_FILE = "cut.json"


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
    return cut.kept(num_layers(source))


def student_dir(cfg: Config) -> Path:
    """The model dir training starts from: train.student, or its cut (built on first use).
    A cut of the trained student (train.cut.source: trained) is the train stage's to make,
    from its input: stages/train resolves it with cut_of before anything calls this."""
    source = local_model(cfg.train.student, cfg.cache_dir, key="train.student")
    layers = cut_layers(cfg)
    if layers is None:
        return source
    identity = identity_of(cfg.train.student, cfg.cache_dir, key="train.student")
    return cut_of(source, identity, layers, cfg.cache_dir)


def cut_of(source: Path, identity: str, layers: list[int], cache_dir: str) -> Path:
    """The cut of `source` (whose weights `identity` names) keeping `layers`: found in the
    cache, or built there once."""
    key = sha256_text(canonical_json({"source": identity, "layers": layers}))[:16]
    out = cache_root(cache_dir) / "cut" / key
    if (out / CUT_FILE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with StageLock(out.parent / f".{key}.lock"):
        if not (out / CUT_FILE).is_file():
            print(f"train: cutting {len(layers)} of {num_layers(source)} layers of {source} "
                  f"into {out} (once)", flush=True)  # fmt: skip
            build_cut(source, layers, out, identity)
    return out


def build_cut(source: Path, layers: list[int], out: Path, identity: str = "") -> None:
    """Write the cut of `source` keeping `layers` to `out` (atomically: a temp dir renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    decoder = model.get_decoder()
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
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    for extra in ("chat_template.jinja", "chat_template.json"):  # where a tokenizer keeps it
        if (source / extra).is_file() and not (tmp / extra).is_file():
            shutil.copy2(source / extra, tmp / extra)
    (tmp / CUT_FILE).write_text(
        json.dumps({"source": str(source), "source_identity": identity, "layers": layers}) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
