"""The trained student as out/model: a plain HF dir in the student's own dtype, a LoRA adapter
merged into its base. torch / transformers / peft are imported inside the functions."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def _original_dtype(student: Path):
    import torch

    cfg = json.loads((student / "config.json").read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def finalize_model(student: Path, tok, out: Path, lora: bool) -> None:
    """out/model: a plain HF dir (config, safetensors, tokenizer, chat template) in the student's
    dtype. LoRA: the adapter in out/adapter is merged into a fresh copy of the base."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = out / "model"
    dtype = _original_dtype(student)
    if lora:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()
    elif dtype != torch.float32:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    else:
        tok.save_pretrained(model_dir)
        return
    tmp = out / "model.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(dtype).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)
