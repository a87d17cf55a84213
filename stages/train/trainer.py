"""Training the student with TRL's SFTTrainer, in this process (or in each `accelerate launch`
process): pre-flight, resume from the newest usable checkpoint, save the model in the student's
dtype (LoRA merged), the loss log and curve. torch / transformers / trl are imported inside
functions, so importing this module stays cheap."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.records import atomic_write_json, atomic_write_jsonl
from stages.shared.models import local_model
from stages.train.preflight import TrainError, preflight

STATS_FILE = "train_stats.json"


def _log(msg: str) -> None:
    if _is_rank0():
        print(f"train: {msg}", flush=True)


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def bf16_supported(use_cpu: bool) -> bool:
    """Native bf16: CUDA that has it, or a CPU with avx512_bf16 / amx_bf16 (else it is emulated)."""
    import torch

    if not use_cpu:
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sft_config(cfg: Config, out: Path, *, use_cpu: bool, bf16: bool):
    from trl import SFTConfig

    t = cfg.train
    return SFTConfig(
        output_dir=str(out / "checkpoints"),
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps > 0 else -1,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        packing=t.packing,
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
        report_to="none",
        disable_tqdm=True,  # our own bar (_progress_callback); the Trainer's printer is removed
        ddp_find_unused_parameters=False,
        model_init_kwargs={"dtype": "float32"},  # fp32 master weights; bf16 is autocast
    )


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


def quiet_libraries() -> None:
    """Keep the libraries' own progress bars (dataset preparation, weight writing) and chatter
    off the console: the stage shows one bar, and logs what matters to its files."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


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


CHECKPOINT_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest usable checkpoint: its trainer_state.json parses and its weights are there.

    One a kill left half-saved, or a disk damaged, is skipped (with a note), so training
    resumes from the one before it instead of failing on every rerun."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.iterdir():
        name = d.name
        if not (d.is_dir() and name.startswith("checkpoint-") and name[11:].isdigit()):
            continue
        problem = _checkpoint_problem(d)
        if problem is None:
            found.append((int(name[11:]), d))
        elif (d / "trainer_state.json").exists():  # a half-saved one has no state: say nothing
            _log(f"skipping {d.name}: {problem}")
    return max(found)[1] if found else None


def _checkpoint_problem(d: Path) -> str | None:
    try:
        state = json.loads((d / "trainer_state.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return "trainer_state.json missing or damaged"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    if not any((d / w).is_file() for w in CHECKPOINT_WEIGHTS):
        return "no weights"
    return None


def checkpoint_step(ckpt: Path | None) -> int:
    if ckpt is None:
        return 0
    return int(json.loads((ckpt / "trainer_state.json").read_text()).get("global_step", 0))


def train_in_process(cfg: Config, kept: Path, out: Path) -> dict[str, Any]:
    """Pre-flight, train (resuming if a checkpoint exists), save; rank 0 writes the outputs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_libraries()
    student = local_model(cfg.train.student, cfg.cache_dir, key="train.student")
    tok, prepared = preflight(student, kept, cfg.train)
    for w in prepared.warnings:
        _log(f"warning: {w}")
    _log(
        f"{prepared.stats['examples']} examples, {prepared.stats['trained_tokens']} trained tokens "
        f"(mean length {prepared.stats['mean_tokens']}, max {prepared.stats['max_tokens']})"
    )
    trainer, counter, bf16 = _make_trainer(cfg, student, tok, prepared.rows, out, prepared.soft)
    ckpt = last_checkpoint(out / "checkpoints")
    resumed_from = checkpoint_step(ckpt)
    if ckpt is not None:
        _log(f"resuming from {ckpt.name} (step {resumed_from})")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    seconds = time.perf_counter() - t0

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
        "seconds_per_step": round(seconds / trained, 4) if trained else None,
        "resumed_from_step": resumed_from,
        "lora": lora,
        "bf16": bf16,
        "packing": cfg.train.packing,
        "objective": cfg.train.objective,
        "padding_fraction": counter.fraction,
        "num_processes": trainer.accelerator.num_processes,
    }
    if trainer.is_world_process_zero():
        losses = write_logs(state.log_history, out)
        stats["final_loss"] = losses[-1]["loss"] if losses else None
        finalize_model(student, tok, out, lora)
        atomic_write_json(out / STATS_FILE, stats)
        prune_checkpoints(out / "checkpoints", keep_last=cfg.train.keep_checkpoints)
        _log(f"done: {stats['steps']} steps in {seconds:.1f}s, final loss {stats['final_loss']}")
    trainer.accelerator.wait_for_everyone()
    return stats


def _make_trainer(cfg: Config, student: Path, tok, rows: list[dict], out: Path, soft=None):  # noqa: ANN001, ANN202
    """The SFTTrainer over the pre-flighted rows, its batches counted for padding; `soft`: the
    soft-label table of objective kd (stages/train/softdata.py)."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer, pack_dataset

    use_cpu = not torch.cuda.is_available()
    bf16 = bool(cfg.train.bf16 and bf16_supported(use_cpu))
    if cfg.train.bf16 and not bf16:
        _log("warning: bf16 is not supported natively here; training in fp32")
    lora = cfg.train.lora.enabled
    kd = cfg.train.objective == "kd"
    cls = _kd_trainer_class() if kd else _cpu_trainer_class() if use_cpu else SFTTrainer
    args = sft_config(cfg, out, use_cpu=use_cpu, bf16=bf16)
    dataset = Dataset.from_list(rows)
    if kd:
        args.remove_unused_columns = False  # kd_index reaches the collator and the loss
        if args.packing:
            # TRL packs input_ids and labels only; packed here (the same bfd), kd_index too
            dataset = pack_dataset(dataset, args.max_length, args.packing_strategy)
            args.packing, args.padding_free, args.max_length = False, True, None
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
    if kd:
        from stages.train.kd import KDCollator

        trainer.kd_cfg = cfg.train.kd
        trainer.kd_table = (torch.from_numpy(soft.top_ids), torch.from_numpy(soft.top_logprobs))
        trainer.data_collator = KDCollator(trainer.data_collator)
    counter = PaddingCounter(trainer.data_collator)
    trainer.data_collator = counter
    return trainer, counter, bf16


def _cpu_trainer_class():  # noqa: ANN202
    """SFTTrainer whose loss runs the LM head on the completion positions only.

    TRL scores every position through a chunked LM-head kernel that also computes each token's
    entropy and top-1 hit for its logged metrics. It pays off with Triton on a GPU (only the
    completion positions are scored there); on a CPU it scores every position in plain torch,
    and a forward+backward of the bundled default's batches took 1.7x as long as the model's own
    loss (4.36 s vs 2.59 s). The model's own loss still projects every position, prompt and
    padding included, onto the 49k-token vocabulary; most of an answer-only batch is prompt.
    Here the decoder runs as usual and only the positions that are scored reach the head:
    a forward+backward of a default batch took 25-30% less (benchmarks/train_step.py times the
    whole step). The loss is the same: the sum of completion tokens' negative log-likelihoods
    over the batch's completion token count (test_cpu_trainer_loss_equals_trl_fused_loss checks
    loss and gradient against TRL's). What goes is the logged entropy and mean_token_accuracy.
    A model whose logits are more than its head's output (soft-capped or scaled) keeps its own
    loss."""
    import torch.nn.functional as F
    from transformers import Trainer
    from trl import SFTTrainer

    class CPUSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            if return_outputs or not _head_is_logits(model):
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            labels = _labels(inputs)
            logits, scored = _scored_logits(self, model, inputs, labels)
            loss = F.cross_entropy(logits.float(), labels[scored], reduction="sum")
            return _per_token(self, loss, scored, num_items_in_batch)

    return CPUSFTTrainer


def _kd_trainer_class():  # noqa: ANN202
    """SFTTrainer with the soft-label loss (stages/train/kd.py) on the teacher's top-k, on any
    device: the scored positions' logits as in the CPU trainer, then cross-entropy and the
    divergence against the teacher's rows in `kd_table` that each position's `kd_index` names.
    alpha = 0 computes exactly the CPU trainer's loss."""
    import torch.nn.functional as F
    from transformers import Trainer
    from trl import SFTTrainer

    from stages.train.kd import kd_sum

    class KDTrainer(SFTTrainer):
        kd_cfg: Any = None
        kd_table: Any = None  # (top ids [P, k], top logprobs [P, k]) on the CPU

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            kd_index = inputs.pop("kd_index")
            inputs["use_cache"] = False
            if return_outputs:  # evaluation: the plain SFT loss
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            labels = _labels(inputs)
            logits, scored = _scored_logits(self, model, inputs, labels)
            loss = F.cross_entropy(logits.float(), labels[scored], reduction="sum")
            alpha = self.kd_cfg.alpha
            if alpha > 0:
                rows = kd_index[..., 1:][:, : labels.shape[1]][scored]
                has = rows >= 0
                # the batch's rows of the table only reach the device, not the whole table
                pos = rows[has].cpu()
                top_ids, top_lp = (t[pos].to(logits.device) for t in self.kd_table)
                soft = kd_sum(logits[has], top_ids.long(), top_lp, self.kd_cfg)
                loss = alpha * soft + (1 - alpha) * loss
            return _per_token(self, loss, scored, num_items_in_batch)

    return KDTrainer


def _labels(inputs: dict[str, Any]):  # noqa: ANN202
    """The labels each position predicts (shifted by one)."""
    labels = inputs.get("shift_labels")
    return inputs["labels"][..., 1:] if labels is None else labels


def _scored_logits(trainer, model, inputs: dict[str, Any], labels):  # noqa: ANN001, ANN202
    """(logits of the positions whose label is trained, that mask): the decoder runs on the
    whole batch, the head only on those positions; a model whose logits are more than its
    head's output (soft-capped, scaled) gives its own logits there."""
    keys = ("input_ids", "attention_mask", "position_ids")
    args = {k: inputs[k] for k in keys if k in inputs}
    scored = labels != -100
    # accelerate puts bf16 autocast around model.forward only; the decoder and head are
    # called directly here, so they need it too (without it every matmul ran in fp32, 3x the
    # time).
    with trainer.accelerator.autocast():
        if not _head_is_logits(model):
            return model(**args, use_cache=False).logits[:, : labels.shape[1]][scored], scored
        hidden = model.get_decoder()(**args, use_cache=False).last_hidden_state
        return model.get_output_embeddings()(hidden[:, : labels.shape[1]][scored]), scored


def _per_token(trainer, loss, scored, num_items_in_batch):  # noqa: ANN001, ANN202
    """As the model's own loss: over the accumulated batch's token count when the Trainer
    gives it (it then skips its division by the accumulation steps), else a mean; times the
    processes when that count was summed over them, as Trainer does."""
    if num_items_in_batch is None:
        return loss / scored.sum()
    loss = loss / num_items_in_batch
    if trainer.args.average_tokens_across_devices:
        loss = loss * trainer.accelerator.num_processes
    return loss


def _head_is_logits(model) -> bool:  # noqa: ANN001
    cfg = getattr(model, "config", None)
    scaled = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")
    return (
        hasattr(model, "get_decoder")
        and model.get_output_embeddings() is not None
        and not any(getattr(cfg, a, None) not in (None, 1, 1.0) for a in scaled)
    )


# --- outputs -------------------------------------------------------------------------------------


def write_logs(history: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """train_log.jsonl (one line per logging step) and loss.png; returns the loss rows."""
    keys = ("step", "epoch", "loss", "learning_rate", "grad_norm")
    rows = [{k: h[k] for k in keys if k in h} for h in history if "loss" in h]
    atomic_write_jsonl(out / "train_log.jsonl", rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["step"] for r in rows], [r["loss"] for r in rows], marker="." if len(rows) < 50 else ""
    )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("train loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    return rows


def _original_dtype(student: Path):
    import torch

    cfg = json.loads((student / "config.json").read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def finalize_model(student: Path, tok, out: Path, lora: bool) -> None:
    """out/model: a plain HF dir (config, safetensors, tokenizer, chat template) in the student's
    dtype. LoRA: the adapter in out/adapter is merged into a fresh copy of the base."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = out / "model"
    dtype = _original_dtype(student)
    if lora:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()
    elif dtype != torch.float32:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    else:
        tok.save_pretrained(model_dir)
        return
    tmp = out / "model.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(dtype).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)


def prune_checkpoints(ckpt_dir: Path, keep_last: bool = False) -> None:
    """After success: delete the checkpoints (the model is saved), or keep only the last
    (train.keep_checkpoints: enough to continue training). The stats are written first, so a
    kill here costs at most a retrain of this stage, never a wrong result."""
    if not keep_last:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return
    last = last_checkpoint(ckpt_dir)
    if last is None:
        return
    for d in ckpt_dir.iterdir():
        if d.is_dir() and d != last:
            shutil.rmtree(d, ignore_errors=True)
