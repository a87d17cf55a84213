"""train stage: supervised fine-tuning of the student on the filter stage's kept.jsonl with TRL.

`run(cfg, inputs, out)` trains in this process, or, with `train.launcher: accelerate`, starts
`accelerate launch ... -m stages.train` and waits for it. Outputs in `out/`:

  model/             the student (full fine-tune, or LoRA merged into the base): loads in vLLM
  adapter/           the LoRA adapter (LoRA only)
  checkpoints/       Trainer checkpoints every train.save_steps; after success only the last is kept
  train_log.jsonl    one line per logging step (step, epoch, loss, learning_rate, grad_norm)
  loss.png           the loss curve
  train_stats.json   the stats run() returns

A rerun after a kill resumes from the last complete checkpoint and ends at the same step.
torch / transformers / trl are imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, load_config, semantic, to_dict
from pipeline.models import identity_of, resolve_model
from pipeline.records import DataError, atomic_write_json, atomic_write_jsonl, sha256_file
from stages.train_preflight import TrainError, preflight

__all__ = ["TrainError", "run", "launch_command", "train_in_process", "main"]

NAME = "train"
VERSION = 1
OUTPUTS = ["model", "train_log.jsonl", "loss.png", STATS_FILE := "train_stats.json"]

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "pipeline" / "configs" / "accelerate"
CONFIG_FILE = "train_config.json"


def key_parts(cfg: Config) -> dict[str, Any]:
    """The student's weights, not its path, and the semantic train config (launcher excluded)."""
    t = cfg.train
    extra = {"student_identity": identity_of(t.student, cfg.cache_dir, key="train.student")}
    if t.chat_template:  # the config checked that the file exists
        extra["chat_template"] = sha256_file(Path(t.chat_template).expanduser())
    return {"config": {"train": semantic(t, exclude=("student",))}, "extra": extra}


def _log(msg: str) -> None:
    if _is_rank0():
        print(f"train: {msg}", flush=True)


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# --- entry ---------------------------------------------------------------------------------------


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Train the student on inputs['filter']/kept.jsonl; write everything under `out`."""
    kept = Path(inputs["filter"]) / "kept.jsonl"
    out = Path(out)
    if cfg.train.launcher == "none":
        return train_in_process(cfg, kept, out)
    # Pre-flight here too: a bad dataset fails in seconds, with its message, before N processes.
    student = resolve_model(cfg.train.student, cfg.cache_dir, key="train.student")
    _, prepared = preflight(student, kept, cfg.train)
    for w in prepared.warnings:
        _log(f"warning: {w}")
    out.mkdir(parents=True, exist_ok=True)
    (out / STATS_FILE).unlink(missing_ok=True)
    write_child_config(cfg, out / CONFIG_FILE)
    cmd = launch_command(cfg, kept, out)
    _log("launching: " + " ".join(cmd))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    rc = subprocess.run(cmd, env=env, cwd=str(ROOT)).returncode  # output streams through
    if rc != 0:
        raise TrainError(f"training under accelerate failed (exit code {rc}); see the output above")
    if not (out / STATS_FILE).is_file():
        raise TrainError(f"accelerate run exited 0 but wrote no {out / STATS_FILE}")
    return json.loads((out / STATS_FILE).read_text())


def accelerate_config_path(name: str) -> Path:
    """A config file path, or a shipped name (ddp_cpu, ddp_gpu, fsdp_gpu, deepspeed_zero3_gpu)."""
    if not name:
        name = "ddp_gpu" if shutil.which("nvidia-smi") else "ddp_cpu"
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    shipped = ACCELERATE_CONFIGS / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml")))
    raise TrainError(f"train.accelerate_config {name!r} is neither a file nor one of: {known}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_child_config(cfg: Config, path: Path) -> None:
    """What the launched processes need: the train section (+ cache dir), as JSON (valid YAML)."""
    atomic_write_json(
        path, {"run": cfg.run, "cache_dir": cfg.cache_dir, "train": to_dict(cfg.train)}
    )


def launch_command(cfg: Config, kept: Path, out: Path) -> list[str]:
    """`accelerate launch` for `python -m stages.train`; run() writes out/train_config.json."""
    t = cfg.train
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config_path(t.accelerate_config)),
        "--num_processes",
        str(max(1, t.num_processes)),
        "--main_process_port",
        str(_free_port()),
        "-m",
        "stages.train",
        "--config-json",
        str(Path(out) / CONFIG_FILE),
        "--kept",
        str(kept),
        "--out",
        str(out),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.split("\n")[0])
    p.add_argument("--config-json", required=True, help="config file (JSON or YAML)")
    p.add_argument("--kept", required=True, help="the filter stage's kept.jsonl")
    p.add_argument("--out", required=True, help="the train stage dir")
    a = p.parse_args(argv)
    try:
        train_in_process(load_config(a.config_json), Path(a.kept), Path(a.out))
    except (TrainError, DataError, ConfigError) as e:
        print(f"train: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


# --- training ------------------------------------------------------------------------------------


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


def _log_last_step_callback():
    """Log the last step too, so train_log.jsonl and final_loss end where training ends."""
    from transformers import TrainerCallback

    class LogLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_log = True
            return control

    return LogLastStep()


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
    student = resolve_model(cfg.train.student, cfg.cache_dir, key="train.student")
    tok, prepared = preflight(student, kept, cfg.train)
    for w in prepared.warnings:
        _log(f"warning: {w}")
    _log(
        f"{prepared.stats['examples']} examples, {prepared.stats['trained_tokens']} trained tokens "
        f"(mean length {prepared.stats['mean_tokens']}, max {prepared.stats['max_tokens']})"
    )

    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    use_cpu = not torch.cuda.is_available()
    bf16 = bool(cfg.train.bf16 and bf16_supported(use_cpu))
    if cfg.train.bf16 and not bf16:
        _log("warning: bf16 is not supported natively here; training in fp32")
    args = sft_config(cfg, out, use_cpu=use_cpu, bf16=bf16)
    lora = cfg.train.lora.enabled
    try:
        trainer = SFTTrainer(
            model=str(student),
            args=args,
            train_dataset=Dataset.from_list(prepared.rows),
            processing_class=tok,
            peft_config=lora_config(cfg) if lora else None,
            callbacks=[_log_last_step_callback()],
        )
    except ValueError as e:
        if lora and "target" in str(e).lower():  # peft: modules not found in the model
            raise TrainError(f"train.lora.target_modules: {str(e)[:300]}") from None
        raise
    counter = PaddingCounter(trainer.data_collator)
    trainer.data_collator = counter

    ckpt = last_checkpoint(out / "checkpoints")
    resumed_from = checkpoint_step(ckpt)
    if ckpt is not None:
        _log(f"resuming from {ckpt.name} (step {resumed_from})")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    seconds = time.perf_counter() - t0

    # Every rank calls save_model (FSDP / ZeRO-3 gather the weights); only rank 0 writes files.
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
        "padding_fraction": counter.fraction,
        "num_processes": trainer.accelerator.num_processes,
    }
    if trainer.is_world_process_zero():
        losses = write_logs(state.log_history, out)
        stats["final_loss"] = losses[-1]["loss"] if losses else None
        finalize_model(student, tok, out, lora)
        prune_checkpoints(out / "checkpoints")
        atomic_write_json(out / STATS_FILE, stats)
        _log(
            f"done: {stats['steps']} steps in {seconds:.1f}s, final loss {stats['final_loss']}; "
            f"model in {out / 'model'}"
        )
    trainer.accelerator.wait_for_everyone()
    return stats


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


def prune_checkpoints(ckpt_dir: Path) -> None:
    """Keep only the last checkpoint after success: enough to continue training, half the disk."""
    last = last_checkpoint(ckpt_dir)
    if last is None:
        return
    for d in ckpt_dir.iterdir():
        if d.is_dir() and d != last:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
