"""The training arguments every training run of the stage shares: TRL's SFTConfig from the train
section, and the libraries kept quiet. The trainer's loop (stages/train/trainer.py) and
on-policy's update (stages/train/objectives/onpolicy/update.py) both build on them. trl,
datasets and transformers are imported inside the functions."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config
from stages.train.epochs import planned_epochs

PROJECT = "distill"  # trackio groups runs by project (train.report_to); the others ignore it


def run_name(cfg: Config, out: Path) -> str:
    """The tracker's run (train.report_to): `<run>-train-<key>`, the stage dir `out` being
    named by the stage's key."""
    return f"{cfg.run}-train-{Path(out).name}"


def sft_config(
    cfg: Config,
    out: Path,
    *,
    use_cpu: bool,
    bf16: bool,
    epochs: float | None = None,
    report: bool = True,
):
    """`epochs`: what the schedule spans (stages/train/epochs.py: planned_epochs; by default
    as without a validation split). `report`: to train.report_to, as a run named after the
    stage dir `out` (run_name; stages/train/tracking.py); false for a trainer that is not the stage's
    run (an on-policy round's update)."""
    from trl import SFTConfig

    t = cfg.train
    return SFTConfig(
        output_dir=str(out / "checkpoints"),
        learning_rate=t.learning_rate,
        num_train_epochs=planned_epochs(cfg, validating=False) if epochs is None else epochs,
        max_steps=t.max_steps if t.max_steps > 0 else -1,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        packing=t.packing,
        # padding is work too: on the default run, grouping by length cut it from 16% to 7%
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        warmup_steps=float(t.warmup_ratio),  # transformers 5: a float below 1 is a ratio
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        seed=t.seed,
        bf16=bf16,
        fp16=False,
        use_cpu=use_cpu,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}
        if t.gradient_checkpointing
        else None,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        report_to=t.report_to if report else "none",
        run_name=run_name(cfg, out),
        project=PROJECT,
        disable_tqdm=True,  # our own bar (_progress_callback); the Trainer's printer is removed
        ddp_find_unused_parameters=False,
        model_init_kwargs={"dtype": "float32"},  # fp32 master weights; bf16 is autocast
    )


def quiet_libraries() -> None:
    """Keep the libraries' own progress bars (dataset preparation, weight writing) and chatter
    off the console: the stage shows one bar, and logs what matters to its files."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
