"""The async client for OpenAI-compatible endpoints (vLLM servers, hosted APIs).

`send` posts every call, keeps `concurrency` samples in flight, retries transient faults with
jittered exponential backoff, and hands each completion or final failure to a callback as soon
as it is known, so the caller can put it on disk at once. Where calls go, and when an endpoint
leaves the rotation, is `pipeline.balance`'s decision. An API key travels only in the
`Authorization` header; every message that could quote a URL is redacted.
"""

# Long: the one place that speaks HTTP to a model server: the async path (post, score, retry,
# fail over, rate-limit) and the few plain questions asked of the same servers (the names they
# serve, their speculative-decoding counters).

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx

from pipeline.balance import Balancer, Endpoint
from pipeline.calls import Completion, Failure, Request, ServeError, scored_lists
from pipeline.errors import EndpointStalled
from pipeline.ratelimit import (
    EndpointLimiter,
    PastDeadline,
    expected_tokens,
    retry_after_seconds,
)
from pipeline.reasoning import field_reasoning
from pipeline.redact import redact_text, redact_url

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_THROTTLED = 100  # Retry-After answers one call may wait out before it fails


class HTTPStatusError(RuntimeError):
    """A non-200 answer from an endpoint."""

    def __init__(self, status: int, text: str, retry_after: float | None = None):
        hint = ""
        if status in (401, 403):
            hint = " (the endpoint wants an API key: name its variable in teacher.api_key_env)"
        super().__init__(f"HTTP {status}: {text[:200]}{hint}")
        self.status = status
        # seconds the server asked for (429/503 with Retry-After); None without
        self.retry_after = retry_after if status in (429, 503) else None


def _status_error(r: aiohttp.ClientResponse, raw: bytes) -> HTTPStatusError:
    wait = retry_after_seconds(r.headers.get("Retry-After"))
    return HTTPStatusError(r.status, raw.decode(errors="replace"), wait)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, HTTPStatusError):
        return exc.status in RETRYABLE_STATUS
    # Connection refused/reset/dropped, timeouts, truncated or malformed bodies.
    return isinstance(exc, (aiohttp.ClientError, TimeoutError, KeyError, ValueError))


async def _post(
    client: aiohttp.ClientSession, ep: Endpoint, model: str, req: Request, timeout_s: float
) -> list[Completion]:
    """One chat call; the session carries the Authorization header when a key is set."""
    if req.prompt_ids is not None:
        return [await _post_score(client, ep, model, req, timeout_s)]
    body: dict[str, Any] = {"model": model, "messages": req.messages, "n": req.n, **req.sampling}
    k = body.pop("logprobs", 0)
    if req.n > 1 or k:
        body["return_token_ids"] = True  # vLLM: per-sample token counts (usage sums them)
    if k:  # soft labels: top-k per token, named by id ("token_id:N") so no re-tokenizing
        body |= {"logprobs": True, "top_logprobs": k, "return_tokens_as_token_ids": True}
    # As httpx's timeout did: connecting, and each wait for response bytes, get timeout_s.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    async with client.post(f"{ep.url}/chat/completions", json=body, timeout=timeout) as r:
        raw = await r.read()
    if r.status != 200:
        raise _status_error(r, raw)
    data = json.loads(raw)
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if len(choices) != req.n:
        raise ValueError(f"asked for {req.n} samples, got {len(choices)}")
    usage = data.get("usage") or {}
    total = int(usage.get("completion_tokens", 0))
    out = []
    for i, choice in enumerate(choices):
        if "token_ids" in choice and choice["token_ids"] is not None:
            tokens = len(choice["token_ids"])
        else:  # a server without per-choice ids: an even share of the summed usage
            tokens = total // req.n + (i < total % req.n)
        message = choice["message"]
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"message content is {type(content).__name__}, not text")
        reasoning, field_name = field_reasoning(message)
        counts = {"prompt_tokens": int(usage.get("prompt_tokens", 0)), "completion_tokens": tokens}
        # The server counts a trace's tokens per call; per sample only when the call has one.
        details = usage.get("completion_tokens_details") or {}
        if req.n == 1 and isinstance(details.get("reasoning_tokens"), int):
            counts["reasoning_tokens"] = details["reasoning_tokens"]
        out.append(
            Completion(
                id=req.ids[i],
                text=content or "",
                finish_reason=choice.get("finish_reason") or "unknown",
                usage=counts,
                endpoint=ep.label,
                reasoning=reasoning,
                reasoning_field=field_name,
                token_logprobs=token_logprobs(choice, tokens) if k else None,
            )
        )
    return out


async def _post_score(
    client: aiohttp.ClientSession, ep: Endpoint, model: str, req: Request, timeout_s: float
) -> Completion:
    """One scoring call: the completions API reads token ids as they are, and vLLM's
    `prompt_logprobs` gives each position's logprob with its top k (keys are token ids)."""
    sp = req.sampling  # score_request's: one greedy token, the prompt's logprobs
    start, k = sp["score_from"], sp["prompt_logprobs"]
    body = {
        "model": model,
        "prompt": req.prompt_ids,
        "max_tokens": sp["max_tokens"],
        "temperature": sp["temperature"],
        "prompt_logprobs": k,
    }
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    async with client.post(f"{ep.url}/completions", json=body, timeout=timeout) as r:
        raw = await r.read()
    if r.status != 200:
        raise _status_error(r, raw)
    choice = json.loads(raw)["choices"][0]
    got = choice.get("prompt_logprobs")
    if not isinstance(got, list):
        raise ValueError("no prompt_logprobs in the answer; is this a vLLM server?")
    per_position = [
        None if d is None else {int(i): (float(v["logprob"]), int(v["rank"])) for i, v in d.items()}
        for d in got
    ]
    ids = req.prompt_ids or []
    lists = scored_lists(ids, per_position, start, k)
    usage = {"prompt_tokens": len(ids), "scored_tokens": len(lists["ids"])}
    return Completion(req.id, "", "scored", usage, ep.label, prompt_logprobs=lists)


def _token_id(entry: dict[str, Any]) -> int:
    token = entry["token"]
    if not (isinstance(token, str) and token.startswith("token_id:")):
        raise ValueError(f"logprobs name tokens as {token!r}, not token_id:N; is this vLLM?")
    return int(token[9:])


def token_logprobs(choice: dict[str, Any], tokens: int) -> dict[str, list]:
    """A choice's logprobs (OpenAI form, tokens named by id) as the lists a store keeps; a
    server that sent none, or not one per token, is a malformed answer (retried)."""
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list) or len(content) != tokens:
        raise ValueError(f"asked for logprobs of {tokens} tokens, got {type(content).__name__}")
    out: dict[str, list] = {"ids": [], "logprobs": [], "top_ids": [], "top_logprobs": []}
    for entry in content:
        out["ids"].append(_token_id(entry))
        out["logprobs"].append(float(entry["logprob"]))
        top = entry.get("top_logprobs") or []
        out["top_ids"].append([_token_id(t) for t in top])
        out["top_logprobs"].append([float(t["logprob"]) for t in top])
    return out


def _stalled(
    who: str, ep: Endpoint | None, wait_s: float | None, max_wait_s: float, blocked: bool
) -> EndpointStalled:
    """The one line a stage stops with when an endpoint would keep a call waiting too long."""
    where = f"{who} endpoint {ep.label if ep else '?'}"
    if wait_s is None:
        what = f"{where} did not answer a call (each try timed out)"
    else:
        why = "its Retry-After" if blocked else "the client's rate limits"
        what = f"{where} would keep a call waiting {_span(wait_s)} ({why})"
    return EndpointStalled(
        f"{what}, past serve.max_wait_s={max_wait_s:g}; everything answered is kept: rerun "
        "when the endpoint takes requests again (or raise max_wait_s)"
    )


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ({seconds:.0f} s)"
    return f"{seconds / 3600:.1f} h ({seconds:.0f} s)"


async def _attempts(
    client: aiohttp.ClientSession,
    bal: Balancer,
    model: str,
    req: Request,
    on_done: Callable[[Completion], None],
    on_fail: Callable[[Failure], None],
    *,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    max_wait_s: float,
    api_key: str,
    who: str,
    limiters: dict[str, EndpointLimiter],
) -> None:
    """One call, retried on transient faults on another endpoint when there is one. Each try
    first waits for its endpoint's limits; a 429 or 503 with Retry-After blocks that endpoint
    for as long as it asks and does not use up a retry (up to MAX_THROTTLED of them). The call
    gets an answer within `max_wait_s` or stops the stage (EndpointStalled, exit 3): a wait
    that would end past it, a try that runs into it, or tries that all timed out."""
    last_err, avoid, attempt, throttled, timeouts = "", None, 0, 0, 0
    past: set[str] = set()  # endpoints that cannot take this call before its deadline
    cost = expected_tokens(req.messages, req.prompt_ids, req.sampling, req.n)
    deadline = time.monotonic() + max_wait_s
    while attempt < retries:
        ep = bal.pick(avoid)
        if ep is None:
            break
        try:
            await limiters[ep.url].acquire(cost, deadline)
        except PastDeadline as e:
            past.add(ep.url)
            if all(x.url in past for x in bal.endpoints if x.alive):
                raise _stalled(who, ep, e.wait_s, max_wait_s, e.blocked) from None
            avoid = ep  # another endpoint may answer in time
            continue
        bal.started(ep, req.n)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                comps = await _post(client, ep, model, req, timeout_s)
        except Exception as exc:  # classified below
            # Exceptions may quote the URL, credentials and all.
            last_err = redact_text(f"{ep.label}: {type(exc).__name__}: {exc}", (api_key,))[:300]
            if isinstance(exc, TimeoutError):
                timeouts += 1
                if time.monotonic() >= deadline:
                    raise _stalled(who, ep, None, max_wait_s, False) from None
            wait = getattr(exc, "retry_after", None)
            if wait is not None and throttled < MAX_THROTTLED:
                throttled += 1
                bal.throttled(ep, req.n)
                limiters[ep.url].block(wait)
                if time.monotonic() + wait <= deadline:  # else the next acquire stops the call
                    print(
                        f"{who} endpoint {ep.label} answered {exc.status}: waiting {wait:.1f} s "
                        "before its next request (Retry-After)",
                        file=sys.stderr,
                    )
                avoid = ep
                continue
            attempt += 1
            retryable = is_retryable(exc)
            if bal.failed(ep, req.n, retryable=retryable):
                print(
                    f"{who} endpoint {ep.label} taken out of rotation: {last_err}",
                    file=sys.stderr,
                )
            if not retryable:
                break
            avoid = ep
            delay = backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
            await asyncio.sleep(min(delay, 30.0))
            continue
        bal.succeeded(ep, len(comps), sum(c.usage.get("completion_tokens", 0) for c in comps))
        for c in comps:
            on_done(c)
        return
    if attempt and timeouts == attempt:  # never answered: a hung server, not a bad request
        raise _stalled(who, ep or avoid, None, max_wait_s, False)
    for sid in req.ids:
        on_fail(Failure(sid, last_err or "no live endpoint", attempt + throttled))


async def _send(
    bal: Balancer,
    model: str,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    on_fail: Callable[[Failure], None],
    **knobs: Any,
) -> None:
    limit = max(1, knobs.pop("concurrency"))
    in_flight = 0  # samples, not calls: the server batches sequences
    room = asyncio.Condition()

    def fits(n: int) -> bool:
        return in_flight == 0 or in_flight + n <= limit

    async def one(client: aiohttp.ClientSession, req: Request) -> None:
        nonlocal in_flight
        try:
            await _attempts(client, bal, model, req, on_done, on_fail, **knobs)
        finally:
            async with room:
                in_flight -= req.n
                room.notify()

    # aiohttp, not httpx: httpx's async pool cost ~5 ms of client CPU per request, enough to
    # starve a CPU engine's scheduler and halve throughput (benchmarks/generate_throughput.py).
    # trust_env: proxy settings from the environment apply.
    connector = aiohttp.TCPConnector(limit=limit + 8, limit_per_host=0)
    key = knobs["api_key"]
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with aiohttp.ClientSession(connector=connector, trust_env=True, headers=headers) as cs:
        tasks = []
        try:
            # One dispatcher admits calls in order while their samples fit the limit (a call
            # larger than the limit goes alone), so one waiter is woken per finished call.
            for req in requests:
                async with room:
                    await room.wait_for(functools.partial(fits, req.n))
                    in_flight += req.n
                tasks.append(asyncio.create_task(one(cs, req)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()


def send(
    urls: list[str],
    model: str,
    requests: list[Request],
    on_done: Callable[[Completion], None],
    on_fail: Callable[[Failure], None],
    *,
    concurrency: int,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    api_key: str = "",
    who: str = "teacher",
    requests_per_minute: int = 0,
    tokens_per_minute: int = 0,
    max_wait_s: float = math.inf,
) -> Balancer:
    """Send every request to `urls`; returns the balancer, which holds the per-endpoint counts.
    `who` names the model in messages (teacher, base, student...). The per-minute limits (0 =
    none) hold for each endpoint (pipeline/ratelimit.py)."""
    eps = [Endpoint(u.rstrip("/"), redact_url(u.rstrip("/"))) for u in urls]
    bal = Balancer(eps, dead_after=max(3, retries))
    limiters = {e.url: EndpointLimiter(requests_per_minute, tokens_per_minute) for e in eps}
    knobs = {
        "retries": retries,
        "backoff_s": backoff_s,
        "timeout_s": timeout_s,
        "max_wait_s": max_wait_s,
        "who": who,
        "limiters": limiters,
    }
    asyncio.run(
        _send(
            bal,
            model,
            requests,
            on_done,
            on_fail,
            concurrency=concurrency,
            api_key=api_key,
            **knobs,
        )
    )
    return bal


def served_models(
    url: str, api_key: str = "", timeout_s: float = 5.0, who: str = "teacher"
) -> list[str]:
    """Model names an endpoint serves (GET /models), or a ServeError naming it, redacted."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{url.rstrip('/')}/models", timeout=timeout_s, headers=headers)
        if r.status_code == 401:
            raise ServeError(
                f"{who} endpoint {redact_url(url)} refused the request (HTTP 401): it needs "
                "an API key; set teacher.api_key_env to the variable that holds it"
            )
        r.raise_for_status()
        data = r.json().get("data", [])
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (httpx.HTTPError, ValueError, KeyError, AttributeError, TypeError) as e:
        why = redact_text(str(e), (api_key,))
        raise ServeError(f"{who} endpoint {redact_url(url)} is not answering ({why})") from None


def served_name(urls: list[str], api_key: str = "", who: str = "teacher") -> str:
    """The model to ask for when no name is configured: what the first answering endpoint
    serves."""
    errors = []
    for u in urls:
        try:
            names = served_models(u, api_key, who=who)
        except ServeError as e:
            errors.append(str(e))
            continue
        if names:
            return names[0]
    raise ServeError("; ".join(errors) or f"no model served at the {who} endpoints; set its name")


SPEC_COUNTERS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
_SPEC_LINE = re.compile(
    r"^vllm:spec_decode_(num_drafts|num_draft_tokens|num_accepted_tokens|"
    r"num_accepted_tokens_per_pos)_total\{([^}]*)\}\s+([0-9.eE+-]+)\s*$"
)


def parse_spec_decode(text: str) -> dict[str, Any]:
    """vLLM's speculative-decoding counters from its Prometheus text (/metrics), summed over
    engines: drafts, draft tokens, accepted tokens, and accepted tokens by draft position."""
    out: dict[str, Any] = {k: 0 for k in SPEC_COUNTERS} | {"accepted_per_position": {}}
    for line in text.splitlines():
        m = _SPEC_LINE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        if name == "num_accepted_tokens_per_pos":
            pos = re.search(r'position="(\d+)"', labels)
            if pos:
                by = out["accepted_per_position"]
                by[int(pos.group(1))] = by.get(int(pos.group(1)), 0) + int(float(value))
        else:
            out[name] += int(float(value))
    return out


def spec_decode_counts(urls: list[str]) -> dict[str, Any]:
    """The speculative-decoding counters of the servers at `urls` (ours: no key), summed. The
    engine reports them a moment after the last step, so they are read until they hold still."""
    total: dict[str, Any] = {}
    for _ in range(20):
        got = [
            parse_spec_decode(httpx.get(u.removesuffix("/v1") + "/metrics", timeout=10).text)
            for u in urls
        ]
        now = {k: sum(g[k] for g in got) for k in SPEC_COUNTERS}
        pos: dict[int, int] = {}
        for g in got:
            for i, n in g["accepted_per_position"].items():
                pos[i] = pos.get(i, 0) + n
        now["accepted_per_position"] = dict(sorted(pos.items()))
        if now == total:
            break
        total = now
        time.sleep(0.5)
    return total
