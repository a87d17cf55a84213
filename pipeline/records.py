"""JSONL IO that never loses work: atomic whole-file writes, strict input reads, and logs read as
streams: `good_rows` (every good row of a log that may be damaged, one at a time) and `RowIndex`
(a log's rows by id as byte offsets, each read from the file when asked for). Appending to a log
and recovering one after a kill are pipeline/applog.py's."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    raw: bytes  # without its newline
    problem: str | None  # None: a good row
    row: dict[str, Any] | None = None
    last: bool = False  # the final line, without its newline: an interrupted append
    offset: int = 0  # where the line starts in the file


def log_lines(f: Any) -> Iterator[tuple[int, int, bytes, bool]]:
    """(line number, byte offset, bytes without the newline, unfinished) for each line of a
    binary file, read as a stream: a log of any size costs one line of memory at a time."""
    offset = 0
    for lineno, raw in enumerate(f, 1):
        done = raw.endswith(b"\n")
        yield lineno, offset, raw[:-1] if done else raw, not done
        offset += len(raw)


def scan_file(path: Path, check: Check | None) -> Iterator[LogLine]:
    """Every line of `path`, parsed and checked, one at a time."""
    with open(path, "rb") as f:
        for lineno, offset, raw, last in log_lines(f):
            yield _classify(lineno, offset, raw, last, check)


def _classify(lineno: int, offset: int, raw: bytes, last: bool, check: Check | None) -> LogLine:
    if not raw.strip():
        return LogLine(lineno, raw, "blank line", last=last, offset=offset)
    try:
        row = parse_line(raw)
    except ValueError as e:
        return LogLine(lineno, raw, str(e), last=last, offset=offset)
    problem = check(row) if check else None
    return LogLine(lineno, raw, problem, row, last, offset)


@dataclass
class ResumeRead:
    rows: list[dict[str, Any]] = field(default_factory=list)
    torn: list[int] = field(default_factory=list)  # line numbers not read as rows
    problems: list[str] = field(default_factory=list)  # "line 7: not valid JSON (...)"


def read_jsonl_tolerant(path: Path, check: Check | None = None) -> ResumeRead:
    """Read an append-only log without changing it: every good row, and which lines are not.
    It holds every row: for small logs (validation, tests); a pool is read with `good_rows`.

    A row is good when it parses, is an object, has an `id`, and passes `check`."""
    out = ResumeRead()
    path = Path(path)
    if not path.is_file():
        return out
    for line in scan_file(path, with_id(check)):
        if line.problem is None:
            out.rows.append(line.row)  # type: ignore[arg-type]
        elif line.problem != "blank line":
            out.torn.append(line.lineno)
            out.problems.append(f"line {line.lineno}: {line.problem}")
    return out


def good_rows(path: Path, check: Check | None = None) -> Iterator[dict[str, Any]]:
    """The good rows of a log that may be damaged, as a stream, without changing the file (a
    shard's pool while its shard may be writing; another key's predictions)."""
    path = Path(path)
    if path.is_file():
        for line in scan_file(path, with_id(check)):
            if line.problem is None:
                yield line.row  # type: ignore[misc]


def with_id(check: Check | None) -> Check:
    def checked(row: dict[str, Any]) -> str | None:
        if not isinstance(row.get("id"), str) or not row["id"]:
            return "no 'id' string: an append is complete only with its id"
        return check(row) if check else None

    return checked


def read_row_at(path: Path, offset: int, want: str) -> dict[str, Any]:
    """The row at byte `offset` of a log, which must be the row with id `want`."""
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.readline()
    try:
        row = parse_line(raw)
    except ValueError:
        row = {}
    if row.get("id") != want:
        raise DataError(
            f"{path}: the row of {want!r} is no longer at byte {offset}: the file changed while "
            "this run read it; rerun"
        )
    row["id"] = want  # the index's own string: what a caller keeps of the row is not a copy
    return row


class RowIndex(Mapping[str, dict[str, Any]]):
    """A log's rows by id, held as byte offsets: a row is read and parsed from the file when
    asked for, so a pool of a million samples costs an id and an int each, not a dict. `flush`
    makes the log's own pending appends readable first. `also` answers for ids held in another
    log (a shard counts the run's pool as held)."""

    def __init__(
        self,
        path: Path,
        offsets: dict[str, int],
        flush: Callable[[], None] | None = None,
        also: Mapping[str, dict[str, Any]] | None = None,
    ):
        self.path = Path(path)
        self.offsets = offsets
        self.flush = flush
        self.also = also

    def __getitem__(self, key: str) -> dict[str, Any]:
        offset = self.offsets.get(key)
        if offset is None:
            if self.also is not None and key in self.also:
                return self.also[key]
            raise KeyError(key)
        if self.flush is not None:
            self.flush()
        return read_row_at(self.path, offset, key)

    def __contains__(self, key: object) -> bool:
        return key in self.offsets or (self.also is not None and key in self.also)

    def __iter__(self) -> Iterator[str]:
        yield from self.offsets
        if self.also is not None:
            yield from (k for k in self.also if k not in self.offsets)

    def __len__(self) -> int:
        if self.also is None:
            return len(self.offsets)
        return len(self.offsets) + sum(k not in self.offsets for k in self.also)

    def values(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        """Every row, in file order, read as one stream (not one seek per row)."""
        if self.flush is not None:
            self.flush()
        n = 0
        if self.offsets:
            for line in scan_file(self.path, None):
                key = line.row.get("id") if line.row is not None else None
                if isinstance(key, str) and self.offsets.get(key) == line.offset:
                    n += 1
                    yield line.row  # type: ignore[misc]
        if n != len(self.offsets):
            raise DataError(f"{self.path}: the file changed while this run read it; rerun")
        if self.also is not None:
            yield from (self.also[k] for k in self.also if k not in self.offsets)

    @classmethod
    def of(cls, path: Path, check: Check | None = None) -> RowIndex:
        """The good rows of `path` (first copy of each id), indexed without changing the file."""
        offsets: dict[str, int] = {}
        path = Path(path)
        if path.is_file():
            for line in scan_file(path, with_id(check)):
                if line.problem is None:
                    offsets.setdefault(line.row["id"], line.offset)  # type: ignore[index]
        return cls(path, offsets)


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
