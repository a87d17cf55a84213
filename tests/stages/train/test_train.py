"""train stage over the tiny local chat model: real TRL, real checkpoints, no network."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from pipeline.config import load_config
from pipeline.stage import RunContext
from stages import train
from stages.train import trainer as train_loop
from stages.train.preflight import IGNORE, TrainError, load_rows, preflight, prepare

EOS_LESS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\n\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_rows(n: int = 8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        q = f"Tom has {a} apples and buys {b} more . How many apples does he have now ?"
        rows.append(
            {
                "prompt": [{"role": "user", "content": q}],
                "completion": [
                    {
                        "role": "assistant",
                        "content": f"Step 1 : {a} + {b} = {a + b} . Answer : {a + b}",
                    }
                ],
                "answer": str(a + b),
                "question_id": f"q{i}",
                "sample_id": f"s{i}",
                "teacher": "tiny",
                "scores": {"correct": 1.0},
            }
        )
    return rows


def write_kept(dir_: Path, rows: list[dict]) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dir_


@pytest.fixture
def filter_dir(tmp_path: Path) -> Path:
    return write_kept(tmp_path / "filter", make_rows())


def make_cfg(student: Path, tmp_path: Path, *overrides: str):
    base = [
        f"train.student={student}",
        f"cache_dir={tmp_path / 'cache'}",
        "train.learning_rate=0.003",
        "train.batch_size=8",
        "train.warmup_ratio=0.0",
        "train.logging_steps=2",
        "train.save_steps=1000",
        "train.max_length=128",
        "train.validate=false",  # these test training; validation: test_validation, e2e/test_sweep
    ]
    return load_config(None, [*base, *overrides])


def strip_template(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    return dst


def load_weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


# --- cheap checks --------------------------------------------------------------------------------


def test_import_is_cheap():
    code = "import sys, stages.train; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_labels_mask_prompt_only(tiny_model, tmp_path, filter_dir):
    cfg = make_cfg(tiny_model, tmp_path)
    tok, prepared = preflight(tiny_model, filter_dir / "kept.jsonl", cfg.train, tmp_path)
    rows = list(load_rows(filter_dir / "kept.jsonl"))
    assert prepared.stats["examples"] == 8 and prepared.stats["overlong"] == 0
    for row, ex in zip(rows, prepared.rows, strict=True):
        enc = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)
        prompt = list(enc["input_ids"])
        ids, labels = ex["input_ids"], ex["labels"]
        assert ids[: len(prompt)] == prompt
        assert all(lab == IGNORE for lab in labels[: len(prompt)]), "prompt token trained"
        assert labels[len(prompt) :] == ids[len(prompt) :], "completion token masked"
        trained = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE])
        assert trained == row["completion"][0]["content"] + "<|im_end|>\n"

    # The trainer trains on exactly these rows (it does not re-tokenize them).
    from trl import SFTTrainer

    args = train_loop.sft_config(cfg, tmp_path / "out", use_cpu=True, bf16=False)
    trainer = SFTTrainer(
        model=str(tiny_model),
        args=args,
        train_dataset=prepared.rows,
        processing_class=tok,
    )
    got = [(r["input_ids"], r["labels"]) for r in trainer.train_dataset]
    assert got == [(r["input_ids"], r["labels"]) for r in prepared.rows]
    # batches of similar lengths by default (less padding); drawn at random when asked
    from transformers.trainer_pt_utils import LengthGroupedSampler

    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    plain = make_cfg(tiny_model, tmp_path, "train.group_by_length=false")
    args = train_loop.sft_config(plain, tmp_path / "out", use_cpu=True, bf16=False)
    assert args.train_sampling_strategy == "random"


def test_answer_only_rewrites_completion(tiny_model, tmp_path, filter_dir):
    cfg = make_cfg(tiny_model, tmp_path, "train.answer_only=true")
    tok, prepared = preflight(tiny_model, filter_dir / "kept.jsonl", cfg.train, tmp_path)
    first = prepared.rows[0]
    trained = tok.decode([t for t, lab in zip(*first.values(), strict=True) if lab != IGNORE])
    assert trained == f"Answer: {make_rows()[0]['answer']}<|im_end|>\n"


def test_preflight_no_chat_template(tiny_model, tmp_path, filter_dir):
    bare = strip_template(tiny_model, tmp_path / "bare")
    cfg = make_cfg(bare, tmp_path)
    with pytest.raises(TrainError, match="has no chat template; set train.chat_template"):
        preflight(bare, filter_dir / "kept.jsonl", cfg.train, tmp_path)
    # With a template file it goes through.
    from tiny_model import CHAT_TEMPLATE

    (tmp_path / "chatml.jinja").write_text(CHAT_TEMPLATE)
    cfg = make_cfg(bare, tmp_path, f"train.chat_template={tmp_path / 'chatml.jinja'}")
    tok, prepared = preflight(bare, filter_dir / "kept.jsonl", cfg.train, tmp_path)
    assert prepared.stats["examples"] == 8 and tok.chat_template == CHAT_TEMPLATE


def test_preflight_completion_without_eos(tiny_model, tmp_path, filter_dir):
    (tmp_path / "noeos.jinja").write_text(EOS_LESS_TEMPLATE)
    bare = strip_template(tiny_model, tmp_path / "bare")
    cfg = make_cfg(bare, tmp_path, f"train.chat_template={tmp_path / 'noeos.jinja'}")
    with pytest.raises(
        TrainError, match=r"does not end with the student's EOS token '<\|im_end\|>'"
    ):
        preflight(bare, filter_dir / "kept.jsonl", cfg.train, tmp_path)


def test_preflight_overlong(tiny_model, tmp_path, capsys):
    rows = make_rows(4)
    rows[1]["completion"][0]["content"] = " ".join(["Step 1 : 3 + 4 = 7 ."] * 30) + " Answer : 7"
    kept = write_kept(tmp_path / "filter", rows) / "kept.jsonl"
    from stages.train.preflight import load_tokenizer

    tok = load_tokenizer(tiny_model)
    loaded = list(load_rows(kept))
    p = prepare(tok, loaded, max_length=64, overlong="truncate", work=tmp_path)
    assert (p.stats["overlong"], p.stats["truncated"], p.stats["dropped"]) == (1, 1, 0)
    assert max(len(r["input_ids"]) for r in p.rows) == 64 and p.stats["examples"] == 4
    assert (
        "1 of 4 examples are longer than train.max_length=64 tokens: 1 truncated" in p.warnings[0]
    )
    p = prepare(tok, loaded, max_length=64, overlong="drop", work=tmp_path)
    assert (p.stats["overlong"], p.stats["truncated"], p.stats["dropped"]) == (1, 0, 1)
    assert p.stats["examples"] == 3
    assert "0 truncated (they lose their EOS), 1 dropped (train.overlong=drop)" in p.warnings[0]
    with pytest.raises(TrainError, match="all 4 examples were dropped"):
        prepare(tok, loaded, max_length=8, overlong="drop", work=tmp_path)
    # The warning reaches the user when run() trains.
    cfg = make_cfg(tiny_model, tmp_path, "train.max_length=64", "train.max_steps=1")
    stats = train.run(cfg, RunContext.of({"filter": kept.parent}, tmp_path / "out"))
    assert stats["overlong"] == 1 and stats["truncated"] == 1 and stats["steps"] == 1
    assert "warning: 1 of 4 examples are longer than" in capsys.readouterr().out


def test_launch_command(tiny_model, tmp_path):
    cfg = make_cfg(
        tiny_model,
        tmp_path,
        "train.launcher=accelerate",
        "train.num_processes=3",
        "train.accelerate_config=fsdp_gpu",
    )
    conf = tmp_path / "out" / "train_config.json"
    cmd = train.launch_command(cfg, tmp_path / "kept.jsonl", tmp_path / "out", conf)
    assert "--num_machines" not in cmd  # one machine: accelerate's defaults
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1].endswith("pipeline/configs/accelerate/fsdp_gpu.yaml")
    assert cmd[cmd.index("--num_processes") + 1] == "3"
    assert cmd[cmd.index("-m", 3) + 1] == "stages.train"
    assert cmd[-6:] == [
        "--config-json",
        str(tmp_path / "out" / "train_config.json"),
        "--kept",
        str(tmp_path / "kept.jsonl"),
        "--out",
        str(tmp_path / "out"),
    ]
    two = make_cfg(
        tiny_model,
        tmp_path,
        "train.launcher=accelerate",
        "train.num_processes=8",
        "train.num_machines=2",
        "train.machine_rank=1",
        "train.main_process_ip=10.0.0.1",
        "train.main_process_port=29500",
    )
    cmd = train.launch_command(two, tmp_path / "kept.jsonl", tmp_path / "out", conf)
    got = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert got["--num_processes"] == "8" and got["--num_machines"] == "2"  # 8 in all
    assert got["--machine_rank"] == "1" and got["--main_process_ip"] == "10.0.0.1"
    assert got["--main_process_port"] == "29500"
    for name in ("ddp_cpu", "ddp_gpu", "fsdp_gpu", "deepspeed_zero3_gpu"):
        assert train.accelerate_config_path(name).is_file()
    with pytest.raises(TrainError, match="neither a file nor one of"):
        train.accelerate_config_path("nope")


# --- training ------------------------------------------------------------------------------------


def greedy(model_dir: Path, prompt: list[dict], max_new_tokens: int = 40) -> tuple[str, bool]:
    """-> (completion text, stopped at EOS)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    enc = tok.apply_chat_template(
        prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    stopped = tok.eos_token_id in new
    if stopped:
        new = new[: new.index(tok.eos_token_id)]
    return tok.decode(new), stopped


@pytest.mark.slow
def test_overfit_reproduces_completions(tiny_model, tmp_path, filter_dir):
    cfg = make_cfg(
        tiny_model,
        tmp_path,
        "train.max_steps=80",
        "train.lr_scheduler=constant",
        "train.bf16=false",
    )
    out = tmp_path / "out"
    stats = train.run(cfg, RunContext.of({"filter": filter_dir}, out))
    assert stats["steps"] == 80 and stats["resumed_from_step"] == 0 and not stats["lora"]
    assert stats["final_loss"] < 0.2, stats
    assert 0 <= stats["padding_fraction"] < 0.1
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (out / "model" / name).is_file(), name
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 80 and log[-1]["loss"] == stats["final_loss"]
    assert (out / "loss.png").stat().st_size > 1000
    assert not (out / "checkpoints").exists()  # deleted after success (train.keep_checkpoints)
    card = (out / "model" / "README.md").read_text()
    meta = yaml.safe_load(card[4:].split("\n---\n", 1)[0])
    assert meta["base_model"] == tiny_model.name and meta["library_name"] == "transformers"
    assert set(meta["distill"]) == {"train_key", "filter_key"}
    assert f"final training loss {stats['final_loss']}" in card and "(constant, warmup" in card

    rows = make_rows()
    hits = 0
    for row in rows:
        text, stopped = greedy(out / "model", row["prompt"])
        assert stopped, f"no EOS after {text!r}"
        hits += text == row["completion"][0]["content"]
    assert hits >= 4, f"only {hits} of 8 training completions reproduced"


def test_lora_adapter_and_merged_model(tiny_model, tmp_path, filter_dir):
    cfg = make_cfg(tiny_model, tmp_path, "train.max_steps=4", "train.lora.enabled=true")
    out = tmp_path / "out"
    stats = train.run(cfg, RunContext.of({"filter": filter_dir}, out))
    assert stats["lora"] and stats["steps"] == 4
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["dtype"] == "float32"
    assert (out / "model" / "chat_template.jinja").is_file()
    merged, base = load_weights(out / "model"), load_weights(tiny_model)
    assert set(merged) == set(base), "merged model has other tensors than the base (unmerged?)"
    assert any((merged[k] - base[k]).abs().max() > 0 for k in base), "LoRA changed nothing"
    text, _ = greedy(out / "model", make_rows()[0]["prompt"], max_new_tokens=8)
    assert isinstance(text, str)


@pytest.mark.slow  # one vLLM server start
def test_lora_merged_model_serves_in_vllm(tiny_model, tmp_path, filter_dir):
    import httpx

    from pipeline.servers import ManagedServer

    cfg = make_cfg(tiny_model, tmp_path, "train.max_steps=2", "train.lora.enabled=true")
    out = tmp_path / "out"
    train.run(cfg, RunContext.of({"filter": filter_dir}, out))
    server = ManagedServer(out / "model", "merged", tmp_path / "server.log")
    server.start()
    try:
        server.wait_healthy(600)
        r = httpx.post(
            f"{server.url}/chat/completions",
            json={"model": "merged", "messages": make_rows()[0]["prompt"], "max_tokens": 8},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["usage"]["completion_tokens"] > 0
        assert isinstance(body["choices"][0]["message"]["content"], str)
    finally:
        server.stop()


SLOW_STEP = """
import sys, time
import transformers
_step = transformers.Trainer.training_step
def slow(self, *a, **k):
    time.sleep(0.4)
    return _step(self, *a, **k)
transformers.Trainer.training_step = slow
from stages.train.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # ~10 s idle, ~50 s on a busy machine
def test_resume_after_kill(tiny_model, tmp_path, filter_dir):
    cfg = make_cfg(
        tiny_model,
        tmp_path,
        "train.max_steps=8",
        "train.save_steps=2",
        "train.keep_checkpoints=true",
    )
    cfg_file = tmp_path / "cfg.json"
    train.write_child_config(cfg, cfg_file)
    out = tmp_path / "killed"
    # `python -m stages.train`, with each step slowed so the kill lands between checkpoints.
    cmd = [sys.executable, "-c", SLOW_STEP]
    cmd += ["--config-json", str(cfg_file), "--kept", str(filter_dir / "kept.jsonl")]
    cmd += ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    marker = out / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, "training exited before checkpoint-4"
        assert time.monotonic() < deadline, "no checkpoint-4 in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoints" / "checkpoint-6").exists()
    assert not (out / "model").exists()

    stats = train.run(cfg, RunContext.of({"filter": filter_dir}, out))
    assert stats["resumed_from_step"] == 4 and stats["steps"] == 8
    state = json.loads((out / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert sorted(d.name for d in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-8"]
    steps = [
        json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4, 6, 8]

    ref = train.run(cfg, RunContext.of({"filter": filter_dir}, tmp_path / "straight"))
    assert ref["resumed_from_step"] == 0 and ref["steps"] == 8
    assert abs(ref["final_loss"] - stats["final_loss"]) < 1e-4
    a, b = load_weights(out / "model"), load_weights(tmp_path / "straight" / "model")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-4, f"resumed weights differ from an uninterrupted run by {diff}"


@pytest.mark.slow
def test_ddp_cpu_two_processes(tiny_model, tmp_path, filter_dir):
    cfg = make_cfg(
        tiny_model,
        tmp_path,
        "train.max_steps=4",
        "train.batch_size=4",
        "train.launcher=accelerate",
        "train.accelerate_config=ddp_cpu",
        "train.num_processes=2",
    )
    out = tmp_path / "out"
    stats = train.run(cfg, RunContext.of({"filter": filter_dir}, out))
    assert stats["num_processes"] == 2 and stats["steps"] == 4
    assert stats["epochs"] == 4.0  # 8 examples = 2 processes x batch 4: one step per epoch
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "loss.png").is_file() and (out / "train_stats.json").is_file()


@pytest.mark.slow
def test_two_machines_train_as_one_run(tiny_model, tmp_path, filter_dir):
    """Two "machines" on this one (ranks 0 and 1, one process each, rendezvous on 127.0.0.1):
    the launch each node of `distill slurm train` runs, for real over gloo. Rank 0 runs the
    stage; rank 1 joins it and writes nothing of its own into the stage dir."""
    import threading

    from pipeline.ports import free_port

    port = free_port()
    common = [
        "train.max_steps=4",
        "train.batch_size=4",
        "train.launcher=accelerate",
        "train.accelerate_config=ddp_cpu",
        "train.num_processes=2",
        "train.num_machines=2",
        "train.main_process_ip=127.0.0.1",
        f"train.main_process_port={port}",
    ]
    cfg0 = make_cfg(tiny_model, tmp_path, *common, "train.machine_rank=0")
    cfg1 = make_cfg(tiny_model, tmp_path, *common, "train.machine_rank=1")
    assert train.follows(cfg1) and not train.follows(cfg0)
    out = tmp_path / "out"
    ctx = RunContext.of({"filter": filter_dir}, out)
    errors: list[BaseException] = []

    def rank1() -> None:
        try:
            train.follow(cfg1, ctx)
        except BaseException as e:  # reported by the assert below
            errors.append(e)

    joined = threading.Thread(target=rank1)
    joined.start()
    stats = train.run(cfg0, ctx)
    joined.join(timeout=600)
    assert not errors, errors
    assert stats["num_processes"] == 2 and stats["steps"] == 4
    assert stats["epochs"] == 4.0  # 8 examples = 2 processes x batch 4, as on one machine
    assert (out / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in out.glob("train_config*.json")) == ["train_config.json"]


def test_a_joining_machine_needs_its_inputs_complete(tiny_model, tmp_path):
    from conftest import run_cli

    r = run_cli(
        "train",
        f"runs_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
        f"train.student={tiny_model}",
        f"teacher.model={tiny_model}",
        "train.launcher=accelerate",
        "train.num_processes=2",
        "train.num_machines=2",
        "train.machine_rank=1",
        "train.main_process_ip=127.0.0.1",
        "train.main_process_port=29500",
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "its input filter" in r.stderr and "is not complete" in r.stderr
    assert not list(tmp_path.glob("default/train/*/.lock"))  # it took no lock, made no dir


def test_a_cut_student_trains_and_is_saved_at_its_depth(tmp_path, filter_dir):
    """train.cut: training starts from the cut, and the saved student has the cut's depth."""
    from tiny_model import build_tiny_model

    deep = build_tiny_model(tmp_path / "deep", layers=4, seed=3)
    cfg = make_cfg(deep, tmp_path, "train.max_steps=2", "train.cut.layers=[1,3]")
    stats = train.run(cfg, RunContext.of({"filter": filter_dir}, tmp_path / "out"))
    assert stats["cut_layers"] == [1, 3] and stats["steps"] == 2
    saved = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2
    plain = make_cfg(deep, tmp_path)
    assert train.key_parts(cfg).config != train.key_parts(plain).config  # another key
    assert "cut" not in json.dumps(train.key_parts(plain).config)  # old keys unchanged


def test_cpu_trainer_loss_equals_trl_fused_loss(tiny_model, tmp_path, filter_dir):
    """On CPU the stage swaps TRL's fused LM-head loss for its own, which sends only the scored
    positions through the head: same number, same gradient, on real batches with padding and
    prompt masking (a loss over prompt or padding tokens, a shift off by one, or a mean over the
    wrong count, would differ)."""
    import torch
    from trl import SFTTrainer

    rows = make_rows(8) + [
        {**r, "completion": [{"role": "assistant", "content": r["completion"][0]["content"] * 3}]}
        for r in make_rows(4, seed=1)
    ]
    cfg = make_cfg(tiny_model, tmp_path, "train.bf16=false")
    tok, prepared = preflight(
        tiny_model, write_kept(tmp_path / "f", rows) / "kept.jsonl", cfg.train, tmp_path
    )
    trainer, _, _ = train_loop._make_trainer(cfg, tiny_model, tok, prepared.rows, tmp_path / "o")
    assert type(trainer).__name__ == "CPUSFTTrainer"
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert int(batch["attention_mask"].eq(0).sum()) > 0  # the batch has padding
    count = int(batch["labels"].ne(-100).sum())

    def loss_and_grad(compute) -> tuple[float, torch.Tensor]:
        trainer.model.zero_grad()
        loss = compute(trainer, trainer.model, dict(batch), num_items_in_batch=count)
        loss.backward()
        return loss.item(), trainer.model.get_input_embeddings().weight.grad.clone()

    head_rows: list[int] = []
    hook = trainer.model.get_output_embeddings().register_forward_hook(
        lambda mod, args, out: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )
    ours, g_ours = loss_and_grad(type(trainer).compute_loss)
    hook.remove()
    trl, g_trl = loss_and_grad(SFTTrainer.compute_loss)
    # Only the scored positions reach the LM head (the model's own loss sends all of them).
    assert head_rows == [count] and count < batch["input_ids"].numel()
    assert ours == pytest.approx(trl, rel=1e-5)
    assert torch.allclose(g_ours, g_trl, atol=1e-6, rtol=1e-4)


def test_cpu_trainer_loss_runs_under_bf16_autocast(tiny_model, tmp_path, monkeypatch):
    """With bf16 on, the decoder's matmuls in the CPU loss run in bf16, as they do in the model's
    own forward (which accelerate wraps in autocast). The loss calls the decoder directly, so
    without its own autocast every matmul ran in fp32: 3x the time, the step 1.5x the bare loop."""
    import torch

    monkeypatch.setattr(train_loop, "native_bf16", lambda gpu: True)
    cfg = make_cfg(tiny_model, tmp_path, "train.bf16=true")
    tok, prepared = preflight(
        tiny_model, write_kept(tmp_path / "f", make_rows(8)) / "kept.jsonl", cfg.train, tmp_path
    )
    trainer, _, bf16 = train_loop._make_trainer(cfg, tiny_model, tok, prepared.rows, tmp_path / "o")
    assert bf16 and type(trainer).__name__ == "CPUSFTTrainer"
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    seen: list[torch.dtype] = []
    proj = trainer.model.get_decoder().layers[0].self_attn.q_proj
    hook = proj.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    type(trainer).compute_loss(trainer, trainer.model, dict(batch))
    hook.remove()
    assert seen == [torch.bfloat16]
