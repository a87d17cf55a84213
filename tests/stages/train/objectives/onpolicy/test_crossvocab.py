"""A rollout scored by a teacher with another vocabulary and another chat family
(stages/train/objectives/onpolicy/crossvocab.py), checked against a hand computation: the
student's end-of-turn token reaches the teacher as the teacher's own end of turn, never as text,
and gets the difference of the two end tokens' logprobs; the text before it keeps its aligned
advantages. Tokenizers are the tests' tiny ones (tests/tiny_model.py): the student ends turns
with "<|im_end|>" (SmolLM2's and Qwen's), the teacher with "<|eot_id|>" (Llama 3's)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from stages.train.objectives.onpolicy.crossvocab import (
    CrossScore,
    alignment,
    cross_advantages,
    cross_score,
    end_of_turn,
)

TEXT = "We compute 3 + 4 = 7.\nAnswer: 7"


def _stops(tok: Any) -> frozenset[int]:
    """What the tiny student stops on: its eos, "<|im_end|>" (chat.stop_token_ids)."""
    return frozenset({tok.eos_token_id})


def test_end_of_turn_is_the_token_the_chat_template_writes_after_an_answer(cross_toks) -> None:
    s, t = cross_toks
    assert end_of_turn(s) == s.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn(t) == t.convert_tokens_to_ids("<|eot_id|>")
    t.chat_template = "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"
    try:  # a template that writes no special token there: the eos token
        assert end_of_turn(t) == t.eos_token_id
    finally:
        t.chat_template = s.chat_template.replace("<|im_end|>", "<|eot_id|>")


def test_the_students_end_reaches_the_teacher_as_its_own_end_of_turn(cross_toks) -> None:
    s, t = cross_toks
    im_end, eot = s.convert_tokens_to_ids("<|im_end|>"), t.convert_tokens_to_ids("<|eot_id|>")
    body = s.encode(TEXT, add_special_tokens=False)
    how = cross_score(s, _stops(s), t, eot, [*body, im_end])
    assert how.end == "scored" and how.body == body and how.ids[-1] == eot
    assert t.decode(how.ids[:-1]) == TEXT  # the teacher reads the text, then its own end
    pieces = "".join(t.convert_ids_to_tokens(how.ids))
    assert "im" not in pieces and "|" not in pieces.replace("<|eot_id|>", "")

    # by hand: student logprobs of its ids, teacher logprobs of its ids
    student = [-0.1 * (i + 1) for i in range(len(body))] + [-0.3]
    teacher = [-0.05 * (i + 1) for i in range(len(how.ids) - 1)] + [-0.2]
    adv = cross_advantages(alignment(s, t, how), how, student, teacher)
    assert len(adv) == len(body) + 1
    assert adv[-1] == pytest.approx(-0.2 - -0.3)  # end against end, nothing else
    assert math.fsum(adv[:-1]) == pytest.approx(math.fsum(teacher[:-1]) - math.fsum(student[:-1]))


def test_a_rollout_cut_short_has_no_end_to_score(cross_toks) -> None:
    s, t = cross_toks
    body = s.encode(TEXT, add_special_tokens=False)
    how = cross_score(s, _stops(s), t, t.convert_tokens_to_ids("<|eot_id|>"), body)
    assert how.end == "none" and how.body == body and t.decode(how.ids) == TEXT
    adv = cross_advantages(alignment(s, t, how), how, [-1.0] * len(body), [-0.5] * len(how.ids))
    assert math.fsum(adv) == pytest.approx(-0.5 * len(how.ids) + len(body))


def test_a_rollout_cut_on_a_special_token_it_does_not_stop_on_did_not_end(cross_toks) -> None:
    """Only an id the student stops on ends its turn: a rollout cut at max_tokens on another
    special token ("<|im_start|>") is scored as text, its last token included, with no end."""
    s, t = cross_toks
    body = [*s.encode(TEXT, add_special_tokens=False), s.convert_tokens_to_ids("<|im_start|>")]
    how = cross_score(s, _stops(s), t, t.convert_tokens_to_ids("<|eot_id|>"), body)
    assert how.end == "none" and how.body == body
    assert t.convert_tokens_to_ids("<|eot_id|>") not in how.ids


@pytest.mark.parametrize(
    "vocab, template",
    [
        (400, "{{ raise_exception('this template takes no assistant turn') }}"),
        # the student's own vocabulary: no answer is rendered at load, only scoring's prompt
        (None, "{% for m in messages %}{{ m['content'] | no_such_filter }}{% endfor %}"),
    ],
    ids=["another-vocab", "same-vocab"],
)
def test_a_teacher_whose_template_cannot_render_is_one_line(
    tmp_path: Path, vocab: int | None, template: str
) -> None:
    """load_pair fails before any rollout, naming teacher.model, not with a jinja traceback
    at the first score (a same-vocabulary teacher's was one, until its prompt was rendered)."""
    from tiny_model import build_tiny_model

    from pipeline.config import load_config, shipped_config
    from stages.train.objectives.onpolicy.rounds import load_pair
    from stages.train.prepared import TrainError

    student = build_tiny_model(tmp_path / "student", layers=1)
    teacher = build_tiny_model(
        tmp_path / "teacher", layers=1, **({"vocab": vocab} if vocab else {})
    )
    conf = teacher / "tokenizer_config.json"
    got = json.loads(conf.read_text())
    got["chat_template"] = template
    conf.write_text(json.dumps(got))
    for extra in ("chat_template.jinja", "chat_template.json"):  # where else it may be kept
        (teacher / extra).unlink(missing_ok=True)
    cfg = load_config(shipped_config("default"), [f"teacher.model={teacher}"])
    words = r"^teacher.model: its chat template cannot render a prompt or an answer \("
    with pytest.raises(TrainError, match=words):
        load_pair(cfg, student)


def test_a_teacher_without_an_end_of_turn_gives_the_students_end_no_credit(cross_toks) -> None:
    s, t = cross_toks
    body = s.encode(TEXT, add_special_tokens=False)
    how = cross_score(s, _stops(s), t, None, [*body, s.convert_tokens_to_ids("<|im_end|>")])
    assert how.end == "unscored" and t.decode(how.ids) == TEXT
    adv = cross_advantages(
        alignment(s, t, how), how, [-1.0] * (len(body) + 1), [-0.5] * len(how.ids)
    )
    assert adv[-1] == 0.0 and len(adv) == len(body) + 1


def test_smollm2_against_another_chat_family(cross_toks, tmp_path: Path) -> None:
    """The real SmolLM2 tokenizer (merges, digits one by one, "Ġ" spaces) as the student, where
    one is cached; the student's real end id (2) becomes the teacher's end token."""
    from transformers import AutoTokenizer

    cached = sorted(
        Path.home().glob(".cache/distill/models/smollm2-135m-instruct-*/tokenizer.json")
    )
    if not cached:
        pytest.skip("no SmolLM2 tokenizer cached (scripts/setup.sh converts one)")
    s = AutoTokenizer.from_pretrained(cached[0].parent)
    _, t = cross_toks
    assert end_of_turn(s) == s.convert_tokens_to_ids("<|im_end|>") == 2
    body = s.encode("So 125 - 37 = 88.\nAnswer: 88", add_special_tokens=False)
    how = cross_score(s, frozenset({2}), t, end_of_turn(t), [*body, 2])
    assert isinstance(how, CrossScore) and how.ids[-1] == t.convert_tokens_to_ids("<|eot_id|>")
    assert t.decode(how.ids[:-1]) == "So 125 - 37 = 88.\nAnswer: 88"
