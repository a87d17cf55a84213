"""Fixed n against adaptive sampling, and a cascade of two teachers, on the bundled task.

    .venv/bin/python benchmarks/strategies.py data               # tokens, verified, kept, covered
    .venv/bin/python benchmarks/strategies.py students --seeds 7 13   # student accuracy
    .venv/bin/python benchmarks/strategies.py cascade            # SmolLM2 0-shot, then 1-shot

Every arm runs in one run dir (`strategies`), so the arms share the content-addressed pool: a
sample is asked once, by whichever arm first needs it. What an arm *costs* is what a cold run of
it pays, the completion tokens of the samples its strategy reached (generate's per-teacher
stats), since sample i of a question is the same sample under every strategy (tests assert
that a cold adaptive run asks exactly those samples). The bundled teacher is SmolLM2-135M with
one worked example, as in the default run.

`data` compares, at the same number of kept samples per question (the target):
- target 1: fixed n=4 with filter.selection=best (best-of-4) against adaptive rounds of 1 until
  1 verified sample, at most 4: the same questions can be covered (sample i is the same sample);
- target 2: fixed n=4 capped at 2 kept per question against adaptive rounds of 2 until 2
  verified, at most 4;
- and adaptive target 1 with at most 8 samples, which covers more questions.
It prints per arm: teacher completion tokens, verified samples (the filter's answer checks) and
kept samples (the whole filter), per 1,000 tokens, and questions covered (with a kept sample).

`students` trains and evaluates the student on the two target-1 arms (the same number of kept
samples, one per covered question) with train.seed = 42 (configured) and each --seeds value,
and prints the accuracy over seeds and the per-seed McNemar test between the arms.

`cascade` asks SmolLM2 zero-shot first (a shorter prompt) and SmolLM2 one-shot only for the
questions the first left without a verified sample, adaptive target 1 at most 4 each, and
prints what each teacher was sent and spent, against the one-shot teacher alone.
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import distill, stage_dir, stage_stats

RUN = ["run=strategies"]
ADAPTIVE = ["generate.strategy=adaptive"]
ARMS = {
    "fixed n=4, best-of-4": ["generate.n=4", "filter.selection=best"],
    "adaptive 1 verified, <=4": [
        *ADAPTIVE,
        "generate.n=1",
        "generate.target_verified=1",
        "generate.max_samples=4",
        "filter.selection=best",
    ],
    "fixed n=4, 2 kept": ["generate.n=4", "filter.per_question_cap=2"],
    "adaptive 2 verified, <=4": [
        *ADAPTIVE,
        "generate.n=2",
        "generate.target_verified=2",
        "generate.max_samples=4",
        "filter.per_question_cap=2",
    ],
    "adaptive 1 verified, <=8": [
        *ADAPTIVE,
        "generate.n=1",
        "generate.target_verified=1",
        "generate.max_samples=8",
        "filter.selection=best",
    ],
}
PAIRS = (
    ("fixed n=4, best-of-4", "adaptive 1 verified, <=4"),
    ("fixed n=4, 2 kept", "adaptive 2 verified, <=4"),
)
CASCADE = [*ADAPTIVE, "generate.n=1", "generate.target_verified=1", "generate.max_samples=4"]


def arm_figures(extra: list[str]) -> dict:
    distill("filter", *RUN, *extra)
    gen = stage_stats(stage_dir("generate", RUN + extra))
    filt = stage_stats(stage_dir("filter", RUN + extra))
    tokens = sum(t["completion_tokens"] for t in gen["teachers"].values())
    verified = sum(t["verified"] for t in gen["teachers"].values())
    return {
        "tokens": tokens,
        "samples": gen["samples"],
        "verified": verified,
        "kept": filt["kept"],
        "covered": filt["questions_with_kept"],
        "verified_per_1k": 1000 * verified / tokens,
        "kept_per_1k": 1000 * filt["kept"] / tokens,
        "asked_here": gen["requested"],
    }


def data() -> dict[str, dict]:
    out = {}
    print(
        f"{'arm':<26} {'tokens':>7} {'samples':>7} {'verif.':>6} {'kept':>5} {'covered':>7}"
        f" {'verif./1k':>9} {'kept/1k':>7}"
    )
    for name, extra in ARMS.items():
        f = arm_figures(extra)
        out[name] = f
        print(
            f"{name:<26} {f['tokens']:>7,} {f['samples']:>7,} {f['verified']:>6} {f['kept']:>5}"
            f" {f['covered']:>7} {f['verified_per_1k']:>9.2f} {f['kept_per_1k']:>7.2f}",
            flush=True,
        )
    for a, b in PAIRS:
        fa, fb = out[a], out[b]
        print(
            f"{b} / {a}: kept per token x{fb['kept_per_1k'] / fa['kept_per_1k']:.2f}, "
            f"verified per token x{fb['verified_per_1k'] / fa['verified_per_1k']:.2f}, "
            f"tokens x{fb['tokens'] / fa['tokens']:.2f}, kept {fb['kept']} vs {fa['kept']}, "
            f"covered {fb['covered']} vs {fa['covered']}"
        )
    return out


def _student(extra: list[str]) -> dict[str, bool]:
    d = stage_dir("eval", RUN + extra)
    rows = (json.loads(x) for x in (d / "predictions.jsonl").read_text().split("\n") if x)
    return {r["question_id"]: bool(r.get("correct")) for r in rows if r["model"] == "student"}


def students(seeds: list[int]) -> None:
    from stages.eval.metrics import mcnemar_exact

    a, b = PAIRS[0]
    per: dict[str, dict[int, dict[str, bool]]] = {a: {}, b: {}}
    for seed in [42, *seeds]:
        for name in (a, b):
            extra = [*ARMS[name], f"train.seed={seed}", "eval.models=[student]"]
            distill("run", *RUN, *extra)
            per[name][seed] = _student(extra)
            acc = 100 * sum(per[name][seed].values()) / len(per[name][seed])
            print(f"seed {seed:>3}  {name:<26} {acc:.1f}%", flush=True)
    print(f"\nstudent accuracy over train seeds {[42, *seeds]}")
    for name, runs in per.items():
        accs = [100 * sum(r.values()) / len(r) for r in runs.values()]
        print(
            f"  {name:<26} mean {statistics.fmean(accs):.1f}  sd {statistics.stdev(accs):.1f}"
            f"  per seed {', '.join(f'{x:.1f}' for x in accs)}"
        )
    tests = []
    for seed in per[a]:
        qs = sorted(per[a][seed])
        t = mcnemar_exact([per[b][seed][q] for q in qs], [per[a][seed][q] for q in qs])
        tests.append(f"{t['b10']}/{t['b01']} (p={t['p_value']:.2g})")
    print(f"only adaptive right / only fixed right, per seed: {'; '.join(tests)}")


def cascade() -> None:
    alone = arm_figures(CASCADE)
    extra = [*CASCADE, "teachers=[{fewshot: 0, label: zero-shot}, {fewshot: 1, label: one-shot}]"]
    both = arm_figures(extra)
    gen = stage_stats(stage_dir("generate", RUN + extra))
    print(
        f"{'teacher':<12} {'sent':>5} {'samples':>7} {'prompt tok':>10} {'compl. tok':>10} "
        f"{'verified':>8} {'tok/verified':>12}"
    )
    for label in ("zero-shot", "one-shot"):  # the cascade's order (the manifest sorts keys)
        t = gen["teachers"][label]
        print(
            f"{label:<12} {t['questions_sent']:>5} {t['samples']:>7} {t['prompt_tokens']:>10,} "
            f"{t['completion_tokens']:>10,} {t['verified']:>8} {t['tokens_per_verified']:>12}"
        )
    print(
        f"cascade: {both['tokens']:,} completion tokens, {both['kept']} kept, "
        f"{both['covered']} covered; one-shot alone: {alone['tokens']:,} tokens, "
        f"{alone['kept']} kept, {alone['covered']} covered"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data")
    s = sub.add_parser("students")
    s.add_argument("--seeds", type=int, nargs="+", default=[7, 13])
    sub.add_parser("cascade")
    a = p.parse_args()
    if a.cmd == "data":
        data()
    elif a.cmd == "students":
        students(a.seeds)
    else:
        cascade()


if __name__ == "__main__":
    main()
