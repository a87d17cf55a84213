"""The update of an on-policy round (stages/train/objectives/onpolicy/update.py and the trainer
class in stages/train/losses/trainers.py) on a real tiny model and TRL's batching: at the rollout
weights the loss of a padded batch is minus the mean advantage over the completion tokens (the
prompt and the padding take no part), and its gradient is that of the advantage-weighted
log-likelihood."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.calls import prompt_ids
from pipeline.prompts import render_messages
from pipeline.tasks import Question
from stages.train.objectives.onpolicy.update import update_rows

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def _rollouts(tok, lm) -> list[dict]:
    """Two rollouts of different lengths with the model's own logprobs (ratio 1)."""
    out = []
    for i, (q, text) in enumerate(
        [("3 + 4 ?", "Step 1 : 3 + 4 = 7 . Answer : 7"), ("9 - 2 ?", "7")]
    ):
        messages = render_messages("student_zeroshot.j2", Question(f"q{i}", q, "7"))
        prompt = prompt_ids(tok, messages)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = lm(torch.tensor([prompt + ids])).logits[0].float().log_softmax(-1)
        own = [float(lp[len(prompt) + j - 1, t]) for j, t in enumerate(ids)]
        out.append({"id": f"r{i}", "messages": messages, "completion_ids": ids, "logprobs": own})
    return out


def test_the_round_loss_is_the_advantage_weighted_likelihood(tiny_model: Path, tmp_path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from stages.train.losses.trainers import KDCollator, onpolicy_trainer_class

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    rollouts = _rollouts(tok, lm)
    gen = torch.Generator().manual_seed(0)
    adv = {r["id"]: torch.randn(len(r["completion_ids"]), generator=gen).tolist() for r in rollouts}
    rows, table = update_rows(tok, rollouts, adv | {"missing": [1.0]})
    assert len(rows) == 2 and table.advantages.shape == (sum(len(a) for a in adv.values()),)
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        use_cpu=True,
        bf16=False,
        report_to="none",
        remove_unused_columns=False,
        model_init_kwargs={"dtype": "float32"},
    )
    trainer = onpolicy_trainer_class()(
        model=str(tiny_model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    trainer.data_collator = KDCollator(trainer.data_collator)
    trainer.op_table = (
        torch.from_numpy(table.rollout_logprobs),
        torch.from_numpy(table.advantages),
    )
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
