"""The trainer classes behind the train stage's losses: SFTTrainer subclasses whose
compute_loss sends only the scored (completion) positions through the LM head. The CPU trainer
computes the SFT loss that way; the KD trainer adds the soft-label divergence of
stages/train/losses/divergence.py on the teacher's top-k; the on-policy trainer the
importance-sampled loss of stages/train/losses/policy.py; the features trainer the terms of
stages/train/losses/features.py. KDCollator lays out the `kd_index` the KD and on-policy
trainers read their tables by. torch / transformers / trl are imported inside the functions, so
importing this module stays cheap."""

from __future__ import annotations

import os
from typing import Any


def cpu_trainer_class():
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


def kd_trainer_class():
    """SFTTrainer with the soft-label loss (stages/train/losses/divergence.py) on the teacher's
    top-k, on any
    device: the scored positions' logits as in the CPU trainer, then cross-entropy and the
    divergence against the teacher's rows in `kd_table` that each position's `kd_index` names.
    alpha = 0 computes exactly the CPU trainer's loss."""
    import torch.nn.functional as F
    from transformers import Trainer
    from trl import SFTTrainer

    from stages.train.losses.divergence import kd_sum

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


def _labels(inputs: dict[str, Any]):
    """The labels each position predicts (shifted by one)."""
    labels = inputs.get("shift_labels")
    return inputs["labels"][..., 1:] if labels is None else labels


def _scored_logits(trainer, model, inputs: dict[str, Any], labels):
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


def _per_token(trainer, loss, scored, num_items_in_batch):
    """As the model's own loss: over the accumulated batch's token count when the Trainer
    gives it (it then skips its division by the accumulation steps), else a mean; times the
    processes when that count was summed over them, as Trainer does."""
    if num_items_in_batch is None:
        return loss / scored.sum()
    loss = loss / num_items_in_batch
    if trainer.args.average_tokens_across_devices:
        loss = loss * trainer.accelerator.num_processes
    return loss


def _head_is_logits(model) -> bool:
    cfg = getattr(model, "config", None)
    scaled = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")
    return (
        hasattr(model, "get_decoder")
        and model.get_output_embeddings() is not None
        and not any(getattr(cfg, a, None) not in (None, 1, 1.0) for a in scaled)
    )


def onpolicy_trainer_class():
    """SFTTrainer with the on-policy loss (stages/train/losses/policy.py): each scored
    position's logprob of the token the student sampled, against the rollout's logprob and the
    teacher's advantage in `op_table` at the row its `kd_index` names."""
    from transformers import Trainer
    from trl import SFTTrainer

    from stages.train.losses.policy import importance_sampled_loss

    class OnPolicyTrainer(SFTTrainer):
        op_table: Any = None  # (rollout logprobs [P], advantages [P]) on the CPU

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            kd_index = inputs.pop("kd_index")
            inputs["use_cache"] = False
            if return_outputs:
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            labels = _labels(inputs)
            logits, scored = _scored_logits(self, model, inputs, labels)
            new = logits.float().log_softmax(-1).gather(-1, labels[scored][:, None])[:, 0]
            rows = kd_index[..., 1:][:, : labels.shape[1]][scored].cpu()
            old, adv = (t[rows].to(new.device) for t in self.op_table)
            loss = importance_sampled_loss(new, old, adv, (rows >= 0).to(new.device).float())
            return _per_token(self, loss, scored, num_items_in_batch)

    return OnPolicyTrainer


def features_trainer_class():
    """SFTTrainer with the teacher in the loop (stages/train/losses/features.py): one forward of the
    teacher (no gradient) beside the student's on the same ids, then the logit, hidden-state,
    attention and relation terms. The projections of the hidden-state term (where the widths
    differ) train with the student: a parameter group of the optimizer, saved in each
    checkpoint beside it, never in the model. Several teachers: their distributions are fused
    (a weighted mixture) in the logit term; the other terms are the first teacher's. Each
    term's mean since the last log is logged.
    Long: one class, whose methods (optimizer, checkpoints, logging, the loss) share the teacher
    and the projections."""
    import torch
    import torch.nn.functional as F
    from transformers import Trainer
    from trl import SFTTrainer

    from stages.train.losses import features as fx
    from stages.train.losses.divergence import logit_term

    class FeaturesTrainer(SFTTrainer):
        kd_cfg: Any = None
        fx_cfg: Any = None
        teacher: Any = None  # the first teacher: every term is against it
        others: Any = ()  # further teachers, fused with it in the logit term only
        fusion: Any = (1.0,)  # each teacher's share of the fused distribution
        proj: Any = None  # torch.nn.ModuleDict "i_j" -> Linear, empty where widths match
        layer_map: Any = ()
        parts: Any = None

        def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
            opt = super().create_optimizer(*args, **kwargs)
            if self.proj is not None and len(self.proj):
                opt.add_param_group(
                    {
                        "params": list(self.proj.parameters()),
                        "weight_decay": 0.0,
                        "lr": self.args.learning_rate,
                    }
                )
            return opt

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            if self.proj is not None and len(self.proj) and self.is_world_process_zero():
                from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

                d = f"{self.args.output_dir}/{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                torch.save(self.proj.state_dict(), f"{d}/{PROJ_FILE}")

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            path = f"{resume_from_checkpoint}/{PROJ_FILE}"
            if self.proj is not None and len(self.proj) and os.path.isfile(path):
                self.proj.load_state_dict(torch.load(path, map_location="cpu"))

        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            loss = super().training_step(*args, **kwargs)
            if self.proj is not None and len(self.proj) and self.accelerator.num_processes > 1:
                # DDP averages the model's gradients only: the projections' too, here
                for p in self.proj.parameters():
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad)
                        p.grad /= self.accelerator.num_processes
            return loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if self.parts and "loss" in logs:
                n = self.parts.pop("_n")
                logs.update({f"loss_{k}": round(v / n, 6) for k, v in self.parts.items()})
                self.parts = {}
            super().log(logs, *args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            if return_outputs:
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            labels = _labels(inputs)
            terms, ce, soft, scored = self.terms(model, inputs, labels)
            a = self.kd_cfg.alpha
            n = scored.sum()
            total = a * soft + (1 - a) * ce
            # the feature terms are means over the micro-batch: weighted by its tokens, so they
            # scale with accumulation and processes as the token sums do
            for name, weight in (
                ("hidden", self.fx_cfg.hidden),
                ("attention", self.fx_cfg.attention),
                ("relation", self.fx_cfg.relation),
            ):
                if weight > 0:
                    total = total + weight * terms[name] * n
            parts = {"ce": ce / n, "logit": soft / n, **terms}
            self.parts = self.parts or {"_n": 0}
            self.parts["_n"] += 1
            for k, v in parts.items():
                self.parts[k] = self.parts.get(k, 0.0) + float(v.detach())
            return _per_token(self, total, scored, num_items_in_batch)

        def terms(self, model: Any, inputs: dict[str, Any], labels: Any) -> tuple:
            """(feature terms by name, CE sum, logit-term sum, scored mask) for one batch."""
            keys = ("input_ids", "attention_mask", "position_ids")
            args = {k: inputs[k] for k in keys if k in inputs}
            scored = labels != -100
            span = labels.shape[1]
            att = self.fx_cfg.attention > 0
            with self.accelerator.autocast():
                s = model.get_decoder()(
                    **args, use_cache=False, output_hidden_states=True, output_attentions=att
                )
                s_logits = model.get_output_embeddings()(s.last_hidden_state[:, :span][scored])
                with torch.no_grad():
                    t = self.teacher.get_decoder()(
                        **args, use_cache=False, output_hidden_states=True, output_attentions=att
                    )
                    t_logits = [
                        self.teacher.get_output_embeddings()(t.last_hidden_state[:, :span][scored])
                    ]
                    for other in self.others:  # fused teachers: their logits only
                        h = other.get_decoder()(**args, use_cache=False).last_hidden_state
                        t_logits.append(other.get_output_embeddings()(h[:, :span][scored]))
            ce = F.cross_entropy(s_logits.float(), labels[scored], reduction="sum")
            k = self.kd_cfg
            t_logp = fx.fused_logprobs(t_logits, self.fusion, k.temperature)
            soft = logit_term(s_logits, t_logp, k.temperature, k.divergence, k.jsd_beta)
            out: dict[str, Any] = {}
            if self.fx_cfg.hidden > 0:
                hs = []
                for i, j in self.layer_map:
                    sh = s.hidden_states[i + 1][:, :span][scored]
                    name = f"{i}_{j}"
                    if name in self.proj:
                        sh = self.proj[name](sh.float())
                    th = t.hidden_states[j + 1][:, :span][scored]
                    hs.append(fx.hidden_term(sh, th, self.fx_cfg.hidden_loss))
                out["hidden"] = torch.stack(hs).mean()
            if att:
                keys_mask = inputs["attention_mask"].bool()
                out["attention"] = torch.stack(
                    [
                        fx.attention_term(
                            s.attentions[i][:, :, :span],
                            t.attentions[j][:, :, :span],
                            scored,
                            keys_mask,
                        )
                        for i, j in self.layer_map
                    ]
                ).mean()
            if self.fx_cfg.relation > 0:
                out["relation"] = fx.relation_term(
                    fx.pooled(s.last_hidden_state[:, :span], scored),
                    fx.pooled(t.last_hidden_state[:, :span], scored),
                )
            return out, ce, soft, scored

    return FeaturesTrainer


PROJ_FILE = "feature_projections.pt"  # in each checkpoint dir; never in the saved model


class KDCollator:
    """Wraps TRL's collator: adds `kd_index` laid out as it lays out `input_ids` (padded right
    with -1, or concatenated when it packs a batch into one padding-free row)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        batch = self.inner(examples)
        rows = [torch.as_tensor(e["kd_index"], dtype=torch.long) for e in examples]
        width = batch["input_ids"].shape[1]
        if batch["input_ids"].shape[0] != len(rows):  # padding-free: one concatenated row
            rows = [torch.cat(rows)]
        index = pad_sequence(rows, batch_first=True, padding_value=-1)
        if index.shape[1] < width:  # the collator may pad to a multiple
            index = torch.nn.functional.pad(index, (0, width - index.shape[1]), value=-1)
        batch["kd_index"] = index[:, :width]
        return batch
