"""filter's part of `distill export`: DIR/dataset/, the kept rows as parquet beside the card.

dataset/README.md                   the dataset card, its `configs:` entry pointed at:
dataset/data/train-<sha12>.parquet  kept.jsonl as `datasets` reads it; <sha12> is the
                                    rows' sha256 (stages/shared/cards.data_config: two
                                    exports of other rows never share a `datasets` cache
                                    entry)
"""

from __future__ import annotations

from pipeline.stage import ExportContext
from stages.shared.cards import data_config, parse, render
from stages.shared.hub import require_complete
from stages.shared.layout import CARD, KEPT


def export(ctx: ExportContext) -> str:
    import datasets

    require_complete(ctx, "filter")
    assert ctx.manifest is not None
    datasets.disable_progress_bars()  # a copy of a few MB: no bars on the console
    datasets.logging.set_verbosity_error()
    write_dataset(ctx.dir, ctx.manifest["outputs"][KEPT]["sha256"], ctx.dest / "dataset")
    return ""


def write_dataset(filter_dir, rows_sha: str, out) -> None:
    """kept.jsonl of `filter_dir` (whose sha256 is `rows_sha`) as parquet + card in `out`."""
    import datasets

    parquet = f"data/train-{rows_sha[:12]}.parquet"
    (out / "data").mkdir(parents=True)
    ds = datasets.load_dataset("json", data_files=str(filter_dir / KEPT), split="train")
    ds.to_parquet(str(out / parquet))
    meta, body = parse((filter_dir / CARD).read_text())
    meta["configs"] = [data_config("default", parquet)]
    (out / CARD).write_text(render(meta, body))
