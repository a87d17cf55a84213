"""Two real `distill` processes on one run: the second is refused while the first works, names
it, and changes nothing; a kill -9 of the first frees the lock.

The first process is held inside its teacher call by FaultInjectingEndpoint in `hang` mode (a
FAKE endpoint: no real server can be made to hang on purpose), so the test needs no model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from fault_server import FaultInjectingEndpoint


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def test_second_process_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    with FaultInjectingEndpoint("http://127.0.0.1:9/v1", "hang", faults=10**6, hang_s=120) as fake:
        ov = [
            f"runs_dir={tmp_path / 'runs'}",
            f"cache_dir={tmp_path / 'cache'}",
            f"teacher.endpoint={fake.url}",
            "teacher.name=tiny",
            "task.max_train=3",
            "generate.n=1",
            "generate.request_timeout_s=120",
        ]
        first = subprocess.Popen(
            _cli("generate", *ov), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while fake.chat_requests == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert fake.chat_requests > 0, "the first process never asked the teacher"
            pool = next((tmp_path / "runs" / "default" / "generate").glob("*/"))
            before = sorted(p.name for p in pool.iterdir())

            second = subprocess.run(
                _cli("generate", "--force", *ov), cwd=ROOT, capture_output=True, text=True
            )
            assert second.returncode == 2 and "Traceback" not in second.stderr
            err = [x for x in second.stderr.splitlines() if x.startswith("error:")]
            assert len(err) == 1 and f"pid {first.pid}" in err[0], second.stderr
            assert "pipeline.cli generate" in err[0]  # the holder's command line
            assert sorted(p.name for p in pool.iterdir()) == before  # --force deleted nothing

            status = subprocess.run(_cli("status", *ov), cwd=ROOT, capture_output=True, text=True)
            assert status.returncode == 0 and "partial" in status.stdout
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        # The kill -9 released the lock with the process: the next run is not refused.
        third = subprocess.run(
            _cli("generate", *ov, "generate.retries=1", "generate.request_timeout_s=1"),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        # it asked, and the hung endpoint stopped it (exit 3: a rerun continues)
        assert "in use by" not in third.stderr and third.returncode == 3
        assert "did not answer" in third.stderr
