"""`distill init` (pipeline/starter.py): a starting config read from the data, which loads as it
is written and whose task splits as the data says; a source it cannot read is one line."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from conftest import run_cli

from pipeline.config import load_config
from pipeline.hfdata import load_hf
from pipeline.tasks import load_task


def _saved(tmp_path: Path) -> Path:
    rows = [
        {"idx": i, "problem": f"What is {i} + 3?", "solution": f"{i} + 3 = {i + 3}\n#### {i + 3}"}
        for i in range(50)
    ]
    path = tmp_path / "ds"
    datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows[:40]), test=datasets.Dataset.from_list(rows[40:])
    ).save_to_disk(str(path))
    return path


def test_init_writes_a_config_that_loads_and_splits_as_the_data_says(tmp_path: Path) -> None:
    load_hf.cache_clear()
    to = tmp_path / "my.yaml"
    r = run_cli("init", "--source", f"hf:{_saved(tmp_path)}", "--to", str(to))
    assert r.returncode == 0, r.stderr
    text = to.read_text()
    assert '"question": "problem", "answer": "solution", "id": "idx"' in text
    assert 'answer_rule: "gsm8k"' in text and "answer_type: numeric" in text
    assert "its own train and test are train and eval" in text and "SET YOUR TEACHER" in text
    cfg = load_config(to)
    task = load_task(cfg.task)
    assert len(task.eval) == 10 and {q.answer for q in task.eval} == {
        str(i + 3) for i in range(40, 50)
    }
    again = run_cli("init", "--source", f"hf:{tmp_path / 'ds'}", "--to", str(to))
    assert again.returncode == 2 and "init never overwrites" in again.stderr


def test_init_on_jsonl_guesses_columns_and_says_what_it_cannot(tmp_path: Path) -> None:
    src = tmp_path / "q.jsonl"
    src.write_text(
        "".join(json.dumps({"query": f"Name {i}?", "target": f"n{i}"}) + "\n" for i in range(30))
    )
    to = tmp_path / "q.yaml"
    assert run_cli("init", "--source", f"jsonl:{src}", "--to", str(to)).returncode == 0
    cfg = load_config(to)
    assert cfg.task.columns == {"question": "query", "answer": "target"}
    assert cfg.task.answer_type == "exact" and cfg.task.answer_rule == ""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"a": 1, "b": 2}) + "\n")
    r = run_cli("init", "--source", f"jsonl:{bad}", "--to", str(tmp_path / "x.yaml"))
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "no question column found" in lines[0]
