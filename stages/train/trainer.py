"""Training the student with TRL's SFTTrainer, in this process (or in each `accelerate launch`
process): build the trainer (its config, LoRA, the objective's loss class and what that loss needs,
stages/train/objectives/; the padding counter, the progress bar), pre-flight, resume from the newest
usable checkpoint (stages/train/checkpoints.py), train, save the model (stages/train/finalize.py),
the loss log and curve (stages/train/logs.py) and the stats. torch / transformers / trl are imported
inside functions, so importing this module stays cheap."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.hardware import detect, native_bf16
from pipeline.records import atomic_write_json
from stages.shared.advice import train_advice
from stages.shared.layout import TRAIN_STATS
from stages.train.args import quiet_libraries, sft_config
from stages.train.checkpoints import checkpoint_step, last_checkpoint, prune_checkpoints
from stages.train.cut import cut_layers, student_dir
from stages.train.epochs import EpochStop, anneal_each_epoch, auto, planned_epochs, units_of
from stages.train.finalize import finalize_model
from stages.train.logs import log_line, write_logs
from stages.train.objectives import objective_of
from stages.train.preflight import preflight
from stages.train.prepared import Table, TrainError
from stages.train.tracking import place_trackers
from stages.train.validation import Validator, select, validation_callback

if TYPE_CHECKING:
    from datasets import Dataset

PREPARED_PREFIX = ".prepared-"  # the work directories of pre-flight's rows, under the stage dir


def train_precision(asked: bool, bf16: bool, use_cpu: bool) -> str:
    """The line the trainer says its precision in (pipeline/hardware.py decides it)."""
    hw = detect(gpu=not use_cpu).describe()
    if bf16:
        return f"bf16 autocast ({hw})"
    if asked:
        return f"float32 ({hw}: bf16 would be emulated)"
    return "float32 (train.bf16: false)"


def lora_config(cfg: Config):
    from peft import LoraConfig

    lo = cfg.train.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules,
        task_type="CAUSAL_LM",
    )


def _progress_callback(out: Path):
    """One progress bar for the run (steps, rate, ETA, last loss) on the console; every log
    dict the Trainer makes goes to out/train.log instead. The last step is logged too, so
    train_log.jsonl and final_loss end where training ends."""
    import json
    import sys

    from tqdm import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(
                    total=state.max_steps,
                    initial=state.global_step,
                    desc="train",
                    unit="step",
                    dynamic_ncols=True,
                    file=sys.stderr,
                )

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
            if state.global_step >= state.max_steps:
                control.should_log = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            with open(out / "train.log", "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")
            if self.bar is not None and "loss" in logs:
                self.bar.set_postfix_str(f"loss {float(logs['loss']):.4f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return Progress()


class PaddingCounter:
    """Wraps the trainer's collator: counts real vs padded tokens in the batches it builds."""

    def __init__(self, inner):
        self.inner = inner
        self.real = 0
        self.total = 0

    def __call__(self, examples):
        batch = self.inner(examples)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self.total += int(ids.numel())
        self.real += int(mask.sum()) if mask is not None else int(ids.numel())
        return batch

    @property
    def fraction(self) -> float | None:
        return round(1 - self.real / self.total, 4) if self.total else None


def train_in_process(cfg: Config, kept: Path, out: Path) -> dict[str, Any]:
    """Pre-flight, train (resuming if a checkpoint exists), save; rank 0 writes the outputs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_libraries()
    student = student_dir(cfg)
    # the prepared rows' Arrow files, this process's own (each accelerate process makes its
    # own), beside the run's outputs rather than in a /tmp that may be small
    with tempfile.TemporaryDirectory(dir=out, prefix=PREPARED_PREFIX) as work:
        return _train_prepared(cfg, student, kept, out, Path(work))


def _train_prepared(
    cfg: Config, student: Path, kept: Path, out: Path, work: Path
) -> dict[str, Any]:
    tok, prepared = preflight(student, kept, cfg.train, work)
    for w in prepared.warnings:
        log_line(f"warning: {w}")
    log_line(
        f"{prepared.stats['examples']} examples, {prepared.stats['trained_tokens']} trained tokens "
        f"(mean length {prepared.stats['mean_tokens']}, max {prepared.stats['max_tokens']})"
    )
    validator = Validator.of(cfg, out, tok)
    stop, epochs = _epochs(cfg, validator)
    trainer, counter, bf16 = _make_trainer(
        cfg, student, tok, prepared.rows, out, prepared.soft, epochs=epochs, validator=validator
    )
    ckpt = last_checkpoint(out / "checkpoints")
    resumed_from = checkpoint_step(ckpt)
    if ckpt is not None:
        log_line(f"resuming from {ckpt.name} (step {resumed_from})")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    validating = validator.seconds if validator is not None else 0.0
    seconds = time.perf_counter() - t0 - validating  # training only: validation is its own

    # Every rank calls save_model (FSDP / ZeRO-3 gather the weights); only rank 0 writes files.
    lora = cfg.train.lora.enabled
    save_dir = out / ("adapter" if lora else "model")
    if trainer.is_world_process_zero():
        shutil.rmtree(save_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(save_dir))
    trainer.accelerator.wait_for_everyone()

    state = trainer.state
    trained = state.global_step - resumed_from  # steps this call ran (0: resumed at the end)
    stats: dict[str, Any] = {
        **prepared.stats,
        "steps": state.global_step,
        "epochs": round(float(state.epoch or 0), 4),
        "final_loss": None,
        "mean_loss": round(float(result.training_loss), 6) if trained else None,
        "train_seconds": round(seconds, 3),
        "validation_seconds": round(validating, 3),
        "seconds_per_step": round(seconds / trained, 4) if trained else None,
        "resumed_from_step": resumed_from,
        "lora": lora,
        "bf16": bf16,
        "hardware": detect(gpu=not trainer.args.use_cpu).describe(),
        "packing": cfg.train.packing,
        "objective": cfg.train.objective,
        "padding_fraction": counter.fraction,
        "num_processes": trainer.accelerator.num_processes,
        **({"cut_layers": cut_layers(cfg)} if cfg.train.cut.active else {}),
    }
    if stop is not None:
        stats |= stop.stats(stats["epochs"])
    if trainer.is_world_process_zero():
        _finish(cfg, student, tok, out, state, validator, stats)
    trainer.accelerator.wait_for_everyone()
    return stats


def _epochs(cfg: Config, validator: Validator | None) -> tuple[EpochStop | None, float]:
    """The stop rule of epochs: auto (None otherwise) and the epochs the schedule spans."""
    stop = EpochStop.of(cfg, validator.questions if validator is not None else [])
    epochs = planned_epochs(cfg, validator is not None)
    if auto(cfg):
        log_line(
            f"epochs: auto, up to {epochs:g} as validation decides"
            if stop is not None
            else f"epochs: auto without a validation split: {epochs:g} epochs"
        )
    if validator is not None:
        validator.stop = stop
    return stop, epochs


def _finish(cfg: Config, student: Path, tok, out: Path, state, validator, stats: dict) -> None:
    """Rank 0, after training: the logs, the selected weights as out/model, the stats."""
    if stats.get("epochs_auto", {}).get("why"):
        log_line(stats["epochs_auto"]["why"])
    losses = write_logs(state.log_history, out)
    stats["final_loss"] = losses[-1]["loss"] if losses else None
    stats |= select(validator, cfg, out, state.global_step)
    units = units_of(validator.questions) if validator is not None else 0
    stats["advice"] = train_advice(cfg, stats.get("validation") or [], units)
    finalize_model(student, tok, out, cfg.train.lora.enabled)
    if validator is not None:
        validator.drop_weights()
    atomic_write_json(out / TRAIN_STATS, stats)
    prune_checkpoints(out / "checkpoints", keep_last=cfg.train.keep_checkpoints)
    log_line(
        f"done: {stats['steps']} steps in {stats['train_seconds']:.1f}s, final loss "
        f"{stats['final_loss']}"
    )


def _make_trainer(
    cfg: Config,
    student: Path,
    tok,
    rows: Dataset,
    out: Path,
    soft: Table | None = None,
    *,
    epochs: float | None = None,
    validator: Validator | None = None,
):
    """The SFTTrainer over the pre-flighted rows with the objective's loss (its `kept` part,
    stages/train/objectives/), its batches counted for padding; `soft`: the soft-label table of
    objective kd (stages/train/softdata.py)."""
    import torch

    use_cpu = not torch.cuda.is_available()
    bf16 = bool(cfg.train.bf16 and native_bf16(gpu=not use_cpu))
    log_line(train_precision(cfg.train.bf16, bf16, use_cpu))
    lora = cfg.train.lora.enabled
    loss = objective_of(cfg).kept
    if loss is None:
        raise TrainError(f"train.objective {cfg.train.objective} does not train over kept rows")
    cls = loss.trainer_class(use_cpu)
    args = sft_config(cfg, out, use_cpu=use_cpu, bf16=bf16, epochs=epochs)
    dataset = loss.configure(cfg, args, rows)
    try:
        trainer = cls(
            model=str(student),
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            peft_config=lora_config(cfg) if lora else None,
            callbacks=[_progress_callback(out)],
        )
    except ValueError as e:
        if lora and "target" in str(e).lower():  # peft: modules not found in the model
            raise TrainError(f"train.lora.target_modules: {str(e)[:300]}") from None
        raise
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict; ours logs to a file
    if validator is not None:
        every = cfg.train.validate_every
        trainer.add_callback(validation_callback(validator, every, trainer.callback_handler))
        if validator.stop is not None:  # epochs: auto may stop at any epoch's end: anneal there
            anneal_each_epoch(trainer, float(args.num_train_epochs), cfg.train.warmup_ratio)
    place_trackers(trainer, out)  # after ours: they see the validation logged at a step
    loss.attach(cfg, trainer, soft, bf16)
    counter = PaddingCounter(trainer.data_collator)
    trainer.data_collator = counter
    return trainer, counter, bf16
