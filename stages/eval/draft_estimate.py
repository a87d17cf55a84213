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
close it writes to its teacher where the teacher wrote. Scores go to draft_scores.jsonl (append,
fsync, keyed by model, question and the scored ids), so a rerun asks only what it lacks. A student
with another tokenizer, or a teacher without local weights, is reported as not estimated, with why.
"""

from __future__ import annotations

import dataclasses
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
from stages.shared.models import local_model, teacher_spec
from stages.shared.softlabels import FLOOR, vocab_hash

DRAFT_SCORES = "draft_scores.jsonl"
SCORE_FIELDS = {
    "id": str,
    "scorer": str,
    "draft": str,
    "question_id": str,
    "top_ids": list,
    "top_logprobs": list,
}


@dataclass
class Draft:
    """One student's answer to one question, as the ids both models score."""

    label: str  # the student that drafted it
    question_id: str
    ids: list[int]  # the teacher's prompt, then the answer
    start: int  # where the answer starts


def check_score(row: dict[str, Any]) -> str | None:
    problem = schema_problem(row, SCORE_FIELDS)
    if problem is None and len(row["top_ids"]) != len(row["top_logprobs"]):
        problem = "fields 'top_ids' and 'top_logprobs' differ in length"
    return problem


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
    path = out / DRAFT_SCORES
    with RecordLog.open(path, check_score, "draft scores", fsync_every=16) as log:
        for spec, identity, mine in scorers:
            reqs, of = [], {}
            for d in mine:
                sid = score_id(spec.label, identity, d, k)
                reqs.append(score_request(sid, d.ids, d.start, k))
                of[sid] = d

            def row(c: Completion, of: dict = of, who: str = spec.label) -> dict[str, Any]:
                lists = c.prompt_logprobs or {}
                return {
                    "id": c.id,
                    "scorer": who,
                    "draft": of[c.id].label,
                    "question_id": of[c.id].question_id,
                    "top_ids": lists.get("top_ids", []),
                    "top_logprobs": lists.get("top_logprobs", []),
                }

            how, desc = settings_from(cfg.eval), f"draft scores: {spec.label}"
            asked = ask_into_log(spec, reqs, log, row, how, out / "logs", unit="answer", desc=desc)
            if asked.failures:
                raise failed("draft scores", asked.failures, len(asked.new), path)
        vocab = _vocab_size(t_dir, tok)
        for m in able:
            mine = by_label[m.label]
            t_rows = [log.rows[score_id("teacher", t_identity, d, k)] for d in mine]
            s_rows = [log.rows[score_id(m.label, m.identity, d, k)] for d in mine]
            result[m.label] = _summed(t_rows, s_rows, cfg, vocab)
            result[m.label]["kl_on_teacher_answers"] = (
                _kl(
                    [log.rows[score_id("teacher", t_identity, d, k)] for d in theirs],
                    [log.rows[score_id(m.label, m.identity, d, k)] for d in theirs],
                    k,
                )
                if theirs
                else {"not_estimated": "the teacher is not in eval.models: no answers of its"}
            )
    return result


def _kl(t_rows: list[dict], s_rows: list[dict], k: int) -> dict[str, Any]:
    """The mean per-token KL(teacher || student) on the teacher's held-out answers, from both
    models' top k: a lower bound (stages/eval/acceptance.py, topk_kl)."""
    per = [
        x for t, s in zip(t_rows, s_rows, strict=True) for x in topk_kl(*_padded(t), *_padded(s))
    ]
    return {
        "nats_per_token": round(sum(per) / len(per), 4) if per else None,
        "positions": len(per),
        "texts": len(t_rows),
        "top_k": k,
        "bound": "lower",
    }


def _summed(t_rows: list[dict], s_rows: list[dict], cfg: Config, vocab: int) -> dict[str, Any]:
    """The summary of one student's drafts from both models' scores."""
    greedy, sampled = [], []
    for t, s in zip(t_rows, s_rows, strict=True):
        (t_ids, t_lp), (s_ids, s_lp) = _padded(t), _padded(s)
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


def _padded(row: dict) -> tuple[Any, Any]:
    """[n, k] ids and logprobs from a score row's ragged lists, padded at FLOOR: padding counts
    for nothing in stages/eval/acceptance.py, and a position's top 1 (at least -log of the
    vocabulary) always stands above it."""
    import numpy as np

    n = len(row["top_ids"])
    k = max((len(x) for x in row["top_ids"]), default=1)
    ids = np.zeros((n, k), np.int64)
    lp = np.full((n, k), FLOOR, np.float64)
    for i, (a, b) in enumerate(zip(row["top_ids"], row["top_logprobs"], strict=True)):
        ids[i, : len(a)] = a
        lp[i, : len(b)] = b
    return ids, lp
