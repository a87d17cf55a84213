"""train.objective: onpolicy as the config and the runner see it: its SFT start is the very train
stage a plain run plans (one key, trained once), its own key moves with what its rounds ask with,
and combinations it cannot honour are one line naming the key."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config, shipped_config
from pipeline.runner import plan

BASE = ["eval.models=[teacher,base,student]"]


def _plans(*overrides: str) -> dict:
    return plan(load_config(shipped_config("default"), [*BASE, *overrides]), "eval")


def test_the_sft_start_is_the_plain_runs_train_stage() -> None:
    plain = _plans()
    onpolicy = _plans("train.objective=onpolicy")
    assert onpolicy["sft/train"].key == plain["train"].key
    assert onpolicy["train"].key != plain["train"].key
    assert "sft/train" not in _plans("train.objective=onpolicy", "train.onpolicy.start=base")


@pytest.mark.parametrize(
    "change",
    [
        "train.onpolicy.teacher_hint=answer",
        "teacher.template=teacher_oneshot.j2",
        "student_template=teacher_oneshot.j2",
        "train.onpolicy.k=7",
        "train.onpolicy.rounds=5",
    ],
)
def test_what_the_rounds_ask_with_is_in_the_key(change: str) -> None:
    a = _plans("train.objective=onpolicy")["train"].key
    assert _plans("train.objective=onpolicy", change)["train"].key != a


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.lora.enabled=true"], "train.objective"),
        (["train.answer_only=true"], "train.objective"),
        (["train.onpolicy.loss=kl"], "train.onpolicy.loss"),
        (["train.onpolicy.rounds=0"], "train.onpolicy.rounds"),
        (["train.onpolicy.batch=12"], "train.onpolicy.batch"),  # 8 a batch: 12 is no multiple
    ],
)
def test_what_onpolicy_cannot_do_is_refused_where_the_config_is_built(overrides, key) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(shipped_config("default"), ["train.objective=onpolicy", *overrides])
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_the_rounds_batch_moves_without_moving_the_sft_start() -> None:
    """train.onpolicy.batch is the rounds' own: the SFT start keeps its key (train.grad_accum,
    SFT's, would move it), the on-policy stage's key moves, and the opening line and the update
    count its steps: 64 questions x 2 rollouts in steps of 32 is 4, of 4 (one batch of 4) 32."""
    from stages.train.objectives.onpolicy.stage import round_cost
    from stages.train.objectives.onpolicy.update import update_batches

    start = _plans("train.objective=onpolicy")
    for batch in ("train.onpolicy.batch=32", "train.onpolicy.batch=4"):
        moved = _plans("train.objective=onpolicy", batch)
        assert moved["sft/train"].key == start["sft/train"].key
        assert moved["train"].key != start["train"].key
    assert _plans("train.objective=onpolicy", "train.grad_accum=4")["sft/train"].key != (
        start["sft/train"].key
    )
    cfg = load_config(shipped_config("default"), ["train.objective=onpolicy"])
    assert update_batches(cfg.train) == (8, 1)  # 0: SFT's batches
    assert "an update of 16 steps of 8 rollouts" in round_cost(cfg, 400)
    for batch, batches, line in [(32, (8, 4), "4 steps of 32"), (4, (4, 1), "32 steps of 4")]:
        cfg = load_config(shipped_config("default"), [f"train.onpolicy.batch={batch}"])
        assert update_batches(cfg.train) == batches
        assert f"an update of {line} rollouts" in round_cost(cfg, 400)


def test_the_onpolicy_key_holds_its_settings_at_their_defaults_too() -> None:
    """train.onpolicy is keyed only where set (other objectives' keys never moved with it), which
    left the defaults' values out of the onpolicy key: when loss's default became topk a stage
    trained under reverse_kl would have passed for it. The key holds the section whole; a
    setting given keeps the key it had before (the default's is the same as naming topk)."""
    from stages.train import key_parts

    cfg = load_config(shipped_config("default"), ["train.objective=onpolicy"])
    assert key_parts(cfg).config["train"]["onpolicy"]["loss"] == "topk"
    sft = load_config(shipped_config("default"))
    assert "onpolicy" not in key_parts(sft).config["train"]  # the default run's key as it was
    default = _plans("train.objective=onpolicy")["train"].key
    assert default == _plans("train.objective=onpolicy", "train.onpolicy.loss=topk")["train"].key
    assert (
        default != _plans("train.objective=onpolicy", "train.onpolicy.loss=reverse_kl")["train"].key
    )


def test_no_eval_question_reaches_a_teacher_prompt() -> None:
    """Every round's questions are train questions, and the teacher's scoring prompt (its worked
    example and, with teacher_hint, the gold answer) holds no eval question."""
    from pipeline.prompts import fewshot_examples
    from pipeline.tasks import load_task
    from stages.train.objectives.onpolicy.rounds import round_questions, teacher_prompt

    cfg = load_config(shipped_config("default"), ["train.onpolicy.teacher_hint=answer"])
    task = load_task(cfg.task)
    shots = fewshot_examples(task, cfg.teacher.fewshot)
    evals = {q.question for q in task.eval}
    train_ids = {q.id for q in task.train}
    for r in (1, 2, 7):
        qs = round_questions(task.train, r, cfg.train.onpolicy.questions, cfg.train.seed)
        assert {q.id for q in qs} <= train_ids and len(qs) == cfg.train.onpolicy.questions
        for q in qs:
            text = "\n".join(m["content"] for m in teacher_prompt(cfg, q, shots))
            assert f"the correct final answer is {q.answer}." in text
            assert not any(e in text for e in evals)


def test_select_best_keeps_the_sft_start_when_every_round_validates_below_it() -> None:
    """Seed 42 of the README's experiment: the start validated 88.1%, its rounds 79.8-63.1%."""
    from stages.train.objectives.onpolicy.stage import choose

    rounds = [
        {"round": r, "validation_accuracy": a, "dir": f"r{r}"}
        for r, a in ((1, 0.798), (2, 0.738), (3, 0.75), (4, 0.631))
    ]
    start = [{"round": 0, "validation_accuracy": 0.881, "dir": "sft"}]
    assert choose(rounds, start, "best")["dir"] == "sft"
    assert choose(rounds, start, "last")["round"] == 4
    assert choose(rounds, [], "best")["round"] == 1  # a base start: the rounds alone
    better = [*rounds[:2], {"round": 3, "validation_accuracy": 0.9, "dir": "r3"}]
    assert choose(better, start, "best")["round"] == 3
    assert choose(rounds, [{**start[0], "validation_accuracy": 0.798}], "best")["round"] == 0


def test_the_onpolicy_key_moved_with_the_start_counted() -> None:
    """A stage dir cached when select: best chose among the rounds only has another key."""
    from stages.train import key_parts

    cfg = load_config(shipped_config("default"), ["train.objective=onpolicy"])
    assert key_parts(cfg).extra["select_from"] == "start and rounds"
