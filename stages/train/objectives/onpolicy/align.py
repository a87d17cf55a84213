"""Cross-tokenizer credit for on-policy distillation: the student samples a completion, a
teacher with a possibly different tokenizer scores the same text, and each student token gets
an advantage (teacher logprob - student logprob).

With one vocabulary the two sides are token-for-token, so the advantage is per token. With two,
a token on one side can cover part of a token on the other, so tokens are matched through the
text they decode to, character by character:

    text = decoded_text(student_tok, student_ids)
    teacher_ids, teacher_spans = teacher_tokens(teacher_tok, text)   # the teacher scores these
    alignment = align(
        char_spans(student_tok, student_ids),
        teacher_spans,
        student_tok.convert_ids_to_tokens(student_ids),  # optional: cuts inside split characters
        teacher_tok.convert_ids_to_tokens(teacher_ids),
    )
    advantages = span_advantages(alignment, student_logprobs, teacher_logprobs)

`align` cuts the text wherever both tokenizations have a token boundary; between two such cuts
lies an aligned span with one or more tokens on each side, and the span's logprob difference is
shared evenly by its student tokens. What this loses against the same-vocabulary path:

- inside a span of several student tokens the credit is spread evenly, not given per token
  (which of them the teacher disliked is not known);
- the teacher's top-k alternatives name tokens of another vocabulary: loss topk carries them
  onto the student tokens that write the same text, and only where one token on each side covers
  the same text after the same text (crossvocab.py cross_top); elsewhere only the sampled-token
  advantage exists across tokenizers.

Every text position is a character (a Python str index). Spans are [start, end), contiguous,
non-overlapping and cover the text; a token that decodes to no whole character (a byte-level
token holding the first byte of a multi-byte character) has an empty span (start == end).
Special tokens decode to their text: a completion ending in the student's end-of-sequence token
("<|im_end|>") hands that text to the teacher, which reads it as plain characters unless it has
the same special token, so drop it from the ids before aligning and credit it apart (crossvocab.py
does: it scores it as the teacher's own end of turn).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError

Span = tuple[int, int]


class AlignError(UserError):
    """Student and teacher tokens cannot be matched through their text; the message says why."""


def decoded_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """The text `ids` stand for, decoded the one way this module uses everywhere.

    Special tokens are kept (skipping them would shift every later position) and no spaces are
    "cleaned up" (the cleanup rewrites " ," to "," and would make a decoded prefix disagree with
    the decoded whole). Pass this text, not another decode, to `teacher_tokens`."""
    return tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def char_spans(tokenizer: Any, ids: Sequence[int]) -> list[Span]:
    """Each token's [start, end) in the text `decoded_text(tokenizer, ids)`.

    Token i ends where the decoded prefix ids[:i+1] ends. Offsets from the tokenizer are not
    used: they only exist for fast tokenizers when encoding, and a byte-level BPE gives every
    token of a split character the whole character's offsets. A prefix that cuts a character in
    two decodes to something that is not a prefix of the text (it ends in U+FFFD, or the partial
    bytes are dropped and it reaches no further than before): that token gets an empty span where
    the previous one ended, and the token that completes the character covers all of it. So
    spans are contiguous and cover the text, and some may be empty.

    Decoding every whole prefix costs time quadratic in the length (1.7 s for 3,000 tokens), so
    each prefix is decoded from a recent whole-character boundary instead, a few tokens back:
    the window's text past what those tokens decode to is what the token adds. Decoders act per
    token except at the start of a text (a stripped leading space or "▁", WordPiece's "##"), and
    the context tokens take that start. Should a decoder act otherwise and the windows not reach
    the end of the text, the whole prefixes are decoded."""
    ids = list(ids)
    text = decoded_text(tokenizer, ids)
    spans: list[Span] = []
    end = 0
    boundaries = deque([0])  # token indices where the decoded prefix ends at a whole character
    context, head = 0, ""  # the window's first token, and the text of its tokens before `end`
    for i in range(len(ids)):
        start = end
        window = decoded_text(tokenizer, ids[context : i + 1])
        if window.startswith(head) and len(window) > len(head):
            if text.startswith(window[len(head) :], end):
                end += len(window) - len(head)
        spans.append((start, end))
        if end > start:
            boundaries.append(i + 1)
            while len(boundaries) > 1 and boundaries[1] <= i + 1 - _CONTEXT:
                boundaries.popleft()
            context = boundaries[0]
            head = decoded_text(tokenizer, ids[context : i + 1])
    if end != len(text):
        return _prefix_spans(tokenizer, ids, text)
    return spans


_CONTEXT = 8  # tokens decoded ahead of a window's new ones (at least; back to a boundary)


def _prefix_spans(tokenizer: Any, ids: list[int], text: str) -> list[Span]:
    """`char_spans` by decoding every whole prefix: quadratic, for decoders windows do not fit."""
    spans: list[Span] = []
    end = 0
    for i in range(len(ids)):
        prefix = decoded_text(tokenizer, ids[: i + 1])
        start = end
        if len(prefix) > end and text.startswith(prefix):
            end = len(prefix)
        spans.append((start, end))
    if spans and end != len(text):  # a decoder whose whole is not its last prefix: cover anyway
        spans[-1] = (spans[-1][0], len(text))
    return spans


def teacher_tokens(tokenizer: Any, text: str) -> tuple[list[int], list[Span]]:
    """The teacher's tokenization of the student's completion text, no special tokens added, and
    each token's character span in `text`.

    The tokenizer must be a fast one: the teacher's server (vLLM) tokenizes with the fast
    tokenizer, and a slow one can split the same text differently, so its ids would not be the
    ones the teacher scored. The ids must decode back to `text` exactly, or no character of the
    teacher's is known to be a character of the student's (lowercasing, unknown tokens, a decoder
    that adds spaces): then the text cannot be aligned, and this refuses.

    The spans come from `char_spans` (prefix decoding), not from the offset mapping: offsets
    overlap for byte-level tokens that split a character (each byte gets the whole character),
    and tokenizers that trim offsets (a ByteLevel post-processor with trim_offsets, RoBERTa's)
    leave a token's leading space out ("Ġ7" at (8, 9), a lone "Ġ" at (10, 10)), so offsets are
    neither contiguous nor covering. Prefix decoding gives a space to the token that decodes it
    (a SentencePiece "▁word" covers " word"; a first "▁" that the decoder strips is empty), and
    the same method on both sides means one tokenizer on both sides gives the same spans."""
    if not getattr(tokenizer, "is_fast", False):
        raise AlignError(
            f"the teacher tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer, so its "
            "tokens may not be the ones the teacher server scores: load it with use_fast=True "
            "from a model directory that has tokenizer.json"
        )
    ids = [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]
    back = decoded_text(tokenizer, ids)
    if back != text:
        raise AlignError(_mismatch(text, back))
    return ids, char_spans(tokenizer, ids)


def _mismatch(text: str, back: str) -> str:
    """One line: where the teacher's decode first departs from the text, and what to do."""
    pos = next(
        (i for i, (a, b) in enumerate(zip(text, back, strict=False)) if a != b),
        min(len(text), len(back)),
    )
    return (
        f"the teacher tokenizer does not give the completion text back ({len(text)} characters "
        f"in, {len(back)} out; first difference at character {pos}: {text[pos : pos + 12]!r} "
        f"became {back[pos : pos + 12]!r}), so its tokens cannot be aligned with the student's: "
        "use a teacher whose tokenizer round-trips text (no lowercasing, no unknown tokens)"
    )


@dataclass(frozen=True)
class Alignment:
    """Aligned spans in text order: group g holds student tokens [first, last+1) in
    student_groups[g] and teacher tokens [first, last+1) in teacher_groups[g], and both cover the
    same characters. Every token of each side is in exactly one group."""

    student_groups: list[Span]
    teacher_groups: list[Span]


def align(
    student_spans: Sequence[Span],
    teacher_spans: Sequence[Span],
    student_pieces: Sequence[Hashable] | None = None,
    teacher_pieces: Sequence[Hashable] | None = None,
) -> Alignment:
    """Group student and teacher tokens by the text they cover.

    The text is cut at 0, at its length, and at every character position that is a token
    boundary in both tokenizations; the tokens between two consecutive cuts form one group. A
    token with an empty span (part of a character whose bytes it does not complete) joins the
    group of the next token of its side, the one that completes the character, and trailing
    empty tokens join the last group. Between two cuts each side has at least one non-empty
    token, since both cover the text between them.

    Characters alone cannot say where inside a split character two tokenizations agree, so
    without pieces a split character's tokens always share one group, even when both sides are
    the same tokenizer. Pass the tokens' pieces (`tokenizer.convert_ids_to_tokens(ids)` on both
    sides) to cut there too: after a run of empty tokens that starts at the same clean position
    on both sides and has the same pieces, both sides have read the same bytes. That holds when
    equal pieces mean equal bytes, as between byte-level BPE vocabularies (GPT-2's byte alphabet)
    or SentencePiece byte fallback ("<0xE2>"); pieces of unrelated schemes just never match, and
    the grouping is the character one. With pieces, one tokenization on both sides aligns one
    token to one token everywhere."""
    length = _covered_length("student", student_spans)
    teacher_length = _covered_length("teacher", teacher_spans)
    if teacher_length != length:
        raise AlignError(
            f"student spans cover {length} characters and teacher spans {teacher_length}: build "
            "both from the same text (char_spans for the student, teacher_tokens on "
            "decoded_text for the teacher)"
        )
    if (student_pieces is None) != (teacher_pieces is None):
        raise AlignError("pieces given for one side only: pass both sides' pieces, or neither")
    for side, spans, pieces in (
        ("student", student_spans, student_pieces),
        ("teacher", teacher_spans, teacher_pieces),
    ):
        if pieces is not None and len(pieces) != len(spans):
            raise AlignError(
                f"{len(pieces)} {side} pieces for {len(spans)} spans: pass one piece per token"
            )
    if length == 0 and not (student_spans and teacher_spans):  # one side has no token at all
        if not student_spans and not teacher_spans:
            return Alignment([], [])
        return Alignment([(0, len(student_spans))], [(0, len(teacher_spans))])
    student_keys = _cut_keys(student_spans, student_pieces)
    teacher_keys = _cut_keys(teacher_spans, teacher_pieces)
    common = set(student_keys) & set(teacher_keys)
    common.discard(None)
    return Alignment(_groups(student_keys, common), _groups(teacher_keys, common))


def _covered_length(side: str, spans: Sequence[Span]) -> int:
    """The text length `spans` cover; refuses spans that are not contiguous from 0."""
    end = 0
    for i, (start, stop) in enumerate(spans):
        if start != end or stop < start:
            raise AlignError(
                f"{side} span {i} is ({start}, {stop}) after one ending at {end}: spans must be "
                "contiguous from 0 (build them with char_spans or teacher_tokens)"
            )
        end = stop
    return end


_Key = tuple[int, tuple[Hashable, ...]] | None


def _cut_keys(spans: Sequence[Span], pieces: Sequence[Hashable] | None) -> list[_Key]:
    """Per token, a name for the boundary after it, equal on both sides only where both have
    read the same text: (end, ()) after a non-empty token, which ends at a whole character;
    (end, pieces of the empty run so far) after an empty token, with pieces; None (never a cut)
    after an empty token without them. Keys grow strictly along a side."""
    keys: list[_Key] = []
    run: tuple[Hashable, ...] = ()
    for i, (start, stop) in enumerate(spans):
        if stop > start:
            run = ()
            keys.append((stop, run))
        elif pieces is None:
            keys.append(None)
        else:
            run = (*run, pieces[i])
            keys.append((stop, run))
    return keys


def _groups(keys: list[_Key], common: set[_Key]) -> list[Span]:
    """[first, last+1) token indices of each group: a group ends after a token whose boundary is
    a common cut; tokens after the last cut (trailing empty ones) join the last group."""
    groups: list[Span] = []
    first = 0
    for i, key in enumerate(keys):
        if key in common:
            groups.append((first, i + 1))
            first = i + 1
    if first < len(keys):
        if groups:
            groups[-1] = (groups[-1][0], len(keys))
        else:  # an empty text and no common cut: all (empty) tokens form one group
            groups.append((first, len(keys)))
    return groups


def span_advantages(
    alignment: Alignment, student_logprobs: Sequence[float], teacher_logprobs: Sequence[float]
) -> list[float]:
    """Per student token: its span's (sum of teacher logprobs - sum of student logprobs),
    divided evenly among the span's student tokens.

    So the advantages of a sequence add up to sum(teacher) - sum(student), the log of how much
    likelier the teacher finds the whole completion than the student did, and where both sides
    tokenized alike (one group per token: the same tokenizer, the student's sample tokenized as
    the teacher's encoder would, pieces given to `align`) each token's advantage is exactly
    teacher_lp - student_lp. Spreading a span's
    difference evenly is the price of two vocabularies: which of its student tokens the teacher
    disliked is not known (see the module docstring)."""
    n_student = alignment.student_groups[-1][1] if alignment.student_groups else 0
    n_teacher = alignment.teacher_groups[-1][1] if alignment.teacher_groups else 0
    if len(student_logprobs) != n_student or len(teacher_logprobs) != n_teacher:
        raise AlignError(
            f"{len(student_logprobs)} student and {len(teacher_logprobs)} teacher logprobs for an "
            f"alignment of {n_student} student and {n_teacher} teacher tokens: pass one logprob "
            "per token of the ids the alignment was built from"
        )
    advantages: list[float] = []
    for (s0, s1), (t0, t1) in zip(alignment.student_groups, alignment.teacher_groups, strict=True):
        if s1 == s0:  # only for an empty text with teacher tokens: no student token to credit
            continue
        delta = math.fsum(teacher_logprobs[t0:t1]) - math.fsum(student_logprobs[s0:s1])
        advantages.extend([delta / (s1 - s0)] * (s1 - s0))
    return advantages
