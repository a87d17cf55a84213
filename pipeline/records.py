"""JSONL IO that never loses work: atomic whole-file writes, append+fsync, tolerant resume reads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import jsonlines

from pipeline.errors import UserError


class DataError(UserError, ValueError):
    """Bad input data; the message names file, line and field."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[TextIO]:
    """A temp file beside `path`, fsynced and renamed over it on success, removed on failure:
    readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write all rows to a temp file, then rename over `path`. Returns the row count."""
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Strict reader for inputs: a bad line is an error naming file and line."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                    "fix or remove this line"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield obj


@dataclass
class ResumeRead:
    rows: list[dict[str, Any]] = field(default_factory=list)
    torn: list[int] = field(default_factory=list)  # line numbers dropped
    valid_bytes: int = 0  # length of the intact prefix


def read_jsonl_tolerant(path: Path, id_field: str = "id") -> ResumeRead:
    """Read an append-only file that a kill may have torn.

    Only a bad *last* line is expected (an interrupted append); it is dropped and reported. Rows
    without `id_field` are treated as torn too: an append is only complete with its id.
    """
    out = ResumeRead()
    path = Path(path)
    if not path.exists():
        return out
    data = path.read_bytes()
    pos = 0
    lineno = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        complete = end != -1
        line = data[pos : end if complete else len(data)]
        lineno += 1
        nxt = end + 1 if complete else len(data)
        ok = False
        if complete and line.strip():
            try:
                obj = json.loads(line)
                ok = isinstance(obj, dict) and id_field in obj
            except (json.JSONDecodeError, UnicodeDecodeError):
                ok = False
            if ok:
                out.rows.append(obj)
        if ok or (complete and not line.strip()):
            if not out.torn:
                out.valid_bytes = nxt
        else:
            out.torn.append(lineno)
        pos = nxt
    return out


class AppendLog:
    """Append-only JSONL with an fsync every `fsync_every` rows and on close.

    Opening truncates a torn tail first, so new rows never follow a half-written line.
    """

    def __init__(self, path: Path, valid_bytes: int | None = None, fsync_every: int = 32):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")
        if valid_bytes is not None and self._f.tell() > valid_bytes:
            self._f.truncate(valid_bytes)
            self._f.seek(valid_bytes)
        self._writer = jsonlines.Writer(self._f, compact=True, flush=False)
        self._pending = 0
        self.fsync_every = max(1, fsync_every)

    def write(self, row: dict[str, Any]) -> None:
        self._writer.write(row)
        self._pending += 1
        if self._pending >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
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


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
