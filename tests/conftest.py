from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Real vLLM on CPU needs these; tests never reach a model hub.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# As the CLI does: TRL, once a test imports it, would set ERROR and silence every engine's log.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
# The suite's own Hugging Face and `datasets` caches, fresh each session: a user's earlier
# loads can neither break a test (a stale cache entry returned for new files) nor rescue one.
_HF_HOME = Path(tempfile.mkdtemp(prefix="distill-test-hf-"))
os.environ["HF_HOME"] = str(_HF_HOME)
os.environ["HF_DATASETS_CACHE"] = str(_HF_HOME / "datasets")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (random) 2-layer Qwen2 chat model with a BPE tokenizer, saved locally."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a short SFT on formatted arithmetic answers (tiny_model.py): a
    teacher whose samples the filter keeps. Shared by the chain and the sweep tests."""
    from tiny_model import build_tiny_teacher

    return build_tiny_teacher(tmp_path_factory.mktemp("teacher") / "teacher", tiny_model)


@pytest.fixture(scope="module")
def cross_toks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """(student, teacher) tokenizers of two tiny models with other vocabularies and chat
    families: the student ends turns with "<|im_end|>" (SmolLM2's), the teacher with
    "<|eot_id|>" (Llama 3's). Per module: a test may change one and put it back."""
    from tiny_model import build_tiny_model
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("cross-toks")
    student = build_tiny_model(root / "student", layers=1)
    teacher = build_tiny_model(root / "teacher", layers=1, vocab=400, end_of_turn="<|eot_id|>")
    return AutoTokenizer.from_pretrained(student), AutoTokenizer.from_pretrained(teacher)


def run_cli(*args: str, timeout: float = 900, env: dict | None = None):
    """Run `distill ARGS` in a fresh interpreter (vLLM needs a spawn-safe __main__)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def source_at(commit: str, path: str) -> str:
    """`path` as commit `commit` had it: for a test that holds new code against the very code it
    replaced. Skips outside a git checkout whose history holds the commit."""
    import subprocess

    got = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True
    )
    if got.returncode != 0:
        pytest.skip(f"{path} at {commit} is not in this checkout's history")
    return got.stdout


def functions_at(commit: str, path: str, *names: str, **env: object) -> dict:
    """The named top-level functions (and assignments) of `path` at `commit`, defined on their
    own, without the rest of the module (whose imports may no longer exist); `env` holds the
    names they read."""
    import ast

    source = source_at(commit, path)
    tree = ast.parse(source)
    out: dict = {"__name__": f"{path}@{commit}", **env}
    for node in tree.body:
        named = getattr(node, "name", None) or (
            node.targets[0].id
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            else None
        )
        if named in names:
            exec(compile(ast.Module([node], []), f"{path}@{commit}", "exec"), out)
    missing = [n for n in names if n not in out]
    assert not missing, f"{path}@{commit} has no {missing}"
    return out


def kill_cli_when(args: list[str], ready, timeout: float) -> None:
    """Start `distill ARGS` in a session of its own; SIGKILL that whole process group (no
    cleanup) once `ready()` is true. Fails if the command ended first or never got there."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"{args[0]} ended (rc {proc.returncode}) before the kill"
    assert ready(), f"{args[0]} did not get there in {timeout} s"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_generate_when(overrides: list[str], pool: Path, rows: int, timeout: float) -> int:
    """`distill generate` killed with -9 once `pool` holds `rows` rows; returns the rows seen."""
    from pipeline.records import read_jsonl_tolerant

    def count() -> int:
        return len(read_jsonl_tolerant(pool).rows) if pool.exists() else 0

    kill_cli_when(["generate", *overrides], lambda: count() >= rows, timeout)
    return count()


@pytest.fixture(scope="session")
def tiny_generated(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real generate run (vLLM server over the tiny model), shared by downstream tests."""
    import json

    runs = tmp_path_factory.mktemp("runs")
    overrides = [
        f"runs_dir={runs}",
        f"cache_dir={runs / 'cache'}",
        f"teacher.model={tiny_model}",
        f"train.student={tiny_model}",
        "task.max_train=12",
        "task.max_eval=8",
        "generate.n=2",
        "generate.sampling.max_tokens=24",
    ]
    r = run_cli("generate", *overrides)
    assert r.returncode == 0, r.stderr[-3000:]
    (stage_dir,) = [p.parent for p in (runs / "default" / "generate").glob("*/manifest.json")]
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    return {"overrides": overrides, "dir": stage_dir, "manifest": manifest, "runs": runs}


@pytest.fixture(scope="session")
def keyed_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real vLLM server over a copy of the tiny model, started with `--api-key`: a request
    without `Authorization: Bearer <key>` gets HTTP 401."""
    from pipeline.servers import ManagedServer, running

    tmp = tmp_path_factory.mktemp("keyed")
    model = tmp / "tiny-keyed"
    shutil.copytree(tiny_model, model)
    key = "sk-test-" + secrets.token_hex(12)
    server = ManagedServer(
        model_dir=model,
        served_name="tiny",
        log_path=tmp / "server.log",
        extra_args=["--api-key", key],
    )
    with running([server], 600):
        yield {"url": server.url, "key": key, "env": "DISTILL_TEST_KEY"}
