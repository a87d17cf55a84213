"""The losses of train.objective: features, with the teacher in the training loop (in memory, no
gradient, the student's vocabulary). Over the N trained (completion) tokens of a batch:

    loss = alpha * T^2 * sum_t D(p_t^T, q_t^T) / N + (1 - alpha) * sum_t CE_t / N    (logits)
         + hidden * mean over the layer map of H(proj(s_i), t_j)                    (hidden states)
         + attention * mean over the layer map of A(s_i, t_j)                       (attention)
         + relation * (RKD distance + 2 * RKD angle)                                (relations)

`logits`: as objective kd (alpha, T, the divergence D), on the teacher's full distribution at
every trained position: the student and the teacher see the same ids. `hidden states`: student
layer i's output against teacher layer j's, at the trained positions; H is the mean squared
error per element, or the mean of 1 - cosine; where the widths differ, proj is a linear map
learned with the student (and dropped from the saved model), else the identity. `attention`:
the head-averaged attention maps (so the head counts may differ) of the trained query positions
over the keys they attend to, mean squared error per entry. `relations` (Park et al., RKD):
each sample's representation is its last hidden state averaged over its trained positions; the
distance term compares the batch's pairwise distances, each side divided by its mean, under a
smooth L1; the angle term compares the cosines of the angles every triple of samples makes. A
student identical to its teacher scores 0 on every term but cross-entropy. Several teachers
(train.features.teacher as a list): the logit term is against their weighted mixture
(fused_logprobs); the other terms are the first teacher's.
"""

from __future__ import annotations

from typing import Any


def default_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer i to teacher layer round((i + 1) * Lt / Ls) - 1: the last to the last,
    the others spread evenly (a cut of every k-th layer maps each to its depth's peer)."""
    return [
        (i, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)
    ]


def fused_logprobs(t_logits: list, weights: list[float], temperature: float):  # noqa: ANN201
    """The teachers' distribution at temperature T as log-probabilities: one teacher's
    log-softmax(z / T), or several teachers' weighted mean of probabilities (a mixture:
    log sum_i w_i softmax(z_i / T)), the weights summing to 1."""
    import math

    import torch

    t = float(temperature)
    logps = [(z.float() / t).log_softmax(-1) for z in t_logits]
    if len(logps) == 1:
        return logps[0]
    return torch.logsumexp(torch.stack([lp + math.log(w) for lp, w in zip(logps, weights, strict=True)
                                        if w > 0]), 0)  # fmt: skip


def logit_term(s_logits, t_logp, temperature: float, divergence: str, jsd_beta: float):  # noqa: ANN001, ANN201
    """T^2 * sum over positions of D(teacher^T, student^T), full vocabulary; `t_logp` the
    teacher's log-probabilities at T (fused_logprobs)."""
    import torch

    t = float(temperature)
    s = (s_logits.float() / t).log_softmax(-1)
    p = t_logp
    if divergence == "forward":
        d = (p.exp() * (p - s)).sum(-1)
    elif divergence == "reverse":
        d = (s.exp() * (s - p)).sum(-1)
    else:
        b = float(jsd_beta)
        m = torch.logsumexp(torch.stack([p + torch.log(torch.tensor(b)),
                                         s + torch.log(torch.tensor(1 - b))]), 0)  # fmt: skip
        d = b * (p.exp() * (p - m)).sum(-1) + (1 - b) * (s.exp() * (s - m)).sum(-1)
    return t * t * d.sum()


def hidden_term(s_hidden, t_hidden, kind: str):  # noqa: ANN001, ANN201
    """Per trained position, [n, d] each (the student's already projected): mean squared error
    per element, or mean of 1 - cosine."""
    import torch.nn.functional as F

    s, t = s_hidden.float(), t_hidden.float()
    if kind == "mse":
        return F.mse_loss(s, t)
    return (1 - F.cosine_similarity(s, t, dim=-1)).mean()


def attention_term(s_att, t_att, rows, keys):  # noqa: ANN001, ANN201
    """[b, heads, q, k] maps each; `rows` [b, q] the trained query positions, `keys` [b, k] the
    attended ones: the head-averaged maps compared entry by entry on those."""
    s, t = s_att.float().mean(1), t_att.float().mean(1)
    mask = (rows[:, :, None] & keys[:, None, :]).float()
    return (((s - t) ** 2) * mask).sum() / mask.sum().clamp(min=1)


def pooled(hidden, rows):  # noqa: ANN001, ANN201
    """Each sample's last hidden state averaged over its trained positions: [b, d]."""
    w = rows.float()[..., None]
    return (hidden.float() * w).sum(1) / w.sum(1).clamp(min=1)


def relation_term(s_pooled, t_pooled):  # noqa: ANN001, ANN201
    """RKD: distance + 2 * angle (the paper's weights) between a batch's representations."""
    import torch
    import torch.nn.functional as F

    def distances(x: Any) -> Any:
        d = torch.cdist(x, x)
        off = d[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
        return d / off.mean().clamp(min=1e-12)

    def angles(x: Any) -> Any:
        e = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=-1)  # e[j, i] = x_i - x_j
        return torch.bmm(e, e.transpose(1, 2))  # [j, i, k]: cos of the angle at x_j

    if len(s_pooled) < 2:
        return s_pooled.sum() * 0
    dist = F.smooth_l1_loss(distances(s_pooled.float()), distances(t_pooled.float()))
    if len(s_pooled) < 3:
        return dist
    ang = F.smooth_l1_loss(angles(s_pooled.float()), angles(t_pooled.float()))
    return dist + 2 * ang


# --- the pair: which teachers, which layers, checked before anything runs -----------------------


def teacher_refs(cfg: Any) -> list[tuple[str, str]]:
    """(reference, its config key) of each teacher in the loop: train.features.teacher's, or
    teacher.model. `trained` stays a name here: the train stage resolves it (resolve_trained)."""
    named = cfg.train.features.teachers
    if not named:
        return [(cfg.teacher.model, "teacher.model")]
    if len(named) == 1:
        return [(named[0], "train.features.teacher")]
    return [(ref, f"train.features.teacher[{i}]") for i, ref in enumerate(named)]


def teacher_dirs(cfg: Any) -> list[Any]:
    """The teachers' local dirs. `trained` (not yet trained when the stage is keyed) stands as
    train.student: the same vocabulary and depth, which is all check_pair reads."""
    from pipeline.config import TRAINED
    from stages.shared.models import local_model

    out = []
    for ref, key in teacher_refs(cfg):
        if ref == TRAINED:
            ref, key = cfg.train.student, "train.student"
        out.append(local_model(ref, cfg.cache_dir, key=key))
    return out


def teacher_identities(cfg: Any) -> str | list[str]:
    """For the stage's key: each teacher's weights (`trained` by name: its stage's key is an
    input of this one); one teacher as a string, as keys had it before fusion."""
    from pipeline.config import TRAINED
    from pipeline.models import model_identity

    ids = [
        TRAINED if ref == TRAINED else model_identity(d)
        for (ref, _), d in zip(teacher_refs(cfg), teacher_dirs(cfg), strict=True)
    ]
    return ids[0] if len(ids) == 1 else ids


def checked_layer_map(cfg: Any, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """train.features.layer_map (or the default one) against both depths; a ConfigError naming
    the key for a layer either model lacks."""
    from pipeline.fields import ConfigError

    given = [tuple(p) for p in cfg.train.features.layer_map]
    pairs = given or default_layer_map(student_layers, teacher_layers)
    for n, (i, j) in enumerate(pairs):
        if i >= student_layers or j >= teacher_layers:
            raise ConfigError(
                f"[{i}, {j}]: the student has {student_layers} layers and the teacher "
                f"{teacher_layers} (from 0)",
                f"train.features.layer_map[{n}]",
            )
    return pairs  # type: ignore[return-value]


def check_pair(cfg: Any) -> list[tuple[int, int]]:
    """The layer map for the student training starts from (train.student, or its cut: the
    same vocabulary, the cut's depth; the cut itself is not built here) and the first teacher
    in the loop (the hidden, attention and relation terms are the first teacher's; the logit
    term fuses them all); a UserError, in one line, for a teacher with another vocabulary or
    a map either model cannot take. Called when the train stage is keyed, before anything runs."""
    from pipeline.errors import UserError
    from stages.shared.cut import cut_layers, num_layers
    from stages.shared.models import local_model
    from stages.shared.softlabels import vocab_hash

    source = local_model(cfg.train.student, cfg.cache_dir, key="train.student")
    dirs = teacher_dirs(cfg)
    vocab = vocab_hash(source)
    for t_dir in dirs:
        if vocab_hash(t_dir) != vocab:
            raise UserError(
                f"train.objective features: the teacher {t_dir} and the student {source} have "
                "different vocabularies; the logit, hidden and attention terms compare them "
                "token by token: give teachers of the student's family (train.features.teacher)"
            )
    kept = cut_layers(cfg)
    depth = len(kept) if kept is not None else num_layers(source)
    return checked_layer_map(cfg, depth, num_layers(dirs[0]))
