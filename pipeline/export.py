"""`distill export --to DIR [--push REPO]`: a run's dataset and student, laid out for the Hub.

Export knows no stage's files: it asks every stage of the chain for the config given for its
part, through the stage's optional `export(ctx)` hook (pipeline/stage.py, ExportContext). As
built, filter writes DIR/dataset/ (the rows as parquet and the dataset card), train DIR/model/
(the student's weights in the dtype it trained in, config, tokenizer, card, loss curve; no
pickle), and eval, when it is complete, replaces the model's card by its copy with the scores.

Every part is written to a temporary dir renamed into place: DIR is whole or absent. Nothing
goes over the network unless `--push REPO` is given; then `huggingface_hub` uploads the model to
the model repo REPO and the dataset to the dataset repo REPO, with the token it finds (HF_TOKEN
or `huggingface-cli login`); no token, offline mode or a failed upload is one clear line, and
the export stays on disk for `huggingface-cli upload`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import ExportError
from pipeline.stage import ExportContext

DTYPES = ("auto", "bfloat16", "float16", "float32")


def export(cfg: Config, to: str | Path, push: str = "", dtype: str = "auto") -> Path:
    """Write the export to `to` (a new or empty dir); with `push`, upload it. `dtype`: the
    student's weights; auto is the dtype it trained in."""
    from pipeline.runner import check_complete, plan, stage_module

    dest = Path(to).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"--to {dest}: exists and is not an empty dir; give a new one")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: not one of {', '.join(DTYPES)}")
    # The chain's own stages (not the ablation's or a seed's copies), in chain order.
    parts = [
        (p, hook)
        for label, p in plan(cfg, "eval").items()
        if label == p.stage and (hook := getattr(stage_module(p.stage), "export", None))
    ]
    tmp = dest.with_name(f".{dest.name}.export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    notes = []
    try:
        tmp.mkdir(parents=True)
        for p, hook in parts:
            manifest, problems = check_complete(p)
            notes.append(hook(ExportContext(p.dir, manifest, tuple(problems), tmp, dtype, push)))
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for note in filter(None, notes):
        print(f"export: {note}")
    print(f"export: dataset and student in {dest}")
    if push:
        upload(dest, push)
    return dest


def upload(dest: Path, repo: str) -> None:
    """Upload DIR/model to the model repo `repo` and DIR/dataset to the dataset repo `repo`."""
    import huggingface_hub as hf

    keep = f"nothing was pushed; the export is in {dest}, ready for `huggingface-cli upload`"
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise ExportError(f"--push {repo}: HF_HUB_OFFLINE is set; {keep}")
    token = hf.get_token()
    if not token:
        raise ExportError(
            f"--push {repo}: no Hugging Face token (set HF_TOKEN, or run `huggingface-cli "
            f"login`); {keep}"
        )
    api = hf.HfApi(token=token)
    done = []
    try:
        for kind in ("model", "dataset"):
            api.create_repo(repo, repo_type=kind, exist_ok=True)
            api.upload_folder(folder_path=str(dest / kind), repo_id=repo, repo_type=kind)
            done.append(kind)
    except Exception as e:  # network, auth, quota: each is one line to the user
        first = (str(e).splitlines() or [type(e).__name__])[0][:200].replace(token, "***")
        pushed = f" ({' and '.join(done)} pushed)" if done else ""
        raise ExportError(
            f"--push {repo}: upload failed: {first}{pushed}; the export is in {dest}"
        ) from None
    print(f"export: pushed the model and the dataset to {repo}")
