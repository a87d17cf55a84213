"""Build a tiny but real chat model (BPE tokenizer + random Qwen2) that vLLM and TRL both load.

Used by the session fixture in conftest.py and by benchmarks; takes a few seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_WORDS = (
    "Tom has 3 apples and buys 4 more . How many apples does he have now ? "
    "Step 1 : 3 + 4 = 7 . Answer : 7 . Sara had 9 pens and gave away 2 . 9 - 2 = 7 "
    "question answer step think the a of to is are was were what how many more less left total "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 plus minus equals cookies cards marbles books"
)


THINK_TAGS = ("<think>", "</think>")


def build_tiny_model(
    out: Path,
    *,
    layers: int = 2,
    hidden: int = 128,
    vocab: int = 512,
    seed: int = 0,
    think_tags: bool = False,
    end_of_turn: str = "<|im_end|>",
    corpus: list[str] | None = None,
) -> Path:
    """Write a tokenizer and a random Qwen2 causal LM to `out`; return `out`.

    `end_of_turn`: the special token that closes a chat turn and stops the model (another one,
    such as Llama 3's "<|eot_id|>", makes a teacher of another chat family).

    `corpus`: the texts the BPE learns its merges from (default: a few task-like words, so
    that most words are several tokens); a task's own texts make most words one token.

    `think_tags`: `<think>` and `</think>` are added tokens (not special ones, which vLLM would
    skip when it detokenizes), as in reasoning models; vLLM's reasoning parsers look them up."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", end_of_turn]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or [_CORPUS_WORDS] * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=end_of_turn,
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    if think_tags:
        from tokenizers import AddedToken

        fast.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TAGS])
    fast.chat_template = CHAT_TEMPLATE.replace("<|im_end|>", end_of_turn)
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,  # head_dim 64: vLLM-CPU attention rejects 16
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=fast.convert_tokens_to_ids(end_of_turn),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(out)
    gen = {"eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id}
    (out / "generation_config.json").write_text(json.dumps(gen))
    return out


if __name__ == "__main__":
    print(build_tiny_model(Path(sys.argv[1])))


def arith_rationale(question: str, fact: str, answer: str) -> str:
    """The worked answer a competent teacher gives to a bundled arithmetic question."""
    import re

    a, b = re.findall(r"\d+", question)[:2]
    op = "+" if fact.startswith("add") else "-"
    return f"We compute {a} {op} {b} = {answer}.\nAnswer: {answer}"


def reasoning_rationale(question: str, fact: str, answer: str) -> str:
    """The same worked answer as a reasoning teacher writes it: a think block, then the answer."""
    steps = arith_rationale(question, fact, answer).split("\n")[0]
    return f"{THINK_TAGS[0]}\n{steps}\n{THINK_TAGS[1]}\n\nAnswer: {answer}"


def arith_answers(rationale=arith_rationale) -> tuple[list, list]:
    """Every bundled arithmetic question with its worked answer `rationale(question, fact,
    answer)`, in the order they had before the validation split (so a teacher trained on them is
    the same teacher each time), and the task's one-shot example."""
    import json as _json

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from pipeline.config import TaskConfig
    from pipeline.tasks import load_task

    task = load_task(
        TaskConfig(
            source="bundled:arith", split_by="fact", eval_fraction=0.3, validation_fraction=0
        )
    )
    facts = {r["id"]: r["fact"] for r in map(_json.loads, (root / "data/arith.jsonl").open())}
    answers = [(q, rationale(q.question, facts[q.id], q.answer)) for q in task.train + task.eval]
    return answers, task.fewshot[:1]


def build_tiny_teacher(
    out: Path,
    base: Path,
    *,
    steps: int = 150,
    seed: int = 0,
    rationale=arith_rationale,
    one_shot: bool = True,
    anneal: bool = False,
    log_every: int = 0,
) -> Path:
    """The tiny model after a short plain-torch SFT on bundled arithmetic, so that it answers in
    format and is often right: a cheap stand-in for a real teacher that filter will keep.
    `rationale(question, fact, answer)` is the text it learns to write; `one_shot`: it also
    learns the teacher's one-shot prompt (False: only the zero-shot one, half the tokens);
    `anneal`: the rate warms up over 100 steps and falls linearly to zero (False: constant), which
    a teacher trained to near-perfect needs; `log_every`: print the loss every that many steps."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    if (out / "config.json").exists():
        return out
    answers, shots = arith_answers(rationale)  # puts the repo on sys.path
    from pipeline.prompts import render_messages

    tok = AutoTokenizer.from_pretrained(base)
    texts = []
    for q, done in answers:
        # The student's zero-shot prompt and the teacher's one-shot one.
        for fs in ([], shots) if one_shot else ([],):
            msgs = render_messages("student_zeroshot.j2", q, fewshot=fs)
            msgs.append({"role": "assistant", "content": done})
            texts.append(tok.apply_chat_template(msgs, tokenize=False))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rate = (lambda s: min(1, (s + 1) / 100) * max(0.0, 1 - s / steps)) if anneal else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate) if rate else None
    rng = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(len(texts), (8,), generator=rng).tolist()
        batch = tok([texts[i] for i in idx], return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        opt.zero_grad()
        if log_every and step % log_every == 0:
            print(f"teacher step {step}/{steps}: loss {loss.item():.3f}", flush=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.copy(base / "generation_config.json", tmp / "generation_config.json")
    tmp.rename(out)
    return out
