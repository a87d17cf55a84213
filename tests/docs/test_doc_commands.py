"""Every `distill` command and YAML config in the README and docs/ parses and builds a valid
config (tests/docs/doc_commands.py says what is read and how); and the checker itself finds a
planted mistake, so a green run means something."""

from __future__ import annotations

from contextlib import chdir
from pathlib import Path

import pytest
from conftest import ROOT
from doc_commands import Block, check_block, check_yaml, code_blocks, doc_files, problems


def test_every_command_and_config_in_the_docs_is_valid() -> None:
    found = problems(doc_files(ROOT), ROOT)
    assert found == [], "wrong commands or configs in the docs:\n" + "\n".join(found)


def test_the_docs_hold_commands_and_configs_to_check() -> None:
    """The check above is not vacuous: the README and docs hold both kinds of block."""
    blocks = [b for p in doc_files(ROOT) for b in code_blocks(p.read_text(), p)]
    assert sum(b.lang == "bash" and "distill" in b.text for b in blocks) >= 20
    assert sum(b.lang == "yaml" for b in blocks) >= 3


def _check(markdown: str) -> list[str]:
    return [p for b in code_blocks(markdown, Path("page.md")) for p in check_block(b, ROOT)]


def test_a_planted_wrong_key_is_reported() -> None:
    found = _check("Train longer:\n\n```bash\ndistill run train.epoch=3\n```\n")
    assert len(found) == 1
    assert found[0].startswith("page.md:4: `distill run train.epoch=3`: train.epoch: unknown")


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("./distill run generate.n=-3", "generate.n: -3 is out of range"),
        ("distill trian", "invalid choice: 'trian'"),
        ("distill run --confg x.yaml", "unrecognized arguments: --confg"),
        ("distill run --config no/such.yaml", "config file not found"),
        ("distill run filter.selection=bset", "filter.selection: 'bset' is not one of"),
        ("distill train --launcher acelerate", "invalid choice: 'acelerate'"),
    ],
)
def test_wrong_commands_are_reported(command: str, problem: str) -> None:
    found = _check(f"```bash\n{command}\n```\n")
    assert len(found) == 1 and problem in found[0], found


def test_shell_forms_are_read_as_a_shell_reads_them() -> None:
    """Comments, continuations, env assignments, wrappers, pipes, redirections and `&&`:
    the distill command in each is found and checked, other programs are not."""
    markdown = """
```bash
# a comment line, then a continued command with a comment after it
HF_HOME=/tmp/hf ./distill run --config pipeline/configs/default.yaml \\
    generate.n=8 \\
    train.epochs=3       # three epochs
bash scripts/setup.sh && .venv/bin/distill config | head -5
env DISTILL_DEBUG=1 distill status --verify 2>&1 > /tmp/status.txt
pip install -e '.[ray]'; distill sweep 'sweep.grid={train.learning_rate: [1e-5, 1e-4]}'
```
"""
    assert _check(markdown) == []
    planted = markdown.replace("train.epochs=3", "train.epoch=3").replace(
        "config | head", "config train.lora.rank=4 | head"
    )
    found = _check(planted)
    assert len(found) == 2, found
    assert "page.md:4:" in found[0] and "train.epoch" in found[0]
    assert "page.md:7:" in found[1] and "train.lora.rank" in found[1]


def test_console_blocks_check_only_prompted_lines() -> None:
    markdown = "```console\n$ distill plan --pilot 0\nplan: 400 questions, fixed (n=4)\n```\n"
    assert _check(markdown) == []
    assert len(_check(markdown.replace("--pilot 0", "generate.nn=2"))) == 1


def test_yaml_configs_are_loaded_and_a_wrong_key_is_reported() -> None:
    good = "```yaml\nteacher:\n  fewshot: 2\ntrain:\n  lora: {enabled: true, r: 8}\n```\n"
    assert _check(good) == []
    found = _check(good.replace("r: 8", "rank: 8"))
    assert len(found) == 1 and "train.lora.rank: unknown config key" in found[0], found
    assert "block.yaml" not in found[0]  # the temp file's name is not the reader's business


def test_indented_blocks_in_lists_are_checked() -> None:
    markdown = "- Try it:\n\n    ```bash\n    distill run train.epoch=3\n    ```\n"
    assert len(_check(markdown)) == 1


def test_only_a_marked_block_or_another_language_is_skipped() -> None:
    accel = (
        "```yaml\n# not checked: an accelerate config, not distill's\ndistributed_type: FSDP\n```\n"
    )
    assert _check(accel) == []
    assert len(_check(accel.replace("# not checked: an", "# an"))) == 1
    assert _check("```text\ndistill train train.machine_rank=$RANK\n```\n") == []
    # a marker needs a reason
    assert len(_check("```bash\n# not checked:\ndistill run train.epoch=3\n```\n")) == 1


def test_a_command_in_a_block_without_language_is_reported() -> None:
    found = _check("```\n./distill run\n```\n")
    assert len(found) == 1 and "no language" in found[0]


def test_fences_are_parsed_like_markdown() -> None:
    text = "````markdown\n```bash\ndistill run\n```\n````\n~~~yaml\nrun: x\n~~~\n"
    blocks = code_blocks(text, Path("p.md"))
    assert [(b.lang, b.line) for b in blocks] == [("markdown", 1), ("yaml", 6)]
    assert blocks[0].text == "```bash\ndistill run\n```"


def test_block_where_names_file_and_line() -> None:
    assert Block(Path("docs/x.md"), 7, "bash", "").where == "docs/x.md:7"


def test_a_yaml_block_extends_a_config_from_the_repo_root() -> None:
    block = "```yaml\nextends: pipeline/configs/default.yaml\ngenerate:\n  n: 2\n```\n"
    assert _check(block) == []
    assert "not found" in _check(block.replace("default.yaml", "nodefault.yaml"))[0]


def test_the_example_config_and_task_file_load() -> None:
    """docs/examples/ is what the own-teacher guide tells a reader to copy: its config builds
    and its task file splits into train and eval with the config's column map; its 6 questions
    are too few to spare a validation split, and the task says so."""
    from pipeline.config import load_config
    from pipeline.tasks import load_task

    configs = sorted((ROOT / "docs" / "examples").glob("*.yaml"))
    assert configs
    for path in configs:
        assert check_yaml(path.read_text(encoding="utf-8"), ROOT) is None, path
    with chdir(ROOT):
        task = load_task(load_config(ROOT / "docs/examples/my_task.yaml").task)
    assert task.train and task.eval and not task.validation
    assert "no validation split" in task.carved
