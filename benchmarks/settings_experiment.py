"""Two or more train settings on the same cached dataset, over training seeds: held-out
accuracy, mean, spread and the paired McNemar test per seed of each arm against the first.

    .venv/bin/python benchmarks/settings_experiment.py --config default \\
        --a train.learning_rate=1e-4 train.epochs=1 train.select=last \\
        --b train.learning_rate=1e-4 train.epochs=2 train.select=best --seeds 42 7 13

More arms: `--arm c overrides... --arm d overrides...` after --a and --b (the first word of
each --arm is its name).

For each seed, each arm is `distill eval` with `train.seed` set to it and `eval.models=[student]`:
generate and filter run once (the configured teacher draws, so the dataset is the same for every
arm and seed: this measures what the *training* settings do with the same data), the train
stages are ordinary cached stages (a sweep that trained the same settings is reused), and eval
asks the student the held-out questions. It prints each arm's accuracy per seed with its Wilson
interval, the mean and standard deviation across seeds, and per seed the exact McNemar test of
b against a on the same questions. Nothing here chooses a setting: choose on validation
(`distill sweep`), then measure here.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import correct_by_question, distill, mcnemar_per_seed, stage_dir


def main() -> None:
    from pipeline.config import shipped_config
    from stages.eval.metrics import wilson_interval

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="default", help="a shipped config name, or a YAML path")
    p.add_argument("--a", nargs="+", required=True, help="arm a: config overrides")
    p.add_argument("--b", nargs="+", required=True, help="arm b: config overrides")
    p.add_argument("--arm", nargs="+", action="append", default=[], help="NAME overrides...")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 13])
    args = p.parse_args()
    path = Path(args.config)
    config = path if path.suffix in (".yaml", ".yml") else shipped_config(args.config)
    arms = {"a": args.a, "b": args.b, **{name: extra for name, *extra in args.arm}}
    got: dict[str, dict[int, dict[str, bool]]] = {arm: {} for arm in arms}
    for seed in args.seeds:
        for arm, extra in arms.items():
            overrides = [*extra, f"train.seed={seed}", "eval.models=[student]"]
            distill("eval", "--config", str(config), *overrides)
            got[arm][seed] = correct_by_question(stage_dir("eval", overrides, config))
            acc = sum(got[arm][seed].values()) / len(got[arm][seed])
            print(f"seed {seed} arm {arm}: {100 * acc:.1f}%", flush=True)

    n = len(next(iter(got["a"].values())))
    print(f"\n{config.name}, {n} held-out questions, train seeds {args.seeds}")
    for arm, extra in arms.items():
        accs = [100 * sum(r.values()) / len(r) for r in got[arm].values()]
        cells = []
        for r in got[arm].values():
            lo, hi = wilson_interval(sum(r.values()), len(r))
            cells.append(f"{100 * sum(r.values()) / len(r):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        print(
            f"arm {arm} ({' '.join(extra)}): mean {statistics.fmean(accs):.1f}%, "
            f"sd {statistics.stdev(accs) if len(accs) > 1 else 0:.1f}, "
            f"range {min(accs):.1f}-{max(accs):.1f}; per seed {'; '.join(cells)}"
        )
    for arm in list(arms)[1:]:
        print(
            f"{arm} vs a, exact McNemar (questions only {arm} got right vs only a): "
            f"{mcnemar_per_seed(got['a'], got[arm])}"
        )


if __name__ == "__main__":
    main()
