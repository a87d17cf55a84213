"""train: fine-tuning of the student on the filter stage's kept.jsonl with TRL, under one of the
objectives of stages/train/objectives/ (train.objective): supervised (sft), with the teacher's
soft labels too (kd), on-policy rounds in which the student learns from its own text
(onpolicy), or with the teacher in memory (features). Each objective declares what it adds to
the stage's key, its extra inputs and locks, and how it trains; the stage asks it and never
compares its name. The student may be cut from train.student, or from the full-size student of
the same config (`train.cut.source: trained`, an extra input: stages/train/trained.py).

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
  tracker/           TensorBoard's event files (train.report_to: tensorboard;
                     stages/train/tracking.py)

A rerun after a kill resumes from the newest usable checkpoint and ends at the same step;
`--force` starts from the base student again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipeline.config import Config, semantic, to_dict
from pipeline.models import identity_of
from pipeline.paths import ROOT, accelerate_config_file, shipped_accelerate_names
from pipeline.ports import free_port
from pipeline.records import atomic_write_json, atomic_write_text, sha256_file
from pipeline.stage import ExtraInput, KeyParts, RunContext
from stages.shared.advice import advice_lines
from stages.shared.cards import model_card
from stages.shared.layout import CARD, KEPT, LOSS_PLOT, MODEL, TRAIN_LOG, TRAIN_STATS, VALIDATION
from stages.train.checkpoints import checkpoint_step, last_checkpoint
from stages.train.cut import cut_layers, student_dir
from stages.train.hub import export  # noqa: F401 - the stage's part of `distill export`
from stages.train.objectives import objective_of
from stages.train.preflight import TrainError, preflight
from stages.train.trained import TRAINED_INPUT, resolve_trained, trained_input
from stages.train.trainer import PREPARED_PREFIX, train_in_process

NAME = "train"
VERSION = 2  # 2: model/README.md, the model card; checkpoints/ deleted after success
OUTPUTS = (MODEL, TRAIN_LOG, LOSS_PLOT, TRAIN_STATS, VALIDATION)
UPSTREAM = ("filter",)
HELP = "train the student on kept.jsonl with TRL: SFT or soft-label KD, full or LoRA"

CONFIG_FILE = "train_config.json"


def key_parts(cfg: Config) -> KeyParts:
    """The student's weights, not its path, and the semantic train config (launcher excluded),
    with what the objective adds (its teachers, what its rounds ask with)."""
    t = cfg.train
    cut_layers(cfg)  # a recipe this student cannot take is refused before anything runs
    extra = {"student_identity": identity_of(t.student, cfg.cache_dir, key="train.student")}
    if t.chat_template:  # the config checked that the file exists
        extra["chat_template"] = sha256_file(Path(t.chat_template).expanduser())
    if t.epochs == "auto":  # not the students of auto's first schedule, one cosine over all
        extra["schedule"] = "cosine to zero in each epoch"
    train = semantic(t, exclude=("student",))
    objective = objective_of(cfg)
    if objective.keyed_section:  # as a setting given would be keyed: such keys stay as they were
        section = objective.keyed_section
        train[section] = semantic(getattr(t, section))
    config: dict[str, Any] = {"train": train}
    own = objective.key_parts(cfg)
    return KeyParts(config={**config, **own.config}, extra={**extra, **own.extra})


def locks(cfg: Config, out: Path) -> list[Path]:
    """The objective's (on-policy: its rounds, shared by every train key of the run)."""
    return objective_of(cfg).locks(cfg, out)


def extra_inputs(cfg: Config) -> list[ExtraInput]:
    """A cut of the trained student, or it as a teacher: the same config's full-size SFT
    student (stages/train/trained.py); then the objective's (on-policy: its SFT start)."""
    return trained_input(cfg, NAME) + objective_of(cfg).extra_inputs(cfg, NAME)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Train the student on the filter's kept rows; write everything under `ctx.out`."""
    given = cfg
    if TRAINED_INPUT in ctx.inputs:
        cfg = resolve_trained(cfg, ctx.inputs[TRAINED_INPUT] / MODEL)
    stats = _train(cfg, ctx)
    if given.train.cut.active:  # where the cut came from, as the config said it
        stats["cut_layers"] = cut_layers(given)
        stats["cut_source"] = given.train.cut.source
    return _with_card(given, stats, ctx)


def _train(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """The objective's own training, or the trainer's loop over the kept rows: in this process,
    or under `accelerate launch`."""
    trains = objective_of(cfg).trains
    if trains is not None:
        return trains(cfg, ctx)
    kept = ctx.inputs["filter"] / KEPT
    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{PREPARED_PREFIX}*"):  # a killed run's prepared rows
        shutil.rmtree(stale, ignore_errors=True)
    if cfg.train.launcher == "none":
        return train_in_process(cfg, kept, out)
    # Pre-flight here too: a bad dataset fails in seconds, with its message, before N processes.
    student = student_dir(cfg)  # a cut student is built here, once, before N processes
    with tempfile.TemporaryDirectory(dir=out, prefix=PREPARED_PREFIX) as work:
        _, prepared = preflight(student, kept, cfg.train, Path(work))
        warnings = prepared.warnings
        del prepared  # its Arrow file is memory-mapped; the directory goes now
    for w in warnings:
        print(f"train: warning: {w}")
    (out / TRAIN_STATS).unlink(missing_ok=True)
    write_child_config(cfg, out / CONFIG_FILE)
    _launch(launch_command(cfg, kept, out, out / CONFIG_FILE))
    if not (out / TRAIN_STATS).is_file():
        raise TrainError(f"accelerate run exited 0 but wrote no {out / TRAIN_STATS}")
    return json.loads((out / TRAIN_STATS).read_text())


def teacher_calls(cfg: Config) -> list:
    """`distill plan`: the teacher calls this stage makes at most (on-policy's scores)."""
    return objective_of(cfg).teacher_calls(cfg)


def follows(cfg: Config) -> bool:
    """Machine rank > 0 of several: it joins rank 0's accelerate run; rank 0 runs the stage."""
    return cfg.train.machine_rank > 0


def follow(cfg: Config, ctx: RunContext) -> None:
    """Join rank 0's run: the same accelerate launch with this machine's rank. It writes
    nothing in the stage dir (its config copy goes to a temporary dir; only global rank 0
    saves), so rank 0's lock and manifest stay rank 0's."""
    if TRAINED_INPUT in ctx.inputs:
        cfg = resolve_trained(cfg, ctx.inputs[TRAINED_INPUT] / MODEL)
    t = cfg.train
    with tempfile.TemporaryDirectory(prefix="distill-train-") as d:
        conf = Path(d) / CONFIG_FILE
        write_child_config(cfg, conf)
        print(
            f"train: machine {t.machine_rank} of {t.num_machines} joins rank 0 at "
            f"{t.main_process_ip}:{t.main_process_port}",
            flush=True,
        )
        _launch(launch_command(cfg, ctx.inputs["filter"] / KEPT, ctx.out, conf))


def _launch(cmd: list[str]) -> None:
    print("train: launching: " + " ".join(cmd), flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    rc = subprocess.run(cmd, env=env, cwd=str(ROOT)).returncode  # output streams through
    if rc != 0:
        raise TrainError(f"training under accelerate failed (exit code {rc}); see the output above")


def _with_card(cfg: Config, stats: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Write the model card (stages/shared/cards.py) into model/ (and adapter/ with LoRA)."""
    detail = objective_of(cfg).card(cfg.train)
    card = model_card(cfg, stats, ctx.keys(NAME), stats.get("examples", 0), detail)
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


def launch_command(cfg: Config, kept: Path, out: Path, config_file: Path) -> list[str]:
    """`accelerate launch` for `python -m stages.train`, on this machine; with several
    machines, its rank and rank 0's rendezvous (every machine runs the same command but for
    --machine_rank)."""
    t = cfg.train
    machines = []
    if t.num_machines > 1:
        machines = [
            "--num_machines", str(t.num_machines),
            "--machine_rank", str(t.machine_rank),
            "--main_process_ip", t.main_process_ip,
        ]  # fmt: skip
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config_path(t.accelerate_config)),
        "--num_processes",
        str(max(1, t.num_processes)),
        *machines,
        "--main_process_port",
        str(t.main_process_port or free_port()),
        "-m",
        "stages.train",
        "--config-json",
        str(config_file),
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
            *advice_lines(stats.get("advice", [])),
        ]
    )
