"""task.source `hf:`: a Hugging Face dataset, read through `datasets`.

    hf:openai/gsm8k:main        a Hub id and its config (offline: HF_HUB_OFFLINE=1 and the cache)
    hf:/data/my_task            a `save_to_disk` directory, or a directory of data files
    hf:/data/train.parquet      one data file: parquet, JSON lines (.jsonl, .json) or CSV

Every split the dataset has is read; pipeline/tasks.py maps the rows to questions (task.columns,
task.answer_rule) and uses the dataset's own train and test splits when it has both
(task.splits names others), else carves them as for a JSONL file. The digest that keys the
task is of the local files' bytes, or of the fingerprints `datasets` gives a Hub dataset's
cached splits, so a changed dataset is a new key. `datasets` is imported here, on first use.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.config import expand
from pipeline.records import DataError, sha256_file

DATA_FILES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
SAVED = ("dataset_dict.json", "state.json")  # what `save_to_disk` writes at a dataset's top


@dataclass(frozen=True)
class HfData:
    name: str  # the dataset's last path part: its worked examples are data/fewshot/<name>.jsonl
    splits: dict[str, list[dict[str, Any]]]  # every split's rows, in the dataset's order
    digest: str


def local_path(arg: str) -> Path | None:
    """The local dataset `arg` names, or None for a Hub id."""
    path = expand(arg, "task.source")
    return path if path.exists() else None


def _name(arg: str) -> str:
    path = local_path(arg)
    if path is not None:
        return path.stem if path.is_file() else path.name
    return arg.partition(":")[0].rstrip("/").split("/")[-1]


def _files_digest(path: Path) -> str:
    """The sha256 of a local dataset's files: their paths under it and their bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _open(arg: str) -> Any:
    """The dataset `arg` names, as `datasets` loads it: a DatasetDict, or one Dataset."""
    import datasets

    datasets.disable_progress_bars()
    path = local_path(arg)
    if path is None:
        repo, _, config = arg.partition(":")
        return datasets.load_dataset(repo, config or None)
    if path.is_dir() and any((path / m).is_file() for m in SAVED):
        return datasets.load_from_disk(str(path))
    if path.is_file():
        builder = DATA_FILES.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"task.source: {path}: not a data file datasets reads here (give one of "
                f"{', '.join(DATA_FILES)}, a save_to_disk directory or a Hub id)"
            )
        return datasets.load_dataset(builder, data_files=str(path))
    return datasets.load_dataset(str(path))


@cache
def load_hf(arg: str) -> HfData:
    """Every split of the dataset `arg` names, or a DataError in one line naming it."""
    try:
        ds = _open(arg)
    except DataError:
        raise
    except Exception as e:  # datasets raises many kinds: not found, offline, bad files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise DataError(
            f"task.source: hf:{arg}: datasets could not load it ({type(e).__name__}: {first}); "
            "give a Hub id (owner/name[:config]; offline, one in the cache), a save_to_disk "
            "directory or a data file"
        ) from None
    if not hasattr(ds, "keys"):  # one Dataset (load_from_disk of a split)
        ds = {"train": ds}
    splits = {str(k): [dict(r) for r in ds[k]] for k in ds}
    path = local_path(arg)
    if path is not None:
        digest = _files_digest(path)
    else:
        prints = {k: getattr(ds[k], "_fingerprint", "") for k in ds}
        digest = hashlib.sha256(json.dumps([arg, prints], sort_keys=True).encode()).hexdigest()
    return HfData(_name(arg), splits, digest)


def source_digest(arg: str) -> str:
    """What keys the task, without reading a local dataset's rows."""
    path = local_path(arg)
    return _files_digest(path) if path is not None else load_hf(arg).digest


_BOXED = re.compile(r"\\boxed\s*\{")


def extract(rule: str, text: str) -> str | None:
    """The gold answer in `text` under task.answer_rule: "" the text itself; gsm8k what follows
    the last `####` (thousands commas dropped); boxed the last \\boxed{...}; regex:PATTERN its
    first match's group 1 (or the whole match). None when the rule finds nothing."""
    if not rule:
        return text
    if rule == "gsm8k":
        if "####" not in text:
            return None
        return text.rsplit("####", 1)[1].strip().replace(",", "") or None
    if rule == "boxed":
        starts = [m.end() for m in _BOXED.finditer(text)]
        if not starts:
            return None
        depth, i = 1, starts[-1]
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i:j].strip() or None
        return None
    m = re.search(rule.removeprefix("regex:"), text)
    if m is None:
        return None
    return (m.group(1) if m.re.groups else m.group(0)).strip() or None
