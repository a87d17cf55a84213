"""`distill export --to DIR [--push REPO]`: a run's dataset and student, laid out for the Hub.

    DIR/dataset/README.md                            the dataset card (filter's), data path fixed
    DIR/dataset/data/train-00000-of-00001.parquet    kept.jsonl, as `datasets` reads it
    DIR/model/                                       the student: safetensors, config, tokenizer,
                                                     chat template, README.md (eval's card with
                                                     scores, else train's), loss.png

Both halves come from complete stages only (their manifests checked), for exactly the config
given, and are written to a temporary dir renamed into place: DIR is whole or absent. Nothing
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
from pipeline.errors import UserError

PARQUET = "data/train-00000-of-00001.parquet"
CARD = "README.md"


class ExportError(UserError):
    """What cannot be exported, and what to run first."""


def export(cfg: Config, to: str | Path, push: str = "") -> Path:
    """Write the export to `to` (a new or empty dir); with `push`, upload it."""
    from pipeline.runner import check_complete, plan

    dest = Path(to).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"--to {dest}: exists and is not an empty dir; give a new one")
    plans = plan(cfg, "eval")
    for name in ("filter", "train"):
        manifest, problems = check_complete(plans[name])
        if manifest is None:
            why = "; ".join(problems) or "not run yet for this config"
            raise ExportError(f"{name} is not complete ({why}); run `distill train` first")
    ev, _ = check_complete(plans["eval"])
    card = plans["eval"].dir / "cards" / "student" / CARD
    model_card = card if ev is not None and card.is_file() else None

    tmp = dest.with_name(f".{dest.name}.export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _dataset(plans["filter"].dir, tmp / "dataset")
        _model(plans["train"].dir, model_card, tmp / "model")
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not model_card:
        print("export: the student is not evaluated for this config: its card has no scores")
    print(f"export: dataset and student in {dest}")
    if push:
        upload(dest, push)
    return dest


def _dataset(filter_dir: Path, out: Path) -> None:
    import datasets

    from stages.shared.cards import parse, render

    datasets.disable_progress_bars()  # a copy of a few MB: no bars on the console
    datasets.logging.set_verbosity_error()

    (out / "data").mkdir(parents=True)
    ds = datasets.load_dataset("json", data_files=str(filter_dir / "kept.jsonl"), split="train")
    ds.to_parquet(str(out / PARQUET))
    meta, body = parse((filter_dir / CARD).read_text())
    for c in meta.get("configs", []):
        c["data_files"] = [{"split": "train", "path": PARQUET}]
    (out / CARD).write_text(render(meta, body))


def _model(train_dir: Path, card: Path | None, out: Path) -> None:
    src = train_dir / "model"
    shutil.copytree(src, out)
    if card is not None:
        shutil.copyfile(card, out / CARD)
    if (train_dir / "loss.png").is_file():
        shutil.copyfile(train_dir / "loss.png", out / "loss.png")


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
    except Exception as e:  # noqa: BLE001 - network, auth, quota: each is one line to the user
        first = (str(e).splitlines() or [type(e).__name__])[0][:200].replace(token, "***")
        pushed = f" ({' and '.join(done)} pushed)" if done else ""
        raise ExportError(
            f"--push {repo}: upload failed: {first}{pushed}; the export is in {dest}"
        ) from None
    print(f"export: pushed the model and the dataset to {repo}")
