"""Experiment trackers (train.report_to: tensorboard, trackio, wandb, mlflow) through
transformers' own integration callbacks, so each gets the numbers as the Trainer logs them.

The trainer's loop (stages/train/trainer.py) hands the tracker to its Trainer; our validation
callback logs through every callback's `on_log` (stages/train/validation.py), so validation
accuracy reaches it beside the loss. On-policy rounds update with a Trainer each, which reports nothing
(its steps restart every round): the stage drives the same callbacks once, a round per step,
with the numbers of train_log.jsonl (report_rounds).

The run is named `<run>-train-<stage key>` (stages/train/args.py: run_name). TensorBoard
writes its event files into the stage dir's tracker/, so they travel with the run; trackio, wandb
and mlflow go where their own environment variables say (credentials included): nothing of ours
but the Trainer's arguments and these numbers is sent. transformers is imported inside the
functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Config
from stages.train.args import sft_config

TRACKER_DIR = "tracker"  # in the stage dir: TensorBoard's event files


def _local_dir(callback: Any, out: Path) -> None:
    """TensorBoard's event files into out/tracker/, unless TENSORBOARD_LOGGING_DIR says where
    (the callback read it when built); transformers' default is under output_dir, which is
    checkpoints/, deleted after success."""
    from transformers.integrations import TensorBoardCallback

    if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
        callback.logging_dir = str(Path(out) / TRACKER_DIR)


def place_trackers(trainer: Any, out: Path) -> None:
    """The Trainer's tracker callbacks write where _local_dir says and come last: each event
    reaches them after our callbacks acted, so they see the validation logged at a step and
    close only after the last step's measurement (on_train_end)."""
    from transformers.integrations import get_reporting_integration_callbacks

    kinds = tuple(get_reporting_integration_callbacks(trainer.args.report_to))
    handler = trainer.callback_handler
    for cb in [c for c in handler.callbacks if kinds and isinstance(c, kinds)]:
        handler.remove_callback(cb)
        _local_dir(cb, out)
        handler.add_callback(cb)


def round_scalars(row: dict[str, Any]) -> dict[str, float]:
    """What a round logs: its numbers (loss, reverse_kl, correct, verified, validation_accuracy,
    counts) and its seconds per part as seconds_<part>; a number it lacks (a round not
    validated) is left out rather than logged as 0."""
    got = {
        k: float(v)
        for k, v in row.items()
        if k != "round" and isinstance(v, int | float) and not isinstance(v, bool)
    }
    for part, s in (row.get("seconds") or {}).items():
        got[f"seconds_{part}"] = float(s)
    return got


def report_rounds(cfg: Config, out: Path, rows: list[dict[str, Any]]) -> None:
    """On-policy: every round's scalars to the tracker, at step = its round (as train_log.jsonl
    counts them), through the tracker's own callback, with the stage's training arguments as
    the run's config. Rounds read back from an earlier stage are logged too: this stage's
    run holds all of them."""
    if cfg.train.report_to == "none" or not rows:
        return
    import torch
    from transformers import TrainerControl, TrainerState
    from transformers.integrations import get_reporting_integration_callbacks

    args = sft_config(cfg, out, use_cpu=not torch.cuda.is_available(), bf16=False)
    callbacks = [c() for c in get_reporting_integration_callbacks(args.report_to)]
    for cb in callbacks:
        _local_dir(cb, out)
    state, control = TrainerState(max_steps=len(rows)), TrainerControl()
    for cb in callbacks:
        cb.on_train_begin(args, state, control)
    for row in rows:
        state.global_step, state.epoch = row["round"], float(row["round"])
        for cb in callbacks:
            cb.on_log(args, state, control, logs=round_scalars(row))
    for cb in callbacks:
        cb.on_train_end(args, state, control)
