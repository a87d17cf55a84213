"""Loading a config: one YAML file plus dotted `key.sub=value` overrides, merged onto the
defaults and built into a checked `Config`; and the shipped configs in pipeline/configs/."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.generate import GenerateConfig
from pipeline.config.sections import Config
from pipeline.config.teacher import TeacherConfig
from pipeline.fields import ConfigError, short, type_hints
from pipeline.paths import CONFIGS_DIR


def _build(cls: type, data: dict[str, Any], base: Any = None) -> Any:
    """`base` (default: cls()) with `data` applied; nested sections merge onto their defaults,
    so `eval.sampling.max_tokens=16` keeps eval's greedy temperature."""
    names = {f.name for f in dataclasses.fields(cls)}
    if cls is GenerateConfig and "budget" in data:  # moved in issue 46: one budget per run
        raise ConfigError(
            "moved to the run level: budget.* caps every teacher call of the run (generate, "
            "on-policy scoring, eval); write budget.completion_tokens and the like",
            "budget",
        )
    unknown = sorted(str(k) for k in set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key (known here: {', '.join(sorted(names))})", unknown[0]
        )
    base = cls() if base is None else base
    kwargs: dict[str, Any] = {}
    for name, value in sorted(data.items(), key=lambda kv: kv[0] == "teachers"):
        tp = type_hints(cls)[name]
        if cls is Config and name == "teachers":
            kwargs[name] = _build_teachers(value, kwargs.get("teacher", base.teacher))
        elif dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"expected a mapping, got {short(value)}", name)
            try:
                kwargs[name] = _build(tp, value, getattr(base, name))
            except ConfigError as e:
                raise e.under(name) from None
        else:
            kwargs[name] = value
    return dataclasses.replace(base, **kwargs)  # __post_init__ checks the merged section


def _build_teachers(value: Any, teacher: TeacherConfig) -> list[TeacherConfig]:
    """Each entry of `teachers:` is a teacher section applied over `teacher:`."""
    if not isinstance(value, list):
        raise ConfigError(f"expected a list of teacher sections, got {short(value)}", "teachers")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ConfigError(f"expected a mapping, got {short(entry)}", f"teachers[{i}]")
        try:
            out.append(_build(TeacherConfig, entry, teacher))
        except ConfigError as e:
            raise e.under(f"teachers[{i}]") from None
    return out


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError("override key has an empty part", dotted)
    node = tree
    for i, k in enumerate(keys[:-1]):
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError("is a value, not a section", ".".join(keys[: i + 1]))
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        value = raw
    return key.strip(), value


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last,
    so the first value would be silently ignored)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            k = self.construct_object(key_node, deep=deep)
            if k in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{k}' appears twice in one section", key_node.start_mark
                )
            seen.add(k)
        return super().construct_mapping(node, deep)


def _read_yaml(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}:{line}: not UTF-8 (byte {e.object[e.start]:#04x}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f":{where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{at}: not valid YAML ({problem})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of thousands of digits
        raise ConfigError(f"{p}: a value cannot be read ({str(e)[:100]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections (task:, teacher: ...)")
    return loaded


def read_config_file(p: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's sections; with `extends: other.yaml` (a path from this file's folder),
    those of the file it extends, with this file's merged over them: a section merges key by
    key, any other value (a list included) replaces. An experiment is then the default and the
    few lines it changes, and it shares the default run's cached stages where they agree."""
    data = _read_yaml(p)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{p}: extends must name a config file, got {short(parent)}")
    base = (p.parent / parent).resolve()
    if base in chain or base == p.resolve():
        raise ConfigError(f"{p}: extends {parent} goes round in a circle")
    return _merged(read_config_file(base, (*chain, p.resolve())), data)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _merged(out[k], v) if both else v
    return out


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML (or the defaults) and apply `a.b=value` overrides; every value is checked.

    An error names where the bad value came from: the file, or the command line."""
    data: dict[str, Any] = read_config_file(Path(path)) if path is not None else {}
    from_cli: set[str] = set()
    for ov in overrides:
        key, value = parse_override(ov)
        _set_path(data, key, value)
        from_cli.add(key)
    try:
        return check_sweep(_build(Config, data))
    except ConfigError as e:
        cli = any(
            e.key == k or e.key.startswith(k + ".") or e.key.startswith(k + "[") for k in from_cli
        )
        where = "the command line" if cli or path is None else str(path)
        raise ConfigError(f"{e} (from {where})") from None


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """`cfg` with dotted keys set (a sweep trial), every value checked as an override is."""
    data: dict[str, Any] = {}
    for key, value in values.items():
        _set_path(data, key, value)
    return _build(Config, data, cfg)


def trials(cfg: Config) -> list[dict[str, Any]]:
    """Every combination of `sweep.grid`, in grid order ({} alone for an empty grid)."""
    out: list[dict[str, Any]] = [{}]
    for key, values in cfg.sweep.grid.items():
        out = [{**t, key: v} for t in out for v in values]
    return out


def check_sweep(cfg: Config) -> Config:
    """`cfg` with each grid value as its field reads it (YAML reads 1e-5 as text; the trial's
    key reads 1e-05): a bad value fails here, in one line naming it, not after other trials
    trained, and two spellings of one value are one value listed twice."""
    if not cfg.sweep.grid:  # no sweep: nothing to build twice at every load
        return cfg
    grid: dict[str, list[Any]] = {}
    for key, values in cfg.sweep.grid.items():
        grid[key] = []
        for v in values:
            try:
                built = with_values(cfg, {key: v})
            except ConfigError as e:
                raise ConfigError(f"{e.problem} (value {v!r})", f"sweep.grid.{key}") from None
            grid[key].append(_get_path(built, key))
        if len({repr(v) for v in grid[key]}) != len(grid[key]):
            raise ConfigError("a value is listed twice", f"sweep.grid.{key}")
    cfg = dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, grid=grid))
    for t in trials(cfg):  # values that build alone may not build together
        try:
            with_values(cfg, t)
        except ConfigError as e:
            raise ConfigError(f"{e.problem} (trial {t})", "sweep.grid") from None
    return cfg


def _get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def shipped_configs() -> list[Path]:
    return sorted(CONFIGS_DIR.glob("*.yaml"))


def shipped_config(name: str) -> Path:
    return CONFIGS_DIR / f"{name}.yaml"
