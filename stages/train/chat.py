"""What a student's tokenizer and chat template say, for the stages that read them: the ids it
stops on, what a template that cannot render raises, and that failure as a phrase for a one-line
error. Its own module because both pre-flight and the on-policy rounds need it, and pre-flight
imports the objectives."""

from __future__ import annotations

import json
from pathlib import Path


def stop_token_ids(tok, student: Path | None = None) -> set[int]:
    """The tokenizer's EOS plus the generation config's eos ids (what vLLM stops on)."""
    ids = {tok.eos_token_id}
    gen = Path(student) / "generation_config.json" if student else None
    if gen is not None and gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return {i for i in ids if i is not None}


def template_errors() -> tuple[type[Exception], ...]:
    """What rendering a chat template raises when the template cannot render the messages
    (jinja is imported only when one is caught: `except template_errors()` is evaluated then)."""
    from jinja2 import TemplateError

    return (TemplateError, ValueError, TypeError, KeyError, IndexError)


def short(e: BaseException) -> str:
    """A chat template's failure as a phrase for one line: its type and first 200 characters."""
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]
