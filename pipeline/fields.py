"""Typed, documented, checked config fields: the machinery under pipeline/config/.

`knob()` and `runtime()` declare a field with its doc and bounds; `check_fields` (each section's
`__post_init__` calls it) coerces every value to its annotated type (Literal enums included) and
checks the bounds, raising one `ConfigError` that names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pipeline.errors import UserError
from pipeline.paths import PROMPTS_DIR
from pipeline.redact import redact_url

INT_LIMIT = 2**63  # ints beyond a signed 64-bit range reach no library intact


class ConfigError(UserError, ValueError):
    """A config problem the user can fix: `key` is the dotted key, `problem` what is wrong."""

    def __init__(self, problem: str, key: str = ""):
        self.problem = problem
        self.key = key
        super().__init__(f"{key}: {problem}" if key else problem)

    def under(self, prefix: str) -> ConfigError:
        """The same problem, its key seen from the enclosing section."""
        return ConfigError(self.problem, f"{prefix}.{self.key}" if self.key else prefix)


def _field(
    default: Any,
    factory: Any,
    doc: str,
    runtime: bool,
    bounds: dict[str, float],
    key_when_set: bool = False,
) -> Any:
    if not doc:
        raise TypeError("every config field needs a doc")  # shown by `distill config`
    meta = {"runtime": runtime, "doc": doc, "key_when_set": key_when_set, **bounds}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def runtime(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    doc: str = "",
    **bounds: float,
) -> Any:
    """A field left out of stage keys (concurrency, endpoints, threads...)."""
    return _field(default, factory, doc, True, bounds)


def knob(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    doc: str = "",
    key_when_set: bool = False,
    **bounds: float,
) -> Any:
    """A semantic field: part of the key of the stages that read it.

    `key_when_set`: for a knob added after keys were in use whose default does what the code
    did before it: left out of keys while at its default, so work cached earlier stays valid."""
    return _field(default, factory, doc, False, bounds, key_when_set)


# --- checks shared by the sections ---------------------------------------------------------------


def expand(value: str, key: str) -> Path:
    """`~` and `~user` expanded, or a ConfigError naming the key (Path raises RuntimeError)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        user = value.split("/", 1)[0]
        raise ConfigError(f"cannot expand '{user}' in {value!r}: no such user", key) from None


def template_file(name: str, key: str) -> Path:
    """A prompt template: a name in prompts/ or a path to a Jinja file."""
    p = expand(name, key)
    if not p.is_absolute() and not p.is_file():
        p = PROMPTS_DIR / name
    if not p.is_file():
        known = ", ".join(sorted(x.name for x in PROMPTS_DIR.glob("*.j2")))
        raise ConfigError(f"template {name!r} not found (shipped: {known}, or a file path)", key)
    return p


def check_url(url: Any, key: str) -> str:
    """An http(s) URL with a host; a typo (missing scheme, broken IPv6 brackets) fails here."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"expected an http(s) URL, got {url!r}", key)
    if any(c.isspace() for c in url):
        raise ConfigError(f"URL contains whitespace: {redact_url(url)!r}", key)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port; raises on a bad one
    except ValueError as e:
        raise ConfigError(f"not a valid URL ({e}): {redact_url(url)}", key) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"expected http://HOST:PORT/v1 (an OpenAI-compatible base URL), got {redact_url(url)!r}",
            key,
        )
    return url


@cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def show_type(tp: Any) -> str:
    """A type as `distill config` and error messages print it."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) if a == "" else str(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return (
            f"list of ({show_type(item)})"
            if typing.get_origin(item)
            else f"list of {show_type(item)}"
        )
    if origin is dict:
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(show_type(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp`, or a ConfigError naming `key`, the value and what was expected."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, str) and value in allowed:
            return value
        if value is False and "off" in allowed:  # YAML 1.1 reads a bare `off` as false
            return "off"
        shown = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{short(value)} is not one of {shown}", key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {short(value)}", key)
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {short(value)}", key)
        k_tp, v_tp = typing.get_args(tp) or (Any, Any)
        return {
            _coerce(k, k_tp, f"{key}.{k}"): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()
        }
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"expected {show_type(tp)}, got {short(value)}", key)
    return _coerce_scalar(value, tp, key)


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true/false, got {short(value)}", key)
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 else math.inf
        elif isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None:
            raise ConfigError(f"expected a number, got {short(value)}", key)
        if not math.isfinite(number):
            raise ConfigError(f"expected a finite number, got {value!r}", key)
        return number
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT_LIMIT <= value < INT_LIMIT:
                raise ConfigError("integer out of range (more than 64 bits)", key)
            return value
        raise ConfigError(f"expected an integer, got {short(value)}", key)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e30:
            return str(value)  # `name: 7` means the string '7'
        raise ConfigError(f"expected a string, got {short(value)}", key)
    return value


def short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 80 else text[:77] + "..."


def check_fields(obj: Any) -> None:
    """Types and bounds of every field of a config section (its `__post_init__` calls this)."""
    hints = type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"expected a mapping, got {short(value)}", f.name)
            continue
        value = _coerce(value, tp, f.name)
        object.__setattr__(obj, f.name, value)  # frozen: store the coerced value once
        m = f.metadata
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for op, ok, word in (
                ("ge", value >= m.get("ge", -math.inf), ">="),
                ("gt", value > m.get("gt", -math.inf), ">"),
                ("le", value <= m.get("le", math.inf), "<="),
                ("lt", value < m.get("lt", math.inf), "<"),
            ):
                if not ok:
                    raise ConfigError(f"{value!r} is out of range: must be {word} {m[op]}", f.name)


def bounds_text(f: dataclasses.Field) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{w} {f.metadata[k]}" for k, w in words.items() if k in f.metadata)
