"""Collecting eval predictions: what each model under test is asked, and its answers on disk.

Every completion is appended to predictions.jsonl as it arrives (id = model label + question id),
so an interrupted eval resumes with only what is missing. A completion is also reused from a
sibling eval dir (another key of this run) when its request is byte-identical: same model
weights, same rendered prompt, same sampling, so a new student does not re-ask teacher and base.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.ask import AskStats, ModelSpec, settings_from
from pipeline.asklog import Asked, RecordLog, ask_into_log
from pipeline.budget import Calls
from pipeline.calls import Completion, Request, sampling_dict
from pipeline.config import Config
from pipeline.models import (
    RUN_FILES,
    ModelError,
    has_chat_template,
    identity_of,
    model_identity,
    teacher_identity,
)
from pipeline.prompts import fewshot_examples, render_messages, teacher_messages
from pipeline.ratelimit import prompt_tokens
from pipeline.records import (
    DataError,
    canonical_json,
    read_row_at,
    scan_file,
    schema_problem,
    sha256_file,
    sha256_text,
    with_id,
)
from pipeline.tasks import Question, load_task
from stages.eval.identity import messages as probe_messages
from stages.eval.identity import probe_questions
from stages.shared.layout import MODEL, PREDICTIONS
from stages.shared.models import local_model, student_spec, teacher_spec
from stages.shared.spend import Charge

# Which input holds each trained model (as <input>/model).
TRAINED_INPUT = {
    "student": "train",
    "student_answer_only": "train_answer_only",
    "student_full": "train_full",
}
PREDICTION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "model": str,
    "question_id": str,
    "request_sha": str,
    "completion": str,
    "usage": dict,
    "gold": str,
    "answer_type": str,
}
# Recomputed from the text on every run.
TEACHER = "teacher"  # eval's label for the teacher: its calls are the run's paid ones
SCORE_FIELDS = (
    "pred",
    "correct",
    "formatted",
    "answer_words",
    "reasoning_words",
    "reasoning_closed",
)


@dataclass
class ModelUnderTest:
    spec: ModelSpec  # how to ask it; spec.label is its name in the report
    identity: str  # what it is, for request hashes: its weights (or served name)
    requests: list[tuple[Request, Question]] = field(default_factory=list)
    # identities earlier versions gave the same model: rows hashed under them still answer
    # (a trained student's used to cover its run files too)
    earlier: tuple[str, ...] = ()

    def shas(self, req: Request) -> list[str]:
        """The request hashes a row answering `req` may carry, the current one first."""
        return [request_sha(i, req) for i in (self.identity, *self.earlier)]

    @property
    def label(self) -> str:
        return self.spec.label


def check_prediction(row: dict[str, Any]) -> str | None:
    return schema_problem(row, PREDICTION_FIELDS)


def models_under_test(
    cfg: Config, labels: list[str], inputs: dict[str, Path]
) -> list[ModelUnderTest]:
    """How to ask each labelled model; a missing model is a clear error before anything starts.

    The teacher is served as teacher.serve says (or asked at its endpoints); the students, base
    and trained, as eval.serve says."""
    t = cfg.lead_teacher()
    out = []
    for label in labels:
        # A trace budget needs the engine to know where a trace starts and ends.
        tags = {"think_tags": tuple(t.think_tags)} if label in cfg.eval.trace_budget else {}
        if label == "teacher":
            spec = teacher_spec(cfg, t, label, **tags)
            out.append(ModelUnderTest(spec, teacher_identity(t, cfg.cache_dir)))
        elif label == "base":
            model_dir = local_model(cfg.train.student, cfg.cache_dir, key="train.student")
            template = ""
            if not has_chat_template(model_dir) and cfg.train.chat_template:
                template = str(Path(cfg.train.chat_template).expanduser())
            spec = student_spec(cfg, model_dir, label, chat_template=template, **tags)
            identity = identity_of(cfg.train.student, cfg.cache_dir, key="train.student")
            out.append(ModelUnderTest(spec, identity))
        else:
            model_dir = Path(inputs[TRAINED_INPUT[label]]) / MODEL
            if not (model_dir / "config.json").is_file():
                raise ModelError(f"{label}: {model_dir} holds no model; did training finish?")
            spec = student_spec(cfg, model_dir, label, **tags)
            # its weights and recipe, not its run: the same training in another run dir is the
            # same student, and its answers there are this one's
            digest = functools.cache(sha256_file)  # each file hashed once for both
            identity = model_identity(model_dir, skip=RUN_FILES, digest=digest)
            earlier = model_identity(model_dir, digest=digest)
            out.append(ModelUnderTest(spec, identity, earlier=(earlier,)))
    return out


def plan_requests(
    cfg: Config,
    muts: list[ModelUnderTest],
    questions: list[Question],
    probes: Sequence[Question] = (),
) -> None:
    """Each model's requests: the teacher its own prompt, every student the zero-shot one;
    then the identity probes, to every model as a lone user message (stages/eval/identity.py)."""
    task = load_task(cfg.task)
    teacher = any(m.label == "teacher" for m in muts)
    shots = fewshot_examples(task, cfg.lead_teacher().fewshot) if teacher else []
    sampling = sampling_dict(cfg.eval.sampling, keep_empty_stop=False)
    for m in muts:
        m.requests = []
        for q in questions:
            if m.label == "teacher":
                messages = teacher_messages(cfg.lead_teacher(), q, shots)
            else:
                messages = render_messages(cfg.student_template, q)
            budget = cfg.eval.trace_budget.get(m.label)
            own = {**sampling, "thinking_token_budget": budget} if budget else dict(sampling)
            m.requests.append((Request([f"{m.label}:{q.id}"], messages, own), q))
        system = cfg.lead_teacher().system if m.label == "teacher" else ""
        for q in probes:
            m.requests.append(
                (Request([f"{m.label}:{q.id}"], probe_messages(q, system), dict(sampling)), q)
            )


def request_sha(identity: str, req: Request) -> str:
    return sha256_text(canonical_json([identity, req.messages, req.sampling]))[:32]


def answers(row: dict[str, Any] | None, m: ModelUnderTest, req: Request) -> bool:
    """Whether a logged row answers exactly this request: same weights, prompt, sampling."""
    return row is not None and row.get("request_sha") in m.shas(req)


def prediction_row(m: ModelUnderTest, req: Request, q: Question, comp: Completion) -> dict:
    return {
        "id": req.id,
        "model": m.label,
        "question_id": q.id,
        "model_identity": m.identity,
        "request_sha": request_sha(m.identity, req),
        "messages": req.messages,
        "completion": comp.text,
        "finish_reason": comp.finish_reason,
        "usage": comp.usage,
        "sampling": req.sampling,
        "gold": q.answer,
        "answer_type": q.answer_type,
        "choices": list(q.choices),
        "endpoint": comp.endpoint,
        **({"reasoning": comp.reasoning} if comp.reasoning is not None else {}),
    }


class Where(NamedTuple):
    """A finished completion in another eval dir: its file, byte offset and row id."""

    path: Path
    offset: int
    id: str

    def row(self) -> dict[str, Any] | None:
        """The row, or None when its file changed since it was indexed."""
        try:
            return read_row_at(self.path, self.offset, self.id)
        except (DataError, OSError):
            return None


def sibling_rows(out: Path) -> dict[str, Where]:
    """Finished completions in the other eval dirs of every run beside this one (runs_dir/
    <run>/eval/<key>/), by request hash (the same weights asked the same prompt the same way),
    held as where to read them: every run's predictions could be many."""
    found: dict[str, Where] = {}
    runs = Path(out).resolve().parents[2]
    for path in sorted(runs.glob(f"*/{Path(out).parent.name}/*/{PREDICTIONS}")):
        if path.parent.resolve() == out.resolve():
            continue
        for line in scan_file(path, with_id(check_prediction)):
            if line.problem is None and line.row is not None:
                found.setdefault(line.row["request_sha"], Where(path, line.offset, line.row["id"]))
    return found


class Todo(NamedTuple):
    """One prediction to make: which model, the request, the question it asks."""

    model: ModelUnderTest
    request: Request
    question: Question


def reuse_siblings(todo: list[Todo], out: Path, log: RecordLog) -> list[Todo]:
    """Append what other eval keys already have for these requests; returns what is left."""
    siblings = sibling_rows(out) if todo else {}
    left = []
    for t in todo:
        where = next((siblings[s] for s in t.model.shas(t.request) if s in siblings), None)
        src = where.row() if where is not None else None
        if src is None:
            left.append(t)
            continue
        row = {**src, "id": t.request.id, "model": t.model.label, "question_id": t.question.id}
        for k in SCORE_FIELDS:
            row.pop(k, None)
        log.write(row)
    return left


def ask_models(
    cfg: Config,
    todo: list[Todo],
    out: Path,
    log: RecordLog,
    charge: Charge | None = None,
) -> Asked:
    """Ask each model for its missing answers, one served model at a time (each is started,
    asked and stopped before the next loads). Models that are the same weights served the same
    way (the teacher and the base student of a self-distillation) share one server: their
    prompts differ, their weights do not. The teacher's calls are admitted by the run's
    budget and recorded in the ledger (`charge`: stages/shared/spend.py); the others are the
    run's own engines, free. Returns what was asked, summed over the groups."""
    groups: dict[ModelSpec, list[Todo]] = {}
    for item in todo:
        groups.setdefault(_served_as(item.model.spec), []).append(item)
    total = Asked()
    total.stats = AskStats("eval")
    for mine in groups.values():
        got = _ask_group(cfg, mine, out, log, charge)
        total.new += got.new
        total.failures += got.failures
        total.tokens += got.tokens
        total.requested += got.requested
        if got.stats is not None:
            total.stats.seconds += got.stats.seconds
            if got.stats.dtype is not None:  # the model(s) of this group, as their engine ran
                for label in dict.fromkeys(t.model.label for t in mine):
                    total.stats.dtypes[label] = got.stats.dtype.dtype
    return total


def _served_as(spec: ModelSpec) -> ModelSpec:
    """What decides the server: the spec without its label and served name. Models at
    endpoints are never grouped (other servers may serve other weights under one URL)."""
    if spec.urls or spec.model_dir is None:
        return spec
    return dataclasses.replace(spec, label="", served_name="", model_dir=spec.model_dir.resolve())


def _ask_group(
    cfg: Config,
    mine: list[Todo],
    out: Path,
    log: RecordLog,
    charge: Charge | None,
) -> Asked:
    labels = list(dict.fromkeys(t.model.label for t in mine))
    spec = mine[0].model.spec
    if len(labels) > 1:
        spec = dataclasses.replace(spec, label="+".join(labels))
    by_id = {t.request.id: t for t in mine}

    def teachers(req: Request) -> bool:
        return by_id[req.id].model.label == TEACHER

    def paid_teacher(c: Completion) -> None:
        if charge is not None and by_id[c.id].model.label == TEACHER:
            charge.paid(c)

    return ask_into_log(
        spec,
        [t.request for t in mine],
        log,
        lambda c: prediction_row(*by_id[c.id], c),
        settings_from(cfg.eval),
        out / "logs" / labels[0],
        current=lambda req, row: answers(row, by_id[req.id].model, req),
        unit="q",
        admit=(lambda reqs: charge.admit(reqs, teachers)) if charge is not None else None,
        paid=paid_teacher,
    )


def teacher_calls(cfg: Config) -> list[Calls]:
    """`distill plan`: eval's teacher calls at most: its answer to every held-out question and
    identity probe (eval.models with teacher), and with eval.draft its score of every model's
    drafts of the first eval.draft_questions; prompts estimated as the budget does."""
    task, t = load_task(cfg.task), cfg.lead_teacher()
    shots = fewshot_examples(task, t.fewshot)
    most = cfg.eval.sampling.max_tokens
    prompt = {q.id: prompt_tokens(teacher_messages(t, q, shots), None) for q in task.eval}
    out = []
    if TEACHER in cfg.eval.models:
        probes = probe_questions() if cfg.eval.identity else []
        asked = sum(prompt.values()) + sum(prompt_tokens(probe_messages(q), None) for q in probes)
        n = len(task.eval) + len(probes)
        out.append(Calls("eval: teacher answers", n, asked, n * most))
    if cfg.eval.draft:
        drafted = task.eval[: cfg.eval.draft_questions or None]
        labels = len(dict.fromkeys(cfg.eval.models))
        scored = labels * sum(prompt[q.id] + most for q in drafted)
        out.append(
            Calls("eval: draft scores", labels * len(drafted), scored, labels * len(drafted))
        )
    return out
