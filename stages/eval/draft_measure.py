"""eval.speculative: each student as its teacher's draft, measured.

vLLM serves the teacher with the student as its draft model (speculative decoding, method
draft_model, eval.speculative_k draft tokens a step) and answers the teacher's held-out prompts
(the first eval.speculative_questions of them) with eval.sampling. vLLM's own counters (the
server's /metrics: drafts, draft tokens, accepted tokens, accepted tokens by position) say what
the draft did. The same prompts asked of the teacher alone, on the same kind of server just
before, give the wall-clock speed-up (start-up excluded from both). Servers, not the offline
engine: the counters are the server's. The answers are not kept: greedy, they are the
teacher's own, and the figures are a measurement, taken whole again if the stage reruns.
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
from pipeline.prompts import fewshot_examples, teacher_messages
from pipeline.tasks import load_task
from stages.eval.draft_estimate import drafts_at_hand
from stages.shared.models import teacher_spec


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
    alone, alone_text = _ask(cfg, spec, reqs, out / "logs" / "speculative-teacher")
    for m in able:
        config = {
            "model": str(m.spec.model_dir),
            "method": "draft_model",
            "num_speculative_tokens": e.speculative_k,
        }
        drafted = dataclasses.replace(
            spec, label=f"teacher+{m.label}", speculative=json.dumps(config)
        )
        got, text = _ask(cfg, drafted, reqs, out / "logs" / f"speculative-{m.label}")
        result[m.label] = _figures(got, alone, e.speculative_k, len(reqs))
        result[m.label]["same_text_as_alone"] = round(
            sum(text[i] == alone_text[i] for i in text) / max(1, len(text)), 4
        )
    return result


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


def _figures(got: Any, alone: Any, k: int, questions: int) -> dict[str, Any]:
    """vLLM's counters as rates: acceptance, by position, tokens per teacher step (the accepted
    draft plus the teacher's own token), and the speed-up against the teacher alone."""
    c = got.spec_decode or {}
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
            str(i + 1): round(n / drafts, 4) for i, n in c.get("accepted_per_position", {}).items()
        }
        if drafts
        else {},
        "tokens_per_step": round(1 + accepted / drafts, 4) if drafts else None,
        "seconds": round(got.seconds, 2),
        "teacher_alone_seconds": round(alone.seconds, 2),
        "speedup": round(alone.seconds / got.seconds, 3) if got.seconds else None,
    }
