"""The filter stage's samples, kept and rejected, as columns for the report's sample browser.

Columns, not one dict per sample: at 100,000 samples the repeated keys of row objects would be
a third of the embedded JSON. A question's text and gold answer are stored once, and every
sample points at its question, teacher and reason by index."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import log_lines, parse_line, scan_file

MAX_CHARS = 4000  # a sample's text is cut here in the report (the files keep all of it)
MAX_SAMPLES = 200_000  # samples embedded at most; the rest are counted, not shown
KEPT = "kept"  # reasons[0]: the reason slot of a kept sample


@dataclass
class Samples:
    qids: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)  # each question's text, once
    golds: list[str] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=lambda: [KEPT])
    # one entry per sample, in file order: kept.jsonl, then rejected.jsonl
    question: list[int] = field(default_factory=list)
    teacher: list[int] = field(default_factory=list)
    reason: list[int] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    total: int = 0  # samples read: more than embedded when over MAX_SAMPLES
    cut: int = 0  # texts cut at MAX_CHARS
    _index: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def columns(self) -> dict[str, Any]:
        """What the page embeds (compressed): these lists, by short names."""
        return {
            "qid": self.qids,
            "qtext": self.questions,
            "gold": self.golds,
            "teachers": self.teachers,
            "reasons": self.reasons,
            "q": self.question,
            "t": self.teacher,
            "r": self.reason,
            "a": self.answer,
            "x": self.text,
            "total": self.total,
            "cut": self.cut,
        }

    def _id(self, table: str, values: list[str], value: str) -> int:
        """`value`'s index in `values` (added at the end when new)."""
        index = self._index.get(table)
        if index is None:  # built once: `values` may have been filled before the first add
            index = self._index[table] = {v: i for i, v in enumerate(values)}
        if value not in index:
            index[value] = len(values)
            values.append(value)
        return index[value]

    def add(self, row: dict[str, Any], reason: str) -> None:
        self.total += 1
        if len(self.question) >= MAX_SAMPLES:
            return
        qid = str(row.get("question_id", ""))
        before = len(self.qids)
        q = self._id("q", self.qids, qid)
        if q == before:  # a new question: its text and gold, from its first sample
            self.questions.append(last_user(row.get("prompt") or row.get("messages")))
            self.golds.append(str(row.get("gold", "")))
        self.question.append(q)
        self.teacher.append(self._id("t", self.teachers, str(row.get("teacher", ""))))
        self.reason.append(self._id("r", self.reasons, reason))
        scores = row.get("scores") or {}
        self.answer.append(str(row.get("answer") or scores.get("answer") or ""))
        text = completion_text(row.get("completion"))
        self.cut += len(text) > MAX_CHARS
        self.text.append(cut(text))


def cut(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + " [...]"


def last_user(messages: Any) -> str:
    """The question as the model saw it: the last user message of a chat."""
    if isinstance(messages, str):
        return messages
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def completion_text(completion: Any) -> str:
    """A completion as text: kept.jsonl holds assistant messages, rejected.jsonl a string."""
    if isinstance(completion, list):
        return "\n".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return "" if completion is None else str(completion)


def jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSONL file as a stream, read as the run's logs are (pipeline/records.py:
    bytes split at \\n only, hostile JSON refused); a line that is not a row (a torn last line)
    is skipped. No `id` is asked for: kept.jsonl's rows have none."""
    if not path.is_file():
        return
    for line in scan_file(path, None):
        if line.problem is None and line.row is not None:
            yield line.row


def read_samples(d: Path) -> Samples:
    """kept.jsonl then rejected.jsonl (each rejected sample under its reason)."""
    s = Samples()
    for name in ("kept.jsonl", "rejected.jsonl"):
        path = d / name
        if not path.is_file():
            continue
        with open(path, "rb") as f:
            for _, _, raw, _ in log_lines(f):
                if len(s.question) >= MAX_SAMPLES:  # past the cap a line is counted, not parsed
                    s.total += bool(raw.strip())
                    continue
                try:
                    row = parse_line(raw)
                except ValueError:  # a torn line: the rest of the file is still shown
                    continue
                s.add(row, KEPT if name == "kept.jsonl" else str(row.get("reason") or "rejected"))
    return s
