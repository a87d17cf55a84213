"""task.source hf: (pipeline/hfdata.py): a Hugging Face dataset as users bring it, built here
in memory and written as `save_to_disk` does, as parquet, JSON lines and CSV files, and as the
Hub cache a dataset downloaded earlier leaves (read with HF_HUB_OFFLINE). Its own train and
test splits are used; a file of one split is carved by the rule; gold answers are read by
task.answer_rule; a bad id, split or column is one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pytest
from conftest import run_cli
from hfforms import hub_cache, saved

from pipeline.config import ConfigError, TaskConfig, load_config
from pipeline.hfdata import extract, load_hf
from pipeline.records import DataError
from pipeline.tasks import load_task, source_digest

COLUMNS = {"id": "qid", "question": "problem", "answer": "solution"}


def _rows(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "qid": f"q{i}",
            "problem": f"Tom has {i} apples and gets 2 more. How many apples does he have?",
            "solution": f"He has {i} + 2 = {i + 2} apples.\n#### {i + 2:,}",
        }
        for i in range(start, start + n)
    ]


def _cfg(source: str, **kw) -> TaskConfig:
    kw = {"columns": COLUMNS, "answer_rule": "gsm8k", "answer_type": "numeric", **kw}
    return TaskConfig(source=source, **kw)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    load_hf.cache_clear()  # each test's datasets are its own


def _saved(tmp_path: Path) -> Path:
    return saved(tmp_path / "my_task", {"train": _rows(40), "test": _rows(12, start=1000)})


def test_a_saved_dataset_uses_its_own_train_and_test_splits(tmp_path: Path) -> None:
    task = load_task(_cfg(f"hf:{_saved(tmp_path)}"))
    assert {q.id for q in task.eval} == {f"q{i}" for i in range(1000, 1012)}
    assert len(task.train) + len(task.validation) == 40 and task.validation
    # the gold after '####', thousands commas dropped
    assert {q.answer for q in task.eval} == {str(i + 2) for i in range(1000, 1012)}
    assert task.name == "my_task" and "eval: the dataset's test split" in task.carved


def test_the_key_covers_the_datas_content(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    before = source_digest(_cfg(f"hf:{path}"))
    assert before == load_task(_cfg(f"hf:{path}")).source_hash
    shutil.rmtree(path)
    datasets.DatasetDict(
        train=datasets.Dataset.from_list(_rows(41)),
        test=datasets.Dataset.from_list(_rows(12, start=1000)),
    ).save_to_disk(str(path))
    assert source_digest(_cfg(f"hf:{path}")) != before


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_a_data_file_of_one_split_is_carved_by_the_rule(tmp_path: Path, suffix: str) -> None:
    ds = datasets.Dataset.from_list(_rows(60))
    path = tmp_path / f"questions{suffix}"
    {".parquet": ds.to_parquet, ".jsonl": ds.to_json, ".csv": ds.to_csv}[suffix](str(path))
    task = load_task(_cfg(f"hf:{path}", eval_fraction=0.25))
    sizes = task.sizes()
    assert sum(sizes.values()) == 60 and 5 <= sizes["eval"] <= 25
    assert task.carved.startswith("eval: 25% of the groups by question")
    assert all(q.answer == str(int(q.id[1:]) + 2) for q in task.train)


def test_a_hub_dataset_is_read_offline_from_the_cache(tmp_path: Path, monkeypatch) -> None:
    cache = hub_cache(tmp_path, {"train": _rows(30), "test": _rows(8, start=500)})
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    task = load_task(_cfg("hf:me/arith:main"))
    assert {q.id for q in task.eval} == {f"q{i}" for i in range(500, 508)}
    assert task.name == "arith" and len(task.train) + len(task.validation) == 30


def test_bad_ids_splits_columns_and_golds_are_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    path = _saved(tmp_path)
    cases = [
        (_cfg("hf:nobody/nothing"), "task.source: hf:nobody/nothing: datasets could not load it"),
        (
            _cfg(f"hf:{path}", splits={"eval": "validation"}),
            f"task.splits.eval: hf:{path} has no split 'validation' (splits: train, test)",
        ),
        (
            TaskConfig(source=f"hf:{path}", answer_rule="gsm8k"),
            f"hf:{path}[train] row 0: missing field 'question'",
        ),
        (_cfg(f"hf:{path}", answer_rule="boxed"), "task.answer_rule boxed finds no answer"),
    ]
    for cfg, words in cases:
        with pytest.raises(DataError) as e:
            load_task(cfg)
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(
        ConfigError, match="task.answer_rule: 'regex:\\(': not a regular expression"
    ):
        load_config(None, ["task.answer_rule=regex:("])
    with pytest.raises(ConfigError, match="splits: applies to hf: sources"):
        load_config(None, ["task.splits={eval: test}"])


def test_the_cli_says_a_missing_dataset_in_one_line_with_exit_2(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "empty")}
    r = run_cli("plan", "task.source=hf:nobody/nothing", f"runs_dir={tmp_path}", env=env)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "hf:nobody/nothing" in lines[0], r.stderr


@pytest.mark.parametrize(
    ("rule", "text", "gold"),
    [
        ("gsm8k", "so 3 + 4 = 7\n#### 1,234", "1234"),
        ("gsm8k", "no marker here", None),
        ("boxed", r"first \boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        ("boxed", r"\boxed{unclosed", None),
        ("regex:answer is (\\d+)", "the answer is 42.", "42"),
        ("", "  as it is ", "  as it is "),
    ],
)
def test_answer_rules(rule: str, text: str, gold: str | None) -> None:
    assert extract(rule, text) == gold
