"""Managed vLLM servers (pipeline/servers.py) on their own, in seconds: the command line and
environment a server is started with, its session and death signal, its log, the wait until
/health answers (late, failing, hanging, or a server that exits), the renice of its frontend,
stop (politely, then by force, the whole process group) and `running`, which starts every
server before waiting on any and stops them all; also the core slices of several CPU replicas
and the tail of a log.

What runs is the real `python -m vllm.entrypoints.openai.api_server ...` of `ManagedServer`,
except that PYTHONPATH puts a FAKE `vllm.entrypoints.openai.api_server` first: it records what
it was started with, answers /health as a test tells it (a 500, a hang, an exit while starting:
what a real server does not show on demand) and starts a stand-in engine worker (`sleep`,
deaf to SIGTERM) in its process group. Real vLLM servers are started through this module by the generate,
replica, train and e2e tests (and conftest's keyed_server)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import servers
from pipeline.calls import ServeError
from pipeline.hardware import concrete
from pipeline.ports import free_port
from pipeline.servers import ManagedServer, cpu_slices, physical_cores, running, tail

ENV_KEYS = (
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_HOST_IP",
    "CUDA_VISIBLE_DEVICES",
    "VLLM_CPU_OMP_THREADS_BIND",
)

# The FAKE api_server. Its options after the pipeline's own: --fake-mode (ok: healthy; 500:
# /health fails; hang: /health never answers; exit: exits with code 3 while starting;
# crash: starts its worker, then exits with code 3 before it listens; stubborn: ignores SIGTERM), --fake-delay (seconds before it listens), --fake-record (where it
# writes what it was started with; each /health request it gets is a line of RECORD.hits).
FAKE_API_SERVER = f'''
"""FAKE vllm.entrypoints.openai.api_server, written by tests/pipeline/test_servers.py."""
import ctypes, http.server, json, os, signal, subprocess, sys, time

started_at = time.time()


def opt(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


mode, rec = opt("--fake-mode", "ok"), opt("--fake-record")
pdeathsig = ctypes.c_int(0)
ctypes.CDLL("libc.so.6").prctl(2, ctypes.byref(pdeathsig))  # PR_GET_PDEATHSIG
print("fake api_server: to stdout", flush=True)
print("fake api_server: to stderr", file=sys.stderr, flush=True)
if mode == "exit":
    for i in range(20):
        print(f"fake api_server: loading step {{i}}", flush=True)
    sys.exit(3)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
# An engine worker in the server's group that outlives SIGTERM: only the group's kill ends it.
worker = subprocess.Popen(
    ["sleep", "300"], preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)
)
time.sleep(float(opt("--fake-delay", "0")))
record = {{
    "executable": sys.executable,
    "module": __spec__.name,
    "argv": sys.argv[1:],
    "env": {{k: os.environ.get(k) for k in {ENV_KEYS!r}}},
    "own_session": os.getsid(0) == os.getpid(),
    "pdeathsig": pdeathsig.value,
    "worker": worker.pid,
    "started_at": started_at,
    "listening_at": time.time(),
}}


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(rec + ".hits", "a") as f:
            f.write(self.path + "\\n")
        if mode == "hang":
            time.sleep(300)
        self.send_response(500 if mode == "500" else 200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


if mode == "crash":
    with open(rec, "w") as f:
        json.dump(record, f)
    sys.exit(3)  # its worker, deaf to SIGTERM, is left behind in the group
server = http.server.HTTPServer(("127.0.0.1", int(opt("--port"))), Health)
with open(rec + ".tmp", "w") as f:
    json.dump(record, f)
os.replace(rec + ".tmp", rec)
server.serve_forever()
'''

Make = Callable[..., ManagedServer]


@pytest.fixture(scope="module")
def fake_vllm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the FAKE vllm.entrypoints.openai.api_server (and empty parents)."""
    root = tmp_path_factory.mktemp("fake-vllm")
    pkg = root / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (root / "vllm", root / "vllm" / "entrypoints", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_API_SERVER)
    return root


@pytest.fixture
def make(fake_vllm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Make]:
    """Servers over the FAKE api_server, none of the engine's variables set by the user; every
    server made is stopped at the end."""
    monkeypatch.setenv("PYTHONPATH", str(fake_vllm))
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    made: list[ManagedServer] = []

    def new(mode: str = "ok", name: str = "tiny", delay: float = 0.0, **kw: Any) -> ManagedServer:
        kw.setdefault("log_path", tmp_path / f"{name}.log")
        server = ManagedServer(model_dir=tmp_path / "model", served_name=name, **kw)
        fake = ["--fake-mode", mode, "--fake-delay", str(delay)]
        server.extra_args = [*server.extra_args, *fake, "--fake-record", str(tmp_path / name)]
        made.append(server)
        return server

    yield new
    for server in made:
        server.stop(grace_s=2)


def _record(server: ManagedServer) -> dict:
    return json.loads(Path(server.extra_args[-1]).read_text())


def _health_hits(server: ManagedServer) -> list[str]:
    hits = Path(server.extra_args[-1] + ".hits")
    return hits.read_text().split() if hits.exists() else []


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether process `pid` has ended (a zombie counts: nothing here reaps an orphan)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_a_cpu_server_runs_vllms_api_server_with_the_pipelines_flags(
    make: Make, tmp_path: Path
) -> None:
    """vLLM's own `auto` would be the checkpoint's dtype: the flag carries this machine's; the
    batch is at least 8192 tokens, whole prefills, and a CPU server takes 256 sequences."""
    server = make(kv_cache_gib=2.6, cpu_ids="0", log_path=tmp_path / "logs" / "deep" / "s.log")
    server.start()
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/v1"
    server.wait_healthy(60)
    got = _record(server)
    assert got["executable"] == sys.executable
    assert got["module"] == "vllm.entrypoints.openai.api_server"
    assert concrete("auto") in ("bfloat16", "float16", "float32")
    assert got["argv"] == [
        *("--model", str(tmp_path / "model"), "--served-model-name", "tiny"),
        *("--host", "127.0.0.1", "--port", str(server.port)),
        *("--dtype", concrete("auto"), "--max-model-len", "1024"),
        *("--enforce-eager", "--disable-uvicorn-access-log", "--no-enable-chunked-prefill"),
        *("--max-num-batched-tokens", "8192", "--max-num-seqs", "256"),
        *server.extra_args,  # the caller's, last: they win over the pipeline's
    ]
    assert got["env"] == {
        "VLLM_CPU_KVCACHE_SPACE": "3",  # GiB, rounded
        "VLLM_HOST_IP": "127.0.0.1",
        "CUDA_VISIBLE_DEVICES": None,
        "VLLM_CPU_OMP_THREADS_BIND": "0",
    }
    assert "fake api_server: to stdout" in (tmp_path / "logs" / "deep" / "s.log").read_text()


def test_a_gpu_server_gets_its_devices_and_no_cpu_settings(make: Make, tmp_path: Path) -> None:
    port = free_port()
    server = make(
        gpu_ids="1",
        cpu_ids="0",
        dtype="float16",
        max_model_len=16384,
        kv_cache_gib=0.2,
        port=port,
        extra_args=["--api-key", "k"],
    )
    server.start()
    server.wait_healthy(60)
    got = _record(server)
    assert server.port == port and f"--port {port} " in " ".join(got["argv"])
    assert got["argv"][got["argv"].index("--dtype") + 1] == "float16"  # an explicit dtype wins
    assert got["argv"][got["argv"].index("--max-num-batched-tokens") + 1] == "16384"
    assert "--max-num-seqs" not in got["argv"]  # a GPU server's default already matches
    assert got["argv"][-8:-6] == ["--api-key", "k"]  # the caller's, after the pipeline's
    assert got["env"] == {
        "VLLM_CPU_KVCACHE_SPACE": "1",  # never below 1 GiB
        "VLLM_HOST_IP": "127.0.0.1",
        "CUDA_VISIBLE_DEVICES": "1",
        "VLLM_CPU_OMP_THREADS_BIND": None,  # cpu_ids bind a CPU engine only
    }


def test_the_users_engine_variables_win(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make(kv_cache_gib=4, cpu_ids="0")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    monkeypatch.setenv("VLLM_HOST_IP", "10.1.2.3")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")
    server.start()
    server.wait_healthy(60)
    assert _record(server)["env"] == {
        "VLLM_CPU_KVCACHE_SPACE": "7",
        "VLLM_HOST_IP": "10.1.2.3",
        "CUDA_VISIBLE_DEVICES": None,
        "VLLM_CPU_OMP_THREADS_BIND": "1",
    }


def test_a_server_has_its_own_session_and_dies_with_the_pipeline(make: Make) -> None:
    """Its own session: stop() signals it and its workers as one group. SIGTERM on the
    pipeline's death (PR_SET_PDEATHSIG): no orphan holds memory and a port after kill -9."""
    server = make()
    server.start()
    server.wait_healthy(60)
    got = _record(server)
    assert got["own_session"] is True
    assert got["pdeathsig"] == signal.SIGTERM


def test_a_server_that_exits_while_starting_is_reported_with_its_log_tail(
    make: Make, tmp_path: Path
) -> None:
    log = tmp_path / "exit.log"
    log.write_text("an earlier run's line\n")
    server = make("exit", log_path=log)
    server.start()
    started = time.monotonic()
    with pytest.raises(ServeError) as err:
        server.wait_healthy(120)
    assert time.monotonic() - started < 60  # at the exit, not at the timeout
    msg = str(err.value)
    assert "exited with code 3 while starting" in msg and str(log) in msg
    steps = [line for line in msg.splitlines() if "loading step" in line]
    assert steps == [f"fake api_server: loading step {i}" for i in range(5, 20)]  # the last 15
    text = log.read_text()
    assert text.startswith("an earlier run's line\n")  # appended to, not truncated
    assert "fake api_server: to stderr" in text  # stderr joins stdout in the log


def test_a_server_that_dies_starting_takes_its_engine_workers_with_it(make: Make) -> None:
    """A server that exits while starting leaves its workers in its group; they are killed
    with it, by the failed wait and by a later stop() alike, not left holding cores."""
    server = make("crash")
    server.start()
    with pytest.raises(ServeError, match="exited with code 3 while starting"):
        server.wait_healthy(60)
    assert _gone(_record(server)["worker"])
    server.stop()  # again, as running() does: harmless


def test_a_server_whose_health_fails_is_stopped_and_reported(make: Make) -> None:
    server = make("500")
    server.start()
    with pytest.raises(ServeError, match=r"not healthy after 3s; see .*tiny\.log"):
        server.wait_healthy(3)
    assert "/health" in _health_hits(server)  # it was asked, and answered 500
    assert server.proc is not None and server.proc.returncode == -signal.SIGTERM
    assert _gone(_record(server)["worker"])


def test_a_health_check_that_hangs_does_not_hang_the_wait(make: Make) -> None:
    server = make("hang")
    server.start()
    started = time.monotonic()
    with pytest.raises(ServeError, match="not healthy after 3s"):
        server.wait_healthy(3)
    assert "/health" in _health_hits(server)  # the request that never got an answer
    assert time.monotonic() - started < 15  # each check gives up after 2 s
    assert server.proc is not None and server.proc.poll() is not None


def test_stop_asks_politely_then_kills_the_whole_group(make: Make) -> None:
    polite, stubborn = make(name="polite"), make("stubborn", name="stubborn")
    for server in (polite, stubborn):
        server.start()
        server.wait_healthy(60)
    polite.stop()
    assert polite.proc is not None and polite.proc.returncode == -signal.SIGTERM
    assert _gone(_record(polite)["worker"])
    started = time.monotonic()
    stubborn.stop(grace_s=0.5)
    assert time.monotonic() - started < 10
    assert stubborn.proc is not None and stubborn.proc.returncode == -signal.SIGKILL
    assert _gone(_record(stubborn)["worker"])
    stubborn.stop()  # stopping a stopped server is nothing


def test_stop_before_start_is_nothing(tmp_path: Path) -> None:
    server = ManagedServer(tmp_path / "model", "tiny", tmp_path / "never.log")
    server.stop()
    assert server.proc is None and not (tmp_path / "never.log").exists()


def test_the_frontend_is_reniced_but_not_its_engine_workers(make: Make) -> None:
    """On a CPU host the API server yields its core to the engine's scheduler; a GPU server
    keeps its priority."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    nicer = min(base + 3, 19)
    cpu, gpu = (
        make(name="cpu", frontend_nice=nicer),
        make(name="gpu", gpu_ids="0", frontend_nice=nicer),
    )
    for server in (cpu, gpu):
        server.start()
        server.wait_healthy(60)
    assert cpu.proc is not None and gpu.proc is not None
    threads = os.listdir(f"/proc/{cpu.proc.pid}/task")
    assert threads and {os.getpriority(os.PRIO_PROCESS, int(t)) for t in threads} == {nicer}
    assert os.getpriority(os.PRIO_PROCESS, _record(cpu)["worker"]) == base
    assert os.getpriority(os.PRIO_PROCESS, gpu.proc.pid) == base


def test_running_starts_every_server_before_waiting_and_stops_them_all(make: Make) -> None:
    """Their loading overlaps: the second starts while the first is still loading."""
    slow, fast = make(name="slow", delay=2.0), make(name="fast")
    with running([slow, fast], 60) as got:
        assert got == [slow, fast]
        assert _record(fast)["started_at"] < _record(slow)["listening_at"]
        workers = [_record(s)["worker"] for s in got]
    assert all(s.proc is not None and s.proc.returncode == -signal.SIGTERM for s in got)
    assert all(_gone(w) for w in workers)


def test_running_stops_the_healthy_servers_when_one_fails(make: Make) -> None:
    healthy, broken = make(name="healthy"), make("exit", name="broken")
    with pytest.raises(ServeError, match="exited with code 3"):
        with running([healthy, broken], 60):
            pytest.fail("the body must not run when a server did not start")
    assert healthy.proc is not None and healthy.proc.returncode == -signal.SIGTERM
    assert _gone(_record(healthy)["worker"])


def test_running_stops_the_servers_when_the_body_fails(make: Make) -> None:
    server = make()
    with pytest.raises(KeyError):
        with running([server], 60):
            raise KeyError("the stage failed")
    assert server.proc is not None and server.proc.returncode == -signal.SIGTERM


@pytest.mark.parametrize(
    ("cores", "replicas", "slices"),
    [
        (list(range(8)), 1, ["0,1,2,3,4,5,6,7"]),  # one replica: every core, none kept back
        (list(range(8)), 2, ["0,1,2", "4,5,6"]),  # each keeps its last core back
        (list(range(5)), 2, ["0,1", "3"]),  # the odd core goes to the first
        ([0, 2, 4], 3, ["0", "2", "4"]),  # a one-core slice keeps its core
        ([0, 1], 3, []),  # fewer cores than replicas: vLLM's auto binding
    ],
)
def test_cpu_slices_split_whole_cores(
    cores: list[int], replicas: int, slices: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cores are injected (FAKE physical_cores): this machine has too few to split."""
    monkeypatch.setattr(servers, "physical_cores", lambda: cores)
    assert cpu_slices(replicas) == slices


def test_physical_cores_take_one_logical_cpu_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FAKE /sys topology: CPUs 0-3 are two cores with a hyperthread each (0 and 2, 1 and 3),
    CPU 5 has no topology to read (its own core), CPU 4 is not allowed to this process."""
    for cpu, core in {0: "0", 1: "1", 2: "0", 3: "1", 4: "2"}.items():
        topo = tmp_path / f"sys/devices/system/cpu/cpu{cpu}/topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text("0\n")
        (topo / "core_id").write_text(f"{core}\n")
    monkeypatch.setattr(servers, "Path", lambda p: tmp_path / str(p).lstrip("/"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 2, 1, 0, 5})
    assert physical_cores() == [0, 1, 5]


def test_tail_gives_the_last_lines_and_never_fails(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(20)) + b"bad \xff byte\n")
    assert tail(log).splitlines() == [f"line {i}" for i in range(6, 20)] + ["bad \ufffd byte"]
    assert tail(log, lines=2) == "line 19\nbad \ufffd byte"
    assert tail(tmp_path / "missing.log") == ""
