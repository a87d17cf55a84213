"""A sweep of hostile inputs through the real CLI: what a tired user or a crashed disk produces.

Every case runs `distill ...` in a fresh interpreter and must end in exit 2 with exactly one
`error:` line that names the dotted config key or the file:line at fault, and no traceback.
Nothing here needs a model: every case fails before a teacher could be paid. The endpoint faults
come from FaultInjectingEndpoint (tests/fault_server.py), a FAKE endpoint, because a real server
cannot be made to send HTML, drop connections or demand a key it was not started with. Damage to
finished run dirs, which needs a real teacher, is in test_hostile_run_dirs.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT
from fault_server import FaultInjectingEndpoint

from pipeline.config import load_config, shipped_config
from pipeline.ports import free_port
from pipeline.runner import plan

SECRET = "hunter2-s3cr3t"


@dataclass
class Case:
    id: str
    category: str  # config | task | model | endpoint | run dir
    args: Callable[[Path], list[str]]  # after `distill`, given the case's tmp dir
    needle: Callable[[Path], str]  # what the one error line must contain
    setup: Callable[[Path], None] | None = None
    fake: str = ""  # a FaultInjectingEndpoint mode; its URL replaces {fake} in the args
    env: dict[str, str] = field(default_factory=dict)


def base(t: Path) -> list[str]:
    return [f"runs_dir={t / 'runs'}", f"cache_dir={t / 'cache'}", "task.max_train=4"]


def gen(*extra: str) -> Callable[[Path], list[str]]:
    return lambda t: ["generate", *base(t), *(x.replace("{t}", str(t)) for x in extra)]


def key(k: str) -> Callable[[Path], str]:
    return lambda t: f"error: {k}: "


def text(s: str) -> Callable[[Path], str]:
    return lambda t: s.replace("{t}", str(t))


# --- config -------------------------------------------------------------------------------------

CONFIG = [
    Case("enum typo: selection", "config", gen("filter.selection=bset"), key("filter.selection")),
    Case(
        "enum typo: dedup scope",
        "config",
        gen("filter.dedup_scope=questoin"),
        key("filter.dedup_scope"),
    ),
    Case(
        "enum typo: answer type", "config", gen("task.answer_type=numerc"), key("task.answer_type")
    ),
    Case(
        "enum typo: engine", "config", gen("teacher.serve.engine=vllm"), key("teacher.serve.engine")
    ),
    Case(
        "enum typo: scheduler", "config", gen("train.lr_scheduler=cosin"), key("train.lr_scheduler")
    ),
    Case(
        "enum typo: eval model",
        "config",
        gen("eval.models=[teacher, studnet]"),
        key("eval.models[1]"),
    ),
    Case(
        "enum typo: filter check",
        "config",
        gen("filter.checks=[correct, dedup]"),
        key("filter.checks[1]"),
    ),
    Case("n negative", "config", gen("generate.n=-3"), key("generate.n")),
    Case(
        "eval fraction above 1", "config", gen("task.eval_fraction=1.5"), key("task.eval_fraction")
    ),
    Case("max_train negative", "config", gen("task.max_train=-5"), key("task.max_train")),
    Case("decontam n zero", "config", gen("filter.decontam_n=0"), key("filter.decontam_n")),
    Case("retries zero", "config", gen("generate.retries=0"), key("generate.retries")),
    Case(
        "temperature NaN",
        "config",
        gen("generate.sampling.temperature=.nan"),
        key("generate.sampling.temperature"),
    ),
    Case(
        "seed of 30 digits",
        "config",
        gen("generate.sampling.seed=" + "9" * 30),
        key("generate.sampling.seed"),
    ),
    Case("n not a number", "config", gen("generate.n=four"), key("generate.n")),
    Case(
        "completion longer than the context",
        "config",
        gen("generate.sampling.max_tokens=4096"),
        key("generate.sampling.max_tokens"),
    ),
    Case("endpoint empty list", "config", gen("teacher.endpoint=[]"), key("teacher.endpoint")),
    Case(
        "endpoint without scheme",
        "config",
        gen("teacher.endpoint=localhost:8000"),
        key("teacher.endpoint"),
    ),
    Case(
        "endpoint IPv6 typo",
        "config",
        gen("teacher.endpoint=http://[::1:8000/v1"),
        key("teacher.endpoint"),
    ),
    Case(
        "api key pasted as the env name",
        "config",
        gen(f"teacher.api_key_env=sk-{SECRET}"),
        key("teacher.api_key_env"),
    ),
    Case("run name with ..", "config", gen("run=../escape"), key("run")),
    Case("run name absolute", "config", gen("run={t}/elsewhere"), key("run")),
    Case("run name with [", "config", gen("run=exp[1]"), key("run")),
    Case("runs_dir ~nosuchuser", "config", gen("runs_dir=~nosuchuser/runs"), key("runs_dir")),
    Case(
        "chat template missing",
        "config",
        gen("train.chat_template=/no/such.jinja"),
        key("train.chat_template"),
    ),
    Case(
        "unknown column key",
        "config",
        gen("task.columns.solution=answer"),
        key("task.columns.solution"),
    ),
    Case("source malformed", "config", gen("task.source=jsonl"), key("task.source")),
    Case(
        "unknown key",
        "config",
        gen("generate.sampling.temprature=0.5"),
        key("generate.sampling.temprature"),
    ),
    Case("override into a value", "config", gen("generate.n.x=1"), key("generate.n")),
    Case(
        "config file not UTF-8",
        "config",
        lambda t: ["generate", "--config", str(t / "c.yaml"), *base(t)],
        text("{t}/c.yaml:2: not UTF-8"),
        setup=lambda t: (t / "c.yaml").write_bytes(b"generate:\n  n: 4 # \xff\xfe\n"),
    ),
    Case(
        "config file with a tab",
        "config",
        lambda t: ["generate", "--config", str(t / "c.yaml"), *base(t)],
        text("{t}/c.yaml:2: not valid YAML"),
        setup=lambda t: (t / "c.yaml").write_text("generate:\n\tn: 4\n"),
    ),
    Case(
        "config file is a directory",
        "config",
        lambda t: ["generate", "--config", str(t), *base(t)],
        text("config file not found: {t}"),
    ),
    Case(
        "config key given twice",
        "config",
        lambda t: ["generate", "--config", str(t / "c.yaml"), *base(t)],
        text("{t}/c.yaml:3: not valid YAML (key 'n' appears twice"),
        setup=lambda t: (t / "c.yaml").write_text("generate:\n  n: 4\n  n: 8\n"),
    ),
    Case(
        "config value of 5000 digits",
        "config",
        lambda t: ["generate", "--config", str(t / "c.yaml"), *base(t)],
        text("{t}/c.yaml: a value cannot be read"),
        setup=lambda t: (t / "c.yaml").write_text("generate:\n  n: " + "7" * 5000 + "\n"),
    ),
]


# --- task files ---------------------------------------------------------------------------------


def rows(bad: str | bytes | None = None) -> bytes:
    """Eight good rows, with `bad` as line 3 when given."""
    good = [
        json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i)})
        for i in range(1, 9)
    ]
    lines: list[str | bytes] = [*good[:2], bad, *good[3:]] if bad is not None else good
    return b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)


def task_case(name: str, bad: str | bytes, *extra: str, line: int = 3, data: bytes = b"") -> Case:
    return Case(
        name,
        "task",
        gen("task.source=jsonl:{t}/qs.jsonl", "task.split_by=", *extra),
        text(f"{{t}}/qs.jsonl:{line}: "),
        setup=lambda t: (t / "qs.jsonl").write_bytes(data or rows(bad)),
    )


def q3(**kv: object) -> str:
    row: dict[str, object] = {"id": "q3", "question": "What is 3 plus 3?", "answer": "6"}
    row.update(kv)
    return json.dumps({k: v for k, v in row.items() if v is not ...})


TASK = [
    task_case("answer null", q3(answer=None)),
    task_case("answer a list", q3(answer=[1, 2])),
    task_case("answer a dict", q3(answer={"value": 6})),
    task_case("answer true", q3(answer=True)),
    task_case("answer missing", q3(answer=...)),
    task_case("question empty", q3(question="  ")),
    task_case("question a number", q3(question=33)),
    task_case("non-UTF-8 bytes", b'{"id": "q3", "question": "Caf\xe9 3?", "answer": "6"}'),
    task_case(
        "5,000-digit integer", '{"id": "q3", "question": "x?", "answer": ' + "9" * 5000 + "}"
    ),
    task_case("deeply nested JSON", '{"id": "q3", "question": ' + "[" * 50000 + "]" * 50000 + "}"),
    task_case("an array, not an object", '["q3", "What?", "6"]'),
    task_case("broken JSON", '{"id": "q3", "question": "What is 3 plus'),
    task_case("duplicate id", q3(id="q1", question="Other?")),
    task_case(
        "same question, other id and gold", q3(id="q3", question="What is 1 plus 1?", answer="3")
    ),
    task_case("choices not a list", q3(choices="A) 6 B) 7")),
    task_case("answer NaN", '{"id": "q3", "question": "What is 3 plus 3?", "answer": NaN}'),
    task_case(
        "choice gold not a choice", q3(choices=["5", "6"], answer="1"), "task.answer_type=choice"
    ),
    task_case("split_by field missing on a row", q3(), "task.split_by=topic", line=1),
    Case(
        "empty task file",
        "task",
        gen("task.source=jsonl:{t}/qs.jsonl", "task.split_by="),
        text("{t}/qs.jsonl: no questions"),
        setup=lambda t: (t / "qs.jsonl").write_bytes(b"\n\n"),
    ),
    Case(
        "task file is a directory",
        "task",
        gen("task.source=jsonl:{t}", "task.split_by="),
        key("task.source"),
    ),
    Case(
        "too few questions for a held-out split",
        "task",
        gen("task.source=jsonl:{t}/qs.jsonl", "task.split_by="),
        text("split is empty"),
        setup=lambda t: (t / "qs.jsonl").write_bytes(rows()[:60]),
    ),
]


# --- model paths --------------------------------------------------------------------------------


def model_dir(config: bytes | None) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        (t / "m").mkdir()
        if config is not None:
            (t / "m" / "config.json").write_bytes(config)

    return make


MODEL = [
    Case("teacher dir missing", "model", gen("teacher.model={t}/nope"), key("teacher.model")),
    Case(
        "teacher is a file",
        "model",
        gen("teacher.model={t}/m.bin"),
        key("teacher.model"),
        setup=lambda t: (t / "m.bin").write_bytes(b"\0" * 64),
    ),
    Case(
        "teacher dir without config.json",
        "model",
        gen("teacher.model={t}/m"),
        key("teacher.model"),
        setup=model_dir(None),
    ),
    Case(
        "teacher config.json garbage",
        "model",
        gen("teacher.model={t}/m"),
        key("teacher.model"),
        setup=model_dir(b"\x00\x01{"),
    ),
    Case(
        "student dir missing",
        "model",
        lambda t: ["train", *base(t), f"train.student={t}/nope"],
        key("train.student"),
    ),
    Case(
        "student config.json a list",
        "model",
        lambda t: ["train", *base(t), f"train.student={t}/m"],
        key("train.student"),
        setup=model_dir(b"[1, 2]"),
    ),
    Case(
        "teacher under ~nosuchuser",
        "model",
        gen("teacher.model=~nosuchuser/m"),
        key("teacher.model"),
    ),
]


# --- endpoints ----------------------------------------------------------------------------------

DEAD = "http://127.0.0.1:{port}/v1"
QUICK = (
    "generate.n=1",
    "generate.retries=2",
    "generate.backoff_s=0",
    "generate.request_timeout_s=5",
)

ENDPOINT = [
    Case(
        "nothing listens, name unknown",
        "endpoint",
        gen("teacher.endpoint=" + DEAD, *QUICK),
        text("teacher endpoint http://127.0.0.1:"),
    ),
    Case(
        "nothing listens, credentials in the URL",
        "endpoint",
        gen(f"teacher.endpoint=http://me:{SECRET}@127.0.0.1:{{port}}/v1", *QUICK),
        text("teacher endpoint http://me:***@127.0.0.1:"),
    ),
    Case(
        "nothing listens, name given",
        "endpoint",
        gen("teacher.endpoint=" + DEAD, "teacher.name=tiny", *QUICK),
        text("4 of 4 samples failed after retries"),
    ),
    Case(
        "HTTP 500 every time",
        "endpoint",
        gen("teacher.endpoint={fake}", "teacher.name=tiny", *QUICK),
        text("HTTP 500"),
        fake="500",
    ),
    Case(
        "HTML instead of JSON",
        "endpoint",
        gen("teacher.endpoint={fake}", "teacher.name=tiny", *QUICK),
        text("samples failed"),
        fake="html",
    ),
    Case(
        "JSON without choices",
        "endpoint",
        gen("teacher.endpoint={fake}", "teacher.name=tiny", *QUICK),
        text("samples failed"),
        fake="no_choices",
    ),
    Case(
        "connection dropped",
        "endpoint",
        gen("teacher.endpoint={fake}", "teacher.name=tiny", *QUICK),
        text("samples failed"),
        fake="drop",
    ),
    Case(
        "gateway wants a key (/models)",
        "endpoint",
        gen("teacher.endpoint={fake}", *QUICK),
        text("teacher.api_key_env"),
        fake="401",
    ),
    Case(
        "gateway wants a key (chat)",
        "endpoint",
        gen("teacher.endpoint={fake}", "teacher.name=tiny", *QUICK),
        text("teacher.api_key_env"),
        fake="401",
    ),
    Case(
        "key variable not set",
        "endpoint",
        gen(
            "teacher.endpoint=" + DEAD,
            "teacher.name=tiny",
            "teacher.api_key_env=DISTILL_NO_SUCH_VAR",
        ),
        key("teacher.api_key_env"),
    ),
]


# --- run dirs -----------------------------------------------------------------------------------

ENDPOINT_OV = ["teacher.endpoint=http://127.0.0.1:9/v1", "teacher.name=tiny"]


def stage_dir(t: Path) -> Path:
    cfg = load_config(shipped_config("default"), [*base(t), *ENDPOINT_OV])
    return plan(cfg, "generate")["generate"].dir


def block(path: Callable[[Path], Path]) -> Callable[[Path], None]:
    def make(t: Path) -> None:
        p = path(t)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("a file where a directory belongs\n")

    return make


RUN_DIR = [
    Case(
        "stage dir is a file",
        "run dir",
        gen(*ENDPOINT_OV),
        text("is a file where distill keeps a directory"),
        setup=block(stage_dir),
    ),
    Case(
        "stage parent is a file",
        "run dir",
        gen(*ENDPOINT_OV),
        text("is a file where distill keeps a directory"),
        setup=block(lambda t: stage_dir(t).parent),
    ),
    Case(
        "runs_dir is a file",
        "run dir",
        gen(*ENDPOINT_OV),
        text("is a file where distill keeps a directory"),
        setup=block(lambda t: t / "runs"),
    ),
]

CASES = [*CONFIG, *TASK, *MODEL, *ENDPOINT, *RUN_DIR]


@contextlib.contextmanager
def fake_endpoint(mode: str) -> Iterator[str]:
    """A FaultInjectingEndpoint that faults on every request (never forwards), or nothing."""
    if not mode:
        yield ""
        return
    with FaultInjectingEndpoint("http://127.0.0.1:9/v1", mode, faults=10**6, hang_s=1) as fake:  # type: ignore[arg-type]
        yield fake.url


def test_sweep_is_big_enough() -> None:
    counts = Counter(c.category for c in CASES)
    print("hostile cases per category:", dict(counts), "total", len(CASES))
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.category}: {c.id}")
def test_hostile_input_gets_one_clear_line(case: Case, tmp_path: Path) -> None:
    if case.setup:
        case.setup(tmp_path)
    args = case.args(tmp_path)
    with fake_endpoint(case.fake) as fake_url:
        port = str(free_port())
        args = [a.replace("{fake}", fake_url).replace("{port}", port) for a in args]
        p = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **case.env},
        )
    out = p.stdout + p.stderr
    assert "Traceback" not in out, out[-3000:]
    assert p.returncode == 2, f"rc {p.returncode}\n{out[-3000:]}"
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    assert case.needle(tmp_path) in errors[0], errors[0]
    assert SECRET not in out
    for f in tmp_path.rglob("*"):  # nothing the run wrote holds the secret either
        if f.is_file() and f.name != "c.yaml":
            assert SECRET.encode() not in f.read_bytes(), f
    assert not (tmp_path / "escape").exists() and not (tmp_path / "elsewhere").exists()
