"""Docs that cannot lie: every `distill` command and every YAML config in the README and docs/
must parse with distill's own parser and build a valid config. No stage runs.

What is checked, in each Markdown file's fenced code blocks:
- `bash`, `sh`, `shell`, `zsh` blocks are shell scripts: `\\` continuations are joined, comments
  dropped, lines split at `;`, `&&`, `||`, `|`, `&`; environment assignments (`A=b cmd`),
  `env`/`exec`/`time`/`nohup` and redirections are skipped. Each command whose program is
  `distill` (`./distill`, `.venv/bin/distill`, any path ending in /distill, or
  `python -m pipeline.cli`) is parsed by `pipeline.cli`'s parser as `main` parses it, then its
  `--config` (a path from the repo root; the shipped default without one) and its `key=value`
  overrides are built with `pipeline.config.load_config`, which raises on an unknown key or a
  bad value. Other programs (`bash scripts/...`, `pip`, `ray`...) are not distill's: skipped.
- `console` blocks: only lines after a `$ ` prompt are commands; the rest is output.
- `yaml`/`yml` blocks are distill configs, or fragments of one rooted at the top level: each is
  loaded as a config file at the repo root (so `extends: pipeline/configs/default.yaml` works).
- A block with no language must not hold a distill command (give it `bash`, or `text` for a
  line that is not meant to be typed, such as a script's excerpt).

Not checked, on purpose and narrowly: `text` blocks, blocks in other languages, and a block
whose first line is `# not checked: <why>` (e.g. an accelerate or compose file in YAML).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline import cli
from pipeline.config import ConfigError, load_config, shipped_config

SHELL = {"bash", "sh", "shell", "zsh"}
CONSOLE = {"console"}
YAML = {"yaml", "yml"}
SKIP = re.compile(r"^\s*#\s*not checked:\s*\S")
SEPARATORS = {";", ";;", "&&", "||", "|", "&", "(", ")"}
WRAPPERS = {"env", "exec", "time", "nohup"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
EXTENDS = re.compile(r"""^(extends:\s*)(?![/~"'])([^\s#]+)""", re.M)  # a relative path
DISTILL_LINE = re.compile(r"^\s*(\$\s+)?(\./|\.venv/bin/)?distill\s")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # the opening fence's line, from 1
    lang: str  # the info string's first word, lowercased ("" for none)
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def code_blocks(text: str, path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown text, indented ones (in lists, admonitions) too."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        lang = (m["info"].split() or [""])[0].lower().lstrip(".{")
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            end = lines[j].strip()
            if end.startswith(fence[0] * len(fence)) and set(end) == {fence[0]}:
                break
            body.append(_dedent(lines[j], indent))
            j += 1
        out.append(Block(path, i + 1, lang, "\n".join(body)))
        i = j + 1
    return out


def _dedent(line: str, indent: int) -> str:
    """A block's line without the fence's indentation (a list item's or an admonition's)."""
    if line[:indent].isspace():
        return line[indent:]
    return line.lstrip() if indent else line


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """(line number, command line) of a shell or console block, continuations joined."""
    out: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    prompt = block.lang in CONSOLE
    for n, raw in enumerate(block.text.splitlines(), block.line + 1):
        line = raw.rstrip()
        if not current:
            if prompt:
                if not line.lstrip().startswith("$"):
                    continue  # output
                line = line.lstrip()[1:]
            start = n
        if line.endswith("\\"):
            current.append(line[:-1])
            continue
        current.append(line)
        out.append((start, " ".join(current)))
        current = []
    if current:
        out.append((start, " ".join(current)))
    return out


def simple_commands(line: str) -> list[list[str]]:
    """The words of each simple command on a shell line (comments and redirections dropped)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError as e:  # an unclosed quote
        return [["<unparsable>", str(e)]]
    commands: list[list[str]] = [[]]
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
            continue
        if tok in SEPARATORS:
            commands.append([])
        elif set(tok) <= set("<>&") and ("<" in tok or ">" in tok):
            if commands[-1] and commands[-1][-1].isdigit():
                commands[-1].pop()  # the fd of `2>`
            skip_next = True  # the redirection's target
        else:
            commands[-1].append(tok)
    return [c for c in commands if c]


def distill_args(words: list[str]) -> list[str] | None:
    """The arguments of a distill invocation, or None when the program is another one."""
    i = 0
    while i < len(words) and (ASSIGNMENT.match(words[i]) or words[i] in WRAPPERS):
        i += 1
    words = words[i:]
    if not words:
        return None
    prog = words[0]
    if prog == "distill" or prog.endswith("/distill"):
        return words[1:]
    if Path(prog).name.startswith("python") and words[1:3] == ["-m", "pipeline.cli"]:
        return words[3:]
    return None


def check_command(args: list[str], root: Path) -> str | None:
    """What is wrong with `distill ARGS`, as the CLI would say it; None when it parses and its
    config builds. Nothing runs."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            ns = cli.parse(args)
    except SystemExit as e:
        if e.code == 0:  # --help
            return None
        return said.getvalue().strip().splitlines()[-1]
    config = Path(ns.config) if ns.config else shipped_config("default")
    return _load(root / config, cli.overrides(ns), root)


def check_yaml(text: str, root: Path) -> str | None:
    """What is wrong with a YAML config (or a fragment from the top level); None when it
    builds. The block is read as a file at the repo root: its `extends:` path is from there."""
    text = EXTENDS.sub(lambda m: f"{m[1]}{root / m[2]}", text)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "block.yaml"
        path.write_text(text, encoding="utf-8")
        problem = _load(path, [], root)
    return (
        problem.replace(f" (from {path})", "").replace(str(path), "the block") if problem else None
    )


def _load(config: Path, overrides: list[str], root: Path) -> str | None:
    with contextlib.chdir(root):  # relative paths in a config are the user's, typed at the root
        try:
            load_config(config, overrides)
        except ConfigError as e:
            return str(e)
    return None


def check_block(block: Block, root: Path) -> list[str]:
    """Each problem of one block, as 'file:line: ...'."""
    first = block.text.lstrip("\n").splitlines()[:1]
    if first and SKIP.match(first[0]):
        return []
    if block.lang in YAML:
        problem = check_yaml(block.text, root)
        return [f"{block.where}: yaml config: {problem}"] if problem else []
    if block.lang in SHELL | CONSOLE:
        out = []
        for n, line in logical_lines(block):
            for words in simple_commands(line):
                args = distill_args(words)
                if args is None:
                    continue
                problem = check_command(args, root)
                if problem:
                    out.append(f"{block.path}:{n}: `distill {' '.join(args)}`: {problem}")
        return out
    if block.lang == "":
        return [
            f"{block.path}:{n}: a distill command in a block with no language; "
            "fence it as bash (checked) or text (not meant to be typed)"
            for n, line in enumerate(block.text.splitlines(), block.line + 1)
            if DISTILL_LINE.match(line)
        ]
    return []


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def problems(files: list[Path], root: Path) -> list[str]:
    out: list[str] = []
    for path in files:
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        for block in code_blocks(path.read_text(encoding="utf-8"), shown):
            out += check_block(block, root)
    return out
