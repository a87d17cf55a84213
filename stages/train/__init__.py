"""train: fine-tuning of the student on the filter stage's kept.jsonl with TRL: supervised
(`train.objective: sft`), or with the teacher's soft labels too (`kd`: kept.logprobs.bin, checked
and aligned by stages/train/softdata.py, the loss in stages/train/kd.py).

`run(cfg, inputs, out)` trains in this process (stages/train/trainer.py), or, with
`train.launcher: accelerate`, starts `accelerate launch ... -m stages.train` and waits for it.
Outputs in `out/`:

  model/             the student (full fine-tune, or LoRA merged into the base): loads in vLLM
  adapter/           the LoRA adapter (LoRA only)
  model/README.md    its model card (Hub form): base model, data key and size, objective,
                     hyper-parameters, seeds, where the loss curve is
  checkpoints/       Trainer checkpoints every train.save_steps; deleted after success
                     (train.keep_checkpoints: the last is kept)
  train_log.jsonl    one line per logging step (step, epoch, loss, learning_rate, grad_norm)
  loss.png           the loss curve
  train_stats.json   the stats run() returns

A rerun after a kill resumes from the newest usable checkpoint and ends at the same step;
`--force` starts from the base student again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.config import Config, semantic, to_dict
from pipeline.models import identity_of
from pipeline.paths import ROOT, accelerate_config_file, shipped_accelerate_names
from pipeline.records import atomic_write_json, atomic_write_text, sha256_file
from pipeline.servers import free_port
from pipeline.stage import KeyParts, RunContext
from stages.shared.cards import model_card
from stages.shared.layout import CARD, KEPT, LOSS_PLOT, MODEL, TRAIN_LOG
from stages.shared.models import local_model
from stages.train.checkpoints import checkpoint_step, last_checkpoint
from stages.train.hub import export  # noqa: F401 - the stage's part of `distill export`
from stages.train.preflight import TrainError, preflight
from stages.train.trainer import STATS_FILE, train_in_process
from stages.train.validation import RESULTS as VALIDATION_RESULTS

NAME = "train"
VERSION = 2  # 2: model/README.md, the model card; checkpoints/ deleted after success
OUTPUTS = (MODEL, TRAIN_LOG, LOSS_PLOT, STATS_FILE, VALIDATION_RESULTS)
UPSTREAM = ("filter",)
HELP = "train the student on kept.jsonl with TRL: SFT or soft-label KD, full or LoRA"

CONFIG_FILE = "train_config.json"


def key_parts(cfg: Config) -> KeyParts:
    """The student's weights, not its path, and the semantic train config (launcher excluded)."""
    t = cfg.train
    extra = {"student_identity": identity_of(t.student, cfg.cache_dir, key="train.student")}
    if t.chat_template:  # the config checked that the file exists
        extra["chat_template"] = sha256_file(Path(t.chat_template).expanduser())
    return KeyParts(config={"train": semantic(t, exclude=("student",))}, extra=extra)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Train the student on the filter's kept rows; write everything under `ctx.out`."""
    kept = ctx.inputs["filter"] / KEPT
    out = ctx.out
    if cfg.train.launcher == "none":
        return _with_card(cfg, train_in_process(cfg, kept, out), ctx)
    # Pre-flight here too: a bad dataset fails in seconds, with its message, before N processes.
    student = local_model(cfg.train.student, cfg.cache_dir, key="train.student")
    _, prepared = preflight(student, kept, cfg.train)
    for w in prepared.warnings:
        print(f"train: warning: {w}")
    out.mkdir(parents=True, exist_ok=True)
    (out / STATS_FILE).unlink(missing_ok=True)
    write_child_config(cfg, out / CONFIG_FILE)
    cmd = launch_command(cfg, kept, out)
    print("train: launching: " + " ".join(cmd), flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    rc = subprocess.run(cmd, env=env, cwd=str(ROOT)).returncode  # output streams through
    if rc != 0:
        raise TrainError(f"training under accelerate failed (exit code {rc}); see the output above")
    if not (out / STATS_FILE).is_file():
        raise TrainError(f"accelerate run exited 0 but wrote no {out / STATS_FILE}")
    return _with_card(cfg, json.loads((out / STATS_FILE).read_text()), ctx)


def _with_card(cfg: Config, stats: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Write the model card (stages/shared/cards.py) into model/ (and adapter/ with LoRA)."""
    card = model_card(cfg, stats, ctx.keys(NAME), stats.get("examples", 0))
    for d in (MODEL, "adapter"):
        if (ctx.out / d).is_dir():
            atomic_write_text(ctx.out / d / CARD, card)
    return stats


def accelerate_config_path(name: str) -> Path:
    """A config file path, or a shipped name; '' picks ddp_gpu where there is a GPU, else
    ddp_cpu (the config checked the name when it was built)."""
    if not name:
        name = "ddp_gpu" if shutil.which("nvidia-smi") else "ddp_cpu"
    path = accelerate_config_file(name)
    if path is None:
        raise TrainError(
            f"train.accelerate_config {name!r} is neither a file nor one of: "
            f"{shipped_accelerate_names()}"
        )
    return path


def write_child_config(cfg: Config, path: Path) -> None:
    """What the launched processes need, as JSON (valid YAML): the whole config, since rank 0
    validates (the task's validation split, the student's prompt, eval's serving)."""
    atomic_write_json(path, to_dict(cfg))


def launch_command(cfg: Config, kept: Path, out: Path) -> list[str]:
    """`accelerate launch` for `python -m stages.train`; run() writes out/train_config.json."""
    t = cfg.train
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config_path(t.accelerate_config)),
        "--num_processes",
        str(max(1, t.num_processes)),
        "--main_process_port",
        str(free_port()),
        "-m",
        "stages.train",
        "--config-json",
        str(Path(out) / CONFIG_FILE),
        "--kept",
        str(kept),
        "--out",
        str(out),
    ]


def progress(cfg: Config, out: Path) -> str:
    """The newest usable checkpoint's step: where a rerun resumes."""
    ckpt = last_checkpoint(Path(out) / "checkpoints")
    return f"checkpoint at step {checkpoint_step(ckpt)}" if ckpt else "started, no checkpoint yet"


def summary(stats: dict[str, Any], out: Path) -> str:
    loss = stats.get("final_loss")
    sps = stats.get("seconds_per_step")
    return "\n".join(
        [
            f"examples {stats.get('examples', 0):,}, {stats.get('steps', 0)} steps"
            + (f" at {sps:.2f} s/step" if sps else "")
            + (f", final loss {loss:.4f}" if isinstance(loss, float) else ""),
            f"student: {out / 'model'}",
        ]
    )
