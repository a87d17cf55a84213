"""pipeline/client.py on its own, against a real vLLM server (the session's keyed one): a call
for n samples comes back as n completions under their own ids, a refused key is one failure with
a hint (never retried), served names are read from the server, and malformed answers are
recognised as such."""

from __future__ import annotations

import pytest

from pipeline import client
from pipeline.calls import Request, ServeError

pytestmark = pytest.mark.slow

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 6, "seed": 3}


def _send(server: dict, key: str, reqs: list[Request]):
    done, failed = [], []
    bal = client.send(
        [server["url"]],
        "tiny",
        reqs,
        done.append,
        failed.append,
        concurrency=4,
        retries=2,
        backoff_s=0.01,
        timeout_s=60,
        api_key=key,
    )
    return done, failed, bal


def test_n_samples_come_back_under_their_ids(keyed_server):
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    reqs = [Request(["a0", "a1", "a2"], msgs, SAMPLING), Request(["b0"], msgs, SAMPLING)]
    done, failed, bal = _send(keyed_server, keyed_server["key"], reqs)
    assert failed == [] and sorted(c.id for c in done) == ["a0", "a1", "a2", "b0"]
    assert all(0 < c.usage["completion_tokens"] <= 6 for c in done)
    assert sum(e["served"] for e in bal.stats().values()) == 4  # samples, counted per endpoint


def test_a_refused_key_fails_once_with_a_hint(keyed_server):
    msgs = [{"role": "user", "content": "hi"}]
    done, failed, _ = _send(keyed_server, "wrong-key", [Request(["x"], msgs, SAMPLING)])
    assert done == [] and len(failed) == 1
    assert failed[0].attempts == 1 and "api_key_env" in failed[0].reason


def test_served_name_reads_the_server(keyed_server):
    assert client.served_name([keyed_server["url"]], keyed_server["key"]) == "tiny"
    with pytest.raises(ServeError, match="needs an API key") as e:
        client.served_name([keyed_server["url"]], "")
    assert keyed_server["key"] not in str(e.value)


def test_malformed_answers_are_retryable_errors():
    with pytest.raises(ValueError, match="logprobs of 2 tokens"):
        client.token_logprobs({"logprobs": {"content": [{}]}}, 2)
    with pytest.raises(ValueError, match="not token_id:N"):
        client.token_logprobs({"logprobs": {"content": [{"token": "hi", "logprob": 0.0}]}}, 1)
    assert client.is_retryable(client.HTTPStatusError(429, ""))
    assert client.is_retryable(ValueError("bad body"))
    assert not client.is_retryable(client.HTTPStatusError(400, "bad request"))


def test_speculative_counters_are_read_from_vllm_metrics_text() -> None:
    """vLLM's Prometheus lines (as its /metrics prints them), summed over engines; other
    metrics and comments are skipped."""
    from pipeline.client import parse_spec_decode

    text = """# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="t"} 24.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="t"} 6.0
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="t"} 90.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="t"} 61.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="t",position="0"} 28.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="t",position="1"} 20.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="t",position="2"} 13.0
vllm:num_requests_running{engine="0",model_name="t"} 0.0
"""
    assert parse_spec_decode(text) == {
        "num_drafts": 30,
        "num_draft_tokens": 90,
        "num_accepted_tokens": 61,
        "accepted_per_position": {0: 28, 1: 20, 2: 13},
    }
    assert parse_spec_decode("")["num_drafts"] == 0
