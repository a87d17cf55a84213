"""Where an on-policy round's signal sits (issue 50): the per-token advantages of one round's
rollouts, recomputed from its stored teacher scores as the round computed them (one vocabulary:
teacher minus student log-probability per token; another: the character-span alignment of
stages/train/objectives/onpolicy/crossvocab.py). Nothing is asked of any model.

    .venv/bin/python benchmarks/onpolicy_advantages.py ROUND_DIR --student STUDENT_DIR \\
        --config pipeline/configs/strong_teacher.yaml teacher.model=... [overrides...]

ROUND_DIR is a round of a train stage's rounds (`<run>/train/onpolicy/<chain>/round-001`);
STUDENT_DIR any model dir with the student's tokenizer (its SFT start's `model`); the config and
overrides name the teacher, as the run that wrote the round did. It prints the tokens scored,
how many have |advantage| over 1 and over 5 nats, the sums of the negative and positive
advantages, the share of the sum of |advantage| on the top 1% of tokens, and the 12 largest
with their token and rollout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ROOT


def round_advantages(rd: Path, cfg, student: Path) -> list[tuple[float, str, str]]:
    """(advantage, student token's text, rollout's completion) for every scored token, by the
    round's own function (stages/train/objectives/onpolicy/rounds.py rollout_advantages), so
    the figures are the round's."""
    from stages.shared.softlabels import Store
    from stages.train.objectives.onpolicy import rounds

    pair = rounds.load_pair(cfg, student)
    rows = {r["id"]: r for r in map(json.loads, (rd / "rollouts.jsonl").open())}
    store = Store.open(rd / "scores.logprobs.bin")
    out = []
    for s in map(json.loads, (rd / "scores.jsonl").open()):
        row = rows[s["rollout_id"]]
        _, tl = store.read(s["logprobs"]["sha"])
        got = rounds.rollout_advantages(pair, row, tl)["advantages"]
        texts = [pair.student_tok.decode([i]) for i in row["completion_ids"]]
        out += [(a, t, row["completion"]) for a, t in zip(got, texts, strict=True)]
    return out


def main() -> None:
    from pipeline.config import load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("round_dir", type=Path)
    p.add_argument("--student", type=Path, required=True)
    p.add_argument("--config", type=Path, default=ROOT / "pipeline/configs/strong_teacher.yaml")
    p.add_argument("overrides", nargs="*")
    args = p.parse_intermixed_args()
    cfg = load_config(args.config, args.overrides)
    got = round_advantages(args.round_dir, cfg, args.student)
    a = [x for x, _, _ in got]
    big = sorted(got, key=lambda g: abs(g[0]), reverse=True)
    top = sum(abs(x) for x, _, _ in big[: max(1, len(a) // 100)]) / sum(abs(x) for x in a)
    print(
        f"{len(a):,} tokens scored; |A| > 1: {sum(abs(x) > 1 for x in a)}; |A| > 5: "
        f"{sum(abs(x) > 5 for x in a)}; sum of negative A {sum(x for x in a if x < 0):.1f}, of "
        f"positive A {sum(x for x in a if x > 0):.1f} nats; top 1% of tokens hold "
        f"{100 * top:.0f}% of sum |A|"
    )
    for x, tok, text in big[:12]:
        print(f"{x:8.3f}  {tok!r}  in {text!r}")


if __name__ == "__main__":
    main()
