"""The Trainer's checkpoints in out/checkpoints: the newest usable one (a rerun resumes from it;
a half-saved or damaged one is skipped), its step, and pruning them after success."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stages.train.logs import log_line

CHECKPOINT_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest usable checkpoint: its trainer_state.json parses and its weights are there.

    One a kill left half-saved, or a disk damaged, is skipped (with a note), so training
    resumes from the one before it instead of failing on every rerun."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.iterdir():
        name = d.name
        if not (d.is_dir() and name.startswith("checkpoint-") and name[11:].isdigit()):
            continue
        problem = _checkpoint_problem(d)
        if problem is None:
            found.append((int(name[11:]), d))
        elif (d / "trainer_state.json").exists():  # a half-saved one has no state: say nothing
            log_line(f"skipping {d.name}: {problem}")
    return max(found)[1] if found else None


def _checkpoint_problem(d: Path) -> str | None:
    try:
        state = json.loads((d / "trainer_state.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return "trainer_state.json missing or damaged"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    if not any((d / w).is_file() for w in CHECKPOINT_WEIGHTS):
        return "no weights"
    return None


def checkpoint_step(ckpt: Path | None) -> int:
    if ckpt is None:
        return 0
    return int(json.loads((ckpt / "trainer_state.json").read_text()).get("global_step", 0))


def prune_checkpoints(ckpt_dir: Path, keep_last: bool = False) -> None:
    """After success: delete the checkpoints (the model is saved), or keep only the last
    (train.keep_checkpoints: enough to continue training). The stats are written first, so a
    kill here costs at most a retrain of this stage, never a wrong result."""
    if not keep_last:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return
    last = last_checkpoint(ckpt_dir)
    if last is None:
        return
    for d in ckpt_dir.iterdir():
        if d.is_dir() and d != last:
            shutil.rmtree(d, ignore_errors=True)
