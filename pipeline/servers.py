"""Managed vLLM servers: start them on free loopback ports, wait until healthy, always stop them.

A managed server dies with the pipeline even when the pipeline is killed with -9
(PR_SET_PDEATHSIG), so a rerun never finds an orphan holding memory and a port.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.calls import ServeError
from pipeline.hardware import concrete
from pipeline.ports import free_port

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in the child before exec: SIGTERM it when the pipeline dies, even by kill -9."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class ManagedServer:
    model_dir: Path
    served_name: str
    log_path: Path
    dtype: str = "auto"  # auto: this machine's choice (pipeline/hardware.py)
    max_model_len: int = 1024
    kv_cache_gib: float = 1.0
    extra_args: list[str] = field(default_factory=list)
    gpu_ids: str = ""
    cpu_ids: str = ""  # CPU engine: bind its OpenMP threads to these cores (e.g. "0-3")
    frontend_nice: int = 0  # CPU engine: the API server's nice once healthy (see lower_frontend)
    port: int = 0
    proc: subprocess.Popen | None = None
    stopped: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.port = self.port or free_port()
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.kv_cache_gib))))
        env.setdefault("VLLM_HOST_IP", "127.0.0.1")
        if self.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu_ids
        elif self.cpu_ids and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            # Each CPU engine gets its own cores, all of them for one replica (cpu_slices says
            # why); an explicit binding in the user's environment wins. GPU builds ignore it.
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_ids
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            concrete(self.dtype),  # vLLM's own auto would be the checkpoint's dtype
            "--max-model-len",
            str(self.max_model_len),
            "--enforce-eager",
            "--disable-uvicorn-access-log",
            # vllm-cpu 0.32 crashes a seeded request whose prefill is chunked ("CPU Generator
            # does not use offset"); whole prefills keep per-sample seeds, so samples repeat.
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(max(self.max_model_len, 8192)),
            # A CPU server defaults to 128 sequences a step, vllm.LLM to 256: half the batch,
            # half the tokens per step. GPU servers already match their offline default.
            *([] if self.gpu_ids else ["--max-num-seqs", "256"]),
            *self.extra_args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        # Own session: stop() can signal the server and its engine workers as one group.
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()

    def wait_healthy(self, timeout_s: float) -> None:
        import httpx  # here, not at the top: `distill status` imports the stages, never this

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()  # the engine workers it may have left behind
                raise ServeError(
                    f"vLLM server for {self.model_dir} exited with code {self.proc.returncode} "
                    f"while starting; last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    self.lower_frontend()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ServeError(
            f"vLLM server for {self.model_dir} not healthy after {timeout_s:.0f}s; "
            f"see {self.log_path}"
        )

    def lower_frontend(self) -> None:
        """Renice the API server process (every thread; not its engine children).

        On a CPU host the engine's scheduler process shares the cores left over from the model
        workers with the API server. Whenever the API server's request handling and
        detokenizing hold that core, the scheduler's next step waits, and the model workers idle.
        A nicer API server lets the scheduler go first; its own work only fills the gaps.
        Threads it starts later inherit the value.
        """
        if self.gpu_ids or not self.frontend_nice or self.proc is None:
            return
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(tid), self.frontend_nice)
        except OSError:
            pass  # no /proc, or the thread already ended: only a speed-up is lost

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None or self.stopped:
            return
        self.stopped = True  # once: the group's id could be another's after a long while
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # Workers that outlived their server, also one that died while starting: same session
        # id, so kill the group for good.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cpu_slices(replicas: int) -> list[str]:
    """Core sets, one per CPU replica, for VLLM_CPU_OMP_THREADS_BIND.

    One replica gets every physical core. vLLM's `auto` binding keeps one core back for the API
    server and engine-core process; on this 2-core machine that halves the model's cores, and
    generation took 1.77x as long (default generate stage, 155 s against 88 s). The API server
    is reniced once healthy (`frontend_nice`), so its little work fits between the model's.

    Several replicas split whole physical cores evenly (one logical CPU each, as `auto` picks on
    x86), because `auto` would give every engine the same cores to time-share; a slice of two or
    more keeps its last core back, unbound, for that replica's API server and engine core.
    Empty (keep `auto`) when there are fewer cores than replicas.
    """
    if not hasattr(os, "sched_getaffinity"):
        return []
    ids = physical_cores()
    if len(ids) < replicas:
        return []
    if replicas <= 1:
        return [",".join(map(str, ids))]
    per, extra = divmod(len(ids), replicas)
    out, start = [], 0
    for i in range(replicas):
        part = ids[start : start + per + (i < extra)]
        start += len(part)
        if len(part) > 1:
            part = part[:-1]
        out.append(",".join(map(str, part)))
    return out


def physical_cores() -> list[int]:
    """The first allowed logical CPU of each physical core."""
    cores: dict[tuple[str, str], int] = {}
    for cpu in sorted(os.sched_getaffinity(0)):
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            core = (
                (topo / "physical_package_id").read_text().strip(),
                (topo / "core_id").read_text().strip(),
            )
        except OSError:
            core = ("", str(cpu))
        cores.setdefault(core, cpu)
    return sorted(cores.values())


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def running(servers: list[ManagedServer], timeout_s: float) -> Iterator[list[ManagedServer]]:
    """Start all servers (their loading overlaps), wait until each is healthy, always stop all."""
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_healthy(timeout_s)
        yield servers
    finally:
        for s in servers:
            s.stop()
