"""The round logic of adaptive sampling and cascades, on hand-made samples: which samples each
round asks for, when a question stops, and that a replay from the pool asks nothing."""

from __future__ import annotations

from pipeline.calls import Request
from pipeline.config import load_config
from pipeline.reasoning import Convention
from pipeline.tasks import Question
from stages.generate.samples import Planned, plan_samples
from stages.generate.strategy import Rounds, Tally, TeacherPlan, sent_on, tally, teacher_rounds

# What the teacher writes for sample i of each question: right, wrong, or a copy.
RIGHT = "3 + 4 = 7.\nAnswer: 7"
WRONG = "3 + 4 = 8.\nAnswer: 8"
SCRIPT = {
    "easy": [RIGHT, "So seven.\nAnswer: 7", WRONG, WRONG, WRONG, WRONG],
    "copies": [RIGHT, RIGHT, RIGHT, RIGHT, "Seven!\nAnswer: 7", WRONG],
    "hard": [WRONG] * 6,
}


def _plan() -> TeacherPlan:
    return _scripted(SCRIPT)


def _row(sid: str) -> dict:
    q, i = sid.rsplit("-", 1)
    return {
        "id": sid,
        "question_id": q,
        "completion": SCRIPT[q][int(i)],
        "finish_reason": "stop",
        "gold": "7",
        "answer_type": "numeric",
        "usage": {"completion_tokens": 4},
    }


def _drive(rounds: Rounds, have: dict) -> list[list[str]]:
    """Answer every asked sample as the teacher would; return what each call asked."""
    asked = []
    while ids := [p.request.id for p in rounds.next()]:
        asked.append(ids)
        have.update((i, _row(i)) for i in ids)
    return asked


def _rounds(have: dict, *overrides: str) -> Rounds:
    cfg = load_config(None, ["generate.strategy=adaptive", *overrides])
    return teacher_rounds(cfg, _plan(), list(SCRIPT), have, Tally(Convention()))


def test_a_question_stops_at_its_target_of_distinct_verified_samples() -> None:
    have: dict = {}
    r = _rounds(have, "generate.n=2", "generate.target_verified=2", "generate.max_samples=6")
    asked = _drive(r, have)
    assert asked == [
        ["easy-0", "easy-1", "copies-0", "copies-1", "hard-0", "hard-1"],
        ["copies-2", "copies-3", "hard-2", "hard-3"],  # easy has 2 distinct verified: done
        ["copies-4", "copies-5", "hard-4", "hard-5"],  # copies of one answer count once
    ]
    assert r.tally.count == {"easy": 2, "copies": 2}
    assert r.rounds == 3 and not r.short


def test_a_replay_from_the_pool_asks_nothing_and_reaches_the_same_samples() -> None:
    have: dict = {}
    live = _rounds(have, "generate.n=2", "generate.max_samples=6")
    _drive(live, have)
    replay = _rounds(dict(have), "generate.n=2", "generate.max_samples=6")
    assert replay.next() == []
    assert [p.request.id for p in replay.used] == [p.request.id for p in live.used]


def test_a_resume_mid_round_asks_only_the_missing_samples() -> None:
    have: dict = {}
    _drive(_rounds(have, "generate.n=2", "generate.max_samples=6"), have)
    partial = {k: v for k, v in have.items() if k not in ("copies-3", "hard-5")}  # the kill
    r = _rounds(partial, "generate.n=2", "generate.max_samples=6")
    assert [p.request.id for p in r.next()] == ["copies-3"]
    partial["copies-3"] = _row("copies-3")
    assert [p.request.id for p in r.next()] == ["hard-5"]


def test_a_round_with_a_failed_sample_ends_the_asking() -> None:
    have: dict = {}
    r = _rounds(have, "generate.n=2", "generate.max_samples=6")
    first = r.next()
    have.update((p.request.id, _row(p.request.id)) for p in first[:-1])  # the last one failed
    assert r.next() == [] and r.short


def test_fixed_draws_n_for_every_question_whatever_it_verified() -> None:
    have: dict = {}
    cfg = load_config(None, ["generate.n=3"])
    r = teacher_rounds(cfg, _plan(), list(SCRIPT), have, Tally(Convention()))
    assert [len(a) for a in _drive(r, have)] == [9]


def test_cascade_sends_on_only_questions_short_of_the_target() -> None:
    have: dict = {}
    cfg = load_config(None, ["generate.n=2", "generate.target_verified=2"])
    tally = Tally(Convention())
    _drive(teacher_rounds(cfg, _plan(), list(SCRIPT), have, tally), have)
    assert sent_on(cfg, list(SCRIPT), tally) == ["copies", "hard"]


def test_adaptive_round_samples_are_fixed_n_samples() -> None:
    """Sample i has one id and one seed, whatever the count asked: rounds add, never redraw."""
    cfg = load_config(None, ["task.max_train=5"])
    four = plan_samples(cfg, "teacher-x", count=4)
    eight = plan_samples(cfg, "teacher-x", count=8)
    by_q = {(q.id, i): r for r, q, i in eight}
    for r, q, i in four:
        assert by_q[(q.id, i)].id == r.id and by_q[(q.id, i)].sampling == r.sampling
    assert len({r.sampling["seed"] for r, _, _ in eight}) == len(eight)


def test_two_teachers_asked_the_same_way_are_refused(tiny_model) -> None:
    import pytest

    from pipeline.records import DataError
    from stages.generate import teacher_plans

    teachers = f"teachers=[{{model: {tiny_model}, label: a}}, {{model: {tiny_model}, label: b}}]"
    cfg = load_config(None, ["task.max_train=3", teachers])
    with pytest.raises(DataError, match="'a' and 'b' are the same model asked the same way"):
        teacher_plans(cfg)


def test_samples_the_pool_holds_are_planned_without_their_prompts() -> None:
    """A held sample is never asked: its plan keeps the same id and drops the prompt and the
    per-sample sampling, which is most of what a plan of a million samples would hold."""
    cfg = load_config(None, ["task.max_train=5"])
    full = plan_samples(cfg, "teacher-x", count=2)
    held = {full[0].request.id, full[3].request.id}
    light = plan_samples(cfg, "teacher-x", count=2, held=held)
    assert [p.request.id for p in light] == [p.request.id for p in full]
    for got, want in zip(light, full, strict=True):
        if want.request.id in held:
            assert got.request.messages == [] and want.request.messages
        else:
            assert got.request == want.request
    assert light[0].request.sampling is light[3].request.sampling  # one shared dict, no copy


# A rationale long enough for the filter's 5-word shingles, and one that differs from it by its
# first word only: a near copy (Jaccard of shingles 26/28 = 0.93, above the filter's 0.8).
LONG = (
    "First we count the apples in the basket, there are three of them. Then we count the "
    "apples on the table, there are four of them. Adding the two numbers together we get seven "
    "apples in all.\nAnswer: 7"
)
NEAR = "So" + LONG[len("First") :]
OTHER = "Three and four make seven.\nAnswer: 7"


def _scripted(script: dict[str, list[str]]) -> TeacherPlan:
    samples = {
        q: [
            Planned(Request([f"{q}-{i}"], [], {}), Question(q, "3 + 4?", "7"), i)
            for i in range(len(texts))
        ]
        for q, texts in script.items()
    }
    return TeacherPlan(0, "t", None, "id", samples)  # type: ignore[arg-type]


def _answer(sid: str, text: str, q: str) -> dict:
    return {**_row("easy-0"), "id": sid, "question_id": q, "completion": text}


def test_a_near_copy_does_not_count_when_the_filter_would_drop_it() -> None:
    script = {"q": [LONG, NEAR, OTHER, WRONG]}
    adaptive = ["generate.strategy=adaptive", "generate.n=2", "generate.max_samples=4"]
    # near_dedup on (the default): the near copy does not count, so a second round is asked for
    # the target of 2; off, the filter would keep the near copy, and so does the count
    for extra, want, copies in (
        ([], ["q-0", "q-1", "q-2", "q-3"], 1),
        (["filter.checks=[correct,exact_dedup]"], ["q-0", "q-1"], 0),
    ):
        cfg = load_config(None, adaptive + extra)
        have: dict = {}
        r = teacher_rounds(cfg, _scripted(script), ["q"], have, tally(cfg, Convention()))
        asked = []
        while ids := [p.request.id for p in r.next()]:
            asked += ids
            have.update((i, _answer(i, script["q"][int(i[2:])], "q")) for i in ids)
        assert asked == want
        assert r.tally.copies["q"] == copies


def test_the_near_signatures_are_dropped_once_a_question_has_its_target() -> None:
    cfg = load_config(None, ["generate.strategy=adaptive", "generate.target_verified=2"])
    t = tally(cfg, Convention())
    t.add(_answer("a", LONG, "q"))
    assert len(t.signatures["q"]) == 1
    t.add(_answer("b", OTHER, "q"))
    assert "q" not in t.signatures and t.count["q"] == 2


def _reheated(have: dict, *overrides: str) -> tuple[Rounds, list[list[tuple[str, float]]]]:
    """Adaptive rounds over one question whose teacher repeats itself at the configured
    temperature and writes a new rationale each time it is asked hotter."""
    from stages.generate.samples import Sampler

    cfg = load_config(None, ["generate.strategy=adaptive", "generate.n=2", *overrides])
    q = Question("q", "3 + 4?", "7")
    sampler = Sampler("id", cfg.teacher, [], {**Sampler.of(cfg, "id").sampling})
    plan = TeacherPlan(0, "t", cfg.teacher, "id", {"q": sampler.planned(q, range(16))}, sampler)
    r = teacher_rounds(cfg, plan, ["q"], have, tally(cfg, Convention()))
    asked = []
    while got := r.next():
        asked.append([(p.request.id, p.request.sampling["temperature"]) for p in got])
        for p in got:
            hot = p.request.sampling["temperature"] > 0.7
            text = f"Hot {p.index}: three and four is seven.\nAnswer: 7" if hot else RIGHT
            have[p.request.id] = _answer(p.request.id, text, "q")
    return r, asked


def test_reheat_asks_a_question_that_repeats_itself_hotter() -> None:
    cold, cold_asked = _reheated({})
    assert [len(a) for a in cold_asked] == [2] * 8  # copies all the way to the cap of 16
    assert cold.tally.count["q"] == 1 and cold.hotter() == 0
    have: dict = {}
    hot, asked = _reheated(have, "generate.reheat=0.3")
    # round 1 drew a copy: round 2 is 0.3 hotter, and its new rationale meets the target
    assert [[t for _, t in a] for a in asked] == [[0.7, 0.7], [1.0, 1.0]]
    assert hot.tally.count["q"] == 3 and hot.hotter() == 2
    assert asked[1][0][0] != cold_asked[1][0][0]  # a hotter sample 2 is another sample
    replay, again = _reheated(dict(have), "generate.reheat=0.3")
    assert again == [] and [p.request.id for p in replay.used] == [p.request.id for p in hot.used]


def test_reheat_counts_a_repeated_wrong_answer_as_a_repeat() -> None:
    """A question whose teacher writes the same wrong text again is asked hotter too: one text
    over and over gives no new chance to be right."""
    cfg = load_config(None, ["generate.strategy=adaptive", "generate.reheat=0.3"])
    t = tally(cfg, Convention())
    for i, text in enumerate([WRONG, "3 + 4 = 9.\nAnswer: 9", WRONG]):
        t.add(_answer(f"s{i}", text, "q"))
    assert (t.repeats["q"], t.copies["q"], t.count["q"]) == (1, 0, 0)
    t.add(_answer("s3", LONG, "q"))
    t.add(_answer("s4", NEAR, "q"))  # a verified near copy: a repeat and a copy
    assert (t.repeats["q"], t.copies["q"], t.count["q"]) == (2, 1, 1)
    off = tally(load_config(None, ["generate.strategy=adaptive"]), Convention())
    for i, text in enumerate([WRONG, WRONG]):
        off.add(_answer(f"s{i}", text, "q"))
    assert off.drawn is None and not off.repeats  # without reheat nothing is held for it


def test_reheat_is_refused_without_rounds() -> None:
    import pytest

    from pipeline.fields import ConfigError

    with pytest.raises(ConfigError, match="only strategy adaptive"):
        load_config(None, ["generate.reheat=0.3"])


def test_the_stats_report_copies_and_questions_never_solved() -> None:
    from stages.generate.report import distinct_line, distinct_stats

    have: dict = {}
    r = _rounds(have, "generate.n=2", "generate.max_samples=6")
    _drive(r, have)
    stats = distinct_stats([r])
    assert stats == {
        "distinct_verified": 4,  # easy 2, copies 2 (RIGHT once, then "Seven!")
        "copies": 3,  # copies-1..3 repeat copies-0
        "hotter_samples": 0,
        "unsolved": 1,
        "unsolved_questions": ["hard"],
    }
    assert "1 question(s) never solved within the cap, not asked again: hard" in distinct_line(
        stats
    )
