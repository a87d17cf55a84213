"""Reasoning traces in the student's training text: the form its chat template expects, and a
check on real rendered rows that the trace survives the template.

A kept row with a trace has it twice over: inline in the completion, in the teacher's think
tags before the answer, and apart, in `reasoning` and `final`. A chat template that reads an
assistant message's `reasoning_content` (Qwen3's does) is given the parts in that field (the
`field` form); any other template gets the inline text (the `inline` form), which is also what a
student without a think convention of its own learns to write.

Several popular templates strip or rewrite think blocks of assistant turns (DeepSeek-R1's keeps
only what follows `</think>`), so the student would silently learn bare answers. `trace_problem`
reads each rendered row back and names what went wrong: the trace dropped, rendered twice,
rendered outside the trained part, or after the answer.
"""

from __future__ import annotations

from typing import Any, Literal

Form = Literal["field", "inline"]
_PROBE = "trace-probe-7f3a"


def trace_form(tok) -> Form:
    """`field` if the chat template renders an assistant message's `reasoning_content`."""
    probe = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": _PROBE},
    ]
    try:
        text = tok.apply_chat_template(probe, tokenize=False)
    except Exception:  # a template that rejects the probe has no field form
        return "inline"
    return "field" if _PROBE in str(text) else "inline"


def in_form(row: dict[str, Any], form: Form) -> dict[str, Any]:
    """The row with its completion in `form` (a row without a trace is left as it is)."""
    if form == "inline" or row.get("reasoning") is None:
        return row
    message = {"role": "assistant", "content": row["final"], "reasoning_content": row["reasoning"]}
    return {**row, "completion": [message]}


def trace_problem(tok, row: dict[str, Any], ids: list[int], labels: list[int]) -> str | None:
    """What the rendered row does to its trace, or None when the trace is there once, inside
    the trained part, before the answer."""
    trace = (row.get("reasoning") or "").strip()
    if not trace:
        return None
    final = (row.get("final") or "").strip()
    text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    first = next((i for i, lab in enumerate(labels) if lab != -100), len(ids))
    trained = tok.decode(ids[first:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    count = text.count(trace)
    if count == 0:
        return "drops the reasoning trace"
    if count > 1:
        return "renders the reasoning trace twice"
    at = trained.find(trace)
    if at < 0:
        return "renders the reasoning trace outside the trained part (no loss on it)"
    if final and trained.find(final, at + len(trace)) < 0:
        if final in trained:
            return "puts the answer before the reasoning trace"
        return "drops the answer that follows the reasoning trace"
    return None
