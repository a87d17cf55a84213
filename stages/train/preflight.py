"""Pre-flight for the train stage: read kept.jsonl, tokenize it exactly the way TRL's SFTTrainer
does for conversational prompt-completion rows, and check what the student will learn from.

The prepared rows (`input_ids` + `labels`, -100 on the prompt) are what the trainer trains on: the
SFTTrainer sees `input_ids` and `labels` and skips its own tokenization, so the checks here inspect
the real training data, not a re-rendering of it. kept.jsonl is streamed and the rows are written
to an Arrow file as they are made (stages/train/prepared.py), so memory does not grow with it.

Checks, each with a one-line message: the student has a chat template; every completion ends with
the student's EOS; every loss mask is non-empty and covers only the completion; a reasoning trace
is rendered once, trained, before its answer (stages/train/traces.py); sequences over
`max_length` are counted and truncated or dropped.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.models import has_chat_template
from pipeline.records import DataError, read_jsonl
from stages.train.chat import short, stop_token_ids, template_errors
from stages.train.objectives import OBJECTIVES
from stages.train.prepared import IGNORE, Prepared, TrainError, write_rows
from stages.train.traces import in_form, trace_form, trace_problem

ROWS_FILE = "rows.arrow"  # in pre-flight's work directory

# --- input rows ----------------------------------------------------------------------------------


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def load_rows(kept: Path, answer_only: bool = False) -> Iterator[dict[str, Any]]:
    """kept.jsonl streamed -> {prompt, completion} per line (conversational); `answer_only`
    drops the rationale. A missing file is refused at once, an empty one when the stream ends."""
    kept = Path(kept)
    if not kept.is_file():
        raise TrainError(f"no training data: {kept} does not exist (did the filter stage run?)")
    return _rows(kept, answer_only)


def _rows(kept: Path, answer_only: bool) -> Iterator[dict[str, Any]]:
    lineno = 0
    for lineno, row in enumerate(read_jsonl(kept), 1):
        prompt, completion = row.get("prompt"), row.get("completion")
        if not _is_messages(prompt):
            raise DataError(f"{kept}:{lineno}: 'prompt' must be a list of chat messages")
        trace = {}
        if answer_only:
            if "answer" not in row:
                raise DataError(f"{kept}:{lineno}: train.answer_only needs an 'answer' field")
            completion = [{"role": "assistant", "content": f"Answer: {row['answer']}"}]
        elif not _is_messages(completion):
            raise DataError(f"{kept}:{lineno}: 'completion' must be a list of chat messages")
        elif row.get("reasoning") is not None:
            if not (isinstance(row["reasoning"], str) and isinstance(row.get("final"), str)):
                raise DataError(f"{kept}:{lineno}: 'reasoning' and 'final' must both be text")
            trace = {"reasoning": row["reasoning"], "final": row["final"]}
        ref = {"logprobs": row["logprobs"]} if "logprobs" in row else {}
        yield {"prompt": prompt, "completion": completion, **trace, **ref}
    if not lineno:
        raise TrainError(f"no training examples in {kept}: the filter stage kept nothing")


# --- tokenizer -----------------------------------------------------------------------------------


def load_tokenizer(student: Path, chat_template_file: str = ""):
    """The student's tokenizer, with `chat_template_file` installed if the student has none."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(student)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise TrainError(
            f"train.student: cannot load the tokenizer of {student} ({str(e)[:160]})"
        ) from None
    if chat_template_file:  # the config checked that the file exists and is UTF-8 text
        tok.chat_template = Path(chat_template_file).expanduser().read_text(encoding="utf-8")
    elif not (has_chat_template(Path(student)) or getattr(tok, "chat_template", None)):
        raise TrainError(
            f"student {student} has no chat template; set train.chat_template to a Jinja "
            "chat template file"
        )
    if tok.eos_token is None:
        raise TrainError(f"student {student} tokenizer has no eos_token; set one in its config")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # labels are built here, so padding never masks a real EOS
    return tok


# --- tokenization (mirrors trl.SFTTrainer._prepare_dataset for conversational rows) ---------


def _ids(tok, messages: list[dict[str, Any]], **kwargs) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def tokenize_row(tok, row: dict[str, Any]) -> tuple[list[int], list[int], int, bool]:
    """-> (input_ids, labels, prompt_len, prompt_is_prefix)."""
    prompt_ids = _ids(tok, row["prompt"], add_generation_prompt=True)
    ids = _ids(tok, row["prompt"] + row["completion"])
    n = 0
    for a, b in zip(prompt_ids, ids, strict=False):
        if a != b:
            break
        n += 1
    labels = [IGNORE] * n + ids[n:]
    return ids, labels, n, n == len(prompt_ids)


def _ends_with_stop(tok, ids: list[int], labels: list[int], stops: set[int]) -> bool:
    """The trained part has a stop token followed by nothing but whitespace (e.g. `<|im_end|>\\n`)."""
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE]
    for i in range(len(trained) - 1, -1, -1):
        if trained[i] in stops:
            return tok.decode(trained[i + 1 :]).strip() == ""
    return False


def check_mask(ids: list[int], labels: list[int], prompt_len: int) -> str | None:
    """None when labels are -100 on every prompt token and only there; else what is wrong."""
    if len(ids) != len(labels):
        return "labels and input_ids differ in length"
    if all(lab == IGNORE for lab in labels):
        return "the loss mask is empty (no completion token is trained)"
    if any(lab != IGNORE for lab in labels[:prompt_len]):
        return "the loss mask covers prompt tokens"
    if any(lab == IGNORE for lab in labels[prompt_len:]):
        return "the loss mask misses completion tokens"
    return None


def checked_row(
    tok, row: dict[str, Any], i: int, stops: set[int], form: str = "inline"
) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, prompt_is_prefix) of example `i`, or TrainError: a loss mask that is
    empty or covers the prompt, a reasoning trace the template drops, repeats, reorders or
    leaves untrained, or a completion that does not end with the student's EOS."""
    try:
        ids, labels, prompt_len, is_prefix = tokenize_row(tok, row)
    except template_errors() as e:
        raise TrainError(
            f"example {i}: the student's chat template cannot render it ({short(e)}); fix the "
            "template or give train.chat_template one that works"
        ) from None
    problem = check_mask(ids, labels, prompt_len)
    if problem:
        raise TrainError(f"example {i}: {problem}; check the chat template")
    problem = trace_problem(tok, row, ids, labels)
    if problem:
        raise TrainError(
            f"example {i}: the student's chat template {problem} ({form} form); give "
            "train.chat_template a training template that renders the trace, then the "
            "answer, in the assistant turn"
        )
    if not _ends_with_stop(tok, ids, labels, stops):
        raise TrainError(
            f"example {i}: the rendered completion does not end with the student's EOS token "
            f"{tok.eos_token!r}; the student would never learn to stop. Use a chat template "
            "that closes the assistant turn with it (train.chat_template)"
        )
    return ids, labels, is_prefix


@dataclass
class _Count:
    """What prepare counts as the rows stream past."""

    rows: int = 0
    overlong: int = 0
    truncated: int = 0
    dropped: int = 0
    not_prefix: int = 0
    traced: int = 0
    tokens: int = 0
    trained: int = 0
    longest: int = 0
    form: str = "inline"  # how the template wants a trace given, found at the first trace
    sources: array = field(default_factory=lambda: array("q"))


def _tokenized(
    tok, rows: Iterable[dict[str, Any]], max_length: int, overlong: str, stops: set[int], n: _Count
) -> Iterator[dict[str, list[int]]]:
    """Each row tokenized, checked and cut to max_length (or dropped), counted in `n`."""
    for i, row in enumerate(rows):
        n.rows += 1
        if row.get("reasoning") is not None:
            if not n.traced:
                n.form = trace_form(tok)
            n.traced += 1
        ids, labels, is_prefix = checked_row(tok, in_form(row, n.form), i, stops, n.form)
        n.not_prefix += not is_prefix
        if len(ids) > max_length:
            n.overlong += 1
            if overlong == "drop":
                n.dropped += 1
                continue
            ids, labels = ids[:max_length], labels[:max_length]
            if all(lab == IGNORE for lab in labels):  # the prompt alone fills max_length
                n.dropped += 1
                continue
            n.truncated += 1
        n.tokens += len(ids)
        n.trained += sum(lab != IGNORE for lab in labels)
        n.longest = max(n.longest, len(ids))
        n.sources.append(i)
        yield {"input_ids": ids, "labels": labels}


def prepare(
    tok,
    rows: Iterable[dict[str, Any]],
    max_length: int,
    overlong: str = "truncate",
    stops: set[int] | None = None,
    *,
    work: Path,
) -> Prepared:
    """Tokenize and check every row, streamed into `work`/rows.arrow; raise TrainError on the
    first hard problem."""
    n = _Count()
    stops = stops or {tok.eos_token_id}
    out = write_rows(
        Path(work) / ROWS_FILE,
        _tokenized(tok, rows, max_length, overlong, stops, n),
        {"input_ids": "int32", "labels": "int32"},
    )
    warnings = _warnings(n.rows, max_length, overlong, n.overlong, n.truncated, n.dropped)
    if n.not_prefix:
        warnings.append(
            f"{n.not_prefix} examples: the chat template renders the prompt differently alone "
            "than before a completion; training starts the completion where they diverge"
        )
    if not len(out):
        raise TrainError(
            f"all {n.rows} examples were dropped as longer than train.max_length={max_length}; "
            "raise train.max_length or set train.overlong=truncate"
        )
    stats = {
        "examples_in": n.rows,
        "examples": len(out),
        "overlong": n.overlong,
        "truncated": n.truncated,
        "dropped": n.dropped,
        "prompt_not_prefix": n.not_prefix,
        "tokens": n.tokens,
        "trained_tokens": n.trained,
        "max_tokens": n.longest,
        "mean_tokens": round(n.tokens / len(out), 2),
    } | ({"with_trace": n.traced, "trace_form": n.form} if n.traced else {})
    return Prepared(rows=out, work=Path(work), stats=stats, warnings=warnings, sources=n.sources)


def _warnings(
    rows: int, max_length: int, overlong: str, overlong_n: int, truncated: int, dropped: int
) -> list[str]:
    if not overlong_n:
        return []
    return [
        f"{overlong_n} of {rows} examples are longer than train.max_length={max_length} "
        f"tokens: {truncated} truncated (they lose their EOS), {dropped} dropped "
        f"(train.overlong={overlong})"
    ]


def preflight(student: Path, kept: Path, train_cfg, work: Path) -> tuple[Any, Prepared]:
    """Everything checked before a model is loaded: -> (tokenizer, prepared rows), with what
    the objective's loss adds to them (stages/train/objectives/). The rows are Arrow files in
    `work`, a directory the caller owns and removes after training."""
    tok = load_tokenizer(student, train_cfg.chat_template)
    prepared = prepare(
        tok,
        load_rows(kept, train_cfg.answer_only),
        train_cfg.max_length,
        train_cfg.overlong,
        stop_token_ids(tok, student),
        work=work,
    )
    loss = OBJECTIVES[train_cfg.objective].kept
    if loss is not None:  # what its loss needs beside the rows (kd: the soft labels)
        loss.prepare_rows(tok, kept, lambda: load_rows(kept, train_cfg.answer_only), prepared)
    return tok, prepared
