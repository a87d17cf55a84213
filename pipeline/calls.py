"""What is sent to a model and what comes back: the types every serving module shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserError


class ServeError(UserError, RuntimeError):
    """A model could not be started or reached; the message says what to do."""


@dataclass
class Request:
    """One call for `len(ids)` samples of one prompt (the API's `n`).

    With a `seed`, vLLM seeds the k-th sample of a call with seed + k, so a sample's text does
    not depend on how samples are grouped into calls.
    """

    ids: list[str]
    messages: list[dict[str, str]]
    sampling: dict[str, Any]  # temperature, top_p, max_tokens, seed, stop; logprobs: top-k

    @property
    def id(self) -> str:
        """The first sample's id: the only one for a single-sample request."""
        return self.ids[0]

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass
class Completion:
    id: str
    text: str  # the message content, as sent
    finish_reason: str
    usage: dict[str, int]
    endpoint: str
    reasoning: str | None = None  # the server's reasoning field, as sent; None without one
    reasoning_field: str = ""  # its name: reasoning or reasoning_content
    # Soft labels when asked for (sampling "logprobs": k): per completion token, the id and
    # logprob written and the top-k ids and logprobs (lists; stages.shared.softlabels stores them)
    token_logprobs: dict[str, list] | None = None


@dataclass
class Failure:
    id: str
    reason: str
    attempts: int


def sampling_dict(
    sampling: Any, *, keep_empty_stop: bool, logprobs: int = 0, logprobs_mode: str = "raw"
) -> dict[str, Any]:
    """What a request is drawn with, from a config's sampling section: temperature, top_p,
    max_tokens, seed, stop; with soft labels, their k (and mode, when not raw).

    The dict is hashed into sample ids and eval's request hashes, so its form is part of every
    cached key: generate has always sent `stop` even when empty, eval only when set
    (`keep_empty_stop`). Unifying them would re-ask every cached sample or prediction."""
    s = asdict(sampling)
    out = {k: s[k] for k in ("temperature", "top_p", "max_tokens", "seed")}
    if s["stop"] or keep_empty_stop:
        out["stop"] = list(s["stop"])
    if logprobs:
        out["logprobs"] = logprobs
        if logprobs_mode != "raw":
            out["logprobs_mode"] = logprobs_mode
    return out
