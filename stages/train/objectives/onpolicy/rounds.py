"""train.objective: onpolicy: rounds in which the student writes, the teacher scores every token
it wrote, and the student learns from its own text.

Round r (1-based) runs four parts, each kept on disk before the next starts:

  rollouts.jsonl          the round's student samples train questions (parts.py): ids and
                          logprobs as vLLM sampled them; append + fsync by id
  scores.jsonl            the teacher's prompt logprobs of exactly those tokens, a row per
  scores.logprobs.bin     rollout naming its record in the soft-label store (written first)
  model/                  the student after one pass over the round's rollouts with the loss of
                          train.onpolicy.loss, written whole then renamed into place
  round.json              what the round measured (below), written last: the round is done

Rounds live under `runs/<run>/train/onpolicy/<chain>/round-NNN/`, where the chain key covers
everything a round depends on except how many rounds there are (the start student's key, the
teacher, the templates, k, the loss, the seeds): a train stage with more rounds finds the first
ones done and runs only the new ones, and a kill -9 in any part resumes that part (rollouts and
scores ask only for what their logs lack; an update cut short starts again from the round's
start weights, which are on disk). Round r's student is round r-1's model (round 1's: the SFT
student of the same config, or train.student).

Each round measures: the student's mean per-token reverse KL to the teacher on its own samples
(before the update), the share of its samples whose answer verifies, rollout and scored token
counts, seconds per part, the update's loss, and its accuracy after the update on the
validation split (train questions held out before generate; never the eval split). The stage's
model is the last round's, or with train.select: best the round with the best validation
accuracy. Long: the loop is the stage's whole life; each part is its own function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

from pipeline.ask import settings_from
from pipeline.asklog import RecordLog, ask_into_log, failed
from pipeline.budget import Calls
from pipeline.calls import Completion, Request, prompt_ids, score_request
from pipeline.config import Config, semantic
from pipeline.prompts import fewshot_examples, render_messages, teacher_messages
from pipeline.ratelimit import prompt_tokens
from pipeline.reasoning import Convention
from pipeline.records import atomic_write_json
from pipeline.tasks import Question, load_task
from stages.shared.layout import MODEL, ROUNDS, shared_dir
from stages.shared.models import local_model, student_spec, teacher_spec
from stages.shared.softlabels import Meta, Store, TokenLogprobs, ref_problem, vocab_hash_of
from stages.shared.spend import SPEND, charging, spent
from stages.shared.verify import gold_of, grade_row
from stages.train.chat import short, stop_token_ids, template_errors
from stages.train.logs import log_line
from stages.train.losses.policy import reverse_kl_estimate
from stages.train.objectives.onpolicy import crossvocab
from stages.train.objectives.onpolicy.parts import (
    advantages,
    check_rollout,
    rollout_plan,
    rollout_row,
    same_vocab_score,
    score_id,
)
from stages.train.prepared import TrainError

ROUND_FILE = "round.json"
# How a round scores: rounds cached when a student's end-of-turn token reached a teacher of
# another vocabulary as plain text (crossvocab.py) must not pass for rounds scored right
SCORING = "the student's end of turn scored as the teacher's own"
HINT = "\n\n(Only you see this: the correct final answer is {answer}.)"


@dataclasses.dataclass
class Pair:
    """The two models of the rounds and how their tokens meet."""

    student_tok: Any
    teacher_tok: Any
    teacher_identity: str
    same_vocab: bool
    student_stops: frozenset[int]  # the ids the student stops on (chat.stop_token_ids)
    teacher_end: int | None  # the teacher's end-of-turn token (crossvocab.py); None: one vocab
    mapped: dict[int, int] | None = None  # loss topk, another vocab: teacher id -> student id


def chain_key(cfg: Config, input_keys: dict[str, str], teacher_identity: str) -> str:
    """What every round depends on but the number of rounds."""
    op = dataclasses.replace(cfg.train.onpolicy, rounds=1)
    # select picks among finished rounds; it changes no round
    train = semantic(dataclasses.replace(cfg.train, onpolicy=op), exclude=("student", "select"))
    parts = [input_keys, train, teacher_identity, semantic(cfg.teacher), cfg.student_template]
    parts.append(SCORING)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def teacher_prompt(cfg: Config, q: Question, shots: list[dict[str, str]]) -> list[dict]:
    """The teacher's scoring prompt: its own template and examples, and with teacher_hint:
    answer the gold answer after the question (a train question: the student never sees it)."""
    msgs = [dict(m) for m in teacher_messages(cfg.teacher, q, shots)]
    if cfg.train.onpolicy.teacher_hint == "answer":
        msgs[-1]["content"] += HINT.format(answer=q.answer)
    return msgs


def round_questions(questions: list[Question], r: int, per_round: int, seed: int) -> list[Question]:
    """Round r's questions: the next `per_round` of a seeded shuffle, in turn, wrapping."""
    order = list(questions)
    random.Random(seed).shuffle(order)
    start = (r - 1) * per_round
    return [order[(start + i) % len(order)] for i in range(min(per_round, len(order)))]


def rollouts(cfg: Config, r: int, student: Path, qs: list[Question], rd: Path, chain: str) -> dict:
    """Part (a): the round's student samples; returns the rollout rows by id."""
    op = cfg.train.onpolicy
    messages = [render_messages(cfg.student_template, q) for q in qs]
    plan = rollout_plan(
        qs,
        messages,
        f"{chain}:{r}",
        op.n,
        op.max_tokens,
        cfg.train.seed + r,
        list(cfg.eval.sampling.stop),
    )
    by_id = {p.request.id: p for p in plan}
    spec = student_spec(cfg, student, "student", max_logprobs=1)
    path = rd / "rollouts.jsonl"
    with RecordLog.open(path, check_rollout, "rollouts") as log:
        asked = ask_into_log(
            spec,
            [p.request for p in plan],
            log,
            lambda c: rollout_row(by_id[c.id], c),
            settings_from(cfg.eval),
            rd / "logs",
            unit="sample",
            desc=f"round {r} rollouts",
        )
        if asked.failures:
            raise failed("rollouts", asked.failures, len(asked.new), path)
        return {p.request.id: log.rows[p.request.id] for p in plan}


def teacher_calls(cfg: Config) -> list[Calls]:
    """`distill plan`: on-policy's teacher scores at most: each rollout of each round, its
    prompt the teacher's own (estimated as the budget does) and onpolicy.max_tokens of
    rollout; one completion token each (pipeline/calls.py score_request)."""
    op = cfg.train.onpolicy
    task = load_task(cfg.task)
    shots = fewshot_examples(task, cfg.teacher.fewshot)
    prompt = calls = 0
    for r in range(1, op.rounds + 1):
        for q in round_questions(task.train, r, op.questions, cfg.train.seed):
            prompt += op.n * (prompt_tokens(teacher_prompt(cfg, q, shots), None) + op.max_tokens)
            calls += op.n
    return [Calls("train: on-policy teacher scores", calls, prompt, calls)]


def _score_request(pair: Pair, prompt: list[int], row: dict, k: int) -> Request | None:
    """The scoring request for one rollout; None for a rollout with nothing to score (no
    tokens, or no teacher tokens for its text)."""
    if not row["completion_ids"]:
        return None
    if pair.same_vocab:
        sid = score_id(row["id"], pair.teacher_identity, prompt, k)
        return same_vocab_score(sid, prompt, row, k)
    ids = _cross(pair, row).ids
    if not ids:
        return None
    sid = score_id(row["id"], pair.teacher_identity, prompt + ids, k)
    return score_request(sid, prompt + ids, len(prompt), k)


def _cross(pair: Pair, row: dict) -> crossvocab.CrossScore:
    """What a teacher of another vocabulary reads of a rollout (crossvocab.cross_score)."""
    return crossvocab.cross_score(
        pair.student_tok,
        pair.student_stops,
        pair.teacher_tok,
        pair.teacher_end,
        list(row["completion_ids"]),
    )


def scores(cfg: Config, pair: Pair, qs: list[Question], rows: dict, rd: Path) -> dict:
    """Part (b): the teacher's logprobs of the rollouts' tokens; returns each rollout's
    per-student-token advantages and the teacher's top k (one vocabulary) by rollout id; a
    rollout with no tokens to score has none."""
    op = cfg.train.onpolicy
    task = load_task(cfg.task)
    shots = fewshot_examples(task, cfg.teacher.fewshot)
    by_q = {q.id: q for q in qs}
    reqs, of = [], {}
    for row in rows.values():
        prompt = prompt_ids(pair.teacher_tok, teacher_prompt(cfg, by_q[row["question_id"]], shots))
        req = _score_request(pair, prompt, row, op.k)
        if req is None:  # nothing to learn from: left out of the update
            continue
        reqs.append(req)
        of[req.id] = row["id"]
    store = Store.open(rd / "scores.logprobs.bin")
    meta = Meta(op.k, 1.0, "raw", vocab_hash_of(pair.teacher_tok))

    def row_of(c: Completion) -> dict[str, Any]:
        tl = TokenLogprobs.from_lists(c.prompt_logprobs or {}, op.k)
        return {"id": c.id, "rollout_id": of[c.id], "logprobs": store.append(c.id, meta, tl)}

    def check(row: dict[str, Any]) -> str | None:
        return ref_problem(row, store) if isinstance(row.get("rollout_id"), str) else "no rollout"

    spec = teacher_spec(cfg, cfg.teacher, "teacher", max_logprobs=op.k)
    path = rd / "scores.jsonl"
    with (
        store,
        RecordLog.open(path, check, "scores", before_sync=store.sync) as log,
        charging(cfg, rd) as charge,
    ):
        settings = settings_from(cfg.generate)
        asked = ask_into_log(
            spec,
            reqs,
            log,
            row_of,
            settings,
            rd / "logs",
            unit="sample",
            desc="teacher scores",
            admit=charge.admit,
            paid=charge.paid,
        )
        if asked.failures:
            raise failed("teacher scores", asked.failures, len(asked.new), path)
        charge.stop("teacher scores", len(asked.new), path)
        out = {}
        for req in reqs:
            _, tl = store.read(log.rows[req.id]["logprobs"]["sha"])
            row = rows[of[req.id]]
            out[row["id"]] = rollout_advantages(pair, row, tl)
        return out


def rollout_advantages(pair: Pair, row: dict, tl: TokenLogprobs) -> dict[str, Any]:
    """What the update reads of the teacher's scores `tl` of one rollout: per student token its
    advantage, the teacher's top k in student ids (None where the loss does not compare them),
    and the teacher's token count."""
    teacher = [float(x) for x in tl.logprobs]
    if pair.same_vocab:
        return {
            "advantages": advantages(row, teacher),
            "top": (tl.top_ids, tl.top_logprobs),
            "teacher_tokens": len(teacher),
        }
    cross = _cross(pair, row)
    a = crossvocab.alignment(pair.student_tok, pair.teacher_tok, cross)  # once, for both
    got = crossvocab.cross_advantages(a, cross, row["logprobs"], teacher)
    top = None
    if pair.mapped is not None:
        end = row["completion_ids"][-1] if cross.end == "scored" else None
        top = crossvocab.cross_top(a, cross, tl.top_ids, tl.top_logprobs, pair.mapped, end)
    return {"advantages": got, "top": top, "teacher_tokens": len(teacher)}


def measure_rollouts(cfg: Config, rows: dict, qs: list[Question], scored: dict) -> dict:
    """Before the update: the mean per-token reverse KL, and the shares of samples that are correct
    and that verify (correct, and neither cut short nor without an answer line: the filter's
    meaning)."""
    by_q = {q.id: q for q in qs}
    convention = Convention.of(cfg.lead_teacher())
    kls, right, verified = [], 0, 0
    for rid, row in rows.items():
        g = grade_row({**row, **gold_of(by_q[row["question_id"]])}, convention)
        right += g.correct
        verified += g.verified
        if rid in scored:
            kls.append(reverse_kl_estimate(scored[rid]["advantages"]))
    tokens = sum(len(r["completion_ids"]) for r in rows.values())
    return {
        "reverse_kl": round(sum(kls) / len(kls), 6) if kls else None,
        "correct": round(right / len(rows), 4) if rows else None,
        "verified": round(verified / len(rows), 4) if rows else None,
        "rollouts": len(rows),
        "rollout_tokens": tokens,
    }


def load_pair(cfg: Config, student: Path) -> Pair:
    """The student's and teacher's tokenizers, and for loss topk across vocabularies the map
    of the teacher's tokens onto the student's (crossvocab.vocab_map)."""
    from transformers import AutoTokenizer

    from pipeline.models import teacher_identity

    t = cfg.teacher
    try:
        t_dir = local_model(t.model, cfg.cache_dir, key="teacher.model")
    except Exception as e:  # any reason a tokenizer is not here is the same line
        raise TrainError(
            f"teacher.model: objective onpolicy scores with the teacher's tokenizer, and "
            f"{t.model!r} is not a local model dir ({e}); give its local dir"
        ) from None
    s_tok = AutoTokenizer.from_pretrained(student)
    t_tok = AutoTokenizer.from_pretrained(t_dir)
    same = vocab_hash_of(s_tok) == vocab_hash_of(t_tok)
    stops = frozenset(stop_token_ids(s_tok, student))
    end = _teacher_template(cfg, t_tok, same)
    topk = not same and cfg.train.onpolicy.loss == "topk"
    mapped = crossvocab.vocab_map(s_tok, t_tok) if topk else None
    return Pair(s_tok, t_tok, teacher_identity(t, cfg.cache_dir), same, stops, end, mapped)


def _teacher_template(cfg: Config, tok: Any, same: bool) -> int | None:
    """The teacher's chat template rendered as scoring renders it, a prompt of the task (and,
    another vocabulary, an answer: crossvocab.end_of_turn, returned): one line naming the key
    when it cannot, before any rollout is paid for, not a jinja traceback at the first score."""
    task = load_task(cfg.task)
    try:
        for q in task.train[:1]:
            prompt_ids(tok, teacher_prompt(cfg, q, fewshot_examples(task, cfg.teacher.fewshot)))
        return None if same else crossvocab.end_of_turn(tok)
    except template_errors() as e:
        raise TrainError(
            f"teacher.model: its chat template cannot render a prompt or an answer ({short(e)}); "
            "the rounds score the student's text in it, so fix the template in its "
            "tokenizer_config.json"
        ) from None


def round_dir(out: Path, chain: str, r: int) -> Path:
    """The rounds of a chain, shared by every train stage of the run with that chain."""
    return shared_dir(out) / ROUNDS / chain[:16] / f"round-{r:03d}"


def read_round(rd: Path) -> dict[str, Any] | None:
    try:
        got = json.loads((rd / ROUND_FILE).read_text())
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) and (rd / MODEL / "config.json").is_file() else None


def run_round(cfg: Config, r: int, student: Path, rd: Path, chain: str, pair: Pair) -> dict:
    """One round's four parts; returns what round.json holds."""
    from stages.train.objectives.onpolicy.update import read_update, update, validate

    op = cfg.train.onpolicy
    qs = round_questions(load_task(cfg.task).train, r, op.questions, cfg.train.seed)
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    rows = rollouts(cfg, r, student, qs, rd, chain)
    seconds["rollouts"] = time.monotonic() - t0
    t0 = time.monotonic()
    scored = scores(cfg, pair, qs, rows, rd)
    seconds["scores"] = time.monotonic() - t0
    stats = measure_rollouts(cfg, rows, qs, scored)
    reach = ""
    if pair.mapped is not None:  # loss topk across vocabularies: the tokens it reaches
        stats["topk_share"] = crossvocab.top_share([s["top"][1] for s in scored.values()])
        reach = crossvocab.reach_text(stats["topk_share"])
    log_line(
        f"round {r}: reverse KL {stats['reverse_kl']}, correct {stats['correct']}, "
        f"verified {stats['verified']}{reach}"
    )
    t0 = time.monotonic()
    upd = read_update(rd)
    if upd is None:
        upd = update(cfg, r, student, pair.student_tok, list(rows.values()), scored, rd)
    else:
        log_line(f"round {r}: the update was done before the kill; validating it")
    seconds["update"] = time.monotonic() - t0
    stats |= upd | validate(cfg, r, rd, pair.student_tok)
    stats |= {"round": r, "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    stats["scored_tokens"] = sum(s["teacher_tokens"] for s in scored.values())  # teacher's own
    stats["teacher_spend"] = spent(rd / SPEND)  # the scores' calls, as the budget counts them
    atomic_write_json(rd / ROUND_FILE, stats)
    return stats


def run_rounds(cfg: Config, out: Path, start: Path, input_keys: dict[str, str]) -> list[dict]:
    """Every round, done ones read back; returns their round.json rows in order."""
    pair = load_pair(cfg, start)
    chain = chain_key(cfg, input_keys, pair.teacher_identity)
    done, student = [], start
    for r in range(1, cfg.train.onpolicy.rounds + 1):
        rd = round_dir(out, chain, r)
        got = read_round(rd)
        if got is None:
            rd.mkdir(parents=True, exist_ok=True)
            got = run_round(cfg, r, student, rd, chain, pair)
        else:
            log_line(f"round {r}: done before, read from {rd}")
        got["dir"] = str(rd)
        done.append(got)
        student = rd / MODEL
    return done
