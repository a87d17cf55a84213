"""train.objective: kd: the teacher's soft labels (its top-k logprobs along its own text, from
generate.logprobs through the filter's kept.logprobs.bin) beside cross-entropy, in the trainer's
loop. Pre-flight checks and aligns them (stages/train/softdata.py); the loss is
stages/train/losses/divergence.py's on the top k, with train.kd's divergence, tail and
temperature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.config.train import TrainConfig
from stages.train.losses.trainers import KDCollator, kd_trainer_class
from stages.train.objectives.objective import KeptRows, Objective, OnKept
from stages.train.prepared import Prepared, Table


def prepare_rows(tok: Any, kept: Path, rows: KeptRows, prepared: Prepared) -> None:
    """Each row's soft labels checked against the student, and its `kd_index`."""
    # imported here: softdata loads numpy, which `import stages.train` (the CLI) need not
    from stages.train.softdata import attach_soft_labels

    attach_soft_labels(tok, kept, rows, prepared)


def configure(cfg: Config, args: Any, dataset: Any) -> Any:
    """kd_index must reach the collator and the loss; TRL packs input_ids and labels only, so
    a packed run is packed here (the same bfd), kd_index too."""
    args.remove_unused_columns = False
    if args.packing:
        from trl import pack_dataset

        dataset = pack_dataset(dataset, args.max_length, args.packing_strategy)
        args.packing, args.padding_free, args.max_length = False, True, None
    return dataset


def attach(cfg: Config, trainer: Any, soft: Table | None, bf16: bool) -> None:
    """The soft-label table the loss reads by each position's kd_index, and the collator that
    lays kd_index out as the batches are."""
    import torch

    assert soft is not None  # pre-flight attached it (prepare_rows)
    trainer.kd_cfg = cfg.train.kd
    trainer.kd_table = (torch.from_numpy(soft.top_ids), torch.from_numpy(soft.top_logprobs))
    trainer.data_collator = KDCollator(trainer.data_collator)


def card(t: TrainConfig) -> str:
    return f" (alpha {t.kd.alpha}, T {t.kd.temperature}, {t.kd.divergence})"


OBJECTIVE = Objective(
    name="kd",
    kept=OnKept(
        trainer_class=lambda use_cpu: kd_trainer_class(),
        prepare_rows=prepare_rows,
        configure=configure,
        attach=attach,
    ),
    card=card,
)
