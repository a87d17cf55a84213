"""train's part of `distill export`: DIR/model/, the student as the Hub wants it.

model/   safetensors (every floating tensor in the dtype it trained in unless --dtype
         says otherwise: bf16 halves an fp32 save), config, tokenizer, chat template,
         README.md (the model card; eval's copy with scores replaces it when eval is
         complete), loss.png. No pickle: the Trainer's training_args.bin (it runs code
         when loaded) stays in the run dir.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.stage import ExportContext
from stages.shared.hub import require_complete
from stages.shared.layout import LOSS_PLOT, MODEL

PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle")


def export(ctx: ExportContext) -> str:
    require_complete(ctx, "train")
    assert ctx.manifest is not None
    dtype = ctx.dtype
    if dtype == "auto":
        dtype = "bfloat16" if ctx.manifest.get("stats", {}).get("bf16") else "float32"
    write_model(ctx.dir, ctx.dest / MODEL, dtype)
    return ""


def write_model(train_dir: Path, out: Path, dtype: str) -> None:
    shutil.copytree(train_dir / MODEL, out, ignore=shutil.ignore_patterns(*PICKLES))
    cast_weights(out, dtype)
    if (train_dir / LOSS_PLOT).is_file():
        shutil.copyfile(train_dir / LOSS_PLOT, out / LOSS_PLOT)


def cast_weights(model_dir: Path, dtype: str) -> None:
    """Every floating tensor of the safetensors files in `model_dir` to `dtype`, config.json
    (and a sharded index's total size) to match; integer tensors stay as they are."""
    import torch
    from safetensors.torch import load_file, save_file

    want = getattr(torch, dtype)
    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        cast = {k: v.to(want) if v.is_floating_point() else v for k, v in load_file(f).items()}
        save_file(cast, f, metadata={"format": "pt"})
        total += sum(v.numel() * v.element_size() for v in cast.values())
    conf = model_dir / "config.json"
    c = json.loads(conf.read_text())
    c["dtype"] = dtype
    if "torch_dtype" in c:
        c["torch_dtype"] = dtype
    conf.write_text(json.dumps(c, indent=2) + "\n")
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        ix = json.loads(index.read_text())
        ix.setdefault("metadata", {})["total_size"] = total
        index.write_text(json.dumps(ix, indent=2) + "\n")
