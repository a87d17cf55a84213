"""Decontamination on a templated task: what filter drops as `contaminated` with every eval
n-gram counted (filter.decontam_template=0, the filter before issue 47) and with the task's
template set aside (the default, 3), on a generate run's samples; and that a planted leak (an
eval question pasted into a rationale) is dropped either way.

    .venv/bin/python benchmarks/decontam_template.py runs/default/generate/<key>/samples.jsonl

The config is the bundled default's with decontam_n at the code's default (13) unless given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config, shipped_config  # noqa: E402
from pipeline.reasoning import Convention  # noqa: E402
from pipeline.tasks import load_task  # noqa: E402
from stages.filter.passes import filter_records  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("samples", type=Path)
    ap.add_argument("--decontam-n", type=int, default=13)
    args = ap.parse_args()
    cfg = load_config(shipped_config("default"), [f"filter.decontam_n={args.decontam_n}"])
    task = load_task(cfg.task)
    questions = {q.id: q for q in task.train}
    rows = [json.loads(x) for x in args.samples.read_text().splitlines()]
    conv = Convention.of(cfg.lead_teacher())
    # the leak: a sample filter keeps, with an eval question pasted into its rationale
    kept, _, _ = filter_records(rows, cfg.filter, questions, task.eval, conv)
    leak = dict(next(r for r in rows if r["id"] == kept[0]["id"]), id="planted-leak")
    leak["completion"] = f"As in '{task.eval[0].question}': {leak['completion']}"
    rows.append(leak)
    print(f"{len(rows) - 1:,} samples + 1 planted leak; decontam_n {args.decontam_n}")
    kept_ids = {}
    for template in (0, 3, 1):
        f = dataclasses.replace(cfg.filter, decontam_template=template)
        kept, rejected, _ = filter_records(rows, f, questions, task.eval, conv)
        dropped = [r for r in rejected if r["reason"] == "contaminated"]
        caught = any(r["id"] == "planted-leak" for r in dropped)
        kept_ids[template] = {r["id"] for r in kept}
        print(
            f"decontam_template={template}: contaminated {len(dropped) - caught:,} of "
            f"{len(rows) - 1:,} ({100 * (len(dropped) - caught) / (len(rows) - 1):.1f}%), "
            f"planted leak {'dropped' if caught else 'KEPT'}, kept {len(kept):,}"
        )
    print(
        f"kept sets identical, 0 and 3: {kept_ids[0] == kept_ids[3]}, 0 and 1: {kept_ids[0] == kept_ids[1]}"
    )


if __name__ == "__main__":
    main()
