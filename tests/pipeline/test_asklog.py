"""Asking a model into a log (pipeline/asklog.py), the path every stage asks through, on its own:
the model is a stand-in for pipeline.ask.ask that answers at once, so what is checked is the
log's side (what is sent, what is written, what a rerun asks again, what comes back as a
value). Real engines behind it are tested by the stages that ask (generate, eval, rounds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import asklog
from pipeline.ask import AskSettings, AskStats, ModelSpec
from pipeline.asklog import RecordLog, ask_into_log, failed
from pipeline.calls import Completion, Failure, Request, ServeError

SPEC = ModelSpec(label="m", model_dir=Path("/nowhere"))


class FakeModel:
    """Answers every request it is sent (`fail`: these ids fail after their retries) and
    records what it was sent, round by round."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = set(fail)
        self.sent: list[list[str]] = []

    def __call__(self, spec, requests, on_done, on_fail, settings, log_dir, ready, rounds):
        todo = list(requests)
        while todo:
            self.sent.append([r.id for r in todo])
            for r in todo:
                if r.id in self.fail:
                    on_fail(Failure(r.id, "refused", 3))
                else:
                    on_done(
                        Completion(r.id, f"answer {r.id}", "stop", {"completion_tokens": 2}, "x")
                    )
            todo = rounds() if rounds is not None else []
        return AskStats(engine="fake")


def _requests(*ids: str) -> list[Request]:
    return [Request([i], [{"role": "user", "content": i}], {"seed": 0}) for i in ids]


def _row(c: Completion) -> dict:
    return {"id": c.id, "text": c.text}


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    fake = FakeModel()
    monkeypatch.setattr(asklog, "ask", fake)
    return fake


def _ask(path: Path, requests: list[Request], **kw: object) -> asklog.Asked:
    with RecordLog.open(path, None, "answers") as log:
        return ask_into_log(SPEC, requests, log, _row, AskSettings(), path.parent / "logs", **kw)


def test_only_what_the_log_lacks_is_asked(model: FakeModel, tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    first = _ask(path, _requests("a", "b"))
    assert (first.new, first.requested, first.tokens) == (["a", "b"], 2, 4)
    again = _ask(path, _requests("a", "b", "c"))
    assert model.sent == [["a", "b"], ["c"]] and again.new == ["c"]
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]


def test_a_log_that_answers_everything_starts_no_model(model: FakeModel, tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    _ask(path, _requests("a"))
    done = _ask(path, _requests("a"))
    assert model.sent == [["a"]] and done.requested == 0 and done.stats is None


def test_a_row_the_caller_does_not_accept_is_asked_again(model: FakeModel, tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    _ask(path, _requests("a", "b"))
    _ask(path, _requests("a", "b"), current=lambda req, row: req.id != "b")
    assert model.sent == [["a", "b"], ["b"]]


def test_failures_come_back_as_values_and_the_rest_is_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(asklog, "ask", FakeModel(fail=("b",)))
    path = tmp_path / "answers.jsonl"
    asked = _ask(path, _requests("a", "b"))
    assert asked.new == ["a"] and [f.id for f in asked.failures] == ["b"]
    err = failed("answers", asked.failures, len(asked.new), path)
    assert isinstance(err, ServeError)
    assert str(err).startswith("1 of 2 answers failed after retries (first: b: refused)")
    assert str(path) in str(err) and "rerun" in str(err)


def test_rounds_and_admission(model: FakeModel, tmp_path: Path) -> None:
    """`more` gives the next round once the last is on disk (what the log holds is not asked
    again); `admit` picks what may be sent."""
    rounds = iter([_requests("a", "c"), []])

    def admit(todo: list[Request]) -> list[Request]:
        return [r for r in todo if r.id != "b"]

    asked = _ask(
        tmp_path / "answers.jsonl", _requests("a", "b"), more=lambda: next(rounds), admit=admit
    )
    assert model.sent == [["a"], ["c"]] and asked.new == ["a", "c"] and asked.requested == 2


def test_opening_recovers_a_torn_log(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"id": "a", "text": "x"}\nnot json\n{"id": "a", "text": "again"}\n{"id": "b"')
    with RecordLog.open(path, None, "answers") as log:
        assert list(log.rows) == ["a"]
        assert log.recovery() == {"torn_lines_dropped": 1, "damaged_lines_quarantined": 2}
    assert "answers" in capsys.readouterr().err
    assert path.read_text() == '{"id": "a", "text": "x"}\n'
    assert path.with_name("answers.jsonl.quarantine").is_file()
