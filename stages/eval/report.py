"""The eval report: report.md (a markdown table, McNemar lines) and accuracy.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from pipeline.config.eval import EvalModel
from stages.eval.identity import identity_lines

MODELS = get_args(EvalModel)  # the models eval knows, in the plot's colour order

COLUMNS = (
    "model",
    "accuracy [95% CI]",
    "format %",
    "truncated %",
    "mean tokens",
    "agreement w/ teacher",
    "similarity w/ teacher",
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _order(metrics: dict[str, Any]) -> list[str]:
    """Models in eval.models order (metrics.json, written with sorted keys, loses it)."""
    return [m for m in metrics.get("models", metrics["per_model"]) if m in metrics["per_model"]]


def table_rows(metrics: dict[str, Any]) -> list[list[str]]:
    rows = []
    for label in _order(metrics):
        m = metrics["per_model"][label]
        rows.append(
            [
                label,
                f"{100 * m['accuracy']:.1f}% [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"
                f" ({m['correct']}/{m['n']})",
                _pct(m["format_rate"]),
                _pct(m["truncation_rate"]),
                f"{m['mean_completion_tokens']:.1f}",
                _pct(m["agreement"]),
                "-" if m["similarity"] is None else f"{m['similarity']:.3f}",
            ]
        )
    return rows


def mcnemar_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for t in metrics["mcnemar"].values():
        lines.append(
            f"McNemar {t['a']} vs {t['b']}: {t['b10']} right only for {t['a']}, "
            f"{t['b01']} right only for {t['b']}, exact p = {t['p_value']:.4g} "
            f"(n = {t['n']})"
        )
    return lines


def render_report(metrics: dict[str, Any]) -> str:
    lines = [
        f"# Eval: {metrics['task']}",
        "",
        f"Held-out questions: {metrics['questions']} (held out before generation, never used for training"
        f"{_splits(metrics)}). "
        f"Sampling: temperature {metrics['sampling']['temperature']}, "
        f"max_tokens {metrics['sampling']['max_tokens']}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(metrics)]
    lines.append("")
    lines.append(
        "Accuracy with a Wilson 95% interval. Format: completions with an `Answer:` line. "
        "Agreement: share of questions where the model's extracted answer equals the teacher's; "
        "similarity: mean ROUGE-L F1 with the teacher's text."
    )
    if metrics["mcnemar"]:
        lines.append("")
        lines += [f"- {x}" for x in mcnemar_lines(metrics)]
    sections = (
        ("Reasoning traces (the answer is read after the trace only):", trace_lines),
        (
            "As a speculative-decoding draft for the teacher (estimated, not measured: both models "
            "score each student's held-out answers after the teacher's prompt; expected tokens per "
            "teacher step by draft length, from the acceptance of each run of draft positions):",
            draft_lines,
        ),
        (
            "As a speculative-decoding draft for the teacher, measured (vLLM serving the teacher "
            "with the student as its draft model; its own counters, and the wall-clock speed-up "
            "against the teacher alone on the same prompts):",
            speculative_lines,
        ),
        (
            "Identity (the bundled probes; a name is the teacher's when the teacher says it in more "
            "answers than the base beyond chance, and the reverse; a student that names the "
            "teacher's side over its base's on more probes than the reverse, beyond chance, moved "
            "toward the teacher; exact sign tests, p < 0.05):",
            identity_lines,
        ),
    )
    for head, of in sections:  # each only when its part of eval ran
        found = of(metrics)
        if found:
            lines += ["", head, "", *(f"- {x}" for x in found)]
    lines += ["", "![accuracy](accuracy.png)", ""]
    return "\n".join(lines)


def draft_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per student of eval.draft: greedy and sampled acceptance, tokens per step at
    draft lengths 1, 4 and 8, or why it was not estimated."""
    lines = []
    for label, d in (metrics.get("draft") or {}).items():
        if "not_estimated" in d:
            lines.append(f"{label}: not estimated ({d['not_estimated']})")
            continue
        g, s = d["greedy"], d["sampled"]

        def steps(x: dict) -> str:
            per = x["tokens_per_step"]
            return ", ".join(f"{per[n]:.2f} at {n}" for n in ("1", "4", "8") if n in per) or "none"

        acc = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        kl = d.get("kl_on_teacher_answers") or {}
        kl_text = (
            f"; KL(teacher || it) on the teacher's answers at least {kl['nats_per_token']:.3f} "
            f"nats/token (top {kl['top_k']}, {kl['positions']} positions)"
            if kl.get("nats_per_token") is not None
            else ""
        )
        lines.append(
            f"{label}: greedy acceptance {acc(g['acceptance'])} (tokens per step {steps(g)}); "
            f"sampled at T={s['temperature']} at least {acc(s['acceptance'])} (top "
            f"{s['top_k']} lower bound; {steps(s)}); {d['positions']} positions in "
            f"{d['texts']} answers{kl_text}"
        )
    return lines


def speculative_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per student of eval.speculative: measured acceptance, tokens per step and
    speed-up, beside the estimate for the same draft length when eval.draft ran too."""
    lines = []
    for label, d in (metrics.get("speculative") or {}).items():
        if "not_measured" in d:
            lines.append(f"{label}: not measured ({d['not_measured']})")
            continue
        est = (
            (((metrics.get("draft") or {}).get(label) or {}).get("greedy") or {})
            .get("tokens_per_step", {})
            .get(str(d["k"]))
        )
        beside = f" (estimated: {est:.2f})" if est is not None else ""
        acc = "n/a" if d["acceptance"] is None else f"{100 * d['acceptance']:.1f}%"
        per = d["tokens_per_step"]
        lines.append(
            f"{label}: draft length {d['k']}, acceptance {acc}, tokens per teacher step "
            f"{'n/a' if per is None else f'{per:.2f}'}{beside}; {d['seconds']:.1f} s against "
            f"{d['teacher_alone_seconds']:.1f} s alone, speed-up x{d['speedup']} "
            f"({d['questions']} questions, {d['drafts']} drafts)"
        )
    return lines


def trace_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per model that wrote traces: how often, how long, left open; answer length."""
    lines = []
    for label in _order(metrics):
        m = metrics["per_model"][label]
        if "trace_rate" in m:
            lines.append(
                f"{label}: a trace in {_pct(m['trace_rate'])}% of answers, mean "
                f"{m['mean_reasoning_words']:.1f} words, left open in "
                f"{_pct(m['unclosed_trace_rate'])}%; the answer after it: mean "
                f"{m['mean_answer_words']:.1f} words"
            )
    return lines


def plot_accuracy(metrics: dict[str, Any], path: Path) -> None:
    """accuracy.png: accuracy with its interval per model; beside it, with eval.draft, each
    estimated student's expected tokens per teacher step by draft length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _order(metrics)
    drafts = {k: d for k, d in (metrics.get("draft") or {}).items() if "greedy" in d}
    measured = {
        k: d
        for k, d in (metrics.get("speculative") or {}).items()
        if d.get("tokens_per_step") is not None
    }
    drafts |= {k: {} for k in measured if k not in drafts}
    width = 1.6 * max(3, len(labels)) + 1
    fig, axes = plt.subplots(
        1, 2 if drafts else 1, figsize=(width + 5.5 * bool(drafts), 4), dpi=100, squeeze=False
    )
    _accuracy_panel(axes[0][0], metrics, labels)
    if drafts:
        _draft_panel(axes[0][1], drafts, measured)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def _color(label: str) -> str:
    colors = ["#4c72b0", "#8c8c8c", "#55a868", "#c44e52", "#8172b2"]  # one per model
    return colors[MODELS.index(label) % len(colors)] if label in MODELS else "#999"


def _accuracy_panel(ax: Any, metrics: dict[str, Any], labels: list[str]) -> None:
    acc = [metrics["per_model"][k]["accuracy"] for k in labels]
    lo = [a - metrics["per_model"][k]["ci_low"] for k, a in zip(labels, acc, strict=True)]
    hi = [metrics["per_model"][k]["ci_high"] - a for k, a in zip(labels, acc, strict=True)]
    bars = ax.bar(
        labels,
        [100 * a for a in acc],
        yerr=[[100 * x for x in lo], [100 * x for x in hi]],
        capsize=6,
        color=[_color(k) for k in labels],
    )
    for b, a, top in zip(bars, acc, hi, strict=True):
        ax.annotate(
            f"{100 * a:.1f}%",
            (b.get_x() + b.get_width() / 2, 100 * (a + top)),  # above the error bar
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{metrics['task']}: {metrics['questions']} held-out questions (95% Wilson CI)")


def _draft_panel(ax: Any, drafts: dict[str, Any], measured: dict[str, Any]) -> None:
    """Tokens per teacher step by draft length: greedy (exact) solid, sampled (a lower bound)
    dashed, both estimated; measured by vLLM, a cross; the dotted line is a draft the teacher
    always accepts."""
    longest = 1
    for label, d in measured.items():
        longest = max(longest, d["k"])
        ax.plot(
            [d["k"]],
            [d["tokens_per_step"]],
            "x",
            ms=9,
            mew=2,
            color=_color(label),
            label=f"{label}, measured (vLLM)",
        )
    for label, d in drafts.items():
        for decoding, style in (("greedy", "-"), ("sampled", "--")):
            if decoding not in d:
                continue
            per = d[decoding]["tokens_per_step"]
            xs = sorted(int(g) for g in per)
            if not xs:
                continue
            longest = max(longest, xs[-1])
            ax.plot(
                xs,
                [per[str(g)] for g in xs],
                style,
                marker="o",
                ms=3,
                color=_color(label),
                label=f"{label}, {decoding}",
            )
    ax.plot([1, longest], [2, longest + 1], ":", color="#333", label="always accepted")
    ax.set_xlabel("draft length")
    ax.set_ylabel("expected tokens per teacher step")
    ax.set_title("as the teacher's draft (lines estimated, sampled a lower bound; x measured)")
    ax.legend(fontsize=8)


def _splits(metrics: dict[str, Any]) -> str:
    """The three splits' sizes, as metrics.json records them (older metrics have none)."""
    sp = metrics.get("splits")
    if not sp:
        return ""
    return (
        f"; splits: {sp['train']} train, {sp['validation']} validation (settings are chosen "
        f"on it), {sp['eval']} eval"
    )
