"""Every train objective's keys, pinned as the DEFAULT_KEYS of tests/pipeline/test_config.py pin
the default run's: a refactor of how an objective declares its key parts, extra inputs, locks
and files must keep every key (a moved key orphans every cached run of that objective).
Computed on the code before the objectives became a registry (issue 44)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config, shipped_config
from pipeline.runner import plan, unique

GENERATE = "4e4b5d3027c0acb0272b3d5c687987208ccc808eb66591fcb412f65f15d4cdff"
FILTER = "4826d166dd376fcc577b58d83bee1618ff7354a0385ef6eceb3606a9e081305b"
SFT_TRAIN = "c744cb6b914d874569f2ad5bb02537544e35589d504e51c052c86728b7d1e5ec"
KD_GENERATE = "1fe9ff871096d868d0b834a3ef62044d141da7141fd2f5e7bac1759073f4e4e4"
KD_FILTER = "685dccc5e0cff1142b08de97bf21d296e2a7a002c40ad0c939ed46a71f35c3d7"

OBJECTIVE_KEYS = {
    "kd": (
        ["generate.logprobs=20", "train.objective=kd"],
        {
            "generate": KD_GENERATE,
            "filter": KD_FILTER,
            "train": "1ce1446dee61e0d410267f60413fa1df2498ab0c7d55d18ed6772a01b3f4acdc",
            "eval": "53fd0f4c46b599687a32dd4ee628bf867a15db05c7dc32117df62d1bed31eb5c",
        },
    ),
    "kd_jsd_bucket": (
        [
            "generate.logprobs=20",
            "train.objective=kd",
            "train.kd.divergence=jsd",
            "train.kd.tail=bucket",
        ],
        {
            "generate": KD_GENERATE,
            "filter": KD_FILTER,
            "train": "efd7056a8ba998b649523aa2b0b4fe507223b8b42817ff92a45a01b9b0673a9c",
            "eval": "5b87a8666bfa6413bc8baa3f49c43cb629183293bb0ebba53e2154c6604084a3",
        },
    ),
    "onpolicy": (
        ["train.objective=onpolicy"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "sft/train": SFT_TRAIN,
            "train": "40f9e3eebb2bccb4b7790e064b3cf0f1fc50cf37d9e101eb58304057b66bb561",
            "eval": "960d6abe6551e542d796039df89edea2339528bd052a67f08e921ffc71060279",
        },
    ),
    "onpolicy_base_topk": (
        ["train.objective=onpolicy", "train.onpolicy.start=base", "train.onpolicy.loss=topk"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "train": "09c218c10af84462d7fe4f99889377682ef1073bd14e6f5bc780978c3b82c9f5",
            "eval": "0e5f3ae9e511dfbdd18ec1dc3e7b4924f7dc79d423b1ede37a9f6c63196c6c34",
        },
    ),
    "features": (
        ["train.objective=features"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "train": "762e38192383a8bedc4bcc065714f7433526d697df6e643ae85244d18dc6c444",
            "eval": "bd92e60ad5fd807cfd1512df32d768552130409ddab1486bee0e10bff15aae9a",
        },
    ),
    "features_trained": (
        ["train.objective=features", "train.features.teacher=trained"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "full/train": SFT_TRAIN,
            "train": "b5ed0d3f64785857e2d568030c9864213f9c942c1f95667ccf84a4120d6b44ba",
            "eval": "33c12fa42c53d0e924e47a9eba22d16dd4f4dd2c4f7f0a55ae65cae9f0319425",
        },
    ),
    "cut": (
        ["train.cut.layers=[0,1,2]"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "train": "3a99da90264e17773b7e40c1fae3182e4a49e8c2150e34e28a9122ebc3f96263",
            "eval": "03a269df91902f5cfe736e13f0337dff470860b1a057e56567863e36811568e6",
        },
    ),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVE_KEYS))
def test_every_objective_keeps_its_keys(name: str) -> None:
    overrides, keys = OBJECTIVE_KEYS[name]
    plans = plan(load_config(shipped_config("default"), overrides), "eval")
    assert {p.name: p.key for p in unique(plans)} == keys


def test_onpolicy_keeps_its_rounds_chain_lock_and_start() -> None:
    """The rounds' chain key (rounds cached under it) and their place beside the train keys."""
    from stages import train
    from stages.train.objectives.onpolicy.rounds import chain_key, round_dir

    cfg = load_config(shipped_config("default"), ["train.objective=onpolicy"])
    chain = chain_key(cfg, {"filter": "f" * 64, "sft": "s" * 64}, "teacher-identity")
    assert chain == "4b96e8a0895a234e2d34e619db709c322c48c82861210443860ce0e24de985a6"
    out = Path("/r/train/abc")
    assert round_dir(out, chain, 3) == Path("/r/train/onpolicy/4b96e8a0895a234e/round-003")
    assert train.locks(cfg, out) == [Path("/r/train/onpolicy/.rounds.lock")]
    sft = [(x.label, x.stage, x.cfg.train.objective) for x in train.extra_inputs(cfg)]
    assert sft == [("sft", "train", "sft")]
    plain = load_config(shipped_config("default"))
    assert train.locks(plain, out) == [] and train.extra_inputs(plain) == []
