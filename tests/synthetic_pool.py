"""A synthetic task and the generate pool a teacher would have written for it, written directly
(no model asked): for tests and benchmarks of data at scale (benchmarks/scale_data.py). The
pool rows carry the plan's own sample ids and prompts, so generate finds every sample held; each
rationale ends in the gold answer, so filter's checks pass it, and differs from every other."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = "the of and to in is that it for on with as was by at from this be are or an".split()


def scale_overrides(task: Path, runs: Path, cache: Path, model: Path, n: int) -> list[str]:
    return [
        f"runs_dir={runs}",
        f"cache_dir={cache}",
        f"task.source=jsonl:{task}",
        f"task.max_train={n}",
        "task.split_by=",
        "task.max_eval=10",
        "task.eval_fraction=0.001",
        "task.validation_fraction=0",
        f"teacher.model={model}",
        "generate.n=1",
    ]


def write_task(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            a, b = i % 997, i // 997
            q = {"id": f"q{i}", "question": f"What is {a} plus {b}?", "answer": str(a + b)}
            f.write(json.dumps(q) + "\n")


def write_pool(overrides: list[str], size: int) -> tuple[Path, int]:
    """The pool of every planned sample, each a rationale of about `size` characters."""
    from pipeline.config import load_config
    from stages.generate import teacher_plans
    from stages.shared.layout import POOL, shared_dir

    # the CLI's config: the bundled default, with the overrides
    cfg = load_config(Path(__file__).parents[1] / "pipeline/configs/default.yaml", overrides)
    rng = random.Random(0)
    # a rationale is `size` characters drawn as 128-character chunks of random words: cheap to
    # write a million of, and no two alike enough for near-dedup to match them
    chunks = [" ".join(rng.choice(WORDS) for _ in range(40))[:127] for _ in range(512)]
    parts = max(1, size // 128)
    pool = shared_dir(Path(cfg.runs_dir) / cfg.run / "generate" / "x") / POOL
    pool.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(pool, "w") as f:
        for tp in teacher_plans(cfg):
            for ps in tp.samples.values():
                for p in ps:
                    text = f"Sample {n}. " + " ".join(rng.choices(chunks, k=parts))
                    text += f"\nAnswer: {p.question.answer}"
                    tokens = len(text) // 4
                    row = {
                        "id": p.request.id,
                        "question_id": p.question.id,
                        "sample_index": p.index,
                        "teacher": tp.label,
                        "teacher_identity": tp.identity,
                        "messages": p.request.messages,
                        "completion": text,
                        "finish_reason": "stop",
                        "usage": {"completion_tokens": tokens, "prompt_tokens": 30},
                        "sampling": p.request.sampling,
                        "gold": p.question.answer,
                        "answer_type": p.question.answer_type,
                        "choices": [],
                        "endpoint": "synthetic",
                    }
                    f.write(json.dumps(row) + "\n")
                    n += 1
    return pool, n
