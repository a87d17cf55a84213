"""A rollout scored by a teacher with another vocabulary: what the teacher reads, and each
student token's advantage from what it answered.

The teacher reads the student's text in its own tokens (align.py), except for the token that
ends the student's turn. A chat model ends its turn with a special token ("<|im_end|>" for
SmolLM2 and Qwen, "<|eot_id|>" for Llama 3, "<end_of_turn>" for Gemma), and vLLM returns it as
the rollout's last id. Decoded as text, a teacher whose end of turn is another token reads
"<|im_end|>" as six plain tokens ("<", "|", "im", "_end", "|", ">") it finds most unlikely: the
student's stop gets an advantage of tens of nats against it, and the update teaches the student
never to stop (measured with the real Llama 3 tokenizer: six teacher tokens for the student's
one). So the end is matched as what it means: the student's ending token is scored as the
teacher's own end of turn, the token its chat template writes after an assistant message, and
the text before it is aligned by characters. A teacher whose template writes no special token
there has no end to compare with: the student's ending token gets advantage 0.

A rollout ended its turn when its last id is one the student stops on (`stops`: the eos and the
generation config's eos ids, stages/train/chat.py `stop_token_ids`, what vLLM stops on),
not any special token: a rollout cut at max_tokens on another special token did not end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stages.train.objectives.onpolicy import align

_MARK = "Answer: 7"  # an assistant message's text, to find what the template writes after it


def is_special(tokenizer: Any, token_id: int) -> bool:
    """Whether `token_id` is one of the tokenizer's special tokens (added ones included)."""
    added = tokenizer.added_tokens_decoder.get(token_id)
    return token_id in tokenizer.all_special_ids or bool(added is not None and added.special)


def end_of_turn(tokenizer: Any) -> int | None:
    """The token the tokenizer's chat template writes right after an assistant message's text
    (the token its model ends a turn with); else its eos token; None when it has neither."""
    eos = tokenizer.eos_token_id
    if not getattr(tokenizer, "chat_template", None):
        return eos
    msgs = [{"role": "user", "content": "2 + 5?"}, {"role": "assistant", "content": _MARK}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    at = text.rfind(_MARK)
    if at < 0:  # a template that rewrites the message: nothing to read after it
        return eos
    after = tokenizer(text[at + len(_MARK) :], add_special_tokens=False)["input_ids"]
    if after and is_special(tokenizer, after[0]):
        return int(after[0])
    return eos


@dataclass(frozen=True)
class CrossScore:
    """What the teacher scores for one rollout, and how to read its answer back: `ids` are the
    teacher's tokens of the student's text (`spans` in it), then its end of turn when `end` is
    "scored"; `body` the student's ids of that text; `end` is "none" (the student did not end
    its turn: cut at max_tokens or a stop string), "scored", or "unscored" (it did, and the
    teacher has no end-of-turn token)."""

    ids: list[int]
    spans: list[align.Span]
    body: list[int]
    end: str


def cross_score(
    student_tok: Any,
    stops: frozenset[int],
    teacher_tok: Any,
    teacher_end: int | None,
    ids: list[int],
) -> CrossScore:
    """The teacher's side of a rollout whose ids are `ids` (the student's, as sampled); `stops`
    are the ids the student stops on."""
    ended = bool(ids) and ids[-1] in stops
    body = list(ids[:-1]) if ended else list(ids)
    t_ids, t_spans = align.teacher_tokens(teacher_tok, align.decoded_text(student_tok, body))
    end = "none" if not ended else "scored" if teacher_end is not None else "unscored"
    return CrossScore(t_ids + ([teacher_end] if end == "scored" else []), t_spans, body, end)


def cross_advantages(
    student_tok: Any, teacher_tok: Any, how: CrossScore, student: list[float], teacher: list[float]
) -> list[float]:
    """Per student token: the aligned text's advantages (align.span_advantages), then for an
    ending token the teacher's logprob of its own end of turn minus the student's of its own
    (0 when unscored). `student` and `teacher` are the logprobs of the rollout's ids and of
    `how.ids`."""
    n, m = len(how.body), len(how.spans)
    spans = align.char_spans(student_tok, how.body)
    a = align.align(
        spans,
        how.spans,
        student_tok.convert_ids_to_tokens(how.body),
        teacher_tok.convert_ids_to_tokens(how.ids[:m]),
    )
    got = align.span_advantages(a, student[:n], teacher[:m])
    if how.end == "scored":
        got.append(teacher[m] - student[n])
    elif how.end == "unscored":
        got.append(0.0)
    return got
