"""What is sent to a model and what comes back: the types every serving module shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserError


class ServeError(UserError, RuntimeError):
    """A model could not be started or reached; the message says what to do."""


@dataclass(slots=True)  # a plan of a million samples holds a million: no __dict__ each
class Request:
    """One call for `len(ids)` samples of one prompt (the API's `n`).

    With a `seed`, vLLM seeds the k-th sample of a call with seed + k, so a sample's text does
    not depend on how samples are grouped into calls.

    A scoring request (`prompt_ids` set, see `score_request`) writes nothing: the model reads
    those token ids as they are (no chat template, no re-tokenizing) and gives each position's
    log-probability from `sampling["score_from"]` on, with the top `sampling["prompt_logprobs"]`
    alternatives, as `Completion.prompt_logprobs`.
    """

    ids: list[str]
    messages: list[dict[str, str]]
    sampling: dict[str, Any]  # temperature, top_p, max_tokens, seed, stop; logprobs: top-k
    prompt_ids: list[int] | None = None  # scoring: the token ids read, not a chat

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
    # A scoring request's answer, in the same lists: each scored position's token (the id it
    # was given), its logprob and the top-k there
    prompt_logprobs: dict[str, list] | None = None


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The ids a chat prompt is read as: its chat template, the assistant turn opened, no
    special tokens added besides the template's own (as vLLM renders a chat)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def score_request(sid: str, prompt_ids: list[int], score_from: int, k: int) -> Request:
    """Ask for the log-probabilities of `prompt_ids[score_from:]`, each given the ids before it
    (and the top k there): a teacher scoring text another model wrote. One token is generated,
    greedily, because vLLM computes prompt logprobs only for a request that generates."""
    if not 0 < score_from < len(prompt_ids):
        raise ValueError(f"score_from {score_from} outside 1..{len(prompt_ids) - 1}")
    sampling = {"temperature": 0.0, "max_tokens": 1, "prompt_logprobs": k}
    return Request([sid], [], sampling | {"score_from": score_from}, list(prompt_ids))


def scored_lists(prompt_ids: list[int], per_position: list[Any], score_from: int, k: int) -> dict:
    """The lists a soft-label store keeps, from vLLM's prompt logprobs: per position a dict
    token id -> (logprob, rank), holding the top k by rank and the prompt's own token. The
    position's own token must be there: a server that left it out answered something else."""
    out: dict[str, list] = {"ids": [], "logprobs": [], "top_ids": [], "top_logprobs": []}
    for pos in range(score_from, len(prompt_ids)):
        here = per_position[pos] if pos < len(per_position) else None
        tid = prompt_ids[pos]
        if not here or tid not in here:
            raise ValueError(f"no prompt logprob for position {pos} (token {tid})")
        top = sorted((rank, i, lp) for i, (lp, rank) in here.items() if rank <= k)[:k]
        out["ids"].append(tid)
        out["logprobs"].append(float(here[tid][0]))
        out["top_ids"].append([i for _, i, _ in top])
        out["top_logprobs"].append([float(lp) for _, _, lp in top])
    return out


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


@dataclass(frozen=True)
class RaySpec:
    """engine: ray's cluster and resources (config: serve.ray)."""

    address: str = ""  # '' = a local cluster, started and stopped by this run
    cpus: float = 1.0  # per engine actor
    gpus: float = 0.0
    chunk: int = 64  # requests per actor call
