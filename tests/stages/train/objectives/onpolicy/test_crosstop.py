"""The teacher's top k carried onto the student's vocabulary (loss topk across tokenizers,
stages/train/objectives/onpolicy/crossvocab.py cross_top), checked against a hand computation
on the tests' tiny tokenizers: the student's tokenizer writes " marbles" as one token where the
teacher's writes " mar" + "bles", and the student ends turns with "<|im_end|>", the teacher with
"<|eot_id|>"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.shared.softlabels import FLOOR
from stages.train.objectives.onpolicy.crossvocab import (
    alignment,
    cross_score,
    cross_top,
    reach_text,
    token_text,
    vocab_map,
)

TEXT = "Tom has 5 more marbles than Sara"


def test_the_vocabulary_map_joins_tokens_that_write_the_same_text(cross_toks) -> None:
    s, t = cross_toks
    mapped = vocab_map(s, t)
    assert mapped and all(token_text(t, a) == token_text(s, b) for a, b in mapped.items())
    assert t.convert_tokens_to_ids("<|eot_id|>") not in mapped  # special: never by its text
    assert mapped[t.convert_tokens_to_ids("Ġhas")] == s.convert_tokens_to_ids("Ġhas")


def test_the_teachers_top_k_in_student_ids_by_hand(cross_toks) -> None:
    s, t = cross_toks
    mapped = vocab_map(s, t)
    im_end, eot = s.convert_tokens_to_ids("<|im_end|>"), t.convert_tokens_to_ids("<|eot_id|>")
    body = s.encode(TEXT, add_special_tokens=False)
    how = cross_score(s, frozenset({im_end}), t, eot, [*body, im_end])
    assert s.convert_ids_to_tokens(body)[5] == "Ġmarbles"
    assert t.convert_ids_to_tokens(how.ids)[5:7] == ["Ġmar", "bles"]
    five_t, five_s = t.convert_tokens_to_ids("5"), s.convert_tokens_to_ids("5")
    # the tiny student has every text the tiny teacher has: one is taken out, as a teacher token
    # whose text the student writes only in pieces
    missing = t.convert_tokens_to_ids("Ġapples")
    del mapped[missing]
    # at every teacher position: its own token, one the student has no token for, and "5"
    top_ids = np.array([[i, missing, five_t] for i in how.ids], np.int32)
    top_lps = np.tile(np.array([-0.1, -2.5, -3.0], np.float32), (len(how.ids), 1))
    ids, lps = cross_top(alignment(s, t, how), how, top_ids, top_lps, mapped, im_end)
    assert ids.shape == lps.shape == (len(body) + 1, 3)

    def row(i: int) -> dict[int, float]:
        return {int(a): float(b) for a, b in zip(ids[i], lps[i], strict=True) if b > FLOOR / 2}

    assert row(0) == pytest.approx({body[0]: -0.1, five_s: -3.0})  # "Tom", one to one
    assert row(3) == pytest.approx({five_s: float(np.logaddexp(-0.1, -3.0))})  # "5" twice: summed
    assert row(5) == {}  # " marbles" is two teacher tokens: their alternatives are not its
    assert row(6) == pytest.approx({body[6]: -0.1, five_s: -3.0})  # " than": aligned again
    assert row(len(body)) == pytest.approx({im_end: -0.1, five_s: -3.0})  # end of turn: its own
    assert math.isclose(float(lps[5].max()), FLOOR)
    ids2, lps2 = cross_top(alignment(s, t, how), how, top_ids, top_lps, mapped, None)
    assert (lps2[len(body)] == FLOOR).all() and (lps2[:-1] == lps[:-1]).all()


def test_a_row_of_padding_adds_no_loss_and_no_gradient() -> None:
    import torch

    from pipeline.config import KDConfig
    from stages.train.losses.divergence import kd_sum

    logits = torch.randn(2, 7, requires_grad=True)
    top_ids = torch.tensor([[3, 1], [0, 0]])
    top_lp = torch.tensor([[-0.2, -2.0], [FLOOR, FLOOR]])
    kd_sum(
        logits, top_ids, top_lp, KDConfig(alpha=1.0, divergence="reverse", tail="bucket")
    ).backward()
    assert logits.grad[1].abs().max() == 0 and logits.grad[0].abs().max() > 0


def test_the_round_line_says_what_to_do_when_the_top_k_reaches_under_half() -> None:
    """loss topk is the default: where the vocabularies cut the text apart, most of the student's
    tokens have no top k, and the round's line names the loss that learns from them all."""
    assert reach_text(0.996) == "; the teacher's top k reaches 100% of the student's tokens"
    low = reach_text(0.42)
    assert low.startswith("; the teacher's top k reaches 42% of the student's tokens (under half")
    assert "train.onpolicy.loss=reverse_kl" in low
