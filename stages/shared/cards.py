"""Dataset and model cards in the Hugging Face Hub's form: a YAML metadata block between `---`
lines, then Markdown. filter writes the dataset card beside kept.jsonl, train the model card
in model/, eval a copy of each evaluated student's card with its scores (in eval's own dir:
a finished stage's files never change, its manifest says what they are), and `distill export`
puts them beside the exported files.

Every figure on a card is read from what the stages recorded (the config, the reports, the
manifests), never typed in: a card says what the run did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config
from pipeline.models import SMOLLM2
from pipeline.prompts import template_bytes
from pipeline.report import epochs_auto_text
from stages.shared.layout import KEPT

# What distill knows of the licenses of the tasks it reads and the weights it ships.
TASK_LICENSES = {
    "bundled:arith": "apache-2.0",
    "olmo:gsm8k": "mit",
    "olmo:csqa": "mit",
    "olmo:arc_easy": "cc-by-sa-4.0",
    "olmo:arc_challenge": "cc-by-sa-4.0",
}
KEPT_CONFIG_PREFIX = "kept-"
HUB_NAMES = {SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct"}
MODEL_LICENSES = {SMOLLM2: "apache-2.0"}


def data_config(name: str, path: str) -> dict[str, Any]:
    """A card's `configs:` entry that makes `datasets.load_dataset(<card dir>)` read `path`.

    `datasets` (5.x) caches a local dir that has such an entry under its dir name, config name
    and relative data path, whatever the files hold: two dirs alike in those three share one
    cache entry, and loading the second returns the first one's rows. So the rows' own sha256
    goes into the name (filter: the config name; export: the data file's name), and two
    different sets of rows can never meet in the cache."""
    return {"config_name": name, "data_files": [{"split": "train", "path": path}]}


def render(meta: dict[str, Any], body: str) -> str:
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{head}---\n\n{body.strip()}\n"


def parse(text: str) -> tuple[dict[str, Any], str]:
    """A card's metadata and body; a text without a metadata block has none."""
    if not text.startswith("---\n"):
        return {}, text
    head, sep, body = text[4:].partition("\n---\n")
    if not sep:
        return {}, text
    meta = yaml.safe_load(head)
    return (meta if isinstance(meta, dict) else {}), body.lstrip("\n")


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def task_license(cfg: Config) -> str:
    return TASK_LICENSES.get(cfg.task.source, "other")


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _template_line(name: str) -> str:
    return f"`{name}` (sha256 {template_bytes(name)[:12]}…)"  # template_bytes: its sha256


def dataset_card(
    cfg: Config,
    report: dict[str, Any],
    kept_tokens: list[int],
    gen: dict[str, Any],
    keys: dict[str, str],
    questions: dict[str, int],
    identities: dict[str, str],
    rows_sha: str,
) -> str:
    """The filter stage's card. `kept_tokens` are the kept rows' completion tokens, sorted;
    `gen` is the generate manifest, `keys` the generate and filter
    keys, `questions` the split's sizes (train, eval), `identities` each teacher's identity as
    its samples record it, `rows_sha` the sha256 of kept.jsonl (see `data_config`). Long: most
    of it is the card's text, kept in one template so it reads as the card does."""
    g, f, t = cfg.generate, cfg.filter, cfg.task
    labels = cfg.teacher_labels()
    meta: dict[str, Any] = {
        "pretty_name": f"distill rationales: {t.source}, teacher {labels[-1]}",
        "license": task_license(cfg),
        "language": ["en"],
        "task_categories": ["text-generation", "question-answering"],
        "tags": ["distillation", "synthetic", "rationales", "distill"],
        "size_categories": [size_category(len(kept_tokens))],
        "configs": [data_config(KEPT_CONFIG_PREFIX + rows_sha[:12], KEPT)],
        "distill": {"generate_key": keys["generate"], "filter_key": keys["filter"]},
    }
    teachers = []
    for label, tc in zip(labels, cfg.teacher_list(), strict=True):
        lic = MODEL_LICENSES.get(tc.model, "as its weights say")
        ident = identities.get(label, "?")
        teachers.append(
            (
                label,
                f"`{HUB_NAMES.get(tc.model, tc.model)}`",
                f"`{ident[:24]}`",
                lic,
                tc.fewshot,
                _template_line(tc.template),
            )
        )
    s = g.sampling
    strategy = (
        f"adaptive: rounds of {g.n}, until {g.target_verified} verified samples or "
        f"{g.max_samples} samples per question"
        if g.strategy == "adaptive"
        else f"fixed: {g.n} samples per question"
    )
    if len(labels) > 1:
        strategy += f"; teachers combined as `{g.combine}`"
    reasons = sorted((report.get("reasons") or {}).items(), key=lambda kv: -kv[1])
    tokens = kept_tokens
    pr = report.get("pass_rate") or {}
    body = f"""
# {meta["pretty_name"]}

Step-by-step answers written by a teacher model and kept by the filter of
distill for training a student: each row is a chat prompt
(the student's zero-shot prompt) and the teacher's completion, in TRL's conversational
prompt-completion form. It loads with `datasets.load_dataset(<this dir>)`.

## Source task

- Source: `{t.source}` (license: {task_license(cfg)}, as far as distill knows).
- Split: {questions["train"]} train questions, {questions.get("validation", 0)} held out of
  train for validation (choosing settings and checkpoints), {questions["eval"]} held out for
  eval; split {"by `" + t.split_by + "`" if t.split_by else "by question"}, eval fraction
  {t.eval_fraction}, validation fraction {t.validation_fraction}, salt {t.seed}. Only train
  questions are in this dataset.

## Teacher{"s" if len(labels) > 1 else ""}

{_table(teachers, ("label", "model", "identity", "license", "worked examples", "prompt template"))}

- Identity: the hash of the weights distill served (or the name an endpoint serves).
- Sampling: temperature {s.temperature}, top_p {s.top_p}, max_tokens {s.max_tokens}, base seed
  {s.seed} (sample i of a question is seeded base + i), stop {s.stop or "none"}.
- Strategy: {strategy}.
- Samples: {gen.get("stats", {}).get("samples", "?")}, completion tokens
  {gen.get("stats", {}).get("completion_tokens", "?")}.{_served_line(gen.get("stats", {}))}

## Filtering

Checks, in order (a sample stops at the first that rejects it): {", ".join(f.checks)};
selection `{f.selection}`{
        f", at most {f.per_question_cap} per question" if f.per_question_cap else ""
    }.

{
        _table(
            [("input", report.get("input", 0))] + reasons + [("**kept**", report.get("kept", 0))],
            ("samples", "count"),
        )
    }

Questions with a kept sample: {report.get("questions_with_kept", 0)} of
{report.get("questions_total", 0)}.

## Statistics

- Pass rate (verified / sampled per question, all teachers): mean {pr.get("mean")}; never
  solved {pr.get("never_solved")}, always solved {pr.get("always_solved")} (every question's
  rate, per teacher, is in `report.json` and in each row's `pass_rate` fields).
- Completion tokens of kept rows: min {tokens[0] if tokens else "-"}, median
  {tokens[len(tokens) // 2] if tokens else "-"}, max {tokens[-1] if tokens else "-"}.

## Decontamination

Every sample (question and teacher text) was checked against the {questions["eval"]} held-out
eval questions of the same task by word {f.decontam_n}-grams (a shorter eval question counts
whole); {report.get("reasons", {}).get("contaminated", 0)} samples matched and were dropped.{
        _template_words(report, f.decontam_template)
    }
{"" if "decontaminate" in f.checks else "**The decontaminate check was not run.**"}

## Lineage

- generate key `{keys["generate"]}`, filter key `{keys["filter"]}`: rerunning distill with
  the same config and data gives these keys and these rows.
{_advice_section(report.get("advice") or [])}"""
    return render(meta, body)


def _template_words(report: dict[str, Any], at: int) -> str:
    """What decontamination set aside as the task's template (filter.decontam_template)."""
    if not at:
        return ""
    d = report.get("decontamination") or {}
    return (
        f" {d.get('template_ngrams', 0)} eval n-grams that {at} or more train questions also "
        "hold were set aside as the task's template, not a leak; "
        f"{d.get('template_only_samples', 0)} samples overlapped eval only through them and were kept."
    )


def _advice_section(advice: list[str]) -> str:
    """The card's last words: what the numbers above suggest trying (stages/shared/advice.py)."""
    if not advice:
        return ""
    return "\n## Advice\n\n" + "".join(f"- {a}\n" for a in advice)


def _served_line(stats: dict[str, Any]) -> str:
    """Where this run's teacher engine ran, and in what dtype (none: nothing was asked now, or
    the teacher was someone else's endpoint)."""
    if "dtype" not in stats:
        return ""
    return f"\n- Served by distill in {stats['dtype']} ({stats.get('dtype_why', '')})."


def _schedule(tr: Any, stats: dict[str, Any]) -> str:
    if stats.get("epochs_auto"):  # stages/train/epochs.py: validated, so annealed each epoch
        return f"cosine to zero in each epoch, warmup {tr.warmup_ratio} of the first"
    return f"{tr.lr_scheduler}, warmup {tr.warmup_ratio}"


def _precision(asked: bool, stats: dict[str, Any]) -> str:
    """What the student trained in, as the train stage recorded it, and on what."""
    used = "bf16 autocast" if stats.get("bf16") else "float32"
    why = "" if stats.get("bf16") or not asked else ", bf16 not native here"
    return f"{used}{why} ({stats['hardware']})" if "hardware" in stats else used + why


def model_card(
    cfg: Config, stats: dict[str, Any], keys: dict[str, str], examples: int, detail: str = ""
) -> str:
    """The train stage's card for model/; `detail`, the objective's settings after its name
    (the train stage asks its objective for them)."""
    tr = cfg.train
    base = HUB_NAMES.get(tr.student, Path(tr.student).name)
    meta: dict[str, Any] = {
        "base_model": base,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["distill", "distillation", "trl", tr.objective]
        + (["lora"] if tr.lora.enabled else []),
        "distill": {"train_key": keys["train"], "filter_key": keys["filter"]},
    }
    if tr.student in MODEL_LICENSES:
        meta["license"] = MODEL_LICENSES[tr.student]
    hyper = [
        ("objective", tr.objective + detail),
        ("learning rate", f"{tr.learning_rate} ({_schedule(tr, stats)})"),
        ("epochs / max steps", f"{tr.epochs} / {tr.max_steps}"),
        ("batch size x grad accum", f"{tr.batch_size} x {tr.grad_accum}"),
        ("max length", f"{tr.max_length} ({tr.overlong})"),
        ("weight decay", tr.weight_decay),
        ("LoRA", f"r {tr.lora.r}, alpha {tr.lora.alpha}" if tr.lora.enabled else "no (full)"),
        ("precision", _precision(tr.bf16, stats)),
        ("packing / batches by length", f"{tr.packing} / {tr.group_by_length}"),
        ("seeds", f"train {tr.seed}, teacher sampling {cfg.generate.sampling.seed}"),
    ]
    body = f"""
# {base}, distilled by distill

`{base}` fine-tuned with [TRL](https://github.com/huggingface/trl) on step-by-step answers
from {", ".join(f"`{t}`" for t in cfg.teacher_labels())} on `{cfg.task.source}` (the dataset
with filter key `{keys["filter"]}`: {examples} training examples).

## Training

{_table(hyper, ("setting", "value"))}

Steps {stats.get("steps", "?")}, final training loss {stats.get("final_loss", "?")}.
The loss curve is `loss.png` and every logged step is in `train_log.jsonl`, beside this model
in the train stage dir (train key `{keys["train"]}`).

{_selection(stats)}

## Evaluation

Not evaluated yet: `distill eval` adds the held-out accuracy to the copy of this card it keeps.
"""
    return render(meta, body)


def distilled_name(meta: dict[str, Any], fallback: str) -> str:
    """What the Hub's model-index calls the distilled model (never its base): the base's short
    name, '-distilled', and the train key's first 12 digits; `distill export --push REPO` names
    it REPO instead."""
    base = str(meta.get("base_model", "")).rsplit("/", 1)[-1]
    key = str((meta.get("distill") or {}).get("train_key", ""))[:12]
    return f"{base}-distilled-{key}" if base and key else fallback


def _selection(stats: dict[str, Any]) -> str:
    """Which step's weights these are, and why: the validation measurements that chose them."""
    val = stats.get("validation") or []
    if not val:
        return (
            "## Selection\n\nNo validation measurement (train.validate off, or no validation "
            "split): these are the last step's weights."
        )
    n = val[0]["n"]
    rows = [(r["step"], r["epoch"], f"{100 * r['accuracy']:.1f}%") for r in val]
    step, acc = stats.get("selected_step"), stats.get("selected_validation_accuracy")
    if stats.get("select") == "best":
        why = (
            f"These are step {step}'s weights: the best validation accuracy ({100 * acc:.1f}%) "
            f"of {len(val)} measurements (train.select: best; the first of equals)."
        )
    else:
        why = (
            f"These are the last step's weights (train.select: last); validation accuracy "
            f"there: {100 * acc:.1f}%."
            if acc is not None
            else "These are the last step's weights (train.select: last)."
        )
    auto = stats.get("epochs_auto")
    if auto:  # train.epochs: auto: how many ran and why it stopped
        why += f" It {epochs_auto_text(auto)}."
    table = _table(rows, ("step", "epoch", "validation accuracy"))
    return (
        f"## Selection\n\nMeasured on the {n} validation questions (held out of train before "
        f"generation; never the eval split), greedy:\n\n{table}\n\n{why}"
    )


def with_metrics(card: str, label: str, metrics: dict[str, Any]) -> str:
    """`card` with its Evaluation section replaced by what eval measured (and the Hub's
    model-index), for the model eval calls `label`."""
    meta, body = parse(card)
    per = metrics["per_model"]
    rows = [
        (
            m,
            f"{100 * v['accuracy']:.1f}%",
            f"{100 * v['ci_low']:.1f}-{100 * v['ci_high']:.1f}",
            v["n"],
            "**this model**" if m == label else "",
        )
        for m, v in per.items()
    ]
    tests = [
        f"- {name.replace('_vs_', ' vs ')}: p = {t.get('p_value', float('nan')):.3g}"
        for name, t in (metrics.get("mcnemar") or {}).items()
        if label in name.split("_vs_")
    ]
    section = f"""## Evaluation

Held-out `{metrics["task"]}` questions ({metrics["questions"]}), greedy unless configured
otherwise, zero-shot for the students; accuracy with its 95% Wilson interval:

{_table(rows, ("model", "accuracy", "95% CI", "questions", ""))}

{chr(10).join(tests) if tests else ""}
(exact McNemar tests on the same questions; one run: see `distill seeds` for the spread over
seeds.)
"""
    head, _, _ = body.partition("## Evaluation")
    mine = per.get(label)
    if mine is not None:
        meta["model-index"] = [
            {
                "name": distilled_name(meta, label),
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "dataset": {"name": metrics["task"], "type": metrics["task"]},
                        "metrics": [{"type": "accuracy", "value": round(mine["accuracy"], 4)}],
                    }
                ],
            }
        ]
    return render(meta, head.rstrip() + "\n\n" + section)
