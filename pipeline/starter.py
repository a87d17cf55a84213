"""`distill init`: a commented starting config for a task source, read from the data itself.

    distill init --source hf:openai/gsm8k:main --to my.yaml
    distill init --source jsonl:data/mine.jsonl --to my.yaml

It reads the source's rows (pipeline/hfdata.py, or the JSONL file) and guesses what a user
would otherwise look up: which columns hold the question, the answer and an id, whether the
answers end as GSM8K's (`#### N`) or in a `\\boxed{}`, whether the golds are numbers, and
which splits the dataset brings. Teacher and student are left at the bundled model, marked for
the user to set. Every line says why it is there; the file loads as it is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError
from pipeline.hfdata import extract, load_hf

QUESTION = ("question", "problem", "prompt", "query", "input", "instruction")
ANSWER = ("answer", "solution", "target", "output", "label", "gold", "response")
IDS = ("id", "qid", "idx", "uid", "question_id")
READ = 200  # rows looked at for the guesses


def _rows(source: str) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """The source's splits (at most READ rows each) and its name."""
    kind, _, arg = source.partition(":")
    if kind == "hf":
        data = load_hf(arg)
        return {k: v[:READ] for k, v in data.splits.items()}, data.name
    if kind == "jsonl":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise UserError(f"--source {source}: no such file")
        lines = [x for x in path.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
        try:
            return {"train": [json.loads(x) for x in lines[:READ]]}, path.stem
        except ValueError:
            raise UserError(f"--source {source}: not JSON lines") from None
    raise UserError(f"--source {source}: give hf:DATASET or jsonl:PATH")


def _pick(names: tuple[str, ...], columns: list[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def _rule(answers: list[str]) -> str:
    """The answer rule every answer read fits ('' when none does)."""
    for rule in ("gsm8k", "boxed"):
        if answers and all(extract(rule, a) is not None for a in answers):
            return rule
    return ""


def _numeric(golds: list[str]) -> bool:
    try:
        for g in golds:
            float(g.replace(",", ""))
    except ValueError:
        return False
    return bool(golds)


def starter(source: str) -> str:
    """The config text for `source`."""
    splits, name = _rows(source)
    train = splits.get("train") or next(iter(splits.values()))
    if not train or not isinstance(train[0], dict):
        raise UserError(f"--source {source}: no rows to read")
    columns = list(train[0])
    q, a, i = _pick(QUESTION, columns), _pick(ANSWER, columns), _pick(IDS, columns)
    if q is None or a is None:
        raise UserError(
            f"--source {source}: no {'question' if q is None else 'answer'} column found "
            f"(columns: {', '.join(columns)}); name it with task.columns in a config by hand"
        )
    answers = [str(r.get(a, "")) for r in train]
    rule = _rule(answers)
    golds = [g for g in (extract(rule, x) for x in answers) if g is not None]
    kind = "numeric" if _numeric(golds) else "exact"
    mapping = {"question": q, "answer": a} | ({"id": i} if i else {})
    own = "train" in splits and "test" in splits
    found = ", ".join(f"{k}: {len(v):,}{'+' if len(v) == READ else ''}" for k, v in splits.items())
    lines = [
        f"# A starting config for {source}, written by `distill init` from its data.",
        "# Check every line, then: distill plan --config THIS_FILE; distill run --config THIS_FILE",
        f"run: {json.dumps(name)}".ljust(36) + f"# outputs under runs/{name}/",
        "task:",
        f"  source: {json.dumps(source)}",
        f"  columns: {json.dumps(mapping)}".ljust(36)
        + f"  # guessed from the columns: {', '.join(columns)}",
        f"  answer_rule: {json.dumps(rule)}".ljust(36)
        + (
            f"  # every answer read ends as {rule} writes it"
            if rule
            else "  # the answer column is the gold as it is"
        ),
        f"  answer_type: {kind}".ljust(36)
        + (
            "  # every gold read is a number" if kind == "numeric" else "  # golds compared as text"
        ),
        "  # splits (rows read, at most "
        + f"{READ} each): {found}; "
        + ("its own train and test are train and eval" if own else "carved by task.eval_fraction"),
        "teacher:",
        "  model: smollm2-135m".ljust(36) + "  # SET YOUR TEACHER: a local HF model dir",
        "  fewshot: 1".ljust(36) + "  # one worked example before each question",
        "train:",
        "  student: smollm2-135m".ljust(36) + "  # SET YOUR STUDENT: a local HF model dir",
    ]
    text = "\n".join(lines) + "\n"
    yaml.safe_load(text)  # what it wrote parses
    return text


def write_starter(source: str, to: str) -> str:
    """Write the starting config to `to` (never over a file); returns what it says."""
    path = Path(to).expanduser()
    if path.exists():
        raise UserError(f"--to {to}: exists; give a new file (init never overwrites)")
    text = starter(source)
    path.write_text(text, encoding="utf-8")
    return f"wrote {path}: check every line, then `distill plan --config {path}`"
