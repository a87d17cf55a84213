"""The report as one HTML string: the tables and charts rendered here, the samples and the eval
disagreements embedded compressed for the page's script to browse.

Everything that came from a run dir is escaped with html.escape before it is written into
markup; what the script reads is in the base64 payload (embed.pack) or in script_json."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from pipeline.htmlreport import svg
from pipeline.htmlreport.assets import CSS, JS, PAGE_ROWS
from pipeline.htmlreport.collect import RunData, StageInfo
from pipeline.htmlreport.embed import pack, script_json
from pipeline.htmlreport.samples import MAX_CHARS

SECTIONS = (("chain", "Chain"), ("funnel", "Filter funnel"), ("samples", "Samples"))
SECTIONS += (("training", "Training"), ("eval", "Eval"))


def e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: Any, fmt: str = ",") -> str:
    return "-" if v is None else format(v, fmt)


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    """A table of already escaped cells; columns in `numeric` are right-aligned; no header row
    when `head` is empty."""
    numeric = numeric or set()
    out = ["<table>"]
    if head:
        out += ["<tr>", *(f"<th>{e(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        cells = (f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
        out += ["<tr>", *cells, "</tr>"]
    out.append("</table>")
    return "".join(out)


def render(data: RunData) -> str:
    """The whole page."""
    payload = _payload(data)
    nav = " ".join(f'<a href="#{k}">{t}</a>' for k, t in SECTIONS)
    body = [
        f"<h1>distill report: run {e(data.run)}</h1>",
        f'<p class="muted">written {e(time.strftime("%Y-%m-%d %H:%M:%S %Z"))}; one file, '
        "no network: the samples are embedded compressed</p>",
        f"<nav>{nav}</nav>",
        _chain(data),
        _funnel(data),
        _samples(data),
        _training(data),
        _eval(data),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>distill report: {e(data.run)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body>{''.join(body)}"
        f'<script type="application/octet-stream" id="payload">{payload}</script>'
        f'<script type="application/json" id="meta">{script_json(_meta(data))}</script>'
        f"<script>{JS}</script></body></html>\n"
    )


def _meta(data: RunData) -> dict[str, Any]:
    """Small facts a reader of the file (or a later script) can take without decompressing."""
    return {
        "run": data.run,
        "stages": {s.label: {"state": s.state, "key": s.key} for s in data.stages},
        "page_rows": PAGE_ROWS,
    }


def _payload(data: RunData) -> str:
    out: dict[str, Any] = {"samples": data.samples.columns() if data.samples else None}
    pairs = []
    for (right, wrong), rows in (data.eval.disagreements if data.eval else {}).items():
        pairs.append(
            {
                "id": f"cmp-{right}-{wrong}",
                "right": right,
                "wrong": wrong,
                "rows": [
                    [
                        d.qid,
                        d.gold,
                        d.question,
                        d.right_pred,
                        d.right_text,
                        d.wrong_pred,
                        d.wrong_text,
                    ]
                    for d in rows
                ],
            }
        )
    out["eval"] = pairs
    return pack(out)


def _section(key: str, title: str, inner: str, data: RunData) -> str:
    note = data.notes.get(key) or ("" if inner else "no data")
    if note:
        inner = f'<p class="notrun">not run: {e(note)}</p>'
    return f'<section id="{key}"><h2>{e(title)}</h2>{inner}</section>'


def _spend(st: dict[str, Any]) -> dict[str, Any]:
    """A manifest's teacher_spend (train and eval pay the teacher there), or nothing."""
    return st["teacher_spend"] if isinstance(st.get("teacher_spend"), dict) else {}


def _stage_tokens(s: StageInfo) -> str:
    """The tokens the stage's manifest counts: the teacher's, or the trained ones."""
    st = s.stats
    spend = _spend(st)
    p = st.get("prompt_tokens", spend.get("prompt_tokens"))
    c = st.get("completion_tokens", spend.get("completion_tokens"))
    parts = []
    if p is not None or c is not None:
        parts.append(f"teacher {_num(p)} prompt + {_num(c)} completion")
    if s.label.split("/")[-1] == "train" and isinstance(st.get("tokens"), int):
        parts.append(f"{st['tokens']:,} in training rows")
    return "; ".join(parts) or "-"


def _stage_cost(s: StageInfo) -> str:
    st = s.stats
    usd = st.get("usd", _spend(st).get("usd"))
    return "-" if usd is None else f"${usd:,.4f}"


def _chain(data: RunData) -> str:
    rows = []
    for s in data.stages:
        state = s.state if s.state == "complete" else f"not run ({s.state})"
        cls = "complete" if s.state == "complete" else "notrun"
        rows.append(
            [
                e(s.label),
                f'<span class="{cls}">{e(state)}</span>',
                f"<code>{e(s.key)}</code>",
                e(_num(s.seconds, ",.1f")),
                e(s.ended),
                e(", ".join(f"{k.removesuffix('.jsonl')} {v:,}" for k, v in s.rows.items())),
                e(_stage_tokens(s)),
                e(_stage_cost(s)),
                e(s.note),
            ]
        )
    head = ["stage", "status", "key", "seconds", "finished", "rows", "tokens", "cost", "note"]
    splits = ", ".join(f"{k} {v:,}" for k, v in data.splits.items()) or "unknown"
    inner = _table(head, rows, {3}) + f"<p>splits: {e(splits)}</p>"
    return _section("chain", "Chain", inner, data)


def _funnel(data: RunData) -> str:
    f = data.funnel
    if f is None:
        return _section("funnel", "Filter funnel", "", data)
    items = [("samples in", f.input), *f.reasons.items(), ("kept", f.kept)]
    rows = [[e(k), e(f"{v:,}"), e(_pct(v / f.input if f.input else None))] for k, v in items]
    inner = [
        _table(["", "samples", "share of input"], rows, {1, 2}),
        svg.bars([(k, v) for k, v in items[1:]], f.input),
        f"<p>questions with a kept sample: {f.questions_with_kept:,} of {f.questions_total:,}</p>",
    ]
    if len(f.teachers) > 1:
        reasons = list(f.reasons)
        head = ["teacher", "samples", "verified", "kept", *reasons]
        trows = [
            [e(t.name), e(f"{t.samples:,}"), e(f"{t.verified:,}"), e(f"{t.kept:,}")]
            + [e(f"{t.reasons.get(r, 0):,}") for r in reasons]
            for t in f.teachers
        ]
        inner += ["<h3>per teacher</h3>", _table(head, trows, set(range(1, len(head))))]
    inner += [f"<p>{e(a)}</p>" for a in f.advice]
    return _section("funnel", "Filter funnel", "".join(inner), data)


def _samples(data: RunData) -> str:
    s = data.samples
    if s is None:
        return _section("samples", "Samples", "", data)
    shown = len(s.question)
    facts = f"{s.total:,} samples of {len(s.qids):,} questions"
    if shown < s.total:
        facts += f" ({shown:,} embedded; the rest are in the filter's files)"
    if s.cut:
        facts += f"; {s.cut:,} texts cut at {MAX_CHARS:,} characters"
    inner = (
        f"<p>{e(facts)}. Search the text, or a question id (exact: its page, with the gold "
        f"answer and every sample; part of one: all that match). {PAGE_ROWS} rows a page.</p>"
        '<div class="controls"><input id="s-text" placeholder="text contains">'
        '<input id="s-qid" placeholder="question id"><select id="s-kind"></select>'
        '<select id="s-teacher"></select></div>'
        '<p class="needs-data muted">loading the samples...</p>'
        '<div id="s-question"></div><div id="s-results"></div>'
    )
    return _section("samples", "Samples", inner, data)


def _training(data: RunData) -> str:
    t = data.training
    if t is None:
        return _section("training", "Training", "", data)
    curves = [svg.Series(c.name, c.points) for c in t.curves]
    inner = [
        "<h3>loss</h3>",
        svg.line_chart(curves, x_label=t.x, y_label="loss", mark_x=t.selected),
        "<h3>validation accuracy</h3>",
        svg.line_chart(
            [svg.Series("validation accuracy", t.validation)],
            x_label=t.x,
            y_label="accuracy",
            mark_x=t.selected,
        )
        if t.validation
        else '<p class="muted">no validation measured</p>',
        f"<p><b>selected {e(t.x)}:</b> {e(t.why)}</p>",
        _table([], [[e(k), e(v)] for k, v in t.facts]),
    ]
    return _section("training", "Training", "".join(inner), data)


def _eval(data: RunData) -> str:
    ev = data.eval
    if ev is None:
        return _section("eval", "Eval", "", data)
    head = ["model", "accuracy", "95% CI", "correct", "format", "truncated", "mean tokens"]
    head += ["agreement w/ teacher", "similarity w/ teacher"]
    rows = [
        [
            e(m.name),
            e(_pct(m.accuracy)),
            e(f"[{_pct(m.ci_low)}, {_pct(m.ci_high)}]"),
            e(f"{m.correct:,}/{m.n:,}"),
            e(_pct(m.format_rate)),
            e(_pct(m.truncation_rate)),
            e(_num(m.mean_tokens, ".1f")),
            e(_pct(m.agreement)),
            e(_num(m.similarity, ".3f")),
        ]
        for m in ev.models
    ]
    tests = [
        [e(t.pair), e(f"{t.a_only:,}"), e(f"{t.b_only:,}"), e(f"{t.n:,}"), e(f"{t.p_value:.3g}")]
        for t in ev.mcnemar
    ]
    inner = [
        f"<p>task {e(ev.task)}</p>",
        _table(head, rows, set(range(1, len(head)))),
        "<h3>McNemar (exact)</h3>",
        _table(
            ["pair (a vs b)", "right for a only", "right for b only", "n", "p"], tests, {1, 2, 3, 4}
        ),
    ]
    for head, lines in ev.extras:  # drafts, identity, traces: when eval measured them
        inner.append(
            f"<p><b>{e(head)}</b></p><ul>{''.join(f'<li>{e(x)}</li>' for x in lines)}</ul>"
        )
    for (right, wrong), found in ev.disagreements.items():
        inner.append(f"<h3>{e(right)} right, {e(wrong)} wrong: {len(found):,} questions</h3>")
        inner.append(f'<div id="cmp-{e(right)}-{e(wrong)}" class="needs-data">loading...</div>')
    return _section("eval", "Eval", "".join(inner), data)
