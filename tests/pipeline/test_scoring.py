"""A model scoring text it did not write (pipeline/calls.py `score_request`): the offline engine
and a managed server read the token ids as given and return each position's log-probability and
its top k, which must equal transformers' log-softmax over the same ids. Tolerances: 2e-3 at
float32 (vLLM's CPU kernels against torch's, measured here at well under 1e-3); 0.08 at
bfloat16 (one bf16 ulp at |logprob| ~ 6-10 is 0.03-0.06)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ask import AskSettings, ModelSpec, ask
from pipeline.calls import Request, score_request, scored_lists
from pipeline.hardware import concrete

pytestmark = pytest.mark.slow

K = 5
TEXTS = ("Tom has 3 apples and buys 4 more .", "Step 1 : 9 - 2 = 7 . Answer : 7 .")


def _ids(model: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    return [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


def _reference(model: Path, ids: list[int], start: int, dtype: str) -> tuple[list, list]:
    """transformers: each scored position's logprob and its top-k logprobs (sorted)."""
    import torch
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model, torch_dtype=getattr(torch, dtype))
    with torch.no_grad():
        logits = lm(torch.tensor([ids])).logits[0].float()
    lp = logits.log_softmax(-1)
    own = [float(lp[p - 1, ids[p]]) for p in range(start, len(ids))]
    top = [lp[p - 1].topk(K).values.tolist() for p in range(start, len(ids))]
    return own, top


def _scores(spec: ModelSpec, reqs: list[Request], tmp: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    failed: list = []

    def on_done(c) -> None:
        assert c.prompt_logprobs is not None and c.text == ""
        done[c.id] = c.prompt_logprobs

    ask(spec, reqs, on_done, failed.append, AskSettings(concurrency=4, retries=2), tmp)
    assert not failed
    return done


def _check(got: dict, model: Path, ids: list[int], start: int, dtype: str, tol: float) -> None:
    own, top = _reference(model, ids, start, dtype)
    assert got["ids"] == ids[start:]  # the given tokens, never re-tokenized
    assert max(abs(a - b) for a, b in zip(got["logprobs"], own, strict=True)) < tol
    for row, want in zip(got["top_logprobs"], top, strict=True):
        assert len(row) == K
        assert max(abs(a - b) for a, b in zip(sorted(row, reverse=True), want, strict=True)) < tol


def test_offline_engine_scores_equal_transformers(tiny_teacher: Path, tmp_path: Path) -> None:
    seqs = _ids(tiny_teacher)
    reqs = [score_request(f"s{i}", ids, 2, K) for i, ids in enumerate(seqs)]
    spec = ModelSpec("teacher", tiny_teacher, engine="offline", dtype="float32", max_logprobs=K)
    got = _scores(spec, reqs, tmp_path)
    for i, ids in enumerate(seqs):
        _check(got[f"s{i}"], tiny_teacher, ids, 2, "float32", 2e-3)


def test_a_server_scores_the_ids_it_is_given(
    keyed_server: dict, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(keyed_server["env"], keyed_server["key"])
    seqs = _ids(tiny_model)
    reqs = [score_request(f"s{i}", ids, 1, K) for i, ids in enumerate(seqs)]
    spec = ModelSpec(
        "teacher", urls=(keyed_server["url"],), served_name="tiny", api_key_env=keyed_server["env"]
    )
    got = _scores(spec, reqs, tmp_path)
    dtype = concrete("auto")  # the keyed server runs this machine's choice
    for i, ids in enumerate(seqs):
        _check(got[f"s{i}"], tiny_model, ids, 1, dtype, 0.08 if dtype == "bfloat16" else 2e-3)


def test_a_position_without_its_own_token_is_a_malformed_answer() -> None:
    with pytest.raises(ValueError, match="position 2"):
        scored_lists([5, 6, 7], [None, {6: (-1.0, 1)}, {8: (-0.5, 1)}], 1, 1)
    with pytest.raises(ValueError, match="score_from"):
        score_request("x", [1, 2], 2, 1)
