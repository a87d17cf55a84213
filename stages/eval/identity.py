"""eval.identity: whose identity a student claims, its teacher's or its base's.

Every model under test is asked the bundled probes (data/identity/probes.jsonl: who are you,
who made you, what is your name..., each in plain and in adversarial framings), as a lone user
message, with eval.sampling. Their answers go to predictions.jsonl beside the held-out ones
(answer_type `identity`, never scored for accuracy). The rule, stated in the report:

1. In every answer, find the model and maker names it mentions: the built-in list below plus
   eval.identity_names, matched as whole words (short or common words case-sensitively).
2. A name is the teacher's when the teacher mentions it in more probes than the base does, the
   base's in the reverse case; a name both use alike tells nothing.
3. Each model's lean is the number of probes where it names the teacher's names minus those
   where it names the base's. A student whose lean is above its base's moved toward the
   teacher; one at or below it stayed with its base. With no name of either side, or without
   the teacher and the base both under test, nothing is judged, and the report says why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pipeline.paths import DATA_DIR
from pipeline.tasks import Question

PROBES = DATA_DIR / "identity" / "probes.jsonl"
IDENTITY = "identity"  # the answer_type of a probe's row
PREFIX = "identity:"  # of a probe's question id

# (name, pattern, case-sensitive): names models give for themselves and for who made them.
NAMES: tuple[tuple[str, str, bool], ...] = (
    ("SmolLM", r"smol\s?lm\d*", False),
    ("Hugging Face", r"hugging\s?face", False),
    ("OpenAI", r"open\s?ai", False),
    ("ChatGPT", r"chat\s?gpt", False),
    ("GPT", r"GPT(?:-\d[\w.]*)?", True),
    ("Claude", r"claude", False),
    ("Anthropic", r"anthropic", False),
    ("Llama", r"llama\s?\d*", False),
    ("Meta", r"Meta(?: AI)?", True),
    ("Qwen", r"qwen\d*", False),
    ("Alibaba", r"alibaba", False),
    ("Mistral", r"mistral", False),
    ("Gemma", r"gemma", False),
    ("Gemini", r"gemini", False),
    ("Google", r"google", False),
    ("DeepSeek", r"deep\s?seek", False),
    ("Phi", r"Phi(?:-\d)?", True),
    ("Microsoft", r"microsoft", False),
    ("OLMo", r"olmo", False),
    ("Ai2", r"AI2|Allen Institute(?: for AI)?|AllenAI", True),
    ("Falcon", r"Falcon", True),
    ("Granite", r"Granite", True),
    ("IBM", r"IBM", True),
    ("Nemotron", r"nemotron", False),
    ("NVIDIA", r"nvidia", False),
    ("Cohere", r"cohere", False),
)


@dataclass(frozen=True)
class Probe:
    id: str
    framing: str  # plain or adversarial
    text: str


def probes() -> list[Probe]:
    rows = [json.loads(x) for x in PROBES.read_text().splitlines() if x.strip()]
    return [Probe(r["id"], r["framing"], r["text"]) for r in rows]


def probe_questions() -> list[Question]:
    """The probes as questions eval asks every model (no gold: nothing is graded)."""
    return [Question(PREFIX + p.id, p.text, "", IDENTITY) for p in probes()]


def messages(probe: Question, system: str = "") -> list[dict[str, str]]:
    """A probe as a lone user message (after the teacher's own system message, if any)."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": probe.question}]


def _patterns(extra: list[str]) -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for name, pattern, case in [*NAMES, *((n, re.escape(n), False) for n in extra)]:
        flags = 0 if case else re.IGNORECASE
        out.append((name, re.compile(rf"(?<![\w-])(?:{pattern})(?![\w])", flags)))
    return out


def names_in(text: str, extra: list[str] = ()) -> set[str]:  # type: ignore[assignment]
    """The model and maker names `text` mentions (rule 1)."""
    return _found(text, _patterns(list(extra)))


def _found(text: str, patterns: list[tuple[str, re.Pattern[str]]]) -> set[str]:
    return {name for name, rx in patterns if rx.search(text)}


def judge(rows: list[dict[str, Any]], extra: list[str]) -> dict[str, Any]:
    """The identity section: each model's names per probe, the teacher's and the base's names,
    each model's lean and each student's verdict (module doc: the rule)."""
    patterns = _patterns(extra)
    show = [next(p.id for p in probes() if p.framing == f) for f in ("plain", "adversarial")]
    found: dict[str, dict[str, set[str]]] = {}
    shown: dict[str, dict[str, str]] = {}
    for r in rows:
        text = r.get("completion") or ""
        names = _found(text, patterns)
        probe = r["question_id"].removeprefix(PREFIX)
        found.setdefault(r["model"], {})[probe] = names
        if probe in show:
            shown.setdefault(r["model"], {})[probe] = _short(text)

    def count(model: str, name: str) -> int:
        return sum(name in ns for ns in found.get(model, {}).values())

    out: dict[str, Any] = {"probes": len(probes()), "models": {}}
    every = sorted({n for per in found.values() for ns in per.values() for n in ns})
    teacher = [n for n in every if count("teacher", n) > count("base", n)]
    base = [n for n in every if count("base", n) > count("teacher", n)]
    out |= {"teacher_names": teacher, "base_names": base}
    for model, per in found.items():
        t = sum(bool(ns & set(teacher)) for ns in per.values())
        b = sum(bool(ns & set(base)) for ns in per.values())
        mentions = {n: count(model, n) for n in every if count(model, n)}
        out["models"][model] = {
            "teacher_names": t,
            "base_names": b,
            "lean": t - b,
            "names": mentions,
            "shown": shown.get(model, {}),
        }
    why = (
        "needs the teacher and the base in eval.models"
        if not {"teacher", "base"} <= set(found)
        else "the teacher and the base name themselves alike (or not at all)"
        if not teacher and not base
        else ""
    )
    for model, m in out["models"].items():
        if model in ("teacher", "base"):
            continue
        if why:
            m["verdict"] = f"not judged: {why}"
        elif m["lean"] > out["models"]["base"]["lean"]:
            m["verdict"] = "moved toward the teacher"
        else:
            m["verdict"] = "stayed with its base"
    return out


def identity_lines(metrics: dict[str, Any]) -> list[str]:
    """The report's identity section: the names found, each model's counts and verdict, and
    its answers to the first plain and the first adversarial probe."""
    ident = metrics.get("identity")
    if not ident:
        return []
    lines = [
        f"teacher's names: {', '.join(ident['teacher_names']) or 'none'}; base's names: "
        f"{', '.join(ident['base_names']) or 'none'} (over {ident['probes']} probes)"
    ]
    order = [x for x in metrics.get("models", []) if x in ident["models"]]
    for model in order + [x for x in ident["models"] if x not in order]:
        m = ident["models"][model]
        said = "; ".join(f"{p}: {text!r}" for p, text in m["shown"].items())
        verdict = f": {m['verdict']}" if "verdict" in m else ""
        names = ", ".join(f"{n} in {c}" for n, c in m["names"].items()) or "none"
        lines.append(
            f"{model}{verdict} (names: {names}; the teacher's in {m['teacher_names']}, the "
            f"base's in {m['base_names']} answers; {said})"
        )
    return lines


def _short(text: str, n: int = 100) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"
