"""Soft labels end to end: captured by real vLLM (the offline engine and a managed server), kept
through filter, and trained on with TRL; the loss checked against brute force.

The teacher is the tiny model after a short SFT (tests/tiny_model.py), the student the tiny
model itself: one tokenizer, so the teacher's ids are the student's. With k = the whole
vocabulary (405 tokens) the stored top-k is the full distribution, which lets the tests compare
the capture with transformers' own forward pass and the loss with the full KL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import kill_generate_when, run_cli

from pipeline.config import load_config, shipped_config
from pipeline.records import read_jsonl, read_jsonl_tolerant
from stages.shared.layout import KEPT_STORE, POOL_STORE
from stages.shared.softlabels import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def soft(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One `distill train` with k = the vocabulary and objective kd, on the offline engine."""
    from tiny_model import build_tiny_teacher

    tmp = tmp_path_factory.mktemp("soft")
    teacher = build_tiny_teacher(tmp / "teacher", tiny_model)
    vocab = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    ov = [
        f"runs_dir={tmp / 'runs'}",
        f"cache_dir={tmp / 'cache'}",
        f"teacher.model={teacher}",
        f"train.student={tiny_model}",
        "task.max_train=16",
        "generate.n=2",
        "generate.sampling.max_tokens=24",
        "filter.checks=[truncated,format,exact_dedup]",
        "train.max_steps=3",
        "train.batch_size=4",
        "train.bf16=false",
        "teacher.serve.dtype=float32",  # so capture is compared with transformers to 1e-2
        f"generate.logprobs={vocab}",
        "train.objective=kd",
        "train.validate=false",  # these test the soft-label loss; validation: e2e/test_sweep
    ]
    r = run_cli("train", *ov)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    cfg = load_config(shipped_config("default"), ov)
    return {"ov": ov, "cfg": cfg, "teacher": teacher, "vocab": vocab, "tmp": tmp, "out": r}


def _dirs(soft: dict, run: str = "default") -> dict[str, Path]:
    runs = soft["tmp"] / "runs" / run
    return {s: next(runs.glob(f"{s}/*/manifest.json")).parent for s in ("generate", "filter")}


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def test_every_sample_has_its_full_distribution_per_token(soft: dict) -> None:
    d = _dirs(soft)
    store = Store.open(d["generate"].parent / POOL_STORE)
    rows = list(read_jsonl(d["generate"] / "samples.jsonl"))
    assert rows and store.damaged_bytes == 0
    for row in rows:
        header, tl = store.read(row["logprobs"]["sha"])
        assert header["id"] == row["id"] and header["k"] == soft["vocab"]
        assert tl.tokens == row["usage"]["completion_tokens"] == row["logprobs"]["tokens"]
        assert header["mode"] == "raw"
        assert header["temperature"] == soft["cfg"].generate.sampling.temperature
        # The token written is among its own top-k, with the same logprob.
        hit = tl.top_ids == tl.ids[:, None]
        assert hit.any(1).all()
        assert abs(tl.top_logprobs[hit] - tl.logprobs).max() < 1e-6
    stats = _manifest(d["generate"])["stats"]["logprobs"]
    assert stats["k"] == soft["vocab"] and stats["tokens"] == sum(
        r["usage"]["completion_tokens"] for r in rows
    )
    # 6 bytes per stored number pair, plus the header's share
    assert 6 * (soft["vocab"] + 1) <= stats["bytes_per_token"] < 6 * (soft["vocab"] + 1) + 40
    assert f"soft labels        top-{soft['vocab']}, {stats['bytes_per_token']} bytes/token" in (
        soft["out"].stdout
    )


def test_captured_logprobs_are_the_teachers_distribution(soft: dict) -> None:
    """Against transformers' forward pass of the teacher over prompt + the tokens it wrote."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = _dirs(soft)
    store = Store.open(d["generate"].parent / POOL_STORE)
    tok = AutoTokenizer.from_pretrained(soft["teacher"])
    model = AutoModelForCausalLM.from_pretrained(soft["teacher"], dtype=torch.float32)
    for row in list(read_jsonl(d["generate"] / "samples.jsonl"))[:4]:
        _, tl = store.read(row["logprobs"]["sha"])
        prompt = _prompt_ids(tok, row["messages"])
        ids = torch.tensor([prompt + tl.ids.tolist()])
        with torch.no_grad():
            full = model(ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
        stored = _dense(tl, full.shape[1])
        likely = full > -15  # float16 keeps 3 digits: compare where it matters
        assert torch.allclose(stored[likely], full[likely], atol=1e-2), row["id"]


def test_kd_loss_with_the_whole_vocabulary_is_the_brute_force_kl(soft: dict, tmp_path) -> None:
    """The stage's KD loss (alpha=1, T=2) on a real batch equals T^2 * KL(teacher || student)
    over the full vocabulary, computed from both models' own forward passes."""
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.train import trainer as train_loop
    from stages.train.preflight import preflight

    cfg = soft["cfg"]
    kd = dataclasses.replace(cfg.train.kd, alpha=1.0, temperature=2.0)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, kd=kd))
    d = _dirs(soft)
    kept_rows = list(read_jsonl(d["filter"] / "kept.jsonl"))
    pool = {r["id"]: r for r in read_jsonl(d["generate"] / "samples.jsonl")}
    student = Path(cfg.train.student)
    tok, prepared = preflight(student, d["filter"] / "kept.jsonl", cfg.train, tmp_path)
    trainer, _, _ = train_loop._make_trainer(
        cfg, student, tok, prepared.rows, tmp_path / "o", prepared.soft
    )
    assert type(trainer).__name__ == "KDTrainer"
    examples = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(examples)
    got = type(trainer).compute_loss(trainer, trainer.model, dict(batch)).item()

    teacher = AutoModelForCausalLM.from_pretrained(pool[kept_rows[0]["sample_id"]]["teacher"])
    ttok = AutoTokenizer.from_pretrained(soft["teacher"])
    total, trained = 0.0, 0
    for ex in examples:
        src = kept_rows[prepared.sources[_index_of(prepared.rows, ex)]]
        sample = pool[src["sample_id"]]
        ids, labels = ex["input_ids"], ex["labels"]
        trained += sum(x != -100 for x in labels)
        pos = [p for p, x in enumerate(ex["kd_index"]) if x >= 0]
        prompt = _prompt_ids(ttok, sample["messages"])
        teacher_ids = prompt + [ids[p] for p in pos]
        with torch.no_grad():
            t_logits = teacher(torch.tensor([teacher_ids])).logits[0, len(prompt) - 1 : -1]
            s_logits = trainer.model(torch.tensor([ids])).logits[0, [p - 1 for p in pos]]
        p = (t_logits / 2).log_softmax(-1)
        q = (s_logits / 2).log_softmax(-1)
        total += 4 * (p.exp() * (p - q)).sum().item()
    assert got == pytest.approx(total / trained, rel=2e-3)


def _prompt_ids(tok, messages: list[dict]) -> list[int]:
    out = tok.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(out["input_ids"])


def _dense(tl, vocab: int):
    import torch

    out = torch.full((tl.tokens, vocab), -1e4)
    out.scatter_(1, torch.from_numpy(tl.top_ids).long(), torch.from_numpy(tl.top_logprobs))
    return out


def _index_of(rows: list[dict], ex: dict) -> int:
    return next(i for i, r in enumerate(rows) if r["input_ids"] == ex["input_ids"])


def test_alpha_zero_is_the_sft_loss_to_the_bit(soft: dict, tmp_path) -> None:
    import dataclasses

    from stages.train import trainer as train_loop
    from stages.train.preflight import preflight

    cfg = soft["cfg"]
    kd_cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, kd=dataclasses.replace(cfg.train.kd, alpha=0.0))
    )
    sft_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, objective="sft"))
    d = _dirs(soft)
    student = Path(cfg.train.student)
    (tmp_path / "kd").mkdir()
    (tmp_path / "sft").mkdir()
    tok, kd_rows = preflight(student, d["filter"] / "kept.jsonl", kd_cfg.train, tmp_path / "kd")
    _, sft_rows = preflight(student, d["filter"] / "kept.jsonl", sft_cfg.train, tmp_path / "sft")
    kd_tr, _, _ = train_loop._make_trainer(
        kd_cfg, student, tok, kd_rows.rows, tmp_path / "k", kd_rows.soft
    )
    sft_tr, _, _ = train_loop._make_trainer(sft_cfg, student, tok, sft_rows.rows, tmp_path / "s")
    batch = kd_tr.data_collator([kd_tr.train_dataset[i] for i in range(4)])
    plain = {k: v for k, v in batch.items() if k != "kd_index"}
    a = type(kd_tr).compute_loss(kd_tr, kd_tr.model, dict(batch), num_items_in_batch=50)
    b = type(sft_tr).compute_loss(sft_tr, sft_tr.model, dict(plain), num_items_in_batch=50)
    assert a.item() == b.item()


def test_trained_on_the_teachers_own_tokens(soft: dict) -> None:
    stats = json.loads(
        next((soft["tmp"] / "runs/default/train").glob("*/train_stats.json")).read_text()
    )
    assert stats["objective"] == "kd" and stats["kd_dropped_mismatch"] == 0
    # every teacher token of each kept text has its distribution; the template's trailing
    # newline after the turn end has none
    assert stats["trained_tokens"] - stats["kd_tokens"] == stats["examples"]
    d = _dirs(soft)
    kept = Store.open(d["filter"] / KEPT_STORE)
    refs = [r["logprobs"]["sha"] for r in read_jsonl(d["filter"] / "kept.jsonl")]
    assert set(refs) == set(kept.index) and kept.damaged_bytes == 0
    assert "kept.logprobs.bin" in _manifest(d["filter"])["outputs"]


def test_another_student_on_the_cached_dataset_regenerates_nothing(soft: dict, tmp_path) -> None:
    other = tmp_path / "student2"
    shutil.copytree(soft["cfg"].train.student, other)
    ov = [o for o in soft["ov"] if not o.startswith("train.student=")]
    r = run_cli("train", *ov, f"train.student={other}", "train.kd.alpha=0.9")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = {line.split(":")[0]: line for line in r.stdout.splitlines() if ": " in line}
    assert "cached" in lines["generate"] and "cached" in lines["filter"], r.stdout
    assert "ran" in lines["train"]


def test_a_student_with_another_vocabulary_is_refused_in_one_line(soft: dict, tmp_path) -> None:
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "other", vocab=300)
    ov = [o for o in soft["ov"] if not o.startswith("train.student=")]
    r = run_cli("train", *ov, f"train.student={other}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "vocabulary" in line and "teacher" in line and "sha256" in line


def test_server_capture_equals_the_offline_engine(soft: dict) -> None:
    """vLLM's OpenAI API (a managed server) gives the same samples and soft labels."""
    ov = [o for o in soft["ov"] if not o.startswith("runs_dir=")]
    ov += [f"runs_dir={soft['tmp'] / 'runs-server'}", "teacher.serve.engine=server"]
    r = run_cli("generate", *ov)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = soft["tmp"] / "runs-server" / "default" / "generate"
    server_rows = {r["id"]: r for r in read_jsonl(next(runs.glob("*/samples.jsonl")))}
    offline_rows = {r["id"]: r for r in read_jsonl(_dirs(soft)["generate"] / "samples.jsonl")}
    assert server_rows.keys() == offline_rows.keys()
    s_store = Store.open(runs / POOL_STORE)
    o_store = Store.open(_dirs(soft)["generate"].parent / POOL_STORE)
    for sid, row in server_rows.items():
        _, a = s_store.read(row["logprobs"]["sha"])
        _, b = o_store.read(offline_rows[sid]["logprobs"]["sha"])
        assert (a.ids == b.ids).all()
        # the same distribution per token (near-ties may be ranked in another order)
        da, db = _dense(a, soft["vocab"]), _dense(b, soft["vocab"])
        likely = db > -15
        assert (da[likely] - db[likely]).abs().max() < 2e-2


def test_kill_and_damage_lose_nothing_and_ask_nothing_twice(soft: dict, tmp_path) -> None:
    """SIGKILL generate while it writes samples with soft labels, damage one stored record,
    raise n: each rerun asks only for what is missing or unreadable, and in the end every
    sample has exactly one row and an intact record."""
    ov = [o for o in soft["ov"] if not o.startswith(("runs_dir=", "task.max_train"))]
    ov += [
        f"runs_dir={tmp_path / 'runs'}",
        "task.max_train=30",  # 60 samples, then 90: enough to kill mid-stream at 6
        "generate.sampling.max_tokens=128",
        "generate.concurrency=8",
        "generate.fsync_every=2",
    ]
    pool = tmp_path / "runs" / "default" / "generate" / "pool.jsonl"
    kill_generate_when(ov, pool, 6, timeout=300)
    before = len(read_jsonl_tolerant(pool).rows)
    assert 6 <= before < 60

    r = run_cli("generate", *ov)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = _manifest(next(pool.parent.glob("*/manifest.json")).parent)["stats"]
    assert stats["requested"] == 60 - before and stats["reused"] == before

    # Damage one record in the middle of the store: its sample is asked again, nothing else.
    store = Store.open(pool.parent / POOL_STORE)
    victim = sorted(store.index.values(), key=lambda e: e.start)[3]
    with open(store.path, "r+b") as f:
        f.seek(victim.start + 40)
        f.write(b"\x00" * 16)
    r = run_cli("generate", *ov, "generate.n=3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quarantine" in r.stderr
    key_dir = max(pool.parent.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime).parent
    stats = _manifest(key_dir)["stats"]
    assert stats["requested"] == 30 + 1 and stats["reused"] == 60 - 1
    rows = list(read_jsonl(pool))
    assert len(rows) == len({r["id"] for r in rows}) == 90
    store = Store.open(pool.parent / POOL_STORE)
    for row in rows:
        header, tl = store.read(row["logprobs"]["sha"])
        assert header["id"] == row["id"] and tl.tokens == row["usage"]["completion_tokens"]


def test_packed_batches_give_the_padded_loss(soft: dict, tmp_path) -> None:
    """Padding-free packing lays `kd_index` out with the tokens: the KD loss of the same
    examples packed into one row equals their loss padded (a shifted index would not)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from stages.train import trainer as train_loop
    from stages.train.losses.trainers import KDCollator
    from stages.train.preflight import preflight

    cfg = soft["cfg"]
    d = _dirs(soft)
    student = Path(cfg.train.student)
    tok, prepared = preflight(student, d["filter"] / "kept.jsonl", cfg.train, tmp_path)
    trainer, _, _ = train_loop._make_trainer(
        cfg, student, tok, prepared.rows, tmp_path / "o", prepared.soft
    )
    examples = [trainer.train_dataset[i] for i in range(4)]
    padded = trainer.data_collator(examples)
    packed = KDCollator(DataCollatorForLanguageModeling(tok.pad_token_id, padding_free=True))(
        examples
    )
    assert packed["input_ids"].shape[0] == 1 and padded["input_ids"].shape[0] == 4
    loss = type(trainer).compute_loss
    a = loss(trainer, trainer.model, dict(padded)).item()
    b = loss(trainer, trainer.model, dict(packed)).item()
    assert a == pytest.approx(b, rel=1e-4)


def test_kd_trains_a_lora_adapter_with_packing(soft: dict) -> None:
    ov = [o for o in soft["ov"] if o != "train.max_steps=3"]
    r = run_cli("train", *ov, "train.lora.enabled=true", "train.packing=true", "train.max_steps=2")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = soft["tmp"] / "runs" / "default" / "train"
    stats = [json.loads(p.read_text()) for p in runs.glob("*/train_stats.json")]
    (lora,) = [s for s in stats if s["lora"]]
    assert lora["objective"] == "kd" and lora["packing"] and lora["steps"] == 2
    assert lora["kd_tokens"] > 0 and lora["padding_fraction"] == 0
