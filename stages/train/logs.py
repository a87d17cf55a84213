"""What a training run logs: one-line console messages (rank 0 only), and after training the
loss log (train_log.jsonl, one line per logging step) and its curve (loss.png). matplotlib is
imported inside write_logs, so importing this module stays cheap."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.records import atomic_write_jsonl
from stages.shared.layout import LOSS_PLOT, TRAIN_LOG


def log_line(msg: str) -> None:
    if _is_rank0():
        print(f"train: {msg}", flush=True)


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def write_logs(history: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """train_log.jsonl (one line per logging step, and one per validation) and loss.png, the
    validation accuracy on a second axis; returns the loss rows."""
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm", "validation_accuracy")
    # objective features: each term's mean since the last log (stages/train/losses/features.py)
    keys += tuple(f"loss_{t}" for t in ("ce", "logit", "hidden", "attention", "relation"))
    logged = [
        {k: h[k] for k in keys if k in h}
        for h in history
        if "loss" in h or "validation_accuracy" in h
    ]
    atomic_write_jsonl(out / TRAIN_LOG, logged)
    rows = [r for r in logged if "loss" in r]
    val = [r for r in logged if "validation_accuracy" in r]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["step"] for r in rows], [r["loss"] for r in rows], marker="." if len(rows) < 50 else ""
    )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("train loss" + (" and validation accuracy" if val else ""))
    ax.grid(alpha=0.3)
    if val:
        acc = ax.twinx()
        acc.plot(
            [r["step"] for r in val],
            [r["validation_accuracy"] for r in val],
            "o-",
            color="tab:orange",
            label="validation accuracy",
        )
        acc.set_ylabel("validation accuracy", color="tab:orange")
        acc.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(out / LOSS_PLOT, dpi=100)
    plt.close(fig)
    return rows
