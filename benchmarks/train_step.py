"""Seconds per training step: our train stage vs a bare TRL SFTTrainer script, same data, same settings.

    .venv/bin/python benchmarks/train_step.py [--model DIR] [--examples 64] [--steps 16]

Builds a prompt-completion dataset of arithmetic rationales of varied length (and the tiny test
model unless --model is given), then, in one process, alternates `stages.train.run` and a plain
`SFTTrainer(model=DIR, args=SFTConfig(...), train_dataset=raw rows)` for --repeats rounds and keeps
each one's best seconds/step (the CPU may be shared). Prints both, their ratio (target <= 1.05),
and the padding fraction of our batches without and with packing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        nums = [rng.randint(1, 18) for _ in range(rng.randint(2, 12))]
        q = "Tom has " + " and ".join(f"{x} apples" for x in nums) + " . How many apples ?"
        steps, total = [], nums[0]
        for k, x in enumerate(nums[1:], 1):
            steps.append(f"Step {k} : {total} + {x} = {total + x} .")
            total += x
        rows.append(
            {
                "prompt": [{"role": "user", "content": q}],
                "completion": [
                    {"role": "assistant", "content": " ".join(steps) + f" Answer : {total}"}
                ],
                "answer": str(total),
                "question_id": f"q{i}",
            }
        )
    return rows


def ours(cfg, filter_dir: Path, work: Path) -> dict:
    from stages.train import run

    out = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    return run(cfg, {"filter": filter_dir}, out)


def bare_trl(cfg, model: Path, rows: list[dict], work: Path) -> dict:
    """The textbook script: raw prompt-completion rows straight into SFTTrainer."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from stages.train import PaddingCounter, bf16_supported

    t = cfg.train
    use_cpu = not torch.cuda.is_available()
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(dir=work, prefix="bare-"),
        learning_rate=t.learning_rate,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        packing=t.packing,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        seed=t.seed,
        bf16=bool(t.bf16 and bf16_supported(use_cpu)),
        use_cpu=use_cpu,
        gradient_checkpointing=False,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        report_to="none",
        model_init_kwargs={"dtype": "float32"},
    )
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = SFTTrainer(
        model=str(model),
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(model),
    )
    counter = PaddingCounter(trainer.data_collator)
    trainer.data_collator = counter
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    return {
        "seconds_per_step": seconds / trainer.state.global_step,
        "padding_fraction": counter.fraction,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="student HF dir (default: build the tiny test model)")
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-bf16", action="store_true")
    a = p.parse_args()

    from pipeline.config import load_config

    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    if a.model:
        model = Path(a.model)
    else:
        from tiny_model import build_tiny_model

        model = build_tiny_model(work / "tiny")
    rows = make_rows(a.examples)
    filter_dir = work / "filter"
    filter_dir.mkdir()
    (filter_dir / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def cfg(packing: bool):
        return load_config(
            None,
            [
                f"train.student={model}",
                f"cache_dir={work / 'cache'}",
                f"train.max_steps={a.steps}",
                f"train.batch_size={a.batch_size}",
                f"train.max_length={a.max_length}",
                f"train.packing={str(packing).lower()}",
                f"train.bf16={str(not a.no_bf16).lower()}",
                "train.learning_rate=0.0001",
                "train.save_steps=100000",
                "train.logging_steps=5",
            ],
        )

    best = {"ours": float("inf"), "bare": float("inf")}
    pad = {}
    for _ in range(a.repeats):
        s = ours(cfg(False), filter_dir, work)
        best["ours"] = min(best["ours"], s["seconds_per_step"])
        pad["ours"] = s["padding_fraction"]
        b = bare_trl(cfg(False), model, rows, work)
        best["bare"] = min(best["bare"], b["seconds_per_step"])
        pad["bare"] = b["padding_fraction"]
    packed = ours(cfg(True), filter_dir, work)

    ratio = best["ours"] / best["bare"]
    print()
    print(f"model {model}  examples {a.examples}  steps {a.steps}  batch {a.batch_size}")
    print(f"stages.train.run  {best['ours']:.4f} s/step")
    print(f"bare SFTTrainer   {best['bare']:.4f} s/step")
    print(f"ratio             {ratio:.3f}  (target <= 1.05)")
    print(f"padding fraction  {pad['ours']} without packing (bare TRL: {pad['bare']})")
    print(f"padding fraction  {packed['padding_fraction']} with packing (bfd, padding-free)")
    print(f"  packed run: {packed['steps']} steps, {packed['seconds_per_step']:.4f} s/step")


if __name__ == "__main__":
    main()
