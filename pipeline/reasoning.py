"""Reasoning traces: where a teacher's thinking ends and its answer begins.

A reasoning teacher thinks in a block (`<think> ... </think>` by default) before it answers. A
vLLM server started with `--reasoning-parser` hands the block over in a separate message field
(`reasoning` in recent vLLM, `reasoning_content` in older releases and some other servers) and
only the answer in `content`; without a parser, or in the offline engine, the block stays inline
in `content`. generate keeps what the server sent unchanged (`completion` is `content`,
`reasoning` the field, when there was one), so the teacher's text can always be rebuilt; this
module derives, from either form, the same three things: the trace, the final answer text, and
whether the trace was closed.

`teacher.reasoning` says what a sample without a trace means:
  off       no trace is looked for: the whole content is the answer (think tags and all)
  auto      a trace is split off where there is one; a sample without one is a plain answer
  required  every sample must have a closed trace; one without is rejected (`no_reasoning`)

Pure functions over strings: no model, no tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["off", "auto", "required"]
TAGS = ("<think>", "</think>")
# The message fields servers put a trace in: vLLM's current name first, then its older one.
REASONING_FIELDS = ("reasoning", "reasoning_content")


@dataclass(frozen=True)
class Split:
    """One completion, split. `reasoning` is None when it has no trace."""

    reasoning: str | None
    answer: str  # the final content: the only text answers are extracted from
    closed: bool  # the trace ended (always True without a trace)
    source: Literal["none", "inline", "field"]

    @property
    def truncated(self) -> bool:
        """A trace that was opened and never closed, whatever finish_reason says."""
        return self.reasoning is not None and not self.closed


def field_reasoning(message: dict[str, Any]) -> tuple[str | None, str]:
    """(the trace a server sent in its own field, or None; the field's name, or '')."""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str):
            return value, name
    return None, ""


def split(
    content: str,
    reasoning: str | None,
    mode: Mode = "auto",
    tags: tuple[str, str] = TAGS,
) -> Split:
    """The trace and the answer of one completion.

    With a server's reasoning field, the field is the trace and `content` the answer; vLLM's
    parsers put everything in the field when the close tag never came, so an empty answer means
    the trace did not close (an answer that is really empty is rejected all the same). Inline:
    the trace runs from the open tag (or from the start, for templates that open it in the
    prompt) to the first close tag; an open tag with no close tag is an unclosed trace.
    """
    if mode == "off":
        return Split(None, content, True, "none")
    if reasoning is not None and reasoning.strip():
        return Split(reasoning, content, bool(content.strip()), "field")
    open_tag, close_tag = tags
    end = content.find(close_tag)
    if end >= 0:
        head = content[:end]
        start = head.find(open_tag)
        trace = head[start + len(open_tag) :] if start >= 0 else head
        return Split(trace, content[end + len(close_tag) :], True, "inline")
    start = content.find(open_tag)
    if start >= 0:
        return Split(content[start + len(open_tag) :], "", False, "inline")
    return Split(None, content, True, "none")


def inline_text(s: Split, tags: tuple[str, str] = TAGS) -> str:
    """The completion as one text with the trace in `tags`: what a student without a think
    convention of its own is trained on. For a trace that came inline this is the teacher's own
    text from the open tag on; for one that came in a field, the text the parser split."""
    if s.reasoning is None:
        return s.answer
    if not s.closed:  # as it was written: the close tag never came
        return f"{tags[0]}{s.reasoning}{s.answer}"
    return f"{tags[0]}{s.reasoning}{tags[1]}{s.answer}"


@dataclass(frozen=True)
class Convention:
    """`teacher.reasoning` and `teacher.think_tags`: how a row's trace is found."""

    mode: Mode = "auto"
    tags: tuple[str, str] = TAGS

    @classmethod
    def of(cls, teacher: Any) -> Convention:
        """From a TeacherConfig."""
        return cls(teacher.reasoning, (teacher.think_tags[0], teacher.think_tags[1]))

    def split(self, row: dict[str, Any]) -> Split:
        """A pool or prediction row's trace and answer."""
        return split(row.get("completion") or "", row.get("reasoning"), self.mode, self.tags)
