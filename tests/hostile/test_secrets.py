"""API keys reach the teacher and nowhere else.

A real vLLM server started with `--api-key` answers 401 to any request without the key, so a run
that finishes proves the key was sent on every request (`/models` included: the served name is
not given). Then every file under the run dir, and everything the run printed, is searched for the
key. A credential written into an endpoint URL (`http://user:password@host/v1`, the old
workaround) is checked the same way, through FaultInjectingEndpoint standing in for the
authenticating proxy such a URL points at (a FAKE only in that it forwards to the real server).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from fault_server import FaultInjectingEndpoint

pytestmark = pytest.mark.slow
PASSWORD = "pw-9f8e7d6c5b4a"


def distill(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
    )


def small(runs: Path, tiny_model: Path) -> list[str]:
    return [
        f"runs_dir={runs}",
        f"cache_dir={runs / 'cache'}",
        f"train.student={tiny_model}",
        "task.max_train=6",
        "task.max_eval=4",
        "generate.n=2",
        "generate.sampling.max_tokens=16",
        "filter.checks=[truncated]",  # a random tiny teacher is never right: keep what ends
        "filter.drop_truncated=false",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.validate=false",  # the student's validation asks nothing of the keyed endpoint
        "eval.sampling.max_tokens=16",
        "eval.models=[teacher, student]",  # the teacher at the endpoint, the student managed
    ]


def leaks(root: Path, output: str, secrets: list[str]) -> list[str]:
    found = [f"console: {s}" for s in secrets if s in output]
    for f in root.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            found += [f"{f}: {s}" for s in secrets if s.encode() in data]
    return found


def test_api_key_is_sent_everywhere_and_written_nowhere(keyed_server, tiny_model, tmp_path):
    runs = tmp_path / "runs"
    env = {keyed_server["env"]: keyed_server["key"]}
    ov = [
        *small(runs, tiny_model),
        f"teacher.endpoint={keyed_server['url']}",
        f"teacher.api_key_env={keyed_server['env']}",
    ]
    p = distill("run", *ov, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "eval: ran" in p.stdout
    assert leaks(runs, p.stdout + p.stderr, [keyed_server["key"]]) == []

    # Without the key the server refuses, and the message says what to set.
    p = distill("generate", *ov[:-1], "generate.n=3", env={})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "401" in err[0] and "teacher.api_key_env" in err[0], p.stderr


def test_credentials_in_a_url_are_used_and_redacted(keyed_server, tiny_model, tmp_path):
    runs = tmp_path / "runs"
    with FaultInjectingEndpoint(
        keyed_server["url"], "500", faults=1, upstream_key=keyed_server["key"]
    ) as proxy:
        url = proxy.url.replace("http://", f"http://me:{PASSWORD}@")
        p = distill("run", *small(runs, tiny_model), f"teacher.endpoint={url}", env={})
    assert p.returncode == 0, p.stderr[-4000:]
    assert any(a.startswith("Basic ") for a in proxy.seen_auth)  # the URL's credentials went out
    found = leaks(runs, p.stdout + p.stderr, [PASSWORD, keyed_server["key"]])
    assert found == []
    # The redacted URL is what the records show (the injected 500 was retried, and reported).
    samples = next(runs.glob("default/generate/*/samples.jsonl")).read_text()
    assert "me:***@127.0.0.1" in samples
