"""objective: features, the teacher in the training loop, on tiny models: each term equals its
definition computed by hand on one real batch, every term but cross-entropy is zero for a
student identical to its teacher, the projections are trained with the student and never
saved with it, and a teacher with another vocabulary or a layer map a model cannot take is
one line before training starts."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from test_train import filter_dir, make_cfg  # noqa: F401 - the fixture and the config

from stages.train import trainer as train_loop
from stages.train.preflight import preflight

ALL = (
    "train.objective=features",
    "train.kd.alpha=0.5",
    "train.kd.temperature=2.0",
    "train.features.hidden=1.0",
    "train.features.attention=1.0",
    "train.features.relation=1.0",
    "train.bf16=false",
    "train.batch_size=4",
)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher twice as wide and deep as the tiny student, with its vocabulary."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("wide") / "t", layers=4, hidden=256, seed=5)


def _trainer(student: Path, teacher: Path | str, tmp: Path, kept_dir: Path, *extra: str):
    cfg = make_cfg(student, tmp, *ALL, f"train.features.teacher={teacher}", *extra)
    tok, prepared = preflight(student, kept_dir / "kept.jsonl", cfg.train, tmp)
    trainer, _, _ = train_loop._make_trainer(cfg, student, tok, prepared.rows, tmp / "o")
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    return trainer, batch


def test_a_student_identical_to_its_teacher_scores_zero(tiny_model, tmp_path, filter_dir) -> None:  # noqa: F811
    trainer, batch = _trainer(tiny_model, tiny_model, tmp_path, filter_dir)
    labels = batch["labels"][..., 1:]
    terms, ce, soft, _ = trainer.terms(trainer.model, dict(batch), labels)
    assert float(ce.detach()) > 0 and abs(float(soft.detach())) < 1e-4
    assert set(terms) == {"hidden", "attention", "relation"}
    for name, v in terms.items():
        assert abs(float(v.detach())) < 1e-5, name
    assert len(trainer.proj) == 0  # one width: no projection


def _smooth_l1(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_each_term_equals_its_definition_by_hand(tiny_model, wide, tmp_path, filter_dir) -> None:  # noqa: F811
    trainer, batch = _trainer(tiny_model, wide, tmp_path, filter_dir)
    labels = batch["labels"][..., 1:]
    terms, ce, soft, scored = trainer.terms(trainer.model, dict(batch), labels)
    assert trainer.layer_map == [(0, 1), (1, 3)]  # round((i+1) * 4/2) - 1
    args = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        s = trainer.model(**args, output_hidden_states=True, output_attentions=True)
        t = trainer.teacher(**args, output_hidden_states=True, output_attentions=True)
    span = labels.shape[1]
    pos = [(b, p) for b in range(labels.shape[0]) for p in range(span) if labels[b, p] != -100]
    # logits: T^2 * sum over positions of sum_v p_v (log p_v - log q_v), from the full logits
    want = 0.0
    for b, p in pos:
        lp = torch.log_softmax(t.logits[b, p] / 2.0, -1)
        lq = torch.log_softmax(s.logits[b, p] / 2.0, -1)
        want += float((lp.exp() * (lp - lq)).sum()) * 4.0
    assert abs(float(soft.detach()) - want) < 1e-3 * max(1.0, want)
    # hidden states: per mapped pair, the mean over positions and elements of (W h_s + b - h_t)^2
    pairs = []
    for i, j in trainer.layer_map:
        lin = trainer.proj[f"{i}_{j}"]
        diffs = [
            s.hidden_states[i + 1][b, p] @ lin.weight.T + lin.bias - t.hidden_states[j + 1][b, p]
            for b, p in pos
        ]
        pairs.append(float(torch.stack(diffs).pow(2).mean().detach()))
    assert abs(float(terms["hidden"].detach()) - sum(pairs) / len(pairs)) < 1e-5
    # attention: head-averaged maps, trained query rows over attended keys
    mask = batch["attention_mask"]
    per_pair = []
    for i, j in trainer.layer_map:
        sa, ta = s.attentions[i].mean(1), t.attentions[j].mean(1)
        sq = [
            float((sa[b, p, k] - ta[b, p, k]) ** 2)
            for b, p in pos
            for k in range(mask.shape[1])
            if mask[b, k]
        ]
        per_pair.append(sum(sq) / len(sq))
    assert abs(float(terms["attention"].detach()) - sum(per_pair) / len(per_pair)) < 1e-6

    # relations: RKD distance + 2 * angle over the samples' mean last hidden states
    def rep(h: torch.Tensor) -> list[torch.Tensor]:
        return [
            torch.stack([h[b, p] for bb, p in pos if bb == b]).mean(0)
            for b in range(labels.shape[0])
        ]

    xs, ys = rep(s.hidden_states[-1]), rep(t.hidden_states[-1])
    n = len(xs)

    def dists(v: list[torch.Tensor]) -> dict:
        d = {(a, c): float((v[a] - v[c]).norm()) for a in range(n) for c in range(n)}
        mu = sum(x for (a, c), x in d.items() if a != c) / (n * (n - 1))
        return {k: x / mu for k, x in d.items()}

    ds, dt = dists(xs), dists(ys)
    dist = sum(_smooth_l1(ds[k], dt[k]) for k in ds) / len(ds)

    def cosines(v: list[torch.Tensor]) -> dict:
        out = {}
        for a, c, e in itertools.product(range(n), repeat=3):
            u, w = v[a] - v[c], v[e] - v[c]
            nu, nw = u.norm(), w.norm()
            out[(c, a, e)] = float((u / nu) @ (w / nw)) if nu > 0 and nw > 0 else 0.0
        return out

    cs, ct = cosines(xs), cosines(ys)
    angle = sum(_smooth_l1(cs[k], ct[k]) for k in cs) / len(cs)
    assert abs(float(terms["relation"].detach()) - (dist + 2 * angle)) < 1e-4


def test_one_teacher_fused_is_itself_and_two_are_a_mixture() -> None:
    from stages.train.losses.features import fused_logprobs

    torch.manual_seed(0)
    a, b = torch.randn(5, 11), torch.randn(5, 11)
    one = fused_logprobs([a], [1.0], 2.0)
    assert torch.allclose(one, (a / 2.0).log_softmax(-1))
    assert torch.allclose(fused_logprobs([a, a], [0.3, 0.7], 2.0), one, atol=1e-6)
    mix = 0.25 * (a / 2.0).softmax(-1) + 0.75 * (b / 2.0).softmax(-1)
    assert torch.allclose(fused_logprobs([a, b], [0.25, 0.75], 2.0), mix.log(), atol=1e-6)


def test_two_teachers_fuse_in_the_logit_term(tiny_model, wide, tmp_path, filter_dir) -> None:  # noqa: F811
    """The logit term against a 1:3 mixture of two teachers' softened distributions; the layer
    map, projections and feature terms stay the first teacher's."""
    trainer, batch = _trainer(
        tiny_model, f"[{wide},{tiny_model}]", tmp_path, filter_dir, "train.features.weights=[1,3]"
    )
    assert len(trainer.others) == 1 and trainer.fusion == [0.25, 0.75]
    assert trainer.layer_map == [(0, 1), (1, 3)] and len(trainer.proj) == 2  # the wide one's
    labels = batch["labels"][..., 1:]
    _, _, soft, scored = trainer.terms(trainer.model, dict(batch), labels)
    args = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        s = trainer.model(**args).logits[:, : labels.shape[1]][scored] / 2.0
        t1 = trainer.teacher(**args).logits[:, : labels.shape[1]][scored] / 2.0
        t2 = trainer.others[0](**args).logits[:, : labels.shape[1]][scored] / 2.0
    p = 0.25 * t1.softmax(-1) + 0.75 * t2.softmax(-1)
    want = 4.0 * float((p * (p.log() - s.log_softmax(-1))).sum())
    assert abs(float(soft.detach()) - want) < 1e-3 * max(1.0, want)


def test_the_projections_resume_from_a_checkpoint(tiny_model, wide, tmp_path, filter_dir) -> None:  # noqa: F811
    from stages.train.losses.trainers import PROJ_FILE

    extra = (
        "train.max_steps=1",
        "train.save_steps=1",
        "train.features.attention=0",
        "train.features.relation=0",
    )
    trainer, _ = _trainer(tiny_model, wide, tmp_path / "a", filter_dir, *extra)
    trainer.train()
    ckpt = Path(trainer.args.output_dir) / "checkpoint-1"
    assert (ckpt / PROJ_FILE).is_file()
    trained = {k: v.detach().clone() for k, v in trainer.proj.state_dict().items()}
    fresh, _ = _trainer(tiny_model, wide, tmp_path / "b", filter_dir, *extra)
    for p in fresh.proj.parameters():
        torch.nn.init.zeros_(p)
    fresh._load_from_checkpoint(str(ckpt))
    assert all(torch.equal(fresh.proj.state_dict()[k], v) for k, v in trained.items())


def test_a_cut_of_the_trained_student_learns_from_it(wide, tmp_path, filter_dir) -> None:  # noqa: F811
    """train.cut.source and train.features.teacher `trained`: the cut is taken from the full-size
    student the stage gets as its input, bit for bit, and that student is the teacher."""
    from safetensors.torch import load_file
    from tiny_model import build_tiny_model

    from pipeline.stage import RunContext
    from stages import train
    from stages.train.trained import resolve_trained

    full = tmp_path / "full"
    trained = build_tiny_model(full / "model", layers=4, hidden=256, seed=9)  # "trained" wide
    cfg = make_cfg(
        wide,
        tmp_path,
        *ALL,
        "train.features.teacher=trained",
        "train.cut.keep_every=2",
        "train.cut.source=trained",
        "train.max_steps=1",
    )
    resolved = resolve_trained(cfg, trained)
    assert resolved.train.features.teacher == str(trained) and not resolved.train.cut.active
    cut = Path(resolved.train.student)
    assert json.loads((cut / "cut.json").read_text())["source"] == str(trained)
    src, got = load_file(trained / "model.safetensors"), load_file(cut / "model.safetensors")
    for new, old in ((0, 0), (1, 2)):
        for k, v in got.items():
            if k.startswith(f"model.layers.{new}."):
                assert torch.equal(v, src[k.replace(f"layers.{new}.", f"layers.{old}.")]), k
    stats = train.run(cfg, RunContext.of({"filter": filter_dir, "full": full}, tmp_path / "out"))
    assert stats["cut_source"] == "trained" and stats["cut_layers"] == [0, 2]
    assert stats["steps"] == 1


def test_the_projections_train_with_the_student(tiny_model, wide, tmp_path, filter_dir) -> None:  # noqa: F811
    trainer, _ = _trainer(
        tiny_model,
        wide,
        tmp_path,
        filter_dir,
        "train.max_steps=2",
        "train.features.attention=0",
        "train.features.relation=0",
    )
    before = {k: v.detach().clone() for k, v in trainer.proj.state_dict().items()}
    trainer.train()
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in trainer.proj.parameters())
    after = trainer.proj.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_the_saved_student_has_no_projection_and_loads_in_vllm(
    tiny_model,
    wide,
    tmp_path,
    filter_dir,  # noqa: F811
) -> None:
    from pipeline.stage import RunContext
    from stages import train

    cfg = make_cfg(
        tiny_model,
        tmp_path,
        *ALL,
        f"train.features.teacher={wide}",
        "train.max_steps=2",
        "train.save_steps=1",
    )
    out = tmp_path / "out"
    stats = train.run(cfg, RunContext.of({"filter": filter_dir}, out))
    assert stats["steps"] == 2
    from safetensors.torch import load_file

    keys = set(load_file(out / "model" / "model.safetensors"))
    assert keys == set(load_file(tiny_model / "model.safetensors"))  # the student's, no more
    assert not list((out / "model").glob("feature_projections*"))
    logged = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("loss_hidden" in r and "loss_relation" in r for r in logged)
    r = run_cli(
        "generate",
        f"runs_dir={tmp_path / 'runs'}",
        f"cache_dir={tmp_path / 'c'}",
        f"teacher.model={out / 'model'}",
        "teacher.serve.engine=offline",
        "task.max_train=2",
        "generate.n=1",
        "generate.sampling.max_tokens=8",
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_another_vocabulary_or_a_bad_map_is_one_line(tiny_model, tmp_path) -> None:
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "other", vocab=400, seed=2)
    base = [
        f"runs_dir={tmp_path}",
        f"cache_dir={tmp_path / 'c'}",
        f"train.student={tiny_model}",
        f"teacher.model={tiny_model}",
        "train.objective=features",
    ]
    r = run_cli("train", *base, f"train.features.teacher={other}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "different vocabularies" in r.stderr
    r = run_cli("train", *base, "train.features.layer_map=[[0,9]]", "train.features.hidden=1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "train.features.layer_map[0]: [0, 9]: the student has 2 layers" in r.stderr
    assert not (tmp_path / "default").exists()  # refused before anything ran
