"""A reasoning teacher end to end, against real vLLM: a tiny model trained here to write
`<think> ... </think>` and then an `Answer:` line, served once with vLLM's `deepseek_r1`
reasoning parser (the trace comes back in the `reasoning` field) and once without (inline in
`content`). Both paths must give the same samples, kept rows and training text. A
fault-injecting endpoint (tests/fault_server.py, named as the fake it is) supplies what the tiny
model cannot show: the older field name, and a trace whose close tag never came."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from fault_server import FaultInjectingEndpoint

from pipeline.calls import Completion, Request
from pipeline.config import load_config
from pipeline.reasoning import Convention, inline_text, split
from stages.filter.passes import filter_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reasoner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_model import build_tiny_model, build_tiny_teacher, reasoning_rationale

    tmp = tmp_path_factory.mktemp("reasoner")
    base = build_tiny_model(tmp / "base", think_tags=True)
    return build_tiny_teacher(tmp / "teacher", base, rationale=reasoning_rationale)


@pytest.fixture(scope="module")
def servers(reasoner: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """{'parser': URL, 'plain': URL}: real vLLM servers over the same weights."""
    from pipeline.servers import ManagedServer, running

    logs = tmp_path_factory.mktemp("reasoner-logs")
    parser = ManagedServer(
        reasoner, "reasoner", logs / "parser.log", extra_args=["--reasoning-parser", "deepseek_r1"]
    )
    plain = ManagedServer(reasoner, "reasoner", logs / "plain.log")
    with running([parser, plain], 600):
        yield {"parser": parser.url, "plain": plain.url}


def prompt() -> list[dict[str, str]]:
    """A bundled question in the prompt the tiny reasoner was trained on."""
    from pipeline.config import TaskConfig
    from pipeline.prompts import render_messages
    from pipeline.tasks import load_task

    task = load_task(TaskConfig(source="bundled:arith", split_by="fact", eval_fraction=0.3))
    return render_messages("student_zeroshot.j2", task.train[0])


def ask(url: str, max_tokens: int = 48, n: int = 1) -> list[Completion]:
    from pipeline.client import send

    done: list[Completion] = []
    messages = prompt()
    req = Request([f"s{i}" for i in range(n)], messages, {"max_tokens": max_tokens, "seed": 1})
    send(
        [url],
        "reasoner",
        [req],
        done.append,
        lambda f: pytest.fail(f.reason),
        concurrency=4,
        retries=1,
        backoff_s=0.1,
        timeout_s=120,
    )
    return sorted(done, key=lambda c: c.id)


def overrides_for(reasoner: Path, url: str, runs: Path) -> list[str]:
    return [
        f"runs_dir={runs}",
        f"cache_dir={runs / 'cache'}",
        f"teacher.model={reasoner}",
        f"teacher.endpoint={url}",
        "teacher.name=reasoner",
        f"train.student={reasoner}",
        "task.max_train=12",
        "task.max_eval=8",
        "generate.n=2",
        "generate.samples_per_call=1",  # the server counts trace tokens per call
        "generate.sampling.max_tokens=48",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.validate=false",  # a vLLM start per train; validation: e2e/test_sweep
    ]


def generate_and_filter(reasoner: Path, url: str, runs: Path) -> Path:
    r = run_cli("filter", *overrides_for(reasoner, url, runs))
    assert r.returncode == 0, r.stderr[-3000:]
    return runs / "default"


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_both_capture_paths_give_the_same_samples(reasoner, servers, tmp_path):
    with_parser = generate_and_filter(reasoner, servers["parser"], tmp_path / "parser")
    inline = generate_and_filter(reasoner, servers["plain"], tmp_path / "plain")
    pool_p = {r["id"]: r for r in rows(with_parser / "generate" / "pool.jsonl")}
    pool_i = {r["id"]: r for r in rows(inline / "generate" / "pool.jsonl")}
    assert pool_p.keys() == pool_i.keys() and len(pool_p) == 24
    for sid, p in pool_p.items():
        i = pool_i[sid]
        # kept as sent: the field and the content, or the inline text (the parser ends the
        # trace at its first close tag; a stray second one, which the tiny model writes on
        # some machines, stays in the content, as it stays after the trace inline)
        assert p["reasoning_field"] == "reasoning" and "</think>" not in p["reasoning"]
        assert not p["completion"].startswith("<think>")
        assert "reasoning" not in i and i["completion"].startswith("<think>")
        # the same teacher text either way, split the same way
        sp, si = split(p["completion"], p["reasoning"]), split(i["completion"], None)
        assert (sp.reasoning, sp.answer, sp.closed) == (si.reasoning, si.answer, si.closed)
        assert inline_text(sp) == i["completion"]
        assert 0 < p["usage"]["reasoning_tokens"] <= p["usage"]["completion_tokens"]
    kept_p = rows(next((with_parser / "filter").glob("*/kept.jsonl")))
    kept_i = rows(next((inline / "filter").glob("*/kept.jsonl")))
    assert kept_p and kept_p == kept_i
    assert all(k["completion"][0]["content"].startswith("<think>\n") for k in kept_p)
    assert all("Answer:" in k["final"] and "Answer:" not in k["reasoning"] for k in kept_p)
    report = json.loads(next((with_parser / "filter").glob("*/report.json")).read_text())
    assert report["reasoning"]["with_trace"] == 24 and report["reasoning"]["source"] == {
        "field": 24
    }
    assert report["histograms"]["reasoning_words"]["counts"]
    # The student (the tiny model: no think convention) trains on trace and answer, inline.
    r = run_cli("train", *overrides_for(reasoner, servers["parser"], tmp_path / "parser"))
    assert r.returncode == 0, r.stderr[-3000:]
    stats = json.loads(next((with_parser / "train").glob("*/train_stats.json")).read_text())
    assert stats["with_trace"] == len(kept_p) and stats["trace_form"] == "inline"


def test_trace_cut_by_max_tokens_is_truncated_reasoning(servers):
    """Real: 4 tokens end inside the trace; both paths say so, neither has an answer."""
    for name, url in servers.items():
        (c,) = ask(url, max_tokens=4)
        s = split(c.text, c.reasoning)
        assert c.finish_reason == "length" and s.truncated and s.answer == "", name
    assert ask(servers["parser"], max_tokens=4)[0].reasoning is not None


def test_reasoning_under_the_older_field_name(servers):
    """FAKE rewrite of the real answer: `reasoning_content` instead of `reasoning`."""
    real = ask(servers["parser"])
    with FaultInjectingEndpoint(servers["parser"], "reasoning_content", faults=10) as fake:
        old = ask(fake.url)
        assert fake.faults_injected == 1
    assert old[0].reasoning_field == "reasoning_content" and real[0].reasoning_field == "reasoning"
    assert old[0].reasoning == real[0].reasoning and old[0].text == real[0].text
    assert split(old[0].text, old[0].reasoning).closed


@pytest.mark.parametrize("path", ["parser", "plain"])
def test_missing_close_tag_with_finish_stop_is_truncated_reasoning(servers, path):
    """FAKE rewrite: the close tag never came, yet finish_reason is `stop`."""
    with FaultInjectingEndpoint(servers[path], "no_close_tag", faults=10) as fake:
        (c,) = ask(fake.url)
    assert c.finish_reason == "stop" and split(c.text, c.reasoning).truncated
    row = {
        "id": "x",
        "question_id": "q",
        "gold": "7",
        "completion": c.text,
        "finish_reason": c.finish_reason,
        "usage": c.usage,
    }
    if c.reasoning is not None:
        row["reasoning"] = c.reasoning
    cfg = load_config(None, [])
    _, rejected, _ = filter_records([row], cfg.filter, {}, [], Convention.of(cfg.teacher))
    assert [r["reason"] for r in rejected] == ["truncated_reasoning"]


@pytest.mark.parametrize("engine", ["offline", "server"])
def test_trace_budget_ends_the_trace_and_the_model_answers(reasoner, tmp_path, engine):
    """eval.trace_budget: at the budget vLLM writes the close tag itself (real engine, both
    kinds the pipeline starts: the offline child and a managed server)."""
    from transformers import AutoTokenizer

    from pipeline.ask import AskSettings, ModelSpec
    from pipeline.ask import ask as ask_model

    spec = ModelSpec("student", reasoner, engine=engine, think_tags=("<think>", "</think>"))
    messages = prompt()
    sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 48, "seed": 0}
    reqs = [
        Request(["free"], messages, sampling),
        Request(["budget"], messages, {**sampling, "thinking_token_budget": 2}),
    ]
    done: dict[str, Completion] = {}
    ask_model(
        spec,
        reqs,
        lambda c: done.setdefault(c.id, c),
        lambda f: pytest.fail(f.reason),
        AskSettings(concurrency=4),
        tmp_path / "logs",
    )
    tok = AutoTokenizer.from_pretrained(reasoner)
    free, cut = (split(done[k].text, done[k].reasoning) for k in ("free", "budget"))
    assert free.closed and len(tok(free.reasoning).input_ids) > 2
    assert cut.closed and len(tok(cut.reasoning).input_ids) <= 2  # the engine closed it
    assert done["budget"].text.count("</think>") >= 1
