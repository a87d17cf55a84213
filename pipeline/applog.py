"""Append-only JSONL logs that never lose work: `recover_log` makes a log safe to append to
again after a kill -9 or damage (good rows kept byte for byte, the rest moved to a quarantine
file with their exact bytes), streaming, holding each row's id and offset only; `AppendLog`
appends with an fsync every few rows. pipeline/records.py reads logs (RowIndex, good_rows)."""

from __future__ import annotations

import base64
import bisect
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonlines

from pipeline.records import (
    Check,
    DataError,
    LogLine,
    RowIndex,
    atomic_open,
    log_lines,
    scan_file,
    with_id,
)


@dataclass
class Recovered:
    offsets: dict[str, int] = field(default_factory=dict)  # each kept row's id -> its byte
    torn_tail: int | None = None  # line number of an unfinished last line that was cut
    quarantined: list[int] = field(default_factory=list)  # damaged lines moved out
    duplicates: list[int] = field(default_factory=list)  # later copies of an id, moved out
    first_problem: str = ""
    path: Path | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every kept row, read from the log (small logs: validation's, tests)."""
        return list(RowIndex(self.path, self.offsets).values()) if self.path else []

    def message(self, path: Path, quarantine: Path, what: str) -> str | None:
        """One line for the user, or None when the log was intact."""
        parts = []
        if self.quarantined:
            lines = ", ".join(map(str, self.quarantined[:8])) + (
                " ..." if len(self.quarantined) > 8 else ""
            )
            parts.append(
                f"{len(self.quarantined)} damaged line(s) (line {lines}: {self.first_problem}) "
                f"moved to {quarantine.name}; every other row is kept"
            )
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} repeated id(s) moved to {quarantine.name}")
        if self.torn_tail is not None:
            parts.append(
                f"cut an unfinished last line (line {self.torn_tail}) left by a killed run"
            )
        if not parts:
            return None
        return f"{path}: " + "; ".join(parts) + f"; the {what} they held will be made again"


def recover_log(
    path: Path, check: Check | None = None, quarantine: Path | None = None
) -> Recovered:
    """Make an append-only JSONL log safe to append to again, losing no good row.

    Good rows stay, byte for byte. Every other line (unparseable, not an object, no id, failing
    `check`, or a second copy of an id) is moved to `quarantine` (default: `<log>.quarantine`,
    one JSON line per removed line with its number, the reason and its exact bytes in base64)
    before the log is rewritten, so nothing is destroyed. An unfinished last line (a killed
    append) goes there too. The caller holds the log's lock.

    The log is read as a stream: what is held is each good row's id and byte offset (the
    result's `offsets`), and the lines to remove. An intact log is left as it is; damage at the
    end only is cut in place; damage before good rows rewrites the log, streamed, atomically.
    """
    path = Path(path)
    quarantine = quarantine or path.with_name(path.name + ".quarantine")
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a file; move it away and rerun")
    out = Recovered(path=path)
    if not path.is_file():
        return out
    moved, dropped, last_kept, kept_end, no_newline = _sort_lines(path, check, out)
    if not dropped and not no_newline:
        return out  # intact: the file is not touched
    if moved:
        _quarantine(quarantine, path.name, moved)
    if not dropped:  # the last row is whole but for its newline: give it one
        with open(path, "ab") as f:
            f.write(b"\n")
            os.fsync(f.fileno())
    elif all(n > last_kept for n in dropped) and not no_newline:
        with open(path, "r+b") as f:  # only the tail changed: cut it in place, no rewrite
            f.truncate(kept_end)
            os.fsync(f.fileno())
    else:
        _rewrite(path, dropped)
        out.offsets = _shifted(out.offsets, dropped)
    return out


def _sort_lines(
    path: Path, check: Check | None, out: Recovered
) -> tuple[list[tuple[LogLine, str]], dict[int, tuple[int, int]], int, int, bool]:
    """One pass over the log: each good row's offset into `out`, and the lines to remove.
    Returns (the lines to move with their reasons, every line not kept by number with its
    offset and size, the last kept line's number, the byte after it, whether that line lacks
    its newline)."""
    moved: list[tuple[LogLine, str]] = []
    dropped: dict[int, tuple[int, int]] = {}  # line number -> (offset, bytes): moved or blank
    last_kept = 0  # the line number of the last kept row
    kept_end = 0  # the byte after it (and its newline)
    no_newline = False  # the last line is a good row whose newline never came
    for line in scan_file(path, with_id(check)):
        reason = line.problem
        if reason is None and line.row["id"] in out.offsets:  # type: ignore[index]
            reason = "repeats an earlier id"
        if reason is None:
            out.offsets[line.row["id"]] = line.offset  # type: ignore[index]
            last_kept, kept_end = line.lineno, line.offset + len(line.raw) + 1
            no_newline = line.last
            continue
        dropped[line.lineno] = (line.offset, len(line.raw) + (not line.last))
        if reason == "blank line":
            continue
        moved.append((line, reason))
        if reason == "repeats an earlier id":
            out.duplicates.append(line.lineno)
        elif line.last:
            out.torn_tail = line.lineno
        else:
            out.quarantined.append(line.lineno)
            out.first_problem = out.first_problem or reason
    return moved, dropped, last_kept, kept_end, no_newline


def _rewrite(path: Path, dropped: dict[int, tuple[int, int]]) -> None:
    """The log without the `dropped` lines, every line ending in a newline, streamed into a
    temp file renamed over it."""
    with open(path, "rb") as src, atomic_open(path, binary=True) as f:
        for lineno, _, raw, _ in log_lines(src):
            if lineno not in dropped:
                f.write(raw + b"\n")


def _shifted(offsets: dict[str, int], dropped: dict[int, tuple[int, int]]) -> dict[str, int]:
    """Each kept row's offset once the dropped lines before it are gone."""
    cuts = sorted(dropped.values())
    starts = [o for o, _ in cuts]
    removed = list(itertools.accumulate(n for _, n in cuts))
    out = {}
    for key, offset in offsets.items():
        i = bisect.bisect_left(starts, offset)
        out[key] = offset - (removed[i - 1] if i else 0)
    return out


def _quarantine(path: Path, source: str, moved: list[tuple[LogLine, str]]) -> None:
    """Append the moved lines, with their exact bytes, and fsync before anything is removed."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(path, "ab") as f:
        for line, reason in moved:
            entry = {
                "source": source,
                "line": line.lineno,
                "reason": reason,
                "moved_at": stamp,
                "text": line.raw.decode("utf-8", "replace")[:2000],
                "bytes_b64": base64.b64encode(line.raw).decode(),
            }
            f.write((json.dumps(entry, ensure_ascii=False) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


class AppendLog:
    """Append-only JSONL with an fsync every `fsync_every` rows and on close.

    Open it on a log `recover_log` has made clean, so new rows never follow a half-written line.
    """

    def __init__(
        self, path: Path, fsync_every: int = 32, before_sync: Callable[[], None] | None = None
    ):
        # before_sync: make durable first what these rows refer to (a soft-label store)
        self.before_sync = before_sync
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")
        self._writer = jsonlines.Writer(self._f, compact=True, flush=False)
        self._pending = 0
        self.fsync_every = max(1, fsync_every)

    def write(self, row: dict[str, Any]) -> int:
        """Append `row`; returns the byte offset its line starts at."""
        offset = self._f.tell()
        self._writer.write(row)
        self._pending += 1
        if self._pending >= self.fsync_every:
            self.sync()
        return offset

    def flush(self) -> None:
        """Make what was written readable by another handle (durable is `sync`); once closed,
        everything written is in the file already."""
        if not self._f.closed:
            self._f.flush()

    def sync(self) -> None:
        if self.before_sync is not None:
            self.before_sync()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._pending = 0

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
