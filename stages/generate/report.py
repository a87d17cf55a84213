"""generate's reporting: the stats its manifest keeps, the line it prints before asking, and
the summary the CLI prints after (stages/generate/__init__.py runs the stage)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.asklog import Asked
from pipeline.budget import usd
from pipeline.config import Config
from pipeline.taskfacts import task_facts
from stages.generate.plan import estimate
from stages.generate.selected import Selected, Sums
from stages.generate.strategy import Rounds, TeacherPlan, cap
from stages.shared.advice import advice_lines, generate_advice
from stages.shared.layout import SAMPLES
from stages.shared.softlabels import Store


def asked_stats(got: Asked) -> dict[str, Any]:
    stats = got.stats
    return {**stats.as_dict(), "seconds": stats.seconds} if stats else {}


def run_stats(
    cfg: Config,
    picked: Selected,
    asked: dict[str, Any],
    done: list[Rounds],
    recovery: dict[str, int],
) -> dict[str, Any]:
    """The manifest's stats of a run whose selection `picked` counted as it was written."""
    t = picked.total
    gen_seconds = asked.pop("seconds", 0.0)
    teachers = {r.plan.label: teacher_stats(r, picked.by_teacher.get(r.plan.label)) for r in done}
    price = cfg.budget
    for one in teachers.values():
        cost = usd(price, one["prompt_tokens"], one["completion_tokens"])
        one |= {"usd": round(cost, 6)} if cost is not None else {}
    cost = usd(price, t.prompt, t.completion)
    new_cost = usd(price, t.new_prompt, t.new_completion)
    return {
        "questions": len(t.questions),
        "samples": t.samples,
        "requested": len(picked.new),
        "reused": t.samples - len(picked.new),
        **recovery,
        "prompt_tokens": t.prompt,
        "new_prompt_tokens": t.new_prompt,
        "completion_tokens": t.completion,
        "new_completion_tokens": t.new_completion,
        # at budget's prices, when it names any: what the selection cost, and what
        # this run paid for it (the rest was in the pool)
        **({"usd": round(cost, 6), "new_usd": round(new_cost or 0, 6)} if cost is not None else {}),
        "generation_seconds": round(gen_seconds, 2),
        "tokens_per_second": round(t.new_completion / gen_seconds, 1) if gen_seconds else None,
        "truncation_rate": round(t.truncated / t.samples, 4),
        "advice": generate_advice(cfg, t.truncated / t.samples if t.samples else 0.0),
        "strategy": cfg.generate.strategy,
        "teachers": teachers,
        "questions_verified": len({q for r in done for q, c in r.tally.count.items() if c}),
        **(distinct_stats(done) if cfg.generate.strategy == "adaptive" else {}),
        **asked,
    }


UNSOLVED_SHOWN = 20  # unsolved question ids the stats list; the count is whole


def distinct_stats(done: list[Rounds]) -> dict[str, Any]:
    """Adaptive sampling's yield: distinct verified samples, the copies among the verified
    (exact or near, as the tally counted them), the samples asked hotter, and the questions
    no teacher solved within its cap: reported, and asked no more than the cap."""
    tallies = list({id(r.tally): r.tally for r in done}.values())  # a cascade shares one
    questions = list(dict.fromkeys(q for r in done for q in r.questions))
    unsolved = [q for q in questions if not any(t.count[q] for t in tallies)]
    return {
        "distinct_verified": sum(sum(t.count.values()) for t in tallies),
        "copies": sum(sum(t.copies.values()) for t in tallies),
        "hotter_samples": sum(r.hotter() for r in done),
        "unsolved": len(unsolved),
        "unsolved_questions": sorted(unsolved)[:UNSOLVED_SHOWN],
    }


def teacher_stats(rounds: Rounds, mine: Sums | None) -> dict[str, Any]:
    """What one teacher cost and bought: the figures that compare strategies and teachers
    (verified as its tally found each sample when its round was consumed)."""
    t = mine or Sums()
    return {
        "questions_sent": len(t.questions),
        "rounds": rounds.rounds,
        "samples": t.samples,
        "requested": t.requested,
        "prompt_tokens": t.prompt,
        "completion_tokens": t.completion,
        "verified": t.verified,
        "questions_verified": len(t.questions_verified),
        "tokens_per_verified": round(t.completion / t.verified, 1) if t.verified else None,
        "verified_per_1k_tokens": round(1000 * t.verified / t.completion, 2)
        if t.completion
        else None,
    }


def announce(
    cfg: Config, plans: list[TeacherPlan], questions: list[str], have: Mapping[str, dict]
) -> None:
    g = cfg.generate
    print(task_facts(cfg.task, cfg.cache_dir).line(), flush=True)  # the splits, up front
    if g.strategy == "fixed" and len(plans) == 1:
        planned = [p for ps in plans[0].samples.values() for p in ps]
        held = sum(p.request.id in have for p in planned)
        print(
            f"generate: {len(planned)} samples for {len(questions)} questions (n={g.n}); "
            f"{held} already in the pool, {len(planned) - held} to request",
            flush=True,
        )
        _expected(cfg, plans, questions, have)
        return
    how = (
        f"adaptive (rounds of {g.n}, until {g.target_verified} verified or {g.max_samples} samples)"
        if g.strategy == "adaptive"
        else f"fixed (n={g.n})"
    )
    who = ", ".join(p.label for p in plans)
    many = f"; teachers ({g.combine}): {who}" if len(plans) > 1 else ""
    print(
        f"generate: {len(questions)} questions, {how}{many}; the pool holds {len(have)} samples",
        flush=True,
    )
    _expected(cfg, plans, questions, have)


def _expected(
    cfg: Config, plans: list[TeacherPlan], questions: list[str], have: Mapping[str, dict]
) -> None:
    """`distill plan`'s estimate of the tokens still to ask, where the pool has a basis for
    one (a rerun, a pilot); the time it takes follows once the rate is measured (Progress)."""
    if not have:
        return
    for tp in plans:
        if all(p.request.id in have for ps in tp.samples.values() for p in ps[: cap(cfg)]):
            continue  # nothing of this teacher's left to ask: no pool row need be read
        e = estimate(cfg, tp, questions, have)
        worst = e.samples[1] - e.held[1]
        if e.basis and worst:
            print(
                f"  {tp.label}: about {worst * e.completion_per_sample:,.0f} completion tokens "
                f"to ask at most (the pool's {e.completion_per_sample:,.1f} per sample)",
                flush=True,
            )


def merge_asked(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two teachers' asking stats as one: seconds, retries and failovers add up."""
    if not a:
        return b
    out = {**a, **b}
    for k in ("seconds", "retries", "failovers"):
        if k in a or k in b:
            out[k] = a.get(k, 0) + b.get(k, 0)
    out["endpoints"] = {**a.get("endpoints", {}), **b.get("endpoints", {})}
    return out


def store_stats(picked: Selected, store: Store) -> dict[str, Any]:
    """What this key's soft labels cost: bytes per completion token is the figure to watch."""
    tokens, size = picked.logprob_tokens, picked.logprob_bytes
    return {
        "k": picked.logprob_k,
        "tokens": tokens,
        "bytes": size,
        "bytes_per_token": round(size / tokens, 2) if tokens else None,
        "store_bytes": store.end,
        "damaged_bytes_skipped": store.damaged_bytes,
    }


def distinct_line(stats: dict[str, Any]) -> str:
    """Adaptive sampling's yield in one line (distinct_stats)."""
    line = (
        f"distinct verified  {stats['distinct_verified']:,} ({stats['copies']:,} copies "
        f"not counted, {stats['hotter_samples']:,} samples asked hotter)"
    )
    n = stats["unsolved"]
    if n:
        shown = ", ".join(stats["unsolved_questions"][:5]) + (", ..." if n > 5 else "")
        line += f"; {n:,} question(s) never solved within the cap, not asked again: {shown}"
    return line


def summary(stats: dict[str, Any], out: Path) -> str:
    tps = stats.get("tokens_per_second")
    lines = [
        f"questions          {stats.get('questions', 0):,}",
        f"samples            {stats.get('samples', 0):,} ({stats.get('requested', 0):,} "
        f"requested, {stats.get('reused', 0):,} reused)",
        f"completion tokens  {stats.get('completion_tokens', 0):,} "
        f"({stats.get('new_completion_tokens', 0):,} new)",
        f"prompt tokens      {stats.get('prompt_tokens', 0):,} "
        f"({stats.get('new_prompt_tokens', 0):,} new)",
        f"teacher tok/s      {f'{tps:,.0f}' if tps else '- (nothing generated)'}",
        f"truncation rate    {100 * stats.get('truncation_rate', 0):.1f}%",
    ]
    if "usd" in stats:
        lines.insert(
            4,
            f"cost               ${stats['usd']:,.4f} (${stats['new_usd']:,.4f} new), at "
            "budget's prices",
        )
    many = stats.get("teachers") or {}
    if len(many) > 1 or stats.get("strategy") == "adaptive":
        for label, t in many.items():
            per = t["tokens_per_verified"]
            money = f", ${t['usd']:,.4f}" if "usd" in t else ""
            lines.append(
                f"teacher {label}: {t['questions_sent']:,} questions, {t['samples']:,} samples "
                f"in {t['rounds']} round(s), {t['completion_tokens']:,} completion and "
                f"{t['prompt_tokens']:,} prompt tokens{money}, {t['verified']:,} verified "
                f"({per if per is not None else '-'} completion tokens each)"
            )
        lines.append(f"questions with a verified sample: {stats.get('questions_verified', 0):,}")
    if "distinct_verified" in stats:
        lines.append(distinct_line(stats))
    soft = stats.get("logprobs")
    if soft:
        lines.append(
            f"soft labels        top-{soft['k']}, {soft['bytes_per_token']} bytes/token "
            f"({soft['bytes'] / 1e6:.1f} MB)"
        )
    if stats.get("damaged_lines_quarantined"):
        lines.append(
            f"damaged pool lines moved to quarantine: {stats['damaged_lines_quarantined']}"
        )
    for url, e in (stats.get("endpoints") or {}).items():  # redacted URLs
        lines.append(f"endpoint {url}: {e['served']} served, {e['failures']} failures")
    lines.append(f"samples file       {out / SAMPLES}")
    return "\n".join(lines + advice_lines(stats.get("advice", [])))
