"""The files each stage writes that another stage, a card or an export reads: declared once
here, because stages never import each other. A stage's OUTPUTS are built from these names;
a reader names them from here, never by a literal.

    generate/<key>/  SAMPLES, ERRORS;  beside the key dirs, shared by every generate key of the
                     run: POOL (every sample ever asked), POOL_LOCK, POOL_STORE (their soft
                     labels), and each shard's own of the three (`of_shard`)
    filter/<key>/    KEPT (the training rows), REJECTED, REPORT, CARD, KEPT_STORE
    train/<key>/     MODEL (a Hugging Face model dir, CARD inside), TRAIN_LOG, LOSS_PLOT,
                     TRAIN_STATS, VALIDATION;  beside the key dirs, shared by every train key
                     of the run: ROUNDS (on-policy's rounds, under ROUNDS_LOCK)
    eval/<key>/      PREDICTIONS, METRICS, REPORT_MD, ACCURACY_PLOT, CARDS/<student>/CARD
"""

from __future__ import annotations

from pathlib import Path

CARD = "README.md"  # where the Hub and `datasets` look for a card

SAMPLES = "samples.jsonl"
ERRORS = "errors.jsonl"
POOL = "pool.jsonl"
POOL_LOCK = ".pool.lock"
POOL_STORE = "logprobs.bin"  # every pool sample's soft-label record (stages/shared/softlabels.py)

KEPT = "kept.jsonl"
REJECTED = "rejected.jsonl"
REPORT = "report.json"
KEPT_STORE = "kept.logprobs.bin"  # the kept samples' soft-label records

MODEL = "model"
TRAIN_LOG = "train_log.jsonl"
LOSS_PLOT = "loss.png"
TRAIN_STATS = "train_stats.json"
VALIDATION = "validation.jsonl"
ROUNDS = "onpolicy"
ROUNDS_LOCK = ".rounds.lock"

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
REPORT_MD = "report.md"
ACCURACY_PLOT = "accuracy.png"
CARDS = "cards"


def of_shard(name: str, shard: str) -> str:
    """A shard's own file beside the run's `name`: the shard's name before the last suffix
    (pool.jsonl -> pool.shard-0-of-3.jsonl, .pool.lock -> .pool.shard-0-of-3.lock)."""
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.{shard}.{suffix}"


def shared_dir(stage_dir: Path) -> Path:
    """Where the files shared by every key of a stage lie (generate's pool, on-policy's rounds):
    beside the keys."""
    return Path(stage_dir).parent
