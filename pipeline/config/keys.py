"""What of a config goes into stage keys: `semantic` drops the runtime() fields (and the
key_when_set ones still at their default), so changing a knob of how work is done never
invalidates cached work; `to_dict` is the whole config as plain data."""

from __future__ import annotations

import dataclasses
from typing import Any


def semantic(obj: Any, exclude: tuple[str, ...] = ()) -> Any:
    """The part of a config that defines results: runtime() fields dropped, recursively.

    `exclude` drops top-level fields a key covers otherwise, e.g. a model path whose weights
    are hashed: moving a model dir must not invalidate work done with it."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("runtime") or f.name in exclude:
                continue
            value = getattr(obj, f.name)
            if f.metadata.get("key_when_set") and value == _default(f):
                continue
            out[f.name] = semantic(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [semantic(v) for v in obj]
    if isinstance(obj, dict):
        return {k: semantic(v) for k, v in obj.items()}
    return obj


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)
