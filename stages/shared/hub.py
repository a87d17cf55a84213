"""What the stages' `distill export` hooks share (pipeline/export.py asks each stage for its
part): the refusal for a stage that is not complete, and the card file's name."""

from __future__ import annotations

from pipeline.errors import ExportError
from pipeline.stage import ExportContext


def require_complete(ctx: ExportContext, name: str) -> None:
    """Raise the one-line refusal when stage `name` is not complete for this config."""
    if ctx.manifest is None:
        why = "; ".join(ctx.problems) or "not run yet for this config"
        raise ExportError(f"{name} is not complete ({why}); run `distill train` first")
