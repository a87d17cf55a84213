"""Cross-tokenizer alignment (stages/train/objectives/onpolicy/align.py) on tokenizers built here,
offline from a small corpus: byte-level BPEs (GPT-2 / Qwen style; characters they have no merge for
are split into bytes), a SentencePiece-style "▁word" BPE, a Llama-2 style BPE with byte fallback,
WordPieces (one lowercasing) and ByT5's slow byte tokenizer; plus the SmolLM2 tokenizer where one is
cached under ~/.cache/distill/models (those cases skip otherwise)."""

from __future__ import annotations

import json
import random
import string
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import stages.train.objectives.onpolicy.align as align_module
from stages.train.objectives.onpolicy.align import (
    AlignError,
    Alignment,
    align,
    char_spans,
    decoded_text,
    span_advantages,
    teacher_tokens,
)

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

TEXT = "Answer: 7 − 2 = 5 ✓ (café), total 12."
_CORPUS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now? Answer: 7 - 2 = 5. "
    "The total is 12, plus 30. Step 1: 3 + 4 = 7. Sara had 9 pens and gave away 2."
] * 20
_ALPHABET = list(string.ascii_letters + string.digits + string.punctuation + "é−✓")


def _fast(tok: Any, **kw: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


@cache
def byte_bpe(vocab: int, trim_offsets: bool = False) -> Any:
    """Byte-level BPE: é, − and ✓ are not in the corpus, so each is split into its UTF-8 bytes.
    `trim_offsets`: a ByteLevel post-processor that leaves spaces out of offsets (RoBERTa's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    if trim_offsets:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return _fast(tok, eos_token="<|endoftext|>")


@cache
def metaspace_bpe(vocab: int, alphabet: str = "".join(_ALPHABET)) -> Any:
    """SentencePiece-style BPE: a space becomes "▁" at the start of the next token, one is
    prepended to the text and stripped again when decoding (Llama's scheme)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<unk>"],
        initial_alphabet=list(alphabet),
        limit_alphabet=len(alphabet) + 1,
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return _fast(tok, unk_token="<unk>")


@cache
def llama_byte_fallback() -> Any:
    """Llama-2 style: "▁" prepended and for spaces by the normalizer, bytes of characters outside
    the vocabulary as "<0xE2>" tokens, and a decoder that strips the prepended space."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer = trainers.BpeTrainer(vocab_size=150, special_tokens=["<unk>"], show_progress=False)
    tok.train_from_iterator([line.replace(" ", "▁") for line in _CORPUS], trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return _fast(tok, unk_token="<unk>")


@cache
def wordpiece(lowercase: bool = True) -> Any:
    """BERT style: its decoder puts a space between words, so "Answer:" comes back "Answer :"."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[UNK]"], initial_alphabet=_ALPHABET, show_progress=False
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return _fast(tok, unk_token="[UNK]")


@cache
def _smollm2() -> Any | None:
    found = sorted(Path.home().glob(".cache/distill/models/*/tokenizer.json"))
    if not found:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(found[0].parent)


TOKENIZERS = {
    "bytebpe300": lambda: byte_bpe(300),
    "bytebpe_max": lambda: byte_bpe(400),
    "metaspace": lambda: metaspace_bpe(160),
    "llama": llama_byte_fallback,
    "smollm2": _smollm2,
}


def _tok(name: str) -> Any:
    tok = TOKENIZERS[name]()
    if tok is None:
        pytest.skip(f"no local {name} tokenizer")
    return tok


def _logprobs(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [-rng.expovariate(1.0) for _ in range(n)]


def _check_groups(groups: list[tuple[int, int]], n: int) -> None:
    """Groups are in order, non-empty, and hold every token exactly once."""
    assert groups[0][0] == 0 and groups[-1][1] == n
    for (_, prev_end), (start, _) in zip(groups, groups[1:], strict=False):
        assert start == prev_end
    assert all(end > start for start, end in groups)


@pytest.mark.parametrize("name", ["bytebpe300", "metaspace", "llama", "smollm2"])
def test_same_tokenizer_aligns_one_to_one(name: str) -> None:
    tok = _tok(name)
    student_ids = tok.encode(TEXT, add_special_tokens=False)
    text = decoded_text(tok, student_ids)
    assert text == TEXT
    teacher_ids, teacher_spans = teacher_tokens(tok, text)
    assert teacher_ids == student_ids
    pieces = tok.convert_ids_to_tokens(student_ids)
    alignment = align(char_spans(tok, student_ids), teacher_spans, pieces, list(pieces))
    n = len(student_ids)
    assert alignment == Alignment([(i, i + 1) for i in range(n)], [(i, i + 1) for i in range(n)])
    s, t = _logprobs(n, 1), _logprobs(n, 2)
    assert span_advantages(alignment, s, t) == [ti - si for si, ti in zip(s, t, strict=True)]


def test_same_tokenizer_without_pieces_groups_only_split_characters() -> None:
    """Without pieces the bytes of a split character share a group, even on one tokenizer: the
    three of "✓", the three of "−" and the two of "é"; every other token is alone."""
    tok = byte_bpe(300)
    ids = tok.encode(TEXT, add_special_tokens=False)
    spans = char_spans(tok, ids)
    alignment = align(spans, teacher_tokens(tok, TEXT)[1])
    assert alignment.student_groups == alignment.teacher_groups
    sizes = [b - a for a, b in alignment.student_groups]
    assert sorted(sizes, reverse=True)[:4] == [3, 3, 2, 1]
    assert sum(sizes) == len(ids) and len(sizes) == len(ids) - 5
    for a, b in alignment.student_groups:  # a group of several is one character's bytes
        assert b - a == 1 or TEXT[spans[a][0] : spans[b - 1][1]] in {"−", "✓", "é"}


@pytest.mark.parametrize("with_pieces", [False, True], ids=["chars", "pieces"])
@pytest.mark.parametrize(
    ("student", "teacher"),
    [
        ("bytebpe300", "metaspace"),
        ("metaspace", "bytebpe300"),
        ("bytebpe300", "bytebpe_max"),
        ("llama", "bytebpe300"),
        ("metaspace", "llama"),
        ("smollm2", "metaspace"),
        ("bytebpe_max", "smollm2"),
    ],
)
def test_different_tokenizers_align_through_the_text(
    student: str, teacher: str, with_pieces: bool
) -> None:
    s_tok, t_tok = _tok(student), _tok(teacher)
    student_ids = s_tok.encode(TEXT, add_special_tokens=False)
    text = decoded_text(s_tok, student_ids)
    s_spans = char_spans(s_tok, student_ids)
    teacher_ids, t_spans = teacher_tokens(t_tok, text)
    assert s_tok.convert_ids_to_tokens(student_ids) != t_tok.convert_ids_to_tokens(teacher_ids)
    pieces = (
        (s_tok.convert_ids_to_tokens(student_ids), t_tok.convert_ids_to_tokens(teacher_ids))
        if with_pieces
        else (None, None)
    )
    alignment = align(s_spans, t_spans, *pieces)

    _check_groups(alignment.student_groups, len(student_ids))
    _check_groups(alignment.teacher_groups, len(teacher_ids))
    assert len(alignment.student_groups) == len(alignment.teacher_groups)
    texts = []
    for (s0, s1), (t0, t1) in zip(alignment.student_groups, alignment.teacher_groups, strict=True):
        chars = (s_spans[s0][0], s_spans[s1 - 1][1])
        assert chars == (t_spans[t0][0], t_spans[t1 - 1][1])  # both sides cover the same text
        texts.append(text[chars[0] : chars[1]])
        inner_s = {end for _, end in s_spans[s0 : s1 - 1]} - {chars[0], chars[1]}
        inner_t = {end for _, end in t_spans[t0 : t1 - 1]} - {chars[0], chars[1]}
        assert not inner_s & inner_t  # a shared boundary inside a group should have cut it
    assert "".join(texts) == text
    assert len(texts) < max(len(student_ids), len(teacher_ids))  # some group holds several

    s, t = _logprobs(len(student_ids), 3), _logprobs(len(teacher_ids), 4)
    adv = span_advantages(alignment, s, t)
    assert len(adv) == len(student_ids)
    assert sum(adv) == pytest.approx(sum(t) - sum(s), rel=1e-9)


def test_pieces_cut_inside_a_split_character_only_where_both_read_the_same_bytes() -> None:
    """ "✓" is bytes E2 9C 93, "â", "ľ", "ĵ" in GPT-2's byte alphabet. One side splits it 1+2,
    the other 1+1+1: they agree after "â", not after "ľ" (the first read one byte, the second
    two), so the groups are [â]|[â] and [ľĵ]|[ľ, ĵ]."""
    student = [(0, 0), (0, 1)]
    teacher = [(0, 0), (0, 0), (0, 1)]
    alignment = align(student, teacher, ["â", "ľĵ"], ["â", "ľ", "ĵ"])
    assert alignment == Alignment([(0, 1), (1, 2)], [(0, 1), (1, 3)])
    # split 2+1 against 1+2: the first tokens read different bytes, so no cut before the end
    alignment = align(student, [(0, 0), (0, 1)], ["âľ", "ĵ"], ["â", "ľĵ"])
    assert alignment == Alignment([(0, 2)], [(0, 2)])
    # without pieces a split character is one group whatever the split
    assert align(student, teacher) == Alignment([(0, 2)], [(0, 3)])


def _spans_by_whole_prefixes(tok: Any, ids: list[int]) -> list[tuple[int, int]]:
    """The definition, decoded the slow way: token i ends where decode(ids[:i+1]) ends, unless
    that is not a prefix of the whole text or reaches no further (then its span is empty)."""
    text = decoded_text(tok, ids)
    spans, end = [], 0
    for i in range(len(ids)):
        prefix = decoded_text(tok, ids[: i + 1])
        start = end
        if len(prefix) > end and text.startswith(prefix):
            end = len(prefix)
        spans.append((start, end))
    return spans


_LONG = (
    " Answer:  7 − 2 = 5 ✓\n\n(café) 😀😀 日本語, total 12.\tStep 1: Tom has 3 apples; "
    "naïve résumé — 3½ + 4 = 7½ ✓✓ "
) * 6


@pytest.mark.parametrize("text", [TEXT, _LONG], ids=["short", "long"])
@pytest.mark.parametrize(
    "name", ["bytebpe300", "bytebpe_max", "metaspace", "llama", "wordpiece", "byt5", "smollm2"]
)
def test_char_spans_match_decoding_every_prefix(
    name: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """char_spans decodes short windows, not whole prefixes; on every kind of decoder here
    (byte-level, "▁" with a stripped start, byte fallback, WordPiece's added spaces, a slow
    byte tokenizer) the spans are those of whole prefixes, without falling back on them."""

    def no_fallback(*args: Any) -> None:
        raise AssertionError("char_spans fell back on decoding whole prefixes")

    monkeypatch.setattr(align_module, "_prefix_spans", no_fallback)
    if name == "wordpiece":
        tok = wordpiece(lowercase=False)
    elif name == "byt5":
        from transformers import ByT5Tokenizer

        tok = ByT5Tokenizer()
    else:
        tok = _tok(name)
    ids = tok.encode(text, add_special_tokens=False)
    spans = char_spans(tok, ids)
    assert spans == _spans_by_whole_prefixes(tok, ids)
    assert spans[-1][1] == len(decoded_text(tok, ids))


class _PositionalDecoder:
    """A decoder no window fits: each character depends on its token's index in the decode."""

    def decode(self, ids: list[int], **kw: Any) -> str:
        return "".join(chr(ord("a") + (k + i) % 26) for k, i in enumerate(ids))


def test_char_spans_fall_back_on_whole_prefixes_when_windows_do_not_fit() -> None:
    tok = _PositionalDecoder()
    ids = list(range(3, 33))
    assert (
        char_spans(tok, ids)
        == _spans_by_whole_prefixes(tok, ids)
        == [(i, i + 1) for i in range(30)]
    )


def test_char_spans_give_a_split_character_to_the_token_that_completes_it() -> None:
    tok = byte_bpe(300)
    ids = tok.encode("café ✓", add_special_tokens=False)
    # é is two bytes and ✓ three, and this vocabulary has no merge for either
    assert tok.convert_ids_to_tokens(ids) == ["c", "a", "f", "Ã", "©", "Ġ", "â", "ľ", "ĵ"]
    assert decoded_text(tok, ids) == "café ✓"
    spans = char_spans(tok, ids)
    assert spans == [(0, 1), (1, 2), (2, 3), (3, 3), (3, 4), (4, 5), (5, 5), (5, 5), (5, 6)]


def test_char_spans_on_a_slow_byte_tokenizer() -> None:
    """ByT5 decodes a cut character to nothing rather than U+FFFD: the same spans come out."""
    from transformers import ByT5Tokenizer

    tok = ByT5Tokenizer()
    ids = tok.encode("aé✓", add_special_tokens=False)
    assert len(ids) == 6
    assert char_spans(tok, ids) == [(0, 1), (1, 1), (1, 2), (2, 2), (2, 2), (2, 3)]


def test_teacher_spans_give_a_leading_space_to_its_token() -> None:
    """Offsets that leave a token's leading space out (ByteLevel trim_offsets: "Ġ7" at (8, 9),
    a lone "Ġ" at (10, 10)) are neither contiguous nor covering; the spans give the space to the
    token that decodes it."""
    tok = byte_bpe(300, trim_offsets=True)
    ids, spans = teacher_tokens(tok, TEXT)
    pieces = tok.convert_ids_to_tokens(ids)
    enc = tok(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ids
    offsets = dict(zip(pieces, enc["offset_mapping"], strict=True))
    assert offsets["Ġ7"] == (8, 9)  # the trimmed offsets this module does not use
    spaced = {"Ġ7": " 7", "Ġ2": " 2", "Ġ=": " =", "Ġ1": " 1", "Ġ": " "}
    for piece, (a, b) in zip(pieces, spans, strict=True):
        if piece in spaced:
            assert TEXT[a:b] == spaced[piece]
    assert "".join(TEXT[a:b] for a, b in spans) == TEXT
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


def test_teacher_spans_of_a_sentencepiece_style_tokenizer() -> None:
    """ "▁word" tokens: each span is the token's text with "▁" as a space, except the first
    token's "▁", which the tokenizer prepended and its decoder strips."""
    tok = metaspace_bpe(160)
    ids, spans = teacher_tokens(tok, TEXT)
    pieces = tok.convert_ids_to_tokens(ids)
    texts = [TEXT[a:b] for a, b in spans]
    assert "".join(texts) == TEXT
    assert texts[0] == pieces[0].removeprefix("▁")
    assert texts[1:] == [p.replace("▁", " ") for p in pieces[1:]]
    assert any(p.startswith("▁") and len(p) > 1 for p in pieces[1:])  # some "▁word" tokens


def test_byte_level_teacher_spans_do_not_overlap() -> None:
    """A byte-level tokenizer's offsets give every byte of a split character the whole
    character; the spans give it to the byte that completes it, and the others are empty."""
    tok = byte_bpe(300)
    ids, spans = teacher_tokens(tok, TEXT)
    offsets = tok(TEXT, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    check = TEXT.index("✓")
    assert offsets.count((check, check + 1)) == 3  # the overlap this module does not use
    assert spans.count((check, check)) == 2 and spans.count((check, check + 1)) == 1
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)


@pytest.mark.parametrize(
    ("tokenizer", "where"),
    [
        (wordpiece, 0),  # "Answer" comes back as "answer"
        (lambda: metaspace_bpe(60, string.ascii_uppercase + string.digits + ":=−✓()., "), 1),
    ],
    ids=["lowercase-wordpiece", "unknown-characters"],
)
def test_teacher_tokens_refuse_text_they_cannot_give_back(tokenizer: Any, where: int) -> None:
    tok = tokenizer()
    with pytest.raises(AlignError) as err:
        teacher_tokens(tok, TEXT)
    message = str(err.value)
    assert "\n" not in message and "\r" not in message
    assert f"first difference at character {where}:" in message
    assert f"{len(TEXT)} characters in" in message


def test_teacher_tokens_refuse_a_newline_mismatch_in_one_line() -> None:
    tok = wordpiece()
    with pytest.raises(AlignError) as err:
        teacher_tokens(tok, "Answer:\n7")
    assert "\n" not in str(err.value)


def test_teacher_tokens_refuse_a_slow_tokenizer() -> None:
    from transformers import ByT5Tokenizer

    tok = ByT5Tokenizer()
    assert not tok.is_fast
    with pytest.raises(AlignError, match="not a fast tokenizer") as err:
        teacher_tokens(tok, TEXT)
    assert "\n" not in str(err.value)


def test_align_by_hand() -> None:
    # student "ab|cd" vs teacher "a|bc|d": the only common cuts are 0 and 4, so one group
    assert align([(0, 2), (2, 4)], [(0, 1), (1, 3), (3, 4)]) == Alignment([(0, 2)], [(0, 3)])
    # an empty student token (first byte of a character) joins the token that completes it
    assert align([(0, 0), (0, 1), (1, 3)], [(0, 1), (1, 2), (2, 3)]) == Alignment(
        [(0, 2), (2, 3)], [(0, 1), (1, 3)]
    )
    # an empty token at a common cut joins the following group; a trailing one the last group
    assert align([(0, 1), (1, 1), (1, 2), (2, 2)], [(0, 1), (1, 2)]) == Alignment(
        [(0, 1), (1, 4)], [(0, 1), (1, 2)]
    )
    assert align([], []) == Alignment([], [])


def test_span_advantages_spread_a_span_evenly() -> None:
    alignment = align([(0, 2), (2, 4), (4, 5)], [(0, 1), (1, 4), (4, 5)])
    assert alignment == Alignment([(0, 2), (2, 3)], [(0, 2), (2, 3)])
    adv = span_advantages(alignment, [-1.0, -2.0, -0.5], [-0.5, -0.25, -1.5])
    assert adv == [(-0.75 + 3.0) / 2, (-0.75 + 3.0) / 2, -1.0]


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(AlignError, match="same text"):
        align([(0, 3)], [(0, 2)])
    with pytest.raises(AlignError, match="contiguous"):
        align([(0, 1), (2, 3)], [(0, 3)])
    with pytest.raises(AlignError, match="one side only"):
        align([(0, 1)], [(0, 1)], ["a"])
    alignment = align([(0, 1)], [(0, 1)])
    with pytest.raises(AlignError, match="one logprob per token"):
        span_advantages(alignment, [-1.0, -2.0], [-1.0])


def test_an_empty_text_aligns_whatever_empty_tokens_there_are() -> None:
    alignment = align([], [(0, 0)])
    assert alignment == Alignment([(0, 0)], [(0, 1)])
    assert span_advantages(alignment, [], [-1.0]) == []
    assert span_advantages(align([(0, 0)], []), [-2.0], []) == [2.0]
