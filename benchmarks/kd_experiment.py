"""Hard SFT against soft-label KD on the bundled task, on the same kept samples, over seeds.

    .venv/bin/python benchmarks/kd_experiment.py tune            # choose alpha and T
    .venv/bin/python benchmarks/kd_experiment.py compare --alpha A --temperature T [--seeds 7 13]

`tune` never looks at the eval set: it writes the bundled task's *train* questions (the default
split by arithmetic fact) to a task file of their own and splits that again by fact, a quarter
of the train facts held out as validation. The chain runs there once per setting (the teacher's
samples with soft labels, the same for every setting) and prints each student's validation
accuracy: SFT, and KD over a grid of alpha x T. Pick the best KD setting from it.

`compare` runs `distill seeds` (the configured seeds, plus --seeds) for four arms on the real
split: SFT and KD on all kept samples, and on the kept samples of a quarter of the train
questions (task.max_train=100). Every arm trains on the same samples (generate.logprobs=20 for
all: SFT ignores the soft labels). It prints each arm's student accuracy over seeds (mean, sd,
range) and, per seed, the exact McNemar test of KD against SFT on the same questions.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import ROOT, correct_by_question, distill

VAL_RUN = "kd-validation"
# The default run (as `./distill run generate.logprobs=20 train.objective=kd` made it, so its
# samples are reused), eval without the answer-only ablation, which needs another training
BASE = ["generate.logprobs=20", "eval.models=[teacher,base,student]"]
QUARTER = "task.max_train=100"


def validation_task() -> Path:
    """The default split's train questions, with their facts, as a task file of their own."""
    from pipeline.config import load_config, shipped_config
    from pipeline.tasks import load_task

    cfg = load_config(shipped_config("default"))
    train_ids = {q.id for q in load_task(cfg.task).train}
    rows = [json.loads(x) for x in (ROOT / "data" / "arith.jsonl").read_text().splitlines() if x]
    out = ROOT / "runs" / VAL_RUN / "validation_task.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in train_ids))
    return out


def _accuracy(overrides: list[str], model: str = "student") -> float:
    from pipeline.config import load_config, shipped_config
    from pipeline.runner import plan

    cfg = load_config(shipped_config("default"), overrides)
    d = plan(cfg, "eval")["eval"].dir
    return json.loads((d / "metrics.json").read_text())["per_model"][model]["accuracy"]


def tune(grid_alpha: list[float], grid_t: list[float]) -> None:
    task = validation_task()
    val = [
        f"task.source=jsonl:{task}",
        "task.split_by=fact",
        "task.eval_fraction=0.25",
        "task.seed=1",  # another salt: the default one puts every train fact in train again
        "eval.models=[student]",
        f"run={VAL_RUN}",
        "generate.logprobs=20",
    ]
    settings = [("sft", [])] + [
        (
            f"kd alpha={a} T={t}",
            ["train.objective=kd", f"train.kd.alpha={a}", f"train.kd.temperature={t}"],
        )
        for a in grid_alpha
        for t in grid_t
    ]
    results = []
    for name, extra in settings:
        distill("run", *val, *extra)
        acc = _accuracy(val + extra)
        results.append((name, acc))
        print(f"validation  {name:<22} {100 * acc:.1f}%", flush=True)
    print("\nvalidation questions: a quarter of the train split's facts; eval set untouched")
    for name, acc in results:
        print(f"  {name:<22} {100 * acc:.1f}%")


def _student_rows(overrides: list[str], seed: int | None) -> dict[str, bool]:
    from pipeline.config import load_config, shipped_config
    from pipeline.runner import plan
    from stages.seeds import seed_config

    cfg = load_config(shipped_config("default"), overrides)
    if seed is not None:
        cfg = seed_config(cfg, seed)
    return correct_by_question(plan(cfg, "eval")["eval"].dir)


def compare(alpha: float, temperature: float, seeds: list[int]) -> None:
    from stages.eval.metrics import mcnemar_exact

    kd = ["train.objective=kd", f"train.kd.alpha={alpha}", f"train.kd.temperature={temperature}"]
    arms = {
        "sft, all kept": [],
        "kd, all kept": kd,
        "sft, quarter": [QUARTER],
        "kd, quarter": [QUARTER, *kd],
    }
    seed_list = f"seeds=[{', '.join(map(str, seeds))}]"
    per_arm: dict[str, dict] = {}
    for name, extra in arms.items():
        distill("seeds", *BASE, *extra, seed_list)
        per_arm[name] = {
            s: _student_rows(BASE + extra, s) for s in [None, *seeds]
        }  # None: the configured seeds
    print(f"\nstudent accuracy over {1 + len(seeds)} seeds (configured, then {seeds})")
    print(f"{'arm':<16} {'mean':>6} {'sd':>5}  range        per seed")
    for name, runs in per_arm.items():
        accs = [100 * sum(r.values()) / len(r) for r in runs.values()]
        print(
            f"{name:<16} {statistics.fmean(accs):6.1f} {statistics.stdev(accs):5.1f}  "
            f"{min(accs):.1f}-{max(accs):.1f}   {', '.join(f'{a:.1f}' for a in accs)}"
        )
    for size in ("all kept", "quarter"):
        sft, kd_runs = per_arm[f"sft, {size}"], per_arm[f"kd, {size}"]
        tests = []
        for s in sft:
            qs = sorted(sft[s])
            t = mcnemar_exact([kd_runs[s][q] for q in qs], [sft[s][q] for q in qs])
            tests.append(f"{t['b10']}/{t['b01']} (p={t['p_value']:.2g})")  # a = kd, b = sft
        print(f"kd vs sft, {size}: only kd right / only sft right per seed: {'; '.join(tests)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tune")
    t.add_argument("--alpha", type=float, nargs="+", default=[0.5, 1.0])
    t.add_argument("--temperature", type=float, nargs="+", default=[1.0, 2.0])
    c = sub.add_parser("compare")
    c.add_argument("--alpha", type=float, required=True)
    c.add_argument("--temperature", type=float, required=True)
    c.add_argument("--seeds", type=int, nargs="+", default=[7, 13])
    a = p.parse_args()
    if a.cmd == "tune":
        tune(a.alpha, a.temperature)
    else:
        compare(a.alpha, a.temperature, a.seeds)


if __name__ == "__main__":
    main()
