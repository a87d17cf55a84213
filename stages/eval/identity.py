"""eval.identity: whose identity a student claims, its teacher's or its base's.

Every model under test is asked the bundled probes (data/identity/probes.jsonl: who are you,
who made you, what is your name..., each in plain and in adversarial framings), as a lone user
message, with eval.sampling. Their answers go to predictions.jsonl beside the held-out ones
(answer_type `identity`, never scored for accuracy). The rule, stated in the report:

1. In every answer, find the model and maker names it mentions: the built-in list below plus
   eval.identity_names, matched as whole words (short or common words case-sensitively).
2. A name is the teacher's when, over the probes, the teacher mentions it where the base does
   not more often than the reverse, beyond chance: an exact two-sided sign test over the
   paired answers (McNemar's) at p < 0.05, which needs at least 6 probes one way and none the
   other. The base's in the reverse case. A name used alike, or apart by too few probes to
   tell from chance (1 of 16 against 0), tells nothing; the report gives each name's counts
   and p.
3. Each model's score on a probe is 1 when it names a teacher's name there, -1 a base's, 0
   neither (or both). A student moved toward the teacher when its score is above its base's
   on more probes than below it, beyond chance (the same test, over the probes where they
   differ); otherwise it stayed with its base, and the verdict gives p. With no name of
   either side, or without the teacher and the base both under test, nothing is judged, and
   the report says why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pipeline.paths import DATA_DIR
from pipeline.tasks import Question
from stages.eval.metrics import sign_test

PROBES = DATA_DIR / "identity" / "probes.jsonl"
IDENTITY = "identity"  # the answer_type of a probe's row
PREFIX = "identity:"  # of a probe's question id
ALPHA = 0.05  # a difference counts when chance would give one as uneven less often than this

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

    ids = [p.id for p in probes()]

    def said(model: str, name: str) -> list[bool]:
        return [name in found.get(model, {}).get(i, set()) for i in ids]

    def count(model: str, name: str) -> int:
        return sum(said(model, name))

    out: dict[str, Any] = {"probes": len(ids), "alpha": ALPHA, "models": {}}
    every = sorted({n for per in found.values() for ns in per.values() for n in ns})
    tests = {n: _name_test(said("teacher", n), said("base", n)) for n in every}
    teacher = [n for n, t in tests.items() if t["side"] == "teacher"]
    base = [n for n, t in tests.items() if t["side"] == "base"]
    out |= {"teacher_names": teacher, "base_names": base, "name_tests": tests}
    scores: dict[str, list[int]] = {}
    for model, per in found.items():
        t = sum(bool(ns & set(teacher)) for ns in per.values())
        b = sum(bool(ns & set(base)) for ns in per.values())
        scores[model] = [_score(per.get(i, set()), teacher, base) for i in ids]
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
        else "no name tells the teacher from the base beyond chance"
        if not teacher and not base
        else ""
    )
    for model, m in out["models"].items():
        if model not in ("teacher", "base"):
            m |= _verdict(scores[model], scores["base"]) if not why else {}
            m.setdefault("verdict", f"not judged: {why}")
    return out


def _verdict(student: list[int], base: list[int]) -> dict[str, Any]:
    """A student's verdict against its base, from their per-probe scores (rule 3)."""
    up = sum(s > b for s, b in zip(student, base, strict=True))
    down = sum(s < b for s, b in zip(student, base, strict=True))
    p = sign_test(up, down)
    toward = up > down and p < ALPHA
    return {
        "above_base": up,
        "below_base": down,
        "p_value": round(p, 4),
        "verdict": "moved toward the teacher" if toward else "stayed with its base",
    }


def _name_test(teacher: list[bool], base: list[bool]) -> dict[str, Any]:
    """Whose a name is: the probes only the teacher names it in against only the base, and
    the exact test's p; `side` is teacher, base or none (within chance)."""
    only_t = sum(t and not b for t, b in zip(teacher, base, strict=True))
    only_b = sum(b and not t for t, b in zip(teacher, base, strict=True))
    p = sign_test(only_t, only_b)
    side = "none" if p >= ALPHA else "teacher" if only_t > only_b else "base"
    return {"teacher_only": only_t, "base_only": only_b, "p_value": round(p, 4), "side": side}


def _score(names: set[str], teacher: list[str], base: list[str]) -> int:
    return int(bool(names & set(teacher))) - int(bool(names & set(base)))


def identity_lines(metrics: dict[str, Any]) -> list[str]:
    """The report's identity section: the names found, each model's counts and verdict, and
    its answers to the first plain and the first adversarial probe."""
    ident = metrics.get("identity")
    if not ident:
        return []
    tests = ident.get("name_tests", {})
    each = "; ".join(
        f"{n}: {t['teacher_only']} vs {t['base_only']}, p={t['p_value']:.3g}"
        for n, t in tests.items()
    )
    lines = [
        f"teacher's names: {', '.join(ident['teacher_names']) or 'none'}; base's names: "
        f"{', '.join(ident['base_names']) or 'none'} (over {ident['probes']} probes; a name "
        f"is one side's when the probes only that side names it in outnumber the other's "
        f"beyond chance, exact sign test p < {ident.get('alpha', 0.05)}"
        + (f": {each})" if each else ")")
    ]
    order = [x for x in metrics.get("models", []) if x in ident["models"]]
    for model in order + [x for x in ident["models"] if x not in order]:
        m = ident["models"][model]
        said = "; ".join(f"{p}: {text!r}" for p, text in m["shown"].items())
        verdict = f": {m['verdict']}" if "verdict" in m else ""
        if "p_value" in m:
            verdict += (
                f" (above its base on {m['above_base']} probes, below on {m['below_base']}, "
                f"p={m['p_value']:.3g})"
            )
        names = ", ".join(f"{n} in {c}" for n, c in m["names"].items()) or "none"
        lines.append(
            f"{model}{verdict} (names: {names}; the teacher's in {m['teacher_names']}, the "
            f"base's in {m['base_names']} answers; {said})"
        )
    return lines


def _short(text: str, n: int = 100) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"
