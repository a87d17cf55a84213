"""filter's part of `distill export`: DIR/dataset/, the kept rows as parquet beside the card.

dataset/README.md                   the dataset card, its `configs:` entry pointed at:
dataset/data/train-<sha12>.parquet  kept.jsonl as parquet, `datasets` reads it; <sha12> is the
                                    rows' sha256 (stages/shared/cards.data_config: two
                                    exports of other rows never share a `datasets` cache
                                    entry)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.records import atomic_open, read_jsonl
from pipeline.stage import ExportContext
from stages.shared.cards import data_config, parse, render
from stages.shared.hub import require_complete
from stages.shared.layout import CARD, KEPT

BATCH = 5000  # rows per batch and parquet row group


def export(ctx: ExportContext) -> str:
    require_complete(ctx, "filter")
    assert ctx.manifest is not None
    write_dataset(ctx.dir, ctx.manifest["outputs"][KEPT]["sha256"], ctx.dest / "dataset")
    return ""


def write_dataset(filter_dir: Path, rows_sha: str, out: Path, batch: int = BATCH) -> None:
    """kept.jsonl of `filter_dir` (whose sha256 is `rows_sha`) as parquet + card in `out`.

    Streamed in batches of `batch` rows, one row group each, in two reads: the first unifies
    the batches' Arrow schemas (a field some rows lack, a struct whose keys vary, ints in one
    batch and floats in another), the second writes every batch under it. What it holds is a
    batch, not the set: a million rows export in the memory of a few thousand."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kept = filter_dir / KEPT
    parquet = f"data/train-{rows_sha[:12]}.parquet"
    (out / "data").mkdir(parents=True)
    schemas = [pa.Table.from_pylist(rows).schema for rows in _batches(kept, batch)]
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    with atomic_open(out / parquet, binary=True) as f, pq.ParquetWriter(f, schema) as w:
        for rows in _batches(kept, batch):
            w.write_table(pa.Table.from_pylist(rows, schema=schema))
    meta, body = parse((filter_dir / CARD).read_text())
    meta["configs"] = [data_config("default", parquet)]
    (out / CARD).write_text(render(meta, body))


def _batches(path: Path, size: int) -> Iterator[list[dict]]:
    rows: list[dict] = []
    for row in read_jsonl(path):
        rows.append(row)
        if len(rows) == size:
            yield rows
            rows = []
    if rows:
        yield rows
