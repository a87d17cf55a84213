"""eval.speculative: each student as its teacher's draft, measured.

vLLM serves the teacher with the student as its draft model (speculative decoding, method
draft_model, eval.speculative_k draft tokens a step) and answers the teacher's held-out prompts
(the first eval.speculative_questions of them) with eval.sampling. vLLM's own counters (the
server's /metrics: drafts, draft tokens, accepted tokens, accepted tokens by position) say what
the draft did. The same prompts asked of the teacher alone, on the same kind of server just
before, give the wall-clock speed-up (start-up excluded from both). Servers, not the offline
engine: the counters are the server's.

Each measurement (the teacher alone, each student as its draft) is kept as it ends, in
speculative/<label>.json beside the predictions, under a digest of what it measured (the
models' identities, the prompts, the sampling, the draft length): a rerun, or one after an
interruption, measures only what is missing, and the speed-up of a draft measured later
compares against the teacher-alone time kept from before.
Which students can be a draft is stages/eval/draft_estimate.py's rule (the teacher's tokenizer,
the teacher's weights at hand).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.ask import ask, settings_from
from pipeline.asklog import failed
from pipeline.calls import Completion, Failure, Request, sampling_dict
from pipeline.config import Config
from pipeline.models import teacher_identity
from pipeline.prompts import fewshot_examples, teacher_messages
from pipeline.records import atomic_write_json, canonical_json, sha256_text
from pipeline.tasks import load_task
from stages.eval.draft_estimate import drafts_at_hand
from stages.shared.models import teacher_spec

MEASURED = "speculative"  # the dir of kept measurements, in the eval dir


def measure(cfg: Config, muts: list, out: Path) -> dict[str, Any]:
    """{student label: what vLLM measured with it as the teacher's draft, or
    {"not_measured": why}} for every student under test."""
    t_dir, able, result = drafts_at_hand(cfg, muts, "not_measured")
    if t_dir is None or not able:
        return result
    e = cfg.eval
    teacher = cfg.lead_teacher()
    task = load_task(cfg.task)
    questions = task.eval[: e.speculative_questions or None]
    shots = fewshot_examples(task, teacher.fewshot)
    sampling = sampling_dict(e.sampling, keep_empty_stop=False)
    reqs = [
        Request([f"spec:{q.id}"], teacher_messages(teacher, q, shots), dict(sampling))
        for q in questions
    ]
    spec = dataclasses.replace(teacher_spec(cfg, teacher, "teacher"), engine="server", replicas=1)
    what = [[r.messages for r in reqs], sampling, e.speculative_k]
    teacher_id = teacher_identity(teacher, cfg.cache_dir)
    alone = _measured(cfg, spec, reqs, out, "teacher", [teacher_id, *what])
    for m in able:
        config = {
            "model": str(m.spec.model_dir),
            "method": "draft_model",
            "num_speculative_tokens": e.speculative_k,
        }
        drafted = dataclasses.replace(
            spec, label=f"teacher+{m.label}", speculative=json.dumps(config)
        )
        got = _measured(cfg, drafted, reqs, out, m.label, [teacher_id, m.identity, *what])
        result[m.label] = _figures(got, alone, e.speculative_k, len(reqs))
        text, alone_text = got["text"], alone["text"]
        result[m.label]["same_text_as_alone"] = round(
            sum(text[i] == alone_text.get(i) for i in text) / max(1, len(text)), 4
        )
    return result


def _measured(
    cfg: Config, spec: Any, reqs: list[Request], out: Path, label: str, what: list
) -> dict[str, Any]:
    """`spec`'s measurement over `reqs`, kept in speculative/`label`.json: the kept one when
    it measured the same `what`, else asked now and kept."""
    path = out / MEASURED / f"{label}.json"
    digest = sha256_text(canonical_json(what))
    try:
        kept = json.loads(path.read_text())
        if kept.get("digest") == digest and set(kept) >= {"seconds", "spec_decode", "text"}:
            return kept
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or damaged: measured again
    stats, text = _ask(cfg, spec, reqs, out / "logs" / f"speculative-{label}")
    got = {
        "digest": digest,
        "seconds": stats.seconds,
        "spec_decode": stats.spec_decode,
        "text": text,
    }
    atomic_write_json(path, got)
    return got


def _ask(cfg: Config, spec: Any, reqs: list[Request], log_dir: Path) -> tuple[Any, dict[str, str]]:
    """Ask `spec` every request; its stats and its texts by request id."""
    text: dict[str, str] = {}
    fails: list[Failure] = []

    def done(c: Completion) -> None:
        text[c.id] = c.text

    stats = ask(spec, reqs, done, fails.append, settings_from(cfg.eval), log_dir)
    if fails:
        raise failed("speculative-decoding requests", fails, len(text), log_dir)
    return stats, text


def _figures(got: dict[str, Any], alone: dict[str, Any], k: int, questions: int) -> dict[str, Any]:
    """vLLM's counters as rates: acceptance, by position, tokens per teacher step (the accepted
    draft plus the teacher's own token), and the speed-up against the teacher alone."""
    c = got["spec_decode"] or {}
    drafts, proposed, accepted = (
        c.get("num_drafts", 0),
        c.get("num_draft_tokens", 0),
        c.get("num_accepted_tokens", 0),
    )
    return {
        "questions": questions,
        "k": k,
        "drafts": drafts,
        "draft_tokens": proposed,
        "accepted_tokens": accepted,
        "acceptance": round(accepted / proposed, 4) if proposed else None,
        "accepted_by_position": {
            str(int(i) + 1): round(n / drafts, 4)
            for i, n in c.get("accepted_per_position", {}).items()  # int keys, str once kept
        }
        if drafts
        else {},
        "tokens_per_step": round(1 + accepted / drafts, 4) if drafts else None,
        "seconds": round(got["seconds"], 2),
        "teacher_alone_seconds": round(alone["seconds"], 2),
        "speedup": round(alone["seconds"] / got["seconds"], 3) if got["seconds"] else None,
    }
