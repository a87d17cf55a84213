"""Config loading: unknown keys and bad types are errors naming the dotted path; overrides parse;
shipped configs load; runtime knobs stay out of the generate key while semantic ones change it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import (
    Config,
    ConfigError,
    load_config,
    parse_override,
    semantic,
    shipped_config,
    shipped_configs,
)
from pipeline.runner import plan


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_unknown_key_in_yaml_names_dotted_path(tmp_path: Path) -> None:
    p = _yaml(tmp_path, "generate:\n  sampling:\n    temprature: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "generate.sampling.temprature" in msg
    assert str(p) in msg  # names the file too
    assert "temperature" in msg  # lists what is known there


def test_unknown_top_level_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'teachr'"):
        load_config(_yaml(tmp_path, "teachr:\n  model: x\n"))


def test_unknown_key_in_override_names_dotted_path() -> None:
    with pytest.raises(ConfigError, match=r"generate\.nn"):
        load_config(None, ["generate.nn=3"])
    with pytest.raises(ConfigError, match=r"teacher\.endpont"):
        load_config(shipped_config("default"), ["teacher.endpont=http://x/v1"])


def test_override_into_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="generate.n"):
        load_config(None, ["generate.n.sub=3"])


@pytest.mark.parametrize(
    "override, path, expected",
    [
        ("generate.n=abc", "generate.n", "integer"),
        ("generate.n=2.5", "generate.n", "integer"),
        ("generate.n=true", "generate.n", "integer"),
        ("generate.sampling.temperature=hot", "generate.sampling.temperature", "number"),
        ("filter.drop_truncated=maybe", "filter.drop_truncated", "true/false"),
        ("filter.checks=truncated", "filter.checks", "list"),
        ("generate=3", "generate", "mapping"),
    ],
)
def test_type_errors_name_the_path(override: str, path: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert path in str(e.value)
    assert expected in str(e.value)


def test_type_error_in_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.lora\.r: expected an integer"):
        load_config(_yaml(tmp_path, "train:\n  lora:\n    r: sixteen\n"))


def test_overrides_parse_scalars_lists_bools() -> None:
    cfg = load_config(
        None,
        [
            "generate.n=8",
            "generate.sampling.temperature=0.25",
            "generate.sampling.top_p=1",  # int given for a float field
            'generate.sampling.stop=["\\n\\n", "Q:"]',  # YAML double quotes: escapes
            "filter.drop_truncated=false",
            "teacher.endpoint=[http://a:1/v1, http://b:2/v1]",
            "teacher.name=7",  # a number given for a string field stays a string
            "run=my-run",
            "cache_dir=",
        ],
    )
    assert cfg.generate.n == 8 and isinstance(cfg.generate.n, int)
    assert cfg.generate.sampling.temperature == 0.25
    assert cfg.generate.sampling.top_p == 1.0 and isinstance(cfg.generate.sampling.top_p, float)
    assert cfg.generate.sampling.stop == ["\n\n", "Q:"]
    assert cfg.filter.drop_truncated is False
    assert cfg.teacher.endpoint == ["http://a:1/v1", "http://b:2/v1"]
    assert cfg.teacher.name == "7"
    assert cfg.run == "my-run"
    assert cfg.cache_dir == ""


def test_parse_override() -> None:
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("a=x=y") == ("a", "x=y")  # split on the first '=' only
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("generate.n")


def test_override_wins_over_yaml_and_keeps_siblings(tmp_path: Path) -> None:
    p = _yaml(tmp_path, "generate:\n  n: 3\n  sampling:\n    max_tokens: 64\n")
    cfg = load_config(p, ["generate.sampling.temperature=0.1"])
    assert cfg.generate.n == 3
    assert cfg.generate.sampling.max_tokens == 64
    assert cfg.generate.sampling.temperature == 0.1


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_yaml(tmp_path, "generate: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_yaml(tmp_path, "- a\n- b\n"))


def test_shipped_configs_are_the_expected_ones() -> None:
    names = {p.stem for p in shipped_configs()}
    assert {"default", "external_endpoints", "offline", "gsm8k_qwen_gpu"} <= names


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.generate.n >= 1
    assert cfg.teacher.engine in ("server", "offline")


def test_example_configs_say_what_they_are_for() -> None:
    ext = load_config(shipped_config("external_endpoints"))
    assert isinstance(ext.teacher.endpoint, list) and len(ext.teacher.endpoint) >= 2
    assert all(u.startswith("http") and u.endswith("/v1") for u in ext.teacher.endpoint)
    assert load_config(shipped_config("offline")).teacher.engine == "offline"
    gpu = load_config(shipped_config("gsm8k_qwen_gpu"))
    assert gpu.task.source == "olmo:gsm8k"
    # The model dirs the docker compose file mounts; the recipe names what goes in them.
    assert gpu.teacher.model == "/models/teacher" and gpu.train.student == "/models/student"
    text = shipped_config("gsm8k_qwen_gpu").read_text()
    assert "Qwen2.5-7B-Instruct" in text and "Qwen2.5-0.5B-Instruct" in text


def test_semantic_drops_runtime_fields() -> None:
    cfg = load_config(None, ["generate.concurrency=3", "teacher.endpoint=http://x:1/v1"])
    sem = semantic(cfg)
    assert "concurrency" not in sem["generate"]
    assert "retries" not in sem["generate"]
    assert "endpoint" not in sem["teacher"] and "replicas" not in sem["teacher"]
    assert "run" not in sem and "runs_dir" not in sem
    assert sem["generate"]["n"] == cfg.generate.n
    assert sem["generate"]["sampling"]["temperature"] == cfg.generate.sampling.temperature


# The generate key, computed as the runner does. teacher.name is set so the key needs no model
# weights: with an endpoint the teacher is identified by its served name.
BASE = ["teacher.name=tiny", "teacher.endpoint=http://127.0.0.1:9/v1", "task.max_train=5"]


def _gen_key(*overrides: str) -> str:
    return plan(load_config(None, [*BASE, *overrides]), "generate")["generate"].key


@pytest.mark.parametrize(
    "override",
    [
        "generate.concurrency=1",
        "generate.retries=1",
        "generate.request_timeout_s=5",
        "teacher.endpoint=[http://10.0.0.1:8000/v1, http://10.0.0.2:8000/v1]",
        "teacher.replicas=4",
        "run=other",
        "runs_dir=/elsewhere",
    ],
)
def test_runtime_knobs_do_not_change_generate_key(override: str) -> None:
    assert _gen_key(override) == _gen_key()


@pytest.mark.parametrize(
    "override",
    [
        "generate.n=7",
        "generate.sampling.temperature=0.1",
        "generate.sampling.max_tokens=17",
        "generate.sampling.seed=5",
        "teacher.fewshot=0",
        "task.max_train=6",
        "teacher.name=other-model",
    ],
)
def test_semantic_knobs_change_generate_key(override: str) -> None:
    assert _gen_key(override) != _gen_key()


def test_stage_dir_is_under_run_and_uses_key_prefix() -> None:
    cfg = load_config(None, [*BASE, "runs_dir=/r", "run=x"])
    p = plan(cfg, "generate")["generate"]
    assert p.dir == Path("/r/x/generate") / p.key[:12]
