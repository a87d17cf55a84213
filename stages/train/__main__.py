"""`python -m stages.train`: the training process `accelerate launch` starts (one per rank)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.errors import UserError
from stages.train.trainer import train_in_process


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.split("\n")[0])
    p.add_argument("--config-json", required=True, help="config file (JSON or YAML)")
    p.add_argument("--kept", required=True, help="the filter stage's kept.jsonl")
    p.add_argument("--out", required=True, help="the train stage dir")
    a = p.parse_args(argv)
    try:
        train_in_process(load_config(a.config_json), Path(a.kept), Path(a.out))
    except UserError as e:
        print(f"train: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
