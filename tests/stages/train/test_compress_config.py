"""The shipped compression recipe as the runner plans it: the full-size student it cuts and
learns from is the default run's own train stage (one key, trained once), eval's student_full
is that same stage, and what the recipe's knobs cannot mean is one line naming the key."""

from __future__ import annotations

import pytest
from conftest import run_cli

from pipeline.config import ConfigError, load_config, shipped_config
from pipeline.runner import plan


def test_the_cut_comes_from_the_default_runs_student() -> None:
    compress = plan(load_config(shipped_config("compress")), "eval")
    default = plan(load_config(shipped_config("default")), "eval")
    assert compress["full/train"].key == default["train"].key
    assert compress["train_full/train"].key == default["train"].key
    assert compress["train"].key != default["train"].key
    assert compress["filter"].key == default["filter"].key  # the same kept samples


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.cut.source=trained"], "train.cut.source"),
        (["train.features.weights=[1,2]"], "train.features.weights"),
        (
            ["train.features.teacher=[a,b]", "train.features.weights=[0,0]"],
            "train.features.weights",
        ),
        (["train.features.teacher=[a,a]"], "train.features.teacher"),
        (["train.features.teacher=[]"], "train.features.teacher"),
    ],
)
def test_what_the_recipe_cannot_mean_is_refused_where_the_config_is_built(overrides, key) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(shipped_config("default"), overrides)
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_a_bad_weight_list_is_one_line_on_the_command_line(tmp_path) -> None:
    r = run_cli("train", f"runs_dir={tmp_path}", "train.features.weights=[-1]")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "train.features.weights: [-1.0]: weights are >= 0" in r.stderr
