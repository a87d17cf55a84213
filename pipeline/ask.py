"""One way to serve and ask a model: `ask(spec, requests, on_done, on_fail, settings)`.

A `ModelSpec` says what to ask: a local model dir (started as managed vLLM servers, or run by
the offline engine in a child process) or the URLs of servers that already run, with the served name
and the environment variable that holds their API key. `ask` starts what must be started, sends
every request (balanced, retried, failed over), hands each completion or final failure to a
callback as it arrives, and stops what it started, on success, error, Ctrl-C or SIGTERM.
generate asks the teacher with it; eval asks the teacher and each student.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.calls import Completion, Failure, RaySpec, Request, ServeError
from pipeline.hardware import DtypeChoice, choose_dtype, detect
from pipeline.servers import ManagedServer, cpu_slices, running


@dataclass(frozen=True)
class ModelSpec:
    """A model to ask. `urls` empty: serve `model_dir` ourselves (servers, or offline)."""

    label: str  # what messages and progress bars call it: teacher, base, student...
    model_dir: Path | None = None
    urls: tuple[str, ...] = ()
    served_name: str = ""  # '' = the dir's name, or what the endpoints serve
    api_key_env: str = ""  # the variable holding the endpoints' key; never the key itself
    engine: Literal["server", "offline", "ray"] = "server"  # resolved: never "auto" here
    dtype: str = "auto"  # auto: the hardware's (pipeline/hardware.py), chosen when it starts
    max_model_len: int = 1024
    kv_cache_gib: float = 1.0
    server_args: tuple[str, ...] = ()
    chat_template: str = ""  # a template file for a model without one; '' = its own
    replicas: int = 1
    gpu_ids: tuple[str, ...] = ()
    startup_timeout_s: float = 600.0
    frontend_nice: int = 10
    # [open, close]: vLLM counts the trace between them and ends it at a request's
    # thinking_token_budget (for the models we start; () = no budget asked for)
    think_tags: tuple[str, ...] = ()
    # Soft labels: the most top-k logprobs a request may ask for (0 = vLLM's default, 20), and
    # what they are (vLLM's logprobs mode) on the engines we start
    max_logprobs: int = 0
    logprobs_mode: str = "raw_logprobs"
    # Per endpoint, at most this many calls / tokens in any 60 s (0 = no limit): a paid or
    # shared endpoint's quota, kept by the client (pipeline/ratelimit.py)
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    # the longest a call may wait for an answer (Retry-After, limits, a hung server) before
    # the stage stops, exit 3 (pipeline/client.py)
    max_wait_s: float = 900.0
    ray: RaySpec | None = None  # engine "ray": where its actors run
    # vLLM's --speculative-config, as JSON (a draft model for this one); servers we start only:
    # their /metrics counters say what the draft did (AskStats.spec_decode)
    speculative: str = ""


@dataclass(frozen=True)
class AskSettings:
    """How hard to push and how long to wait; none of it changes what comes back."""

    concurrency: int = 64  # samples in flight
    retries: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 900.0


@dataclass
class AskStats:
    engine: str
    seconds: float = 0.0  # asking only: server start-up and engine load excluded
    retries: int = 0
    failovers: int = 0
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    spec_decode: dict[str, Any] | None = None  # a speculative spec's counters, summed
    dtype: DtypeChoice | None = None  # what the engines we started run in (None: not ours)
    dtypes: dict[str, str] = field(default_factory=dict)  # several models asked: by label

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine": self.engine}
        if self.dtype is not None:
            out |= self.dtype.as_dict()
        if self.engine == "server":
            out |= {"retries": self.retries, "failovers": self.failovers}
            out["endpoints"] = self.endpoints
        return out


def settings_from(section: Any) -> AskSettings:
    """AskSettings from a config section with the asking knobs (generate, eval)."""
    return AskSettings(
        concurrency=section.concurrency,
        retries=section.retries,
        backoff_s=section.backoff_s,
        timeout_s=section.request_timeout_s,
    )


def spec_from(section: Any, label: str, model_dir: Path | None, **extra: Any) -> ModelSpec:
    """A ModelSpec from a config section that has the serving fields (teacher.serve,
    eval.serve), with `engine: auto` resolved."""
    fields = {
        name: getattr(section, name)
        for name in ("dtype", "max_model_len", "kv_cache_gib", "replicas")
        + ("startup_timeout_s", "frontend_nice")
    }
    fields |= {
        "server_args": tuple(section.server_args),
        "gpu_ids": tuple(section.gpu_ids),
        "requests_per_minute": max(0, section.max_requests_per_minute),
        "tokens_per_minute": max(0, section.max_tokens_per_minute),
        "max_wait_s": section.max_wait_s,
    }
    if section.engine == "ray":
        r = section.ray
        fields["ray"] = RaySpec(r.address, r.cpus_per_replica, r.gpus_per_replica, r.chunk)
    fields |= extra
    fields["engine"] = resolve_engine(
        section.engine,
        bool(fields.get("urls")),
        fields["replicas"],
        fields["gpu_ids"],
        fields["server_args"],
    )
    return ModelSpec(label=label, model_dir=model_dir, **fields)


def resolve_engine(
    engine: str, urls: bool, replicas: int, gpu_ids: tuple[str, ...], server_args: tuple[str, ...]
) -> Literal["server", "offline", "ray"]:
    """`auto` is the offline engine unless something only servers do is asked for: endpoints to
    call, several replicas, GPUs per replica, or server command-line args."""
    if engine in ("offline", "ray"):
        return engine  # type: ignore[return-value]
    if engine == "server" or urls or replicas > 1 or gpu_ids or server_args:
        return "server"
    return "offline"


def api_key(spec: ModelSpec) -> str:
    """The key from `spec.api_key_env`, '' without one; a set name with no value is an error."""
    if not spec.api_key_env:
        return ""
    key = os.environ.get(spec.api_key_env, "").strip()
    if not key:
        raise ServeError(
            f"teacher.api_key_env: environment variable {spec.api_key_env} is not set (or "
            "empty); export the key there"
        )
    return key


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so what was started is stopped by the finally blocks;
    SIGUSR1 too: Slurm sends it before a time limit or a preemption (`--signal`), and a task
    that is requeued resumes from what was written."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    olds = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, old in olds.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def managed(spec: ModelSpec, name: str, log_dir: Path) -> Iterator[list[str]]:
    """Start `spec.replicas` vLLM servers for `spec.model_dir`, yield their URLs, stop them."""
    assert spec.model_dir is not None
    cpus = [] if spec.gpu_ids else cpu_slices(spec.replicas)
    servers = [
        ManagedServer(
            model_dir=spec.model_dir,
            served_name=name,
            log_path=log_dir / f"server-{i}.log",
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            kv_cache_gib=spec.kv_cache_gib,
            extra_args=list(spec.server_args)
            + (["--chat-template", spec.chat_template] if spec.chat_template else [])
            + _reasoning_args(spec)
            + _logprobs_args(spec)
            + (["--speculative-config", spec.speculative] if spec.speculative else []),
            gpu_ids=spec.gpu_ids[i] if spec.gpu_ids else "",
            cpu_ids=cpus[i] if cpus else "",
            frontend_nice=spec.frontend_nice,
        )
        for i in range(spec.replicas)
    ]
    print(f"{spec.label}: starting {len(servers)} vLLM server(s) for {spec.model_dir} ...")
    started = time.monotonic()
    with running(servers, spec.startup_timeout_s):
        print(f"{spec.label}: vLLM ready in {time.monotonic() - started:.1f}s", flush=True)
        yield [s.url for s in servers]


def _logprobs_args(spec: ModelSpec) -> list[str]:
    if not spec.max_logprobs:
        return []
    return ["--max-logprobs", str(spec.max_logprobs), "--logprobs-mode", spec.logprobs_mode]


def _reasoning_args(spec: ModelSpec) -> list[str]:
    """Server flags for a trace budget, unless the server args already name a parser."""
    if not spec.think_tags or any(a.startswith("--reasoning") for a in spec.server_args):
        return []
    tags = {"reasoning_start_str": spec.think_tags[0], "reasoning_end_str": spec.think_tags[1]}
    return ["--reasoning-config", json.dumps(tags)]


def ask(
    spec: ModelSpec,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    on_fail: Callable[[Failure], None],
    settings: AskSettings,
    log_dir: Path,
    on_ready: Callable[[], None] | None = None,
    more: Callable[[], list[Request]] | None = None,
) -> AskStats:
    """Serve `spec` if it is local, send every request, stop what was started.

    `on_ready` is called once the model answers (servers healthy, engine loaded), so a caller's
    progress bar and rate leave start-up out; so does `AskStats.seconds`. `more`, called once
    every request has been answered, gives the next round to send to the same servers or
    engine ([] ends it): adaptive sampling starts a model once for all its rounds."""
    key = api_key(spec)  # a missing key fails here, before anything starts
    clock = _Clock(on_ready)
    choice = served_dtype(spec)
    if choice is not None:
        spec = dataclasses.replace(spec, dtype=choice.dtype)
    with sigterm_as_interrupt():
        if spec.engine == "ray":
            from pipeline.rayengine import ask_ray

            assert spec.ray is not None
            ask_ray(
                spec.ray,
                _engine_args(spec, settings),
                requests,
                on_done,
                log_dir,
                spec.kv_cache_gib,
                spec.replicas,
                spec.label,
                clock.ready,
                more,
            )
            return AskStats("ray", clock.seconds(), dtype=choice)
        if spec.engine == "offline":
            from pipeline.offline import generate_offline

            generate_offline(
                _engine_args(spec, settings),
                requests,
                on_done,
                log_path=log_dir / "engine.log",
                kv_cache_gib=spec.kv_cache_gib,
                startup_timeout_s=spec.startup_timeout_s,
                who=spec.label,
                on_ready=clock.ready,
                more=more,
            )
            return AskStats("offline", clock.seconds(), dtype=choice)
        stats = _ask_servers(spec, requests, on_done, on_fail, settings, log_dir, key, clock, more)
        stats.dtype = choice
        return stats


def served_dtype(spec: ModelSpec) -> DtypeChoice | None:
    """The dtype of the engines `ask` starts for `spec`, chosen by this machine's hardware and
    said in one line (with a warning for bf16 that will be emulated); None where the engines are
    not ours to start here: endpoints someone else runs, or Ray actors on a cluster's nodes (each
    engine there chooses for its own node, pipeline/offline.py)."""
    if spec.urls or spec.model_dir is None:
        return None
    if spec.engine == "ray" and spec.ray is not None and spec.ray.address:
        return None
    gpu = not (spec.engine == "ray" and spec.ray is not None and not spec.ray.gpus)
    choice = choose_dtype(spec.dtype, detect(gpu))
    print(f"{spec.label}: {choice.dtype} ({choice.why})", flush=True)
    if choice.warning:
        print(f"{spec.label}: warning: {choice.warning}; set serve.dtype: auto", flush=True)
    return choice


def _engine_args(spec: ModelSpec, settings: AskSettings) -> Any:
    """The offline engine's arguments (the offline engine, and each Ray engine actor's)."""
    from pipeline.offline import EngineArgs

    assert spec.model_dir is not None
    return EngineArgs(
        str(spec.model_dir),
        spec.dtype,
        spec.max_model_len,
        settings.concurrency,
        spec.chat_template,
        list(spec.think_tags),
        spec.max_logprobs,
        spec.logprobs_mode,
    )


@dataclass
class _Clock:
    """Times the asking only: it starts when the model is ready."""

    on_ready: Callable[[], None] | None
    t0: float = field(default_factory=time.monotonic)

    def ready(self) -> None:
        self.t0 = time.monotonic()
        if self.on_ready is not None:
            self.on_ready()

    def seconds(self) -> float:
        return time.monotonic() - self.t0


def _ask_servers(
    spec: ModelSpec,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    on_fail: Callable[[Failure], None],
    settings: AskSettings,
    log_dir: Path,
    key: str,
    clock: _Clock,
    more: Callable[[], list[Request]] | None = None,
) -> AskStats:
    from pipeline import client  # aiohttp: only when something is asked

    stats = AskStats("server")

    with contextlib.ExitStack() as stack:
        urls = list(spec.urls)
        if urls:
            name = spec.served_name or client.served_name(urls, key, who=spec.label)
        else:
            assert spec.model_dir is not None
            name = spec.served_name or spec.model_dir.name
            urls = stack.enter_context(managed(spec, name, log_dir))
        clock.ready()
        while requests:
            bal = client.send(
                urls,
                name,
                requests,
                on_done,
                on_fail,
                concurrency=settings.concurrency,
                retries=settings.retries,
                backoff_s=settings.backoff_s,
                timeout_s=settings.timeout_s,
                api_key=key,
                who=spec.label,
                requests_per_minute=spec.requests_per_minute,
                tokens_per_minute=spec.tokens_per_minute,
                max_wait_s=spec.max_wait_s,
            )
            stats.retries += bal.retries
            stats.failovers += bal.failovers
            for url, counts in bal.stats().items():
                into = stats.endpoints.setdefault(url, {})
                for k, v in counts.items():
                    summed = isinstance(v, int) and not isinstance(v, bool)
                    into[k] = into.get(k, 0) + v if summed else v
            requests = more() if more is not None else []
        stats.seconds = clock.seconds()  # before the servers stop
        if spec.speculative and not spec.urls:
            stats.spec_decode = client.spec_decode_counts(urls)
    return stats
