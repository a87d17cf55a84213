"""What a training run logs: one-line console messages (rank 0 only), and after training the
loss log (train_log.jsonl, one line per logging step) and its curve (loss.png). matplotlib is
imported inside write_logs, so importing this module stays cheap."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.records import atomic_write_jsonl


def log_line(msg: str) -> None:
    if _is_rank0():
        print(f"train: {msg}", flush=True)


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def write_logs(history: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """train_log.jsonl (one line per logging step) and loss.png; returns the loss rows."""
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm")
    rows = [{k: h[k] for k in keys if k in h} for h in history if "loss" in h]
    atomic_write_jsonl(out / "train_log.jsonl", rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["step"] for r in rows], [r["loss"] for r in rows], marker="." if len(rows) < 50 else ""
    )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("train loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    return rows
