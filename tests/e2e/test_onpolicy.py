"""train.objective: onpolicy end to end on tiny models, through the CLI: real vLLM rollouts and
teacher scores, real TRL updates. Raising the number of rounds runs only the new one; a teacher
with another tokenizer and chat family pulls the student's KL down through the character-span
alignment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import kill_cli_when, run_cli

pytestmark = pytest.mark.slow
# nats/token the cross-tokenizer topk rounds' KL must fall by, round 1 to round 2 (measured
# 0.79, 0.66 and 0.63 in three runs; a round's estimate spreads by about 0.1)
KL_FALL = 0.3


def _overrides(tmp: Path, student: Path, teacher: Path) -> list[str]:
    return [
        f"runs_dir={tmp / 'runs'}",
        f"cache_dir={tmp / 'cache'}",
        f"teacher.model={teacher}",
        f"train.student={student}",
        "task.max_train=16",
        "task.max_eval=8",
        "generate.n=2",
        "generate.sampling.max_tokens=24",
        "filter.checks=[truncated,format,exact_dedup]",
        "train.max_steps=4",
        "train.batch_size=4",
        "train.learning_rate=0.001",
        "eval.sampling.max_tokens=16",
        "train.objective=onpolicy",
        "train.onpolicy.questions=4",
        "train.onpolicy.n=2",
        "train.onpolicy.max_tokens=16",
        "train.onpolicy.teacher_hint=answer",
    ]


def _stage(runs: Path) -> tuple[Path, dict]:
    """The on-policy train stage dir written last, and its stats."""
    found = [
        p
        for p in (runs / "default" / "train").glob("*/train_stats.json")
        if json.loads(p.read_text()).get("objective") == "onpolicy"
    ]
    assert found, "no on-policy train stage"
    newest = max(found, key=lambda p: p.stat().st_mtime)
    return newest.parent, json.loads(newest.read_text())


@pytest.fixture(scope="module")
def sft(tiny_model: Path, tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """generate, filter and the SFT student, once: the start of the tests' rounds."""
    tmp = tmp_path_factory.mktemp("onpolicy")
    overrides = _overrides(tmp, tiny_model, tiny_teacher)
    r = run_cli("train", *overrides, "train.objective=sft")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"overrides": overrides, "tmp": tmp}


def test_rounds_from_sft_then_one_more_round_runs_only_it(sft: dict) -> None:
    overrides, tmp_path = sft["overrides"], sft["tmp"]
    r = run_cli("train", *overrides, "train.onpolicy.rounds=1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d1, stats = _stage(tmp_path / "runs")
    (one,) = stats["rounds"]
    assert one["rollouts"] == 8 and one["scored_tokens"] == one["rollout_tokens"] > 0
    assert one["reverse_kl"] is not None and 0 <= one["verified"] <= one["correct"] <= 1
    assert 0 <= one["validation_accuracy"] <= 1 and one["steps"] == 2
    assert (d1 / "model" / "config.json").is_file() and (d1 / "loss.png").is_file()
    rd = next(d1.parent.glob("onpolicy/*/round-001"))
    rollouts = [json.loads(x) for x in (rd / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 8 and all(
        len(x["completion_ids"]) == len(x["logprobs"]) for x in rollouts
    )
    assert len((rd / "scores.jsonl").read_text().splitlines()) == 8

    r = run_cli("train", *overrides, "train.onpolicy.rounds=2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "round 1: done before" in r.stdout and "round 2:" in r.stdout
    assert "round 1 rollouts" not in r.stdout + r.stderr  # round 1's student is not asked again
    d2, stats = _stage(tmp_path / "runs")
    assert d2 != d1 and [x["round"] for x in stats["rounds"]] == [1, 2]
    assert stats["rounds"][0] == {k: one[k] for k in stats["rounds"][0]}


def test_a_teacher_of_another_chat_family_does_not_teach_the_student_never_to_stop(
    tiny_teacher, tmp_path
):
    """Issue 50: a teacher with another vocabulary, which ends its turns with "<|eot_id|>" (Llama
    3's) where the student ends with "<|im_end|>", trained longer on the task than the student
    (400 steps to 150). Every round asks the same questions (questions >= the train split), 8
    rollouts each, and updates in 4 steps of 32 rollouts. Before the student's end of turn was
    scored as the teacher's own, it reached the teacher as plain text ("<", "|", "im", ...):
    round 1 measured a reverse KL of 5.21 nats/token, and 93, 21, then 0 of 128 rollouts ended
    their turn: the student was taught never to stop. Now both rounds end at least a third of
    their rollouts (66 to 100 of 128 in three rounds at train seeds 42, 1 and 2).

    The KL fell over the two updates in four such runs (1.66 -> 1.53, 1.67 -> 1.40, 1.77 ->
    1.67, 1.74 -> 1.60), by about one standard deviation of a round's estimate (~0.1 at 128
    rollouts); with 16 rollouts a question and 8 steps a round it rose at one seed of three
    (1.72 -> 2.03). The rollouts' seeds follow the test's tmp paths, so a fall this small
    cannot be held to a test: it is not asserted for this loss.

    With loss topk (the teacher's top k carried onto the student's tokens of the same text,
    crossvocab.cross_top) the same rounds compare distributions, not one sampled token: the KL
    fell 2.38 -> 1.58, 2.24 -> 1.58 and 2.31 -> 1.69 in three runs, and the fall is asserted
    with KL_FALL to spare; the reverse_kl rounds beside them fell 2.15 -> 1.85, 2.33 -> 1.57 and
    2.48 -> 1.45, so on this tiny pair the two losses are not told apart. Before topk crossed
    vocabularies this run was refused."""
    from tiny_model import build_tiny_model, build_tiny_teacher

    base = build_tiny_model(tmp_path / "eot-base", vocab=400, seed=1, end_of_turn="<|eot_id|>")
    teacher = build_tiny_teacher(tmp_path / "eot-teacher", base, steps=400)
    overrides = [
        *_overrides(tmp_path, tiny_teacher, teacher),
        "task.validation_fraction=0",  # no validation: the rounds' KL is what is measured
        "train.onpolicy.batch=32",  # the rounds' own batch: 8 of train.batch_size's 4 a step
        "train.onpolicy.start=base",
        "train.onpolicy.questions=16",
        "train.onpolicy.n=8",
        "train.onpolicy.max_tokens=24",
        "train.onpolicy.learning_rate=0.0003",
        "train.onpolicy.rounds=2",
    ]
    r = run_cli("train", *overrides, "train.onpolicy.loss=reverse_kl")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cost = "= 128 student rollouts of at most 24 tokens and 128 teacher scores, then an update "
    assert cost + "of 4 steps of 32 rollouts at learning rate 0.0003" in r.stdout, r.stdout[:2000]
    _, stats = _stage(tmp_path / "runs")
    rounds = stats["rounds"]
    assert [x["rollouts"] for x in rounds] == [128] * 2 and all(x["steps"] == 4 for x in rounds)
    assert all(x["scored_tokens"] > 0 for x in rounds)
    for rd in sorted((tmp_path / "runs/default/train/onpolicy").glob("*/round-*")):
        ended = [json.loads(x)["finish_reason"] == "stop" for x in (rd / "rollouts.jsonl").open()]
        assert 3 * sum(ended) >= len(ended), f"{rd.name}: {sum(ended)} of {len(ended)} ended"
    # loss topk (the default): the teacher's top k carried onto the student's tokens of the
    # same text
    r = run_cli("train", *overrides)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "the teacher's top k reaches" in r.stdout
    _, stats = _stage(tmp_path / "runs")
    kl = [x["reverse_kl"] for x in stats["rounds"]]
    assert all(x["topk_share"] > 0.5 for x in stats["rounds"]), stats["rounds"]
    assert kl[1] < kl[0] - KL_FALL, kl


def _rows(path: Path) -> list[str]:
    """The ids of a log's rows (a torn last line, as a kill leaves it, is not a row)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["id"])
        except (ValueError, KeyError):
            continue
    return out


def test_kill9_in_each_part_of_a_round_loses_and_repeats_nothing(sft: dict) -> None:
    """One request in flight at a time, so each kill lands inside the part it names; rollouts
    of 12 tokens make this chain another than the other test's."""
    ov = [
        *sft["overrides"],
        "train.onpolicy.rounds=1",
        "train.onpolicy.max_tokens=12",
        "eval.concurrency=1",
        "generate.concurrency=1",
    ]
    pool = sft["tmp"] / "runs" / "default" / "train" / "onpolicy"
    before = set(pool.glob("*/round-001"))

    def rd() -> Path:
        found = [d for d in pool.glob("*/round-001") if d not in before]
        return found[0] if found else pool / "none"

    def answers() -> int:
        return len(_rows(next(rd().glob("validation/*/predictions.jsonl"), rd() / "none")))

    kills = {
        "rollouts": lambda: len(_rows(rd() / "rollouts.jsonl")) >= 3,
        "scores": lambda: len(_rows(rd() / "scores.jsonl")) >= 3,
        "update": lambda: len(_rows(rd() / "scores.jsonl")) == 8 and not (rd() / "model").exists(),
        "validation": lambda: answers() >= 3,
    }
    for part, ready in kills.items():
        kill_cli_when(["train", *ov], ready, timeout=600)
        assert not (rd() / "round.json").exists(), part
    r = run_cli("train", *ov)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "the update was done before the kill" in r.stdout  # validation resumed, no retrain
    for log in ("rollouts.jsonl", "scores.jsonl"):
        ids = _rows(rd() / log)
        assert len(ids) == len(set(ids)) == 8, log  # none lost, none asked twice
    _, stats = _stage(sft["tmp"] / "runs")
    (one,) = stats["rounds"]
    assert one["rollouts"] == 8 and one["validation_accuracy"] is not None


def test_the_run_budget_stops_onpolicy_scores_and_eval_teacher_then_continues(sft: dict) -> None:
    """One budget over the run (issue 46): on-policy's teacher scores, then eval's teacher
    answers, each stop at the cap with exit 3 and keep what they asked; a higher cap continues
    and nothing is asked twice (each ledger's ids once, none with a #n of a second payment).
    Caps are set from what the run spent before, so other tests' rounds do not matter;
    rollouts of 10 tokens make this chain another than theirs."""
    from pipeline.config import load_config
    from stages.shared.spend import SPEND, run_budget

    ov = [*sft["overrides"], "train.onpolicy.rounds=1", "train.onpolicy.max_tokens=10"]
    runs = sft["tmp"] / "runs" / "default"
    before = run_budget(load_config(None, [*ov, "budget.completion_tokens=1000000"]))
    assert before is not None and before.completion > 0  # generate's pool

    def cap(more: int) -> str:
        return f"budget.completion_tokens={before.completion + more}"

    known = set(runs.glob("train/onpolicy/*/round-001"))
    r = run_cli("train", *ov, cap(5))  # 8 scores of 1 token each: 5 fit
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-3000:]
    assert "budget reached" in r.stderr and "teacher scores" in r.stderr
    assert "Traceback" not in r.stderr
    (rd,) = set(runs.glob("train/onpolicy/*/round-001")) - known
    assert len(_rows(rd / "scores.jsonl")) == 5 and len(_rows(rd / SPEND)) == 5

    # the scores finish (3 more; a score reserves its 1 token, the offline engine records
    # none), then eval's teacher may reserve 16 tokens 3 times, not 4
    assert sum(json.loads(x)["completion_tokens"] for x in (rd / SPEND).open()) == 0
    r = run_cli("run", *ov, cap(3 * 16 + 8))
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-3000:]
    assert "budget reached" in r.stderr and "answers" in r.stderr
    (ev,) = [p.parent for p in runs.glob(f"eval/*/{SPEND}")]
    assert len(_rows(ev / SPEND)) == 3
    assert sorted(_rows(rd / SPEND)) == sorted(_rows(rd / "scores.jsonl"))
    assert len(_rows(rd / SPEND)) == 8

    r = run_cli("run", *ov, cap(100000))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for ledger in (rd / SPEND, ev / SPEND):
        ids = _rows(ledger)
        assert len(ids) == len(set(ids)) and not any("#" in i for i in ids), ledger
    assert len(_rows(ev / SPEND)) == 8  # the 8 held-out questions, the teacher asked once each
    stats = json.loads((ev / "manifest.json").read_text())["stats"]
    assert stats["teacher_spend"]["calls"] == 8
    _, train = _stage(sft["tmp"] / "runs")
    assert train["teacher_spend"]["calls"] == 8
