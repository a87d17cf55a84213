"""A Hugging Face dataset in the forms users bring it, built here from rows in memory (issue 47):
what `save_to_disk` writes, a directory of data files (parquet, JSON lines) named by split, and
the cache a `load_dataset("me/arith", "main")` with the network leaves behind, read offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets

Splits = dict[str, list[dict]]


def saved(path: Path, splits: Splits) -> Path:
    """A DatasetDict as save_to_disk writes it."""
    datasets.DatasetDict(
        {k: datasets.Dataset.from_list(v) for k, v in splits.items()}
    ).save_to_disk(str(path))
    return path


def data_files(path: Path, splits: Splits, suffix: str) -> Path:
    """A directory of one file per split (train.parquet, test.jsonl...): `datasets` finds the
    splits by the files' names."""
    path.mkdir(parents=True)
    for split, rows in splits.items():
        ds = datasets.Dataset.from_list(rows)
        out = str(path / f"{split}{suffix}")
        {".parquet": ds.to_parquet, ".jsonl": ds.to_json, ".csv": ds.to_csv}[suffix](out)
    return path


def hub_cache(root: Path, splits: Splits, name: str = "arith") -> Path:
    """The datasets cache that `load_dataset(f"me/{name}", "main")` leaves: returns the directory
    to give as HF_DATASETS_CACHE, so that hf:me/NAME:main loads with HF_HUB_OFFLINE=1."""
    files = data_files(root / "files", splits, ".parquet")
    built = root / "built"
    datasets.load_dataset(
        "parquet", data_files={s: str(files / f"{s}.parquet") for s in splits}, cache_dir=str(built)
    )
    src = next(built.glob("parquet/default-*/0.0.0/*/"))
    dst = root / "cache" / f"me___{name}" / "main" / "0.0.0" / src.name
    dst.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name.replace("parquet-", f"{name}-"))
    info = json.loads((dst / "dataset_info.json").read_text())
    info |= {"config_name": "main", "dataset_name": name}
    (dst / "dataset_info.json").write_text(json.dumps(info))
    return root / "cache"
