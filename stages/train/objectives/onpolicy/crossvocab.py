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

With loss topk the teacher's top k at each of its positions is carried onto the student's
vocabulary by text (vocab_map, cross_top): where a student token and a teacher token are a
group of one each in the alignment, the teacher's alternatives become the student tokens that
write the same text, its end of turn the student's. The round's `topk_share` says how many of
the student's tokens that reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stages.train.objectives.onpolicy import align

if TYPE_CHECKING:
    import numpy as np

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
    a: align.Alignment, how: CrossScore, student: list[float], teacher: list[float]
) -> list[float]:
    """Per student token: the aligned text's advantages (align.span_advantages on `a`, the
    alignment of `how`), then for an ending token the teacher's logprob of its own end of turn
    minus the student's of its own (0 when unscored). `student` and `teacher` are the logprobs
    of the rollout's ids and of `how.ids`."""
    n, m = len(how.body), len(how.spans)
    got = align.span_advantages(a, student[:n], teacher[:m])
    if how.end == "scored":
        got.append(teacher[m] - student[n])
    elif how.end == "unscored":
        got.append(0.0)
    return got


def alignment(student_tok: Any, teacher_tok: Any, how: CrossScore) -> align.Alignment:
    """The student's body and the teacher's tokens of it, grouped by the text they cover."""
    return align.align(
        align.char_spans(student_tok, how.body),
        how.spans,
        student_tok.convert_ids_to_tokens(how.body),
        teacher_tok.convert_ids_to_tokens(how.ids[: len(how.spans)]),
    )


def token_text(tokenizer: Any, token_id: int) -> str | None:
    """The text an ordinary token writes where it stands inside a text, leading space included;
    None for a special token and for one that is no whole text (a byte of a split character)."""
    if is_special(tokenizer, token_id):
        return None
    text = tokenizer.decode(
        [token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    piece = tokenizer.convert_ids_to_tokens(token_id)
    # SentencePiece writes a word's space as "▁" and drops it when the token starts the text
    if isinstance(piece, str) and piece.startswith("\u2581") and not text.startswith(" "):
        text = " " + text
    return text if text and "\ufffd" not in text else None


def vocab_map(student_tok: Any, teacher_tok: Any) -> dict[int, int]:
    """Teacher token id -> the student token that writes the same text (the lowest id where
    several do), for every ordinary teacher token that has one."""
    by_text: dict[str, int] = {}
    for i in range(len(student_tok)):
        text = token_text(student_tok, i)
        if text is not None and text not in by_text:
            by_text[text] = i
    out = {}
    for i in range(len(teacher_tok)):
        text = token_text(teacher_tok, i)
        if text is not None and text in by_text:
            out[i] = by_text[text]
    return out


def cross_top(
    a: align.Alignment,
    how: CrossScore,
    top_ids: np.ndarray,
    top_logprobs: np.ndarray,
    mapped: dict[int, int],
    student_end: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's top k per student token, in student ids: ([n, k] int32, [n, k] float32),
    n the rollout's tokens, padded with FLOOR (stages/shared/softlabels.py).

    A student token gets the teacher's top k where it and one teacher token cover the same text
    after the same text (a group of one token on each side): each alternative the teacher names
    is carried to the student token that writes the same text (`mapped`, vocab_map), and
    alternatives that reach one student token are summed; those with none are left out, so
    their mass is in the rest (the loss's bucket). An ending token scored as the teacher's end
    of turn gets the teacher's top k there, its end of turn carried to `student_end` (the
    rollout's ending id). Everywhere else, inside a group of several tokens on either side, the
    teacher's alternatives are alternatives to another span of text: the row is all padding.
    The teacher's probability of a token is not its probability of every text that starts
    with it; this is the price of two vocabularies, as the sampled-token advantage's even share
    inside a span is."""
    import numpy as np

    from stages.shared.softlabels import FLOOR

    n, m, k = len(how.body), len(how.spans), top_ids.shape[1]
    rows = n + (how.end != "none")
    ids, lps = np.zeros((rows, k), np.int32), np.full((rows, k), FLOOR, np.float32)
    pairs = [
        (s0, t0)
        for (s0, s1), (t0, t1) in zip(a.student_groups, a.teacher_groups, strict=True)
        if s1 - s0 == 1 and t1 - t0 == 1
    ]
    ends = {} if student_end is None or how.end != "scored" else {how.ids[m]: student_end}
    if ends:
        pairs.append((n, m))
    for s, t in pairs:
        got: dict[int, float] = {}
        for tid, lp in zip(top_ids[t].tolist(), top_logprobs[t].tolist(), strict=True):
            sid = ends.get(tid, mapped.get(tid)) if s == n else mapped.get(tid)
            if sid is None or lp <= FLOOR / 2:
                continue
            got[sid] = float(np.logaddexp(got[sid], lp)) if sid in got else lp
        for j, (sid, lp) in enumerate(got.items()):
            ids[s, j], lps[s, j] = sid, lp
    return ids, lps


def top_share(top_logprobs: list[np.ndarray]) -> float:
    """The share of rollout tokens (rows of cross_top's logprobs) that have a teacher top k."""
    from stages.shared.softlabels import FLOOR

    covered = sum(int((t[:, 0] > FLOOR / 2).sum()) for t in top_logprobs)
    return round(covered / max(1, sum(len(t) for t in top_logprobs)), 4)


def reach_text(share: float) -> str:
    """The round line's words on top_share; under half, what to do about it (every other token
    adds nothing to loss topk, where reverse_kl credits all of them through the alignment)."""
    text = f"; the teacher's top k reaches {share:.0%} of the student's tokens"
    if share < 0.5:
        text += " (under half: train.onpolicy.loss=reverse_kl learns from all of them)"
    return text
