"""The update of an on-policy round (stages/train/objectives/onpolicy/update.py and the trainer
class in stages/train/losses/trainers.py) on a real tiny model and TRL's batching: at the rollout
weights the loss of a padded batch is minus the mean advantage over the completion tokens (the
prompt and the padding take no part), its gradient is that of the advantage-weighted
log-likelihood, and one optimizer step on a trained teacher's advantages lowers the reverse-KL
estimate on its own batch, raising the tokens the teacher prefers above those it does not."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.calls import prompt_ids
from pipeline.prompts import render_messages
from pipeline.tasks import Question
from stages.train.objectives.onpolicy.update import update_rows

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def _logprobs(lm, tok, messages: list[dict], ids: list[int]) -> list[float]:
    """`lm`'s logprob of each of `ids` after the chat prompt `messages`."""
    prompt = prompt_ids(tok, messages)
    with torch.no_grad():
        lp = lm(torch.tensor([prompt + ids])).logits[0].float().log_softmax(-1)
    return [float(lp[len(prompt) + j - 1, t]) for j, t in enumerate(ids)]


def _rollouts(tok, lm) -> list[dict]:
    """Two rollouts of different lengths with the model's own logprobs (ratio 1)."""
    out = []
    for i, (q, text) in enumerate(
        [("3 + 4 ?", "Step 1 : 3 + 4 = 7 . Answer : 7"), ("9 - 2 ?", "7")]
    ):
        messages = render_messages("student_zeroshot.j2", Question(f"q{i}", q, "7"))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        own = _logprobs(lm, tok, messages, ids)
        out.append({"id": f"r{i}", "messages": messages, "completion_ids": ids, "logprobs": own})
    return out


def _trainer(model: Path, tok, rows: list[dict], table, tmp_path: Path, **args):
    """The round's trainer class over `rows` and their table, on the CPU in float32."""
    from datasets import Dataset
    from trl import SFTConfig

    from stages.train.losses.trainers import KDCollator, onpolicy_trainer_class

    config = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        use_cpu=True,
        bf16=False,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        model_init_kwargs={"dtype": "float32"},
        **args,
    )
    trainer = onpolicy_trainer_class()(
        model=str(model), args=config, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    trainer.data_collator = KDCollator(trainer.data_collator)
    trainer.op_table = tuple(
        torch.from_numpy(t) for t in (table.rollout_logprobs, table.advantages)
    )
    return trainer


def test_the_round_loss_is_the_advantage_weighted_likelihood(tiny_model: Path, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    rollouts = _rollouts(tok, lm)
    gen = torch.Generator().manual_seed(0)
    adv = {r["id"]: torch.randn(len(r["completion_ids"]), generator=gen).tolist() for r in rollouts}
    rows, table = update_rows(tok, rollouts, adv | {"missing": [1.0]})
    assert len(rows) == 2 and table.advantages.shape == (sum(len(a) for a in adv.values()),)
    trainer = _trainer(tiny_model, tok, rows, table, tmp_path)
    batch = trainer._prepare_inputs(trainer.data_collator([dict(r) for r in rows]))
    assert int(batch["attention_mask"].eq(0).sum()) > 0  # padded
    n = int(batch["labels"].ne(-100).sum())
    loss = type(trainer).compute_loss(trainer, trainer.model, dict(batch), num_items_in_batch=n)
    assert loss.item() == pytest.approx(-float(table.advantages.sum()) / n, abs=1e-4)
    loss.backward()
    got = trainer.model.get_input_embeddings().weight.grad.clone()
    trainer.model.zero_grad()
    logits = trainer.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).logits
    lp = logits[:, :-1].float().log_softmax(-1)
    labels = batch["labels"][:, 1:]
    scored = labels != -100
    own = lp[scored].gather(-1, labels[scored][:, None])[:, 0]
    want_adv = torch.cat([torch.tensor(adv[r["id"]]) for r in rollouts])
    (-(want_adv * own).sum() / n).backward()
    want = trainer.model.get_input_embeddings().weight.grad
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-3)


def _own_logprobs(lm, tok, rollouts: list[dict]) -> list[float]:
    """`lm`'s logprob of each completion token of `rollouts`, after its prompt, in order."""
    return [lp for r in rollouts for lp in _logprobs(lm, tok, r["messages"], r["completion_ids"])]


def test_one_update_step_lowers_the_rounds_loss_on_its_batch(
    tiny_model: Path, tiny_teacher: Path, tmp_path
) -> None:
    """Issue 50, by hand: the advantages are a trained teacher's logprobs minus the student's on
    the student's own tokens; one optimizer step of the round's trainer on that batch must lower
    the round's loss on it (-mean of A_t * exp(new_t - rollout_t), stages/train/losses/policy.py)
    and raise the tokens the teacher prefers more than those it does not.

    It asserted that the step lowers the reverse-KL estimate the rounds report (mean student
    minus teacher logprob) on the same tokens. That is not what the step descends: the loss
    weights each token's logprob by its advantage, the estimate sums them unweighted, and on
    another 2-core Xeon's tiny pair (the same seeds) one step raised the estimate at every
    rate tried (0.2545 -> 0.264 at 1e-4, 0.296 at 1e-3, 0.328 at 2e-3) while it passed on the
    first. The KL the rounds measure is tested where it is a claim, over rounds, in
    tests/e2e/test_onpolicy.py."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher, dtype=torch.float32)
    rollouts = _rollouts(tok, lm)
    before = [lp for r in rollouts for lp in r["logprobs"]]
    scored = _own_logprobs(teacher, tok, rollouts)
    adv, at = {}, 0
    for r in rollouts:
        n = len(r["completion_ids"])
        adv[r["id"]] = [t - s for t, s in zip(scored[at : at + n], r["logprobs"], strict=True)]
        at += n
    rows, table = update_rows(tok, rollouts, adv)
    trainer = _trainer(tiny_model, tok, rows, table, tmp_path, max_steps=1, learning_rate=1e-3)
    trainer.train()
    after = _own_logprobs(trainer.model.eval(), tok, rollouts)

    def kl(own: list[float]) -> float:
        return sum(s - t for s, t in zip(own, scored, strict=True)) / len(own)

    def loss(own: list[float]) -> float:
        terms = zip(own, before, table.advantages, strict=True)
        return -sum(math.exp(n - o) * float(a) for n, o, a in terms) / len(own)

    assert kl(before) > 0.1  # the trained teacher is not the random student
    assert loss(after) < loss(before), (loss(before), loss(after))
    moved = [a - b for a, b in zip(after, before, strict=True)]
    up = [m for m, a in zip(moved, table.advantages, strict=True) if a > 0]
    down = [m for m, a in zip(moved, table.advantages, strict=True) if a < 0]
    assert up and down and sum(up) / len(up) > sum(down) / len(down)
