"""The field docs `distill config` prints: every leaf field of `Config`, dotted, with its type
and bounds, default, value, whether it is part of stage keys, and its doc."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.config.sections import Config
from pipeline.fields import bounds_text, show_type, type_hints


@dataclass(frozen=True)
class FieldDoc:
    key: str  # dotted
    type: str
    default: Any
    value: Any
    in_key: bool
    doc: str


def describe(cfg: Config | None = None) -> list[FieldDoc]:
    """Every leaf field, dotted, with its type, default, value in `cfg`, key membership, doc."""
    cfg = cfg or Config()
    out: list[FieldDoc] = []

    def walk(cls: type, default: Any, value: Any, prefix: str, in_key: bool) -> None:
        for f in dataclasses.fields(cls):
            tp = type_hints(cls)[f.name]
            key = f"{prefix}{f.name}"
            sem = in_key and not f.metadata.get("runtime")
            if dataclasses.is_dataclass(tp):
                walk(tp, getattr(default, f.name), getattr(value, f.name), key + ".", sem)
                continue
            shown = show_type(tp)
            limits = bounds_text(f)
            out.append(
                FieldDoc(
                    key,
                    f"{shown} ({limits})" if limits else shown,
                    getattr(default, f.name),
                    getattr(value, f.name),
                    sem,
                    f.metadata.get("doc", ""),
                )
            )

    walk(Config, Config(), cfg, "", True)
    return out
