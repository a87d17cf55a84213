"""Seconds per training step: our train stage, a bare TRL SFTTrainer script, and a bare bf16
PyTorch loop, on the same data with the same settings.

    .venv/bin/python benchmarks/train_step.py [--model DIR] [--examples 64] [--steps 16]

Builds a prompt-completion dataset of arithmetic rationales of varied length (and the tiny test
model unless --model is given), then, in one process, alternates for --repeats rounds:
  - `stages.train.run` (the stage as the pipeline runs it), and again with its batches drawn at
    random instead of grouped by length (train.group_by_length=false),
  - `SFTTrainer(model=DIR, args=SFTConfig(...), train_dataset=raw rows)` (the textbook script),
  - a bare loop: the same model (fp32 master weights, bf16 autocast), the very batches our stage
    built (recorded from its collator, in its order), the model's own loss, AdamW with the same
    learning rate and weight decay, gradient clipping at 1.0 (as the Trainer does), no scheduler,
and keeps each one's median seconds/step. Prints them side by side and the ratios, targets:
our stage within 1.05x of the TRL script and within 1.2x of the bare loop; and the padding
fraction of our batches without and with packing.
"""

from __future__ import annotations

import argparse
import atexit
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from common import tiny_model  # noqa: E402 - sets sys.path


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


def ours(cfg, filter_dir: Path, work: Path, batches: list | None = None) -> dict:
    """The stage as the pipeline runs it; the batches its collator builds go to `batches`."""
    from unittest import mock

    from pipeline.stage import RunContext
    from stages.train import run
    from stages.train import trainer as loop

    counter = loop.PaddingCounter

    def recording(inner):
        def keep(examples):
            batch = inner(examples)
            if batches is not None:
                batches.append({k: v for k, v in batch.items() if hasattr(v, "shape")})
            return batch

        return counter(keep)

    out = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    with mock.patch.object(loop, "PaddingCounter", recording):
        return run(cfg, RunContext.of({"filter": filter_dir}, out))


def bare_trl(cfg, model: Path, rows: list[dict], work: Path) -> dict:
    """The textbook script: raw prompt-completion rows straight into SFTTrainer."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from pipeline.hardware import native_bf16
    from stages.train.trainer import PaddingCounter

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
        bf16=bool(t.bf16 and native_bf16(gpu=not use_cpu)),
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


def bare_loop(cfg, model: Path, batches: list) -> dict:
    """The floor: a plain PyTorch loop over the very batches our stage trained on."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.hardware import native_bf16

    t = cfg.train
    bf16 = bool(t.bf16 and native_bf16(gpu=False))
    torch.manual_seed(t.seed)
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
    t0 = time.perf_counter()
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = net(
                input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"),
                labels=batch["labels"],
            ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {"seconds_per_step": (time.perf_counter() - t0) / len(batches)}


def main() -> None:
    import statistics

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="student HF dir (default: build the tiny test model)")
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--kept", type=Path, help="train on this kept.jsonl (e.g. the default run's)")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-bf16", action="store_true")
    a = p.parse_args()

    from pipeline.config import load_config

    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    atexit.register(shutil.rmtree, work, True)  # three runs' checkpoints: several GB
    model = Path(a.model) if a.model else tiny_model(work)
    if a.kept:
        lines = [x for x in a.kept.read_text().split("\n") if x.strip()]  # not splitlines: U+2028
        rows = [json.loads(x) for x in lines][: a.examples]
    else:
        rows = make_rows(a.examples)
    filter_dir = work / "filter"
    filter_dir.mkdir()
    (filter_dir / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def cfg(packing: bool, grouped: bool = True):
        return load_config(
            None,
            [
                f"train.student={model}",
                f"cache_dir={work / 'cache'}",
                f"train.max_steps={a.steps}",
                f"train.batch_size={a.batch_size}",
                f"train.max_length={a.max_length}",
                f"train.packing={str(packing).lower()}",
                f"train.group_by_length={str(grouped).lower()}",
                f"train.bf16={str(not a.no_bf16).lower()}",
                "train.learning_rate=0.0001",
                "train.save_steps=100000",
                "train.logging_steps=5",
            ],
        )

    times: dict[str, list[float]] = {"ours": [], "random": [], "trl": [], "bare": []}
    pad = {}
    batches: list = []  # our stage's batches, in its order: the bare loop trains on them
    for _ in range(a.repeats):  # interleaved: load on the machine hits all three alike
        s = ours(cfg(False), filter_dir, work, None if batches else batches)
        times["ours"].append(s["seconds_per_step"])
        pad["ours"] = s["padding_fraction"]
        r = ours(cfg(False, grouped=False), filter_dir, work)
        times["random"].append(r["seconds_per_step"])
        pad["random"] = r["padding_fraction"]
        b = bare_trl(cfg(False), model, rows, work)
        times["trl"].append(b["seconds_per_step"])
        pad["trl"] = b["padding_fraction"]
        times["bare"].append(bare_loop(cfg(False), model, batches[: a.steps])["seconds_per_step"])
    packed = ours(cfg(True), filter_dir, work)
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(f"model {model}  examples {a.examples}  steps {a.steps}  batch {a.batch_size}")
    print(f"stages.train.run   {med['ours']:.4f} s/step  (median of {a.repeats})")
    print(f"  batches at random {med['random']:.4f} s/step (train.group_by_length=false)")
    print(f"TRL SFTTrainer     {med['trl']:.4f} s/step")
    print(f"bare bf16 loop     {med['bare']:.4f} s/step")
    print(f"ours / TRL script  {med['ours'] / med['trl']:.3f}  (target <= 1.05)")
    print(f"ours / bare loop   {med['ours'] / med['bare']:.3f}  (target <= 1.2)")
    print(f"grouped / random   {med['ours'] / med['random']:.3f}  (batches by length)")
    print(
        f"padding fraction   {pad['ours']} without packing, batches by length; "
        f"{pad['random']} at random (TRL script: {pad['trl']})"
    )
    print(f"padding fraction   {packed['padding_fraction']} with packing (bfd, padding-free)")
    print(f"  packed run: {packed['steps']} steps, {packed['seconds_per_step']:.4f} s/step")


if __name__ == "__main__":
    main()
