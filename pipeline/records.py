"""JSONL IO that never loses work: atomic whole-file writes, append+fsync, tolerant resume reads."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def current_umask() -> int:
    """This process's umask, read without changing it (os.umask can only swap it, which would
    leave another thread creating files under the wrong mask for that instant)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: Path, *, binary: bool = False) -> Iterator[Any]:
    """A temp file beside `path`, fsynced and renamed over it on success, removed on failure:
    readers see the old file or the new one, never half of it. The file gets the mode a plain
    open would (0666 less the umask), not mkstemp's owner-only 0600: a teammate or a job under
    another account reads a run dir on a shared filesystem as the user's umask allows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
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


def parse_line(raw: bytes) -> dict[str, Any]:
    """One JSONL line as an object, or ValueError saying why not (decoding, syntax, shape).

    json.loads raises more than JSONDecodeError on hostile input: ValueError for an integer of
    thousands of digits, RecursionError for deep nesting; all of them mean 'not a row'."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); save the file as UTF-8"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ValueError("not usable JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"not usable JSON ({str(e)[:80]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Strict reader for inputs: a bad line is an error naming file and line.

    Lines end at \\n only (model text may hold U+2028 and friends), a UTF-8 BOM is skipped,
    CRLF line ends are fine (JSON ignores the \\r)."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                obj = parse_line(raw)
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: {e}; fix or remove this line") from None
            yield obj


Check = Callable[[dict[str, Any]], "str | None"]


def schema_problem(row: dict[str, Any], fields: dict[str, type | tuple[type, ...]]) -> str | None:
    """None when `row` has every field with its type, else what is missing or wrong."""
    for name, tp in fields.items():
        if name not in row:
            return f"missing field '{name}'"
        value = row[name]
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            want = tp.__name__ if isinstance(tp, type) else " or ".join(t.__name__ for t in tp)
            return f"field '{name}' should be {want}, got {type(value).__name__}"
    return None


@dataclass
class LogLine:
    lineno: int
    raw: bytes
    problem: str | None  # None: a good row
    row: dict[str, Any] | None = None
    last: bool = False  # the final line, without its newline: an interrupted append


def _scan(data: bytes, check: Check | None) -> list[LogLine]:
    out = []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the data ends with a newline
    for lineno, raw in enumerate([*lines, tail] if tail else lines, 1):
        last = bool(tail) and lineno == len(lines) + 1
        if not raw.strip():
            out.append(LogLine(lineno, raw, "blank line", last=last))
            continue
        try:
            row = parse_line(raw)
        except ValueError as e:
            out.append(LogLine(lineno, raw, str(e), last=last))
            continue
        problem = check(row) if check else None
        out.append(LogLine(lineno, raw, problem, row, last))
    return out


@dataclass
class ResumeRead:
    rows: list[dict[str, Any]] = field(default_factory=list)
    torn: list[int] = field(default_factory=list)  # line numbers not read as rows
    problems: list[str] = field(default_factory=list)  # "line 7: not valid JSON (...)"


def read_jsonl_tolerant(path: Path, check: Check | None = None) -> ResumeRead:
    """Read an append-only log without changing it: every good row, and which lines are not.

    A row is good when it parses, is an object, has an `id`, and passes `check`."""
    out = ResumeRead()
    path = Path(path)
    if not path.is_file():
        return out
    for line in _scan(path.read_bytes(), _with_id(check)):
        if line.problem is None:
            out.rows.append(line.row)  # type: ignore[arg-type]
        elif line.problem != "blank line":
            out.torn.append(line.lineno)
            out.problems.append(f"line {line.lineno}: {line.problem}")
    return out


def _with_id(check: Check | None) -> Check:
    def checked(row: dict[str, Any]) -> str | None:
        if not isinstance(row.get("id"), str) or not row["id"]:
            return "no 'id' string: an append is complete only with its id"
        return check(row) if check else None

    return checked


@dataclass
class Recovered:
    rows: list[dict[str, Any]] = field(default_factory=list)
    torn_tail: int | None = None  # line number of an unfinished last line that was cut
    quarantined: list[int] = field(default_factory=list)  # damaged lines moved out
    duplicates: list[int] = field(default_factory=list)  # later copies of an id, moved out
    first_problem: str = ""

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
    """
    path = Path(path)
    quarantine = quarantine or path.with_name(path.name + ".quarantine")
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a file; move it away and rerun")
    if not path.is_file():
        return Recovered()
    data = path.read_bytes()
    out, keep, moved = _sort_lines(data, check)
    clean = b"".join(raw + b"\n" for raw in keep)
    if clean == data:
        return out
    if moved:
        _quarantine(quarantine, path.name, moved)
    if data.startswith(clean):  # only the tail changed: cut it in place, no rewrite
        with open(path, "r+b") as f:
            f.truncate(len(clean))
            os.fsync(f.fileno())
    else:
        with atomic_open(path, binary=True) as f:
            f.write(clean)
    return out


def _sort_lines(
    data: bytes, check: Check | None
) -> tuple[Recovered, list[bytes], list[tuple[LogLine, str]]]:
    """(what was found, the good lines to keep, the lines to move with their reasons)."""
    out = Recovered()
    keep: list[bytes] = []
    moved: list[tuple[LogLine, str]] = []
    seen: set[str] = set()
    for line in _scan(data, _with_id(check)):
        if line.problem == "blank line":
            continue
        if line.problem is not None:
            moved.append((line, line.problem))
            if line.last:
                out.torn_tail = line.lineno
            else:
                out.quarantined.append(line.lineno)
                out.first_problem = out.first_problem or line.problem
            continue
        assert line.row is not None
        if line.row["id"] in seen:
            moved.append((line, "repeats an earlier id"))
            out.duplicates.append(line.lineno)
            continue
        seen.add(line.row["id"])
        keep.append(line.raw)
        out.rows.append(line.row)
    return out, keep, moved


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

    def write(self, row: dict[str, Any]) -> None:
        self._writer.write(row)
        self._pending += 1
        if self._pending >= self.fsync_every:
            self.sync()

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


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
