"""What is sent to a model and what comes back: the types every serving module shares."""

from __future__ import annotations

from dataclasses import dataclass
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
