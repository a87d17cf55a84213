"""eval.draft: each student as a speculative-decoding draft for its teacher, estimated from the
held-out answers it drafted (the arithmetic is stages/eval/acceptance.py).

For every student under test whose tokenizer is the teacher's (a local teacher dir; the same
vocabulary hash), each of its held-out answers is read back as its token ids and put after the
*teacher's* prompt, the context speculative decoding gives both models. Then the teacher and
the student each score that one sequence (vLLM prompt log-probabilities through the one
serve-and-ask path: the teacher as teacher.serve says, the student as eval.serve says): at
every answer position, the top eval.draft_k of each, given the same prefix. Greedy acceptance
compares their top tokens; sampled acceptance at eval.draft_temperature is the top-k lower
bound. Each student also scores the teacher's own held-out answers (when the teacher is in
eval.models): the mean per-token KL(teacher || student) there, a top-k lower bound, says how
close it writes to its teacher where the teacher wrote. Each scoring is a row of draft_scores.jsonl
(append, fsync, keyed by model, question and the scored ids) naming its numbers' record in
draft_scores.logprobs.bin: the soft-label store generate's soft labels and on-policy rounds use
(stages/shared/softlabels.py), one stored format for a model's scores on any text. A rerun asks
only what it lacks. A student with another tokenizer, or a teacher without local weights, is
reported as not estimated, with why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.ask import settings_from
from pipeline.asklog import RecordLog, ask_into_log, failed
from pipeline.calls import Completion, prompt_ids, score_request
from pipeline.config import Config
from pipeline.prompts import fewshot_examples, teacher_messages
from pipeline.records import canonical_json, schema_problem, sha256_text
from pipeline.tasks import load_task
from stages.eval.acceptance import greedy_acceptance, summary, topk_acceptance, topk_kl
from stages.eval.predictions import TEACHER
from stages.shared.models import local_model, teacher_spec
from stages.shared.softlabels import (
    Meta,
    Store,
    TokenLogprobs,
    ref_problem,
    vocab_hash,
    vocab_hash_of,
)
from stages.shared.spend import charging

DRAFT_SCORES = "draft_scores.jsonl"
DRAFT_STORE = "draft_scores.logprobs.bin"  # the rows' numbers, in the soft-label store's format
SCORE_FIELDS = {"id": str, "scorer": str, "draft": str, "question_id": str, "logprobs": dict}
NO_SCORES = {"ids": [], "logprobs": [], "top_ids": [], "top_logprobs": []}


@dataclass
class Draft:
    """One student's answer to one question, as the ids both models score."""

    label: str  # the student that drafted it
    question_id: str
    ids: list[int]  # the teacher's prompt, then the answer
    start: int  # where the answer starts


def score_check(store: Store) -> Callable[[dict[str, Any]], str | None]:
    """A score row is good when its fields are there and the record it names is in `store`."""

    def check(row: dict[str, Any]) -> str | None:
        return schema_problem(row, SCORE_FIELDS) or ref_problem(row, store)

    return check


def score_id(scorer: str, identity: str, d: Draft, k: int) -> str:
    return sha256_text(canonical_json([scorer, identity, d.label, d.ids, d.start, k]))[:32]


def drafts(cfg: Config, tok: Any, rows: list[dict], labels: list[str]) -> list[Draft]:
    """Each listed student's answers to the first eval.draft_questions held-out questions (all:
    0) after the teacher's prompt (an empty answer drafts nothing and is left out)."""
    task = load_task(cfg.task)
    teacher = cfg.lead_teacher()
    shots = fewshot_examples(task, teacher.fewshot)
    by_q = {q.id: q for q in task.eval[: cfg.eval.draft_questions or None]}
    prompts: dict[str, list[int]] = {}
    out = []
    for r in rows:
        if r["model"] not in labels or r["question_id"] not in by_q:
            continue
        answer = list(tok(r["completion"], add_special_tokens=False)["input_ids"])
        if not answer:
            continue
        q = r["question_id"]
        if q not in prompts:
            prompts[q] = prompt_ids(tok, teacher_messages(teacher, by_q[q], shots))
        out.append(Draft(r["model"], q, prompts[q] + answer, len(prompts[q])))
    return out


def drafts_at_hand(
    cfg: Config, muts: list, why_key: str
) -> tuple[Path | None, list, dict[str, dict[str, str]]]:
    """The teacher's local dir, the students under test that can be its draft (its
    tokenizer), and {label: {why_key: why}} for the others."""
    students = [m for m in muts if m.label != "teacher"]
    teacher = cfg.lead_teacher()
    if teacher.urls():
        why = "the teacher is asked at an endpoint: its tokenizer is not at hand here"
        return None, [], {m.label: {why_key: why} for m in students}
    t_dir = local_model(teacher.model, cfg.cache_dir, key="teacher.model")
    t_vocab = vocab_hash(t_dir)
    result: dict[str, dict[str, str]] = {}
    able = []
    for m in students:
        if m.spec.model_dir is None or vocab_hash(m.spec.model_dir) != t_vocab:
            result[m.label] = {why_key: "its tokenizer is not the teacher's"}
        else:
            able.append(m)
    return t_dir, able, result


def estimate(cfg: Config, muts: list, rows: list[dict], out: Path) -> dict[str, Any]:
    """{student label: draft summary, or {"not_estimated": why}} for every student under test.
    Long: it decides who can be estimated, asks the teacher and each student, and sums up."""
    from transformers import AutoTokenizer

    t_dir, able, result = drafts_at_hand(cfg, muts, "not_estimated")
    if t_dir is None or not able:
        return result
    teacher = cfg.lead_teacher()
    k = cfg.eval.draft_k
    tok = AutoTokenizer.from_pretrained(t_dir)
    # the teacher's own answers too, when it was asked: each student scores them (the KL)
    asked_teacher = any(m.label == "teacher" for m in muts)
    todo = drafts(cfg, tok, rows, [m.label for m in able] + ["teacher"] * asked_teacher)
    by_label = {m.label: [d for d in todo if d.label == m.label] for m in able}
    theirs = [d for d in todo if d.label == "teacher"]
    t_identity = next((m.identity for m in muts if m.label == "teacher"), str(t_dir))
    scorers = [(teacher_spec(cfg, teacher, "teacher", max_logprobs=k), t_identity, todo)]
    for m in able:
        spec = dataclasses.replace(m.spec, max_logprobs=k)  # as eval served it, with its top k
        scorers.append((spec, m.identity, by_label[m.label] + theirs))
    path, store = out / DRAFT_SCORES, Store.open(out / DRAFT_STORE)
    meta = Meta(k, 1.0, "raw", vocab_hash_of(tok))  # the students share the teacher's vocabulary
    check = score_check(store)
    with (
        store,
        RecordLog.open(path, check, "draft scores", fsync_every=16, before_sync=store.sync) as log,
    ):
        for spec, identity, mine in scorers:
            reqs, of = [], {}
            for d in mine:
                sid = score_id(spec.label, identity, d, k)
                reqs.append(score_request(sid, d.ids, d.start, k))
                of[sid] = d

            def row(c: Completion, of: dict = of, who: str = spec.label) -> dict[str, Any]:
                tl = TokenLogprobs.from_lists(c.prompt_logprobs or NO_SCORES, k)
                return {
                    "id": c.id,
                    "scorer": who,
                    "draft": of[c.id].label,
                    "question_id": of[c.id].question_id,
                    "logprobs": store.append(c.id, meta, tl),
                }

            how, desc = settings_from(cfg.eval), f"draft scores: {spec.label}"
            paying = spec.label == TEACHER  # the students score their own drafts, free
            with charging(cfg, out) if paying else nullcontext() as charge:
                asked = ask_into_log(
                    spec,
                    reqs,
                    log,
                    row,
                    how,
                    out / "logs",
                    unit="answer",
                    desc=desc,
                    admit=charge.admit if charge is not None else None,
                    paid=charge.paid if charge is not None else None,
                )
            if asked.failures:
                raise failed("draft scores", asked.failures, len(asked.new), path)
            if charge is not None:
                charge.stop("draft scores", len(asked.new), path)
        vocab = _vocab_size(t_dir, tok)

        def scores(who: str, identity: str, ds: list[Draft]) -> list[tuple[Any, Any]]:
            return [top_k(store, log.rows[score_id(who, identity, d, k)]) for d in ds]

        for m in able:
            mine = by_label[m.label]
            t_rows = scores("teacher", t_identity, mine)
            result[m.label] = _summed(t_rows, scores(m.label, m.identity, mine), cfg, vocab)
            result[m.label]["kl_on_teacher_answers"] = (
                _kl(scores("teacher", t_identity, theirs), scores(m.label, m.identity, theirs), k)
                if theirs
                else {"not_estimated": "the teacher is not in eval.models: no answers of its"}
            )
    return result


def _kl(t_rows: list[tuple[Any, Any]], s_rows: list[tuple[Any, Any]], k: int) -> dict[str, Any]:
    """The mean per-token KL(teacher || student) on the teacher's held-out answers, from both
    models' top k ([n, k] ids and logprobs each): a lower bound (stages/eval/acceptance.py)."""
    per = [x for t, s in zip(t_rows, s_rows, strict=True) for x in topk_kl(*t, *s)]
    return {
        "nats_per_token": round(sum(per) / len(per), 4) if per else None,
        "positions": len(per),
        "texts": len(t_rows),
        "top_k": k,
        "bound": "lower",
    }


def _summed(
    t_rows: list[tuple[Any, Any]], s_rows: list[tuple[Any, Any]], cfg: Config, vocab: int
) -> dict[str, Any]:
    """The summary of one student's drafts from both models' top k ([n, k] ids, logprobs)."""
    greedy, sampled = [], []
    for (t_ids, t_lp), (s_ids, s_lp) in zip(t_rows, s_rows, strict=True):
        greedy.append(greedy_acceptance(_top1(t_ids, t_lp), _top1(s_ids, s_lp)))
        sampled.append(topk_acceptance(t_ids, t_lp, s_ids, s_lp, cfg.eval.draft_temperature, vocab))
    return summary(greedy, sampled, cfg.eval.draft_temperature, cfg.eval.draft_k)


def _vocab_size(model_dir: Path, tok: Any) -> int:
    """Tokens a distribution may spread over: the head's rows (often padded past the
    tokenizer's count) or the tokenizer's, whichever is more (the T > 1 bound needs it)."""
    import json

    cfg = json.loads((model_dir / "config.json").read_text())
    return max(len(tok), int(cfg.get("text_config", cfg).get("vocab_size") or 0))


def _top1(ids: Any, lp: Any) -> list[int]:
    """Each position's most likely token."""
    return [int(ids[n, int(lp[n].argmax())]) for n in range(len(ids))]


def top_k(store: Store, row: dict) -> tuple[Any, Any]:
    """[n, k] ids and logprobs of a score row, from its record in the store: padded at FLOOR
    (stages/shared/softlabels.py), which counts for nothing in stages/eval/acceptance.py, and
    a position's top 1 (at least -log of the vocabulary) always stands above it."""
    import numpy as np

    _, tl = store.read(row["logprobs"]["sha"])
    return tl.top_ids.astype(np.int64), tl.top_logprobs.astype(np.float64)
