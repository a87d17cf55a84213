"""engine: ray: the offline vLLM engine (pipeline/offline.py) inside Ray actors, one per
replica, on the cluster at serve.ray.address or on a local one this run starts and stops.

Ray schedules the actors (serve.ray.cpus_per_replica, gpus_per_replica); nothing here is a
scheduler. Each actor owns one offline engine child and answers one chunk of requests
(serve.ray.chunk) per call, as one round of that child's protocol. The driver keeps two chunks
queued per actor so an engine never waits for the next one, and hands every completion of a
chunk to `on_done` as soon as the chunk is back: the caller's log has it on disk before the
next chunk is decided, so a driver killed with -9 loses at most the chunks in flight, and a
rerun asks only for the rest. An actor that dies (its node gone, its engine crashed) is dropped
and its chunks go to the others; the asking fails only when no actor is left.

Ray's `ray.init` waits minutes for an address that does not answer, so the address is checked
with a plain TCP connect first and refused in one line. AskStats.seconds for this engine
includes the engines' start-up (an actor loads its engine with its first chunk).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.calls import Completion, RaySpec, Request, ServeError
from pipeline.errors import UserError
from pipeline.offline import EngineArgs, kill_engine, parse_message, spawn_engine, write_round

IN_FLIGHT = 2  # chunks queued per actor: one running, one waiting


class EngineActor:
    """One offline engine child, driven a round (chunk) per call. Run as a Ray actor."""

    def __init__(self, args: dict[str, Any], log_path: str, kv_cache_gib: float) -> None:
        self.args = EngineArgs(**args)
        self.log_path = Path(log_path)
        self.kv_cache_gib = kv_cache_gib
        self.proc: Any = None

    def run(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every completion of `requests`, or a ServeError naming the engine log."""
        if self.proc is None:
            self.proc = spawn_engine(self.args, self.log_path, self.kv_cache_gib)
        want = {sid for r in requests for sid in Request(**r).ids}
        write_round(self.proc.stdin, [Request(**r) for r in requests])
        out = []
        for raw in self.proc.stdout:
            msg = parse_message(raw, self.log_path)
            if msg.get("ready"):
                continue
            if msg.get("round_done"):
                break
            if msg.get("id") not in want:
                raise ServeError(f"the engine returned an unknown id {msg.get('id')!r}")
            out.append(msg)
        if len(out) != len(want):
            raise ServeError(
                f"the engine in a Ray actor stopped after {len(out)} of {len(want)} samples; "
                f"see {self.log_path} on {socket.gethostname()}"
            )
        return out

    def stop(self) -> None:
        if self.proc is not None:
            kill_engine(self.proc)
            self.proc = None


def check_address(address: str, who: str, timeout_s: float = 5.0) -> None:
    """A UserError unless something answers at `address` (host:port, or ray://host:port)."""
    if not address:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(
            f"{who}: serve.ray.address {address}: nothing answers there ({e.strerror or e}); start the "
            "Ray head (`ray start --head`) or set serve.ray.address: '' for a local cluster"
        ) from None


@contextlib.contextmanager
def cluster(spec: RaySpec, replicas: int, who: str) -> Iterator[Any]:
    """Ray, connected (or a local cluster started with room for every actor), then shut down
    if this run started it. Yields the ray module."""
    check_address(spec.address, who)
    import ray

    local = not spec.address
    ours = not ray.is_initialized()
    if ours:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if local:  # room for every actor, whatever the cores: Ray CPUs are reservations
            kwargs["num_cpus"] = max(os.cpu_count() or 1, spec.cpus * replicas)
            kwargs["num_gpus"] = spec.gpus * replicas
        ray.init(address=spec.address or None, **kwargs)
    try:
        have = ray.cluster_resources()
        for what, per in (("CPU", spec.cpus), ("GPU", spec.gpus)):
            if per and have.get(what, 0) < per:
                raise UserError(
                    f"the Ray cluster has {have.get(what, 0):g} {what}s, and each engine actor "
                    f"asks for {per:g} (serve.ray.{what.lower()}s_per_replica)"
                )
        yield ray
    finally:
        if ours:
            ray.shutdown()


def ask_ray(
    spec: RaySpec,
    args: EngineArgs,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    log_dir: Path,
    kv_cache_gib: float,
    replicas: int,
    who: str,
    on_ready: Callable[[], None],
    more: Callable[[], list[Request]] | None = None,
) -> None:
    """Run `requests` (then each round `more()` gives) on `replicas` engine actors. Long: the
    loop that keeps every live actor fed, requeues a dead one's chunks and ends the rounds is
    one piece of state."""
    with cluster(spec, replicas, who) as ray:
        remote = ray.remote(EngineActor)
        log_dir.mkdir(parents=True, exist_ok=True)
        actors = [
            remote.options(num_cpus=spec.cpus, num_gpus=spec.gpus, max_restarts=0).remote(
                asdict(args), str(log_dir.resolve() / f"engine-ray-{i}.log"), kv_cache_gib
            )
            for i in range(replicas)
        ]
        print(f"{who}: {replicas} vLLM engine actor(s) on Ray for {args.model_dir} ...", flush=True)
        on_ready()
        queue: deque[list[Request]] = deque(_chunks(requests, spec.chunk))
        pending: dict[Any, tuple[int, list[Request]]] = {}
        live = set(range(replicas))
        try:
            while True:
                for i in sorted(live):
                    while queue and sum(a == i for a, _ in pending.values()) < IN_FLIGHT:
                        chunk = queue.popleft()
                        ref = actors[i].run.remote([asdict(r) for r in chunk])
                        pending[ref] = (i, chunk)
                if not pending:
                    nxt = more() if more is not None else []
                    if not nxt:
                        break
                    queue.extend(_chunks(nxt, spec.chunk))
                    continue
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                i, chunk = pending.pop(ref)
                try:
                    got = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                    live.discard(i)
                    queue.appendleft(chunk)  # another actor answers it
                    if not live:
                        raise ServeError(
                            f"{who}: every Ray engine actor failed; the last: {_first_line(e)}; "
                            "what finished is kept, a rerun goes on from there"
                        ) from None
                    continue
                for msg in got:
                    on_done(Completion(**msg))
        finally:
            for a in actors:
                with contextlib.suppress(Exception):
                    ray.kill(a)


def _chunks(requests: list[Request], size: int) -> Iterator[list[Request]]:
    for i in range(0, len(requests), size):
        yield requests[i : i + size]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return json.dumps(text[-1] if text else type(e).__name__)
