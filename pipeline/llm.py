"""vLLM teachers: managed OpenAI-compatible servers, external endpoints, the offline engine.

One client for all of them: `generate_all(requests, on_done)` sends every request, balanced by
outstanding count across live endpoints, retrying transient faults with backoff, and calls
`on_done` as each completion arrives so the caller can append it to disk at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from pipeline.config import TeacherConfig
from pipeline.errors import UserError
from pipeline.redact import redact_text, redact_url


class TeacherError(UserError, RuntimeError):
    """The teacher could not be reached or started; the message says what to do."""


@dataclass
class Request:
    """One call for `len(ids)` samples of one prompt (the API's `n`).

    With a `seed`, vLLM seeds the k-th sample of a call with seed + k, so a sample's text does
    not depend on how samples are grouped into calls.
    """

    ids: list[str]
    messages: list[dict[str, str]]
    sampling: dict[str, Any]  # temperature, top_p, max_tokens, seed, stop

    @property
    def id(self) -> str:
        """The first sample's id: the only one for a single-sample request."""
        return self.ids[0]

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass
class Completion:
    id: str
    text: str
    finish_reason: str
    usage: dict[str, int]
    endpoint: str


@dataclass
class Failure:
    id: str
    reason: str
    attempts: int


# --- managed server ------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the child before exec: SIGTERM it when the pipeline dies, even by kill -9."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ManagedServer:
    model_dir: Path
    served_name: str
    log_path: Path
    dtype: str = "bfloat16"
    max_model_len: int = 1024
    kv_cache_gib: float = 1.0
    extra_args: list[str] = field(default_factory=list)
    gpu_ids: str = ""
    cpu_ids: str = ""  # CPU engine: bind its OpenMP threads to these cores (e.g. "0-3")
    frontend_nice: int = 0  # CPU engine: the API server's nice once healthy (see lower_frontend)
    port: int = 0
    proc: subprocess.Popen | None = None

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
            # Replicas on one host: each CPU engine gets its own cores (an explicit binding
            # in the user's environment wins). GPU builds ignore this variable.
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
            self.dtype,
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
            preexec_fn=_die_with_parent,
        )
        log.close()

    def wait_healthy(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TeacherError(
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
        raise TeacherError(
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
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        # Workers that outlived their server: same session id, so kill the group for good.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cpu_slices(replicas: int) -> list[str]:
    """Disjoint core sets, one per CPU replica, for VLLM_CPU_OMP_THREADS_BIND.

    vLLM's `auto` binding gives every engine the same cores (all allowed physical cores of
    NUMA node 0, less one reserved for the scheduler), so replicas on one host would time-share
    them. Whole physical cores are split evenly (one logical CPU each, as `auto` picks on x86)
    and, as `auto` does, a slice of two or more cores keeps its last core back, unbound, for
    that replica's API server and engine-core process. Empty (keep `auto`) for one replica, or
    when there are fewer cores than replicas.
    """
    if replicas <= 1 or not hasattr(os, "sched_getaffinity"):
        return []
    allowed = sorted(os.sched_getaffinity(0))
    cores: dict[tuple[str, str], int] = {}
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            core = (
                (topo / "physical_package_id").read_text().strip(),
                (topo / "core_id").read_text().strip(),
            )
        except OSError:
            core = ("", str(cpu))
        cores.setdefault(core, cpu)  # first logical CPU of each physical core
    ids = sorted(cores.values())
    if len(ids) < replicas:
        return []
    per, extra = divmod(len(ids), replicas)
    out, start = [], 0
    for i in range(replicas):
        part = ids[start : start + per + (i < extra)]
        start += len(part)
        if len(part) > 1:
            part = part[:-1]
        out.append(",".join(map(str, part)))
    return out


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so managed servers are stopped by the finally blocks."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def managed_servers(
    model_dir: Path, name: str, log_dir: Path, t: TeacherConfig
) -> Iterator[list[str]]:
    """Start `t.replicas` vLLM servers for a local model, yield their URLs, always stop them."""
    replicas = max(1, t.replicas)
    cpus = [] if t.gpu_ids else cpu_slices(replicas)
    servers = [
        ManagedServer(
            model_dir=model_dir,
            served_name=name,
            log_path=log_dir / f"server-{i}.log",
            dtype=t.dtype,
            max_model_len=t.max_model_len,
            kv_cache_gib=t.kv_cache_gib,
            extra_args=list(t.server_args),
            gpu_ids=t.gpu_ids[i] if i < len(t.gpu_ids) else "",
            cpu_ids=cpus[i] if cpus else "",
            frontend_nice=t.frontend_nice,
        )
        for i in range(replicas)
    ]
    print(f"starting {len(servers)} vLLM server(s) for {model_dir} ...", flush=True)
    started = time.monotonic()
    with running(servers, t.startup_timeout_s):
        print(f"vLLM ready in {time.monotonic() - started:.1f}s", flush=True)
        yield [s.url for s in servers]


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


# --- async client ------------------------------------------------------------------------------

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class Endpoint:
    url: str  # as given, credentials included: used only to connect
    model: str
    label: str = ""  # the URL redacted: what records, stats and messages show
    outstanding: int = 0
    alive: bool = True
    consecutive_failures: int = 0
    served: int = 0
    failures: int = 0
    tokens: int = 0


@dataclass
class ClientStats:
    retries: int = 0
    failovers: int = 0
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)


class HTTPStatusError(RuntimeError):
    """A non-200 answer from a teacher endpoint."""

    def __init__(self, status: int, text: str):
        hint = ""
        if status in (401, 403):
            hint = " (the endpoint wants an API key: name its variable in teacher.api_key_env)"
        super().__init__(f"HTTP {status}: {text[:200]}{hint}")
        self.status = status


async def _post(
    client: aiohttp.ClientSession, ep: Endpoint, req: Request, timeout_s: float
) -> list[Completion]:
    """One chat call; the session carries the Authorization header when a key is set."""
    body: dict[str, Any] = {"model": ep.model, "messages": req.messages, "n": req.n, **req.sampling}
    if req.n > 1:
        body["return_token_ids"] = True  # vLLM: per-sample token counts (usage sums them)
    # As httpx's timeout did: connecting, and each wait for response bytes, get timeout_s.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    async with client.post(f"{ep.url}/chat/completions", json=body, timeout=timeout) as r:
        raw = await r.read()
    if r.status != 200:
        raise HTTPStatusError(r.status, raw.decode(errors="replace"))
    data = json.loads(raw)
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if len(choices) != req.n:
        raise ValueError(f"asked for {req.n} samples, got {len(choices)}")
    usage = data.get("usage") or {}
    total = int(usage.get("completion_tokens", 0))
    out = []
    for k, choice in enumerate(choices):
        if "token_ids" in choice and choice["token_ids"] is not None:
            tokens = len(choice["token_ids"])
        else:  # a server without per-choice ids: an even share of the summed usage
            tokens = total // req.n + (k < total % req.n)
        out.append(
            Completion(
                id=req.ids[k],
                text=choice["message"].get("content") or "",
                finish_reason=choice.get("finish_reason") or "unknown",
                usage={
                    "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                    "completion_tokens": tokens,
                },
                endpoint=ep.label,
            )
        )
    return out


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, HTTPStatusError):
        return exc.status in RETRYABLE_STATUS
    # Connection refused/reset/dropped, timeouts, truncated or malformed bodies.
    return isinstance(exc, (aiohttp.ClientError, TimeoutError, KeyError, ValueError))


async def _run_all(
    endpoints: list[Endpoint],
    requests: list[Request],
    on_done: Callable[[Completion], None],
    on_fail: Callable[[Failure], None],
    *,
    concurrency: int,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    stats: ClientStats,
    api_key: str,
) -> None:
    limit = max(1, concurrency)
    in_flight = 0  # samples, not calls: the server batches sequences
    room = asyncio.Condition()
    dead_after = max(3, retries)

    def fits(n: int) -> bool:
        return in_flight == 0 or in_flight + n <= limit

    def pick(avoid: str | None) -> Endpoint | None:
        live = [e for e in endpoints if e.alive]
        if not live:
            return None
        pool = [e for e in live if e.url != avoid] or live
        # Least outstanding first: a replica slowed by long reasoning outputs is asked less.
        return min(pool, key=lambda e: (e.outstanding, e.served))

    async def one(client: aiohttp.ClientSession, req: Request) -> None:
        nonlocal in_flight
        try:
            await attempts(client, req)
        finally:
            async with room:
                in_flight -= req.n
                room.notify()

    async def attempts(client: aiohttp.ClientSession, req: Request) -> None:
        last_err = ""
        avoid = None
        for attempt in range(1, retries + 1):
            ep = pick(avoid)
            if ep is None:
                break
            ep.outstanding += req.n
            try:
                comps = await _post(client, ep, req, timeout_s)
            except Exception as exc:  # noqa: BLE001 - classified below
                ep.outstanding -= req.n
                ep.failures += 1
                # Exceptions may quote the URL, credentials and all.
                last_err = redact_text(f"{ep.label}: {type(exc).__name__}: {exc}", (api_key,))
                last_err = last_err[:300]
                if not _is_retryable(exc):
                    break
                ep.consecutive_failures += 1
                others_alive = any(e.alive for e in endpoints if e is not ep)
                # Never the last live one: with nowhere to send the work, every pending
                # request would fail at once instead of using its own retries.
                if ep.consecutive_failures >= dead_after and ep.alive and others_alive:
                    ep.alive = False  # out of rotation; its work goes elsewhere
                    stats.failovers += 1
                    print(
                        f"teacher endpoint {ep.label} taken out of rotation: {last_err}",
                        file=sys.stderr,
                        flush=True,
                    )
                avoid = ep.url
                stats.retries += 1
                delay = backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
                await asyncio.sleep(min(delay, 30.0))
                continue
            ep.outstanding -= req.n
            ep.consecutive_failures = 0
            ep.served += len(comps)
            for c in comps:
                ep.tokens += c.usage.get("completion_tokens", 0)
                on_done(c)
            return
        for sid in req.ids:
            on_fail(Failure(sid, last_err or "no live teacher endpoint", attempt))

    # aiohttp, not httpx: httpx's async pool cost ~5 ms of client CPU per request, enough to
    # starve a CPU engine's scheduler and halve throughput (benchmarks/generate_throughput.py).
    # trust_env: proxy settings from the environment apply, as they did with httpx.
    connector = aiohttp.TCPConnector(limit=limit + 8, limit_per_host=0)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with aiohttp.ClientSession(
        connector=connector, trust_env=True, headers=headers
    ) as client:
        tasks = []
        try:
            # One dispatcher admits calls in order while their samples fit the limit (a call
            # larger than the limit goes alone), so one waiter is woken per finished call.
            for req in requests:
                async with room:
                    await room.wait_for(functools.partial(fits, req.n))
                    in_flight += req.n
                tasks.append(asyncio.create_task(one(client, req)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()


def generate_http(
    urls: list[str],
    model: str,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    on_fail: Callable[[Failure], None],
    *,
    concurrency: int,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    api_key: str = "",
) -> ClientStats:
    """Send every request; `api_key` goes only in the Authorization header, never in a record."""
    endpoints = [Endpoint(u.rstrip("/"), model, redact_url(u.rstrip("/"))) for u in urls]
    stats = ClientStats()
    asyncio.run(
        _run_all(
            endpoints,
            requests,
            on_done,
            on_fail,
            concurrency=concurrency,
            retries=retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
            stats=stats,
            api_key=api_key,
        )
    )
    stats.endpoints = {
        e.label: {"served": e.served, "failures": e.failures, "alive": e.alive, "tokens": e.tokens}
        for e in endpoints
    }
    return stats


def check_endpoint(url: str, timeout_s: float = 5.0, api_key: str = "") -> list[str]:
    """Served model names at an external endpoint, or a TeacherError naming it (redacted)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{url.rstrip('/')}/models", timeout=timeout_s, headers=headers)
        if r.status_code == 401:
            raise TeacherError(
                f"teacher endpoint {redact_url(url)} refused the request (HTTP 401): it needs "
                "an API key; set teacher.api_key_env to the variable that holds it"
            )
        r.raise_for_status()
        data = r.json().get("data", [])
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (httpx.HTTPError, ValueError, KeyError, AttributeError, TypeError) as e:
        why = redact_text(str(e), (api_key,))
        raise TeacherError(f"teacher endpoint {redact_url(url)} is not answering ({why})") from None


# --- offline engine ------------------------------------------------------------------------------


def generate_offline(
    model_dir: Path,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    *,
    dtype: str,
    max_model_len: int,
    seed: int,
    chunk: int,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """vllm.LLM in this process, in chunks so finished work reaches disk as it goes.

    Per-request seeds crash vllm-cpu 0.32 offline, so the engine gets one seed; samples are
    repeatable per run, not per request as with the server.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(model_dir),
        dtype=dtype,
        enforce_eager=True,
        max_model_len=max_model_len,
        seed=seed,
    )
    if on_ready is not None:
        on_ready()  # engine up: generation starts now
    for part in _chunks(requests, max(1, chunk)):
        params = [
            SamplingParams(
                n=r.n,
                temperature=r.sampling["temperature"],
                top_p=r.sampling["top_p"],
                max_tokens=r.sampling["max_tokens"],
                stop=r.sampling.get("stop") or None,
            )
            for r in part
        ]
        outs = llm.chat([r.messages for r in part], params, use_tqdm=False)
        for r, o in zip(part, outs, strict=True):
            for sid, c in zip(r.ids, sorted(o.outputs, key=lambda c: c.index), strict=True):
                on_done(
                    Completion(
                        id=sid,
                        text=c.text,
                        finish_reason=c.finish_reason or "unknown",
                        usage={
                            "prompt_tokens": len(o.prompt_token_ids or []),
                            "completion_tokens": len(c.token_ids),
                        },
                        endpoint="offline",
                    )
                )


def _chunks(requests: list[Request], samples: int) -> Iterator[list[Request]]:
    """Consecutive requests, about `samples` samples a chunk (a larger request goes alone)."""
    part: list[Request] = []
    size = 0
    for r in requests:
        if part and size + r.n > samples:
            yield part
            part, size = [], 0
        part.append(r)
        size += r.n
    if part:
        yield part
