"""How many samples a large pool holds, told quickly: `distill status` of a run still
generating. Counting a pool reads all of it (5 GB at a million 4 KB samples, tens of seconds with
each row parsed); status must answer in under a second, so above `QUICK_POOL` bytes the count is
estimated from the mean size of the pool's first rows, and said to be one. The run itself always
reads the pool whole (pipeline/asklog.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config
from pipeline.taskfacts import task_facts
from stages.generate.strategy import cap

QUICK_POOL = 64 * 2**20  # bytes of pool files above which status estimates
PROBE = 4 * 2**20  # bytes of a pool's head read for its mean row size


def is_large(pools: list[Path]) -> bool:
    return sum(p.stat().st_size for p in pools if p.is_file()) > QUICK_POOL


def estimate_rows(path: Path) -> int:
    """The rows of a JSON-lines file: counted when it is under PROBE bytes, else its size over
    the mean length of the whole lines in its first PROBE bytes."""
    if not path.is_file():
        return 0
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(PROBE)
    whole = head[: head.rfind(b"\n") + 1]
    lines = sum(1 for line in whole.split(b"\n") if line.strip())
    if size <= PROBE or not lines:
        return lines
    return round(size * lines / len(whole))


def about_line(cfg: Config, pools: list[Path]) -> str:
    """Status's line for a large pool: its estimated rows, its size, what this key may ask."""
    rows = sum(estimate_rows(p) for p in pools)
    size = sum(p.stat().st_size for p in pools if p.is_file())
    most = task_facts(cfg.task, cfg.cache_dir).sizes["train"] * cap(cfg) * len(cfg.teacher_list())
    return (
        f"about {rows:,} samples in the run's pool ({size / 1e9:.2f} GB, estimated from its "
        f"first rows' size); this key asks for at most {most:,}"
    )
