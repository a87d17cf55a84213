"""Every train objective's keys, pinned as the DEFAULT_KEYS of tests/pipeline/test_config.py pin
the default run's: a refactor of how an objective declares its key parts, extra inputs, locks
and files must keep every key (a moved key orphans every cached run of that objective).
Computed on the code before the objectives became a registry (issue 44); moved only by the
default decontamination that sets the task's template aside (issue 47), and for onpolicy by
scoring a student's end of turn as the teacher's own (issue 50: rounds cached across
vocabularies before it taught the student never to stop), and when loss topk became its default
(issue 50: the default's key now holds the rounds' settings, so a stage trained under the old
default, reverse_kl, is not taken for one of the new; one named reverse_kl trains anew)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config, shipped_config
from pipeline.runner import plan, unique

GENERATE = "4e4b5d3027c0acb0272b3d5c687987208ccc808eb66591fcb412f65f15d4cdff"
FILTER = "d85d4a7c67222d12b4151782f0c98f36f699def996eb8ab132673bea1bb41715"
SFT_TRAIN = "b88dbc93af6b22d9a61067ef3003602bd6e48436f422d43fe880f9bf67448368"
KD_GENERATE = "1fe9ff871096d868d0b834a3ef62044d141da7141fd2f5e7bac1759073f4e4e4"
KD_FILTER = "faed47512db8560af635f391e5fd4dc2aef0d60c549a3da18b596aaa0df28376"

OBJECTIVE_KEYS = {
    "kd": (
        ["generate.logprobs=20", "train.objective=kd"],
        {
            "generate": KD_GENERATE,
            "filter": KD_FILTER,
            "train": "0dcd1df50a09cb09be7372038980dd9172c100b2f6e9a3b2fbd6ef50ab16160d",
            "eval": "683aa9f26d6a3ca28400b05079bdbee6b6af11b7e2593fce1b1d4b14b3471ddc",
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
            "train": "f4ef10c344310759fd78da7d60e7ba1f8290d19440f3b0954dd8a436d252a0e5",
            "eval": "620e726b3b53993cb3213226699b67723b20de324b74a63a8dbf41658e847e17",
        },
    ),
    "onpolicy": (
        ["train.objective=onpolicy"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "sft/train": SFT_TRAIN,
            # loss topk's (the same as train.onpolicy.loss=topk's before it was the default)
            "train": "85a7f43a748bfa3000b7f7e521b86b66163760511f3b94b41978adb84ef260b5",
            "eval": "14e658fe4835776bb7fec30fee839e04f412169c0db356c384a0095cda626a82",
        },
    ),
    "onpolicy_base_topk": (
        ["train.objective=onpolicy", "train.onpolicy.start=base", "train.onpolicy.loss=topk"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "train": "52db10ac6185d5ed937f5a90c350db4b81a31bd9ad2729f53585d80f269ef935",
            "eval": "eaab5e6205bc7943b2cbba95d1fbeeee869ecc51484f3f714c52582af49336a2",
        },
    ),
    "features": (
        ["train.objective=features"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "train": "c81578415821d7c1b6a40744a8f9b55019852edd3d144f54dde7a39292c2ffb6",
            "eval": "ac883f0eb65c781128ed36103d3da48b0e4c63727b0eaba19b313abf4adf4896",
        },
    ),
    "features_trained": (
        ["train.objective=features", "train.features.teacher=trained"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "full/train": SFT_TRAIN,
            "train": "d9e16f7b3cd8a4fa5da6db45d2bf712f3644060bdce6cb03dbcd7e4947f7a8f4",
            "eval": "b3d0dfb6ea8580221c0137bd5b1f204ce4d475a288612b07e67c8a977f603bc6",
        },
    ),
    "cut": (
        ["train.cut.layers=[0,1,2]"],
        {
            "generate": GENERATE,
            "filter": FILTER,
            "train": "a214b1c0b026654b6e645cfb5f051e00fae2119422fab393ca639d42aed83e6a",
            "eval": "9924ff36268d669bc42a065efd997a594a2606eae026196b695649d487af806b",
        },
    ),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVE_KEYS))
def test_every_objective_keeps_its_keys(name: str) -> None:
    overrides, keys = OBJECTIVE_KEYS[name]
    plans = plan(load_config(shipped_config("default"), overrides), "eval")
    assert {p.name: p.key for p in unique(plans)} == keys


def test_onpolicy_keeps_its_rounds_chain_lock_and_start() -> None:
    """The rounds' chain key (rounds cached under it; loss topk's, as when it was named before
    it was the default) and their place beside the train keys."""
    from stages import train
    from stages.train.objectives.onpolicy.rounds import chain_key, round_dir

    cfg = load_config(shipped_config("default"), ["train.objective=onpolicy"])
    chain = chain_key(cfg, {"filter": "f" * 64, "sft": "s" * 64}, "teacher-identity")
    assert chain == "bb300b9bf123d85778bba822db510687197f0b1b3bfa8d5c91b0ea01eaab0e7d"
    out = Path("/r/train/abc")
    assert round_dir(out, chain, 3) == Path("/r/train/onpolicy/bb300b9bf123d857/round-003")
    assert train.locks(cfg, out) == [Path("/r/train/onpolicy/.rounds.lock")]
    sft = [(x.label, x.stage, x.cfg.train.objective) for x in train.extra_inputs(cfg)]
    assert sft == [("sft", "train", "sft")]
    plain = load_config(shipped_config("default"))
    assert train.locks(plain, out) == [] and train.extra_inputs(plain) == []
