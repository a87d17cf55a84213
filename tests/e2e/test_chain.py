"""The whole chain, `distill run`, on tiny models: real vLLM, real TRL, every stage cached."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import hfforms
import pytest
from conftest import ROOT, run_cli
from hfforms import hub_cache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tiny_model: Path, tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("chain")
    teacher = tiny_teacher
    overrides = [
        f"runs_dir={tmp / 'runs'}",
        f"cache_dir={tmp / 'cache'}",
        f"teacher.model={teacher}",
        f"train.student={tiny_model}",
        "task.max_train=16",
        "task.max_eval=10",
        "generate.n=2",
        "generate.sampling.max_tokens=24",
        # The tiny teacher has learned the format, not arithmetic: keep formatted samples.
        "filter.checks=[truncated,format,exact_dedup]",
        "train.max_steps=6",
        "train.batch_size=4",
        "train.save_steps=2",
        "train.learning_rate=0.001",
        "eval.sampling.max_tokens=24",
        "eval.models=[teacher,base,student,student_answer_only]",
        # the default's draft estimate and identity probes are tested in tests/stages/eval:
        # here they would only add engine starts to every chain
        "eval.draft=false",
        "eval.identity=false",
    ]
    return {"overrides": overrides, "runs": tmp / "runs" / "default"}


CAPPED = "filter.per_question_cap=1"
STAGES = ("generate", "filter", "train", "eval")


def _manifests(runs: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in sorted(runs.glob("*/*/manifest.json"), key=lambda p: p.stat().st_mtime):
        out.setdefault(m.parent.parent.name, []).append(json.loads(m.read_text()))
    return out


def _status_lines(stdout: str) -> dict[str, str]:
    """'generate: cached in 0.0s ...' lines printed as each stage finishes."""
    out = {}
    for line in stdout.splitlines():
        head, _, rest = line.partition(": ")
        if head in ("generate", "filter", "train", "eval") and rest.split(" ")[0] in (
            "cached",
            "ran",
        ):
            out[head] = rest.split(" ")[0]
    return out


def test_run_end_to_end_then_cached_then_filter_change(chain: dict):
    r = run_cli("run", *chain["overrides"])
    assert r.returncode == 0, r.stderr[-4000:]
    assert _status_lines(r.stdout) == {s: "ran" for s in ("generate", "filter", "train", "eval")}
    assert (chain["runs"] / "report.html").is_file() and "report: " in r.stdout
    ms = _manifests(chain["runs"])
    assert set(ms) == {"generate", "filter", "train", "eval"}
    gen, filt, ev = (ms[s][0] for s in ("generate", "filter", "eval"))
    train, ablation = sorted(ms["train"], key=lambda m: m["config"]["train"]["answer_only"])
    assert filt["inputs"] == {"generate": gen["key"]}
    assert train["inputs"] == ablation["inputs"] == {"filter": filt["key"]}
    assert ablation["config"]["train"]["answer_only"] and train["key"] != ablation["key"]
    assert ev["inputs"] == {
        "filter": filt["key"],
        "train": train["key"],
        "train_answer_only": ablation["key"],
    }
    assert gen["stats"]["samples"] == 16 * 2
    assert filt["outputs"]["kept.jsonl"]["rows"] > 0, "the tiny teacher should answer in format"
    assert train["stats"]["steps"] == 6

    eval_dir = next(chain["runs"].glob("eval/*/metrics.json")).parent
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert set(metrics["per_model"]) == {"teacher", "base", "student", "student_answer_only"}
    for m in metrics["per_model"].values():
        assert 0 <= m["ci_low"] <= m["accuracy"] <= m["ci_high"] <= 1
        assert m["n"] == 10
    paired = metrics["mcnemar"]["student_vs_student_answer_only"]  # the ablation's paired test
    assert paired["n"] == 10 and 0 <= paired["p_value"] <= 1
    report = (eval_dir / "report.md").read_text()
    assert "| student_answer_only" in report and "McNemar student vs student_answer_only" in report
    assert (eval_dir / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy" in r.stdout  # the metrics table is printed at the end

    again = run_cli("run", *chain["overrides"])
    assert again.returncode == 0, again.stderr[-4000:]
    assert _status_lines(again.stdout) == {
        s: "cached" for s in ("generate", "filter", "train", "eval")
    }
    assert "starting" not in again.stdout + again.stderr  # no vLLM server was started

    # At most one sample per question: a filter change that also changes the kept rows (the
    # export test below exports both datasets). Up to train: the eval key moves with the filter
    # key (its inputs, above), and asking four models again would only cost time.
    changed = run_cli("train", *chain["overrides"], CAPPED)
    assert changed.returncode == 0, changed.stderr[-4000:]
    assert _status_lines(changed.stdout) == {"generate": "cached", "filter": "ran", "train": "ran"}


def _jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_report_opens_in_a_real_browser_and_shows_the_run(chain: dict, tmp_path: Path):
    """The report of the chain above, in headless Chromium: no console error, and each section
    holds what the stage dirs hold. `run` wrote one for each config; the capped run came last,
    so `distill report` writes the uncapped config's again, from the cache."""
    from browser import opened, screenshots, table

    r = run_cli("report", *chain["overrides"])
    assert r.returncode == 0, r.stderr[-3000:]
    ms = _manifests(chain["runs"])
    (filt,) = [m for m in ms["filter"] if m["config"]["filter"]["per_question_cap"] != 1]
    (ev,) = [m for m in ms["eval"] if m["inputs"]["filter"] == filt["key"]]
    fdir = chain["runs"] / "filter" / filt["key"][:12]
    edir = chain["runs"] / "eval" / ev["key"][:12]
    funnel = json.loads((fdir / "report.json").read_text())
    metrics = json.loads((edir / "metrics.json").read_text())
    with opened(chain["runs"] / "report.html") as (page, errors):
        meta = json.loads(page.text_content("#meta"))["stages"]
        assert (meta["filter"]["key"], meta["eval"]["key"]) == (filt["key"][:12], ev["key"][:12])
        rows = {row[0]: row[1] for row in table(page, "#funnel")[1:]}
        want = {"samples in": funnel["input"], **funnel["reasons"], "kept": funnel["kept"]}
        assert rows == {k: f"{v:,}" for k, v in want.items()}

        cells = {row[0]: row for row in table(page, "#eval")[1:]}
        assert set(cells) == set(metrics["per_model"])
        for name, m in metrics["per_model"].items():
            assert cells[name][1] == f"{100 * m['accuracy']:.1f}%"
            assert cells[name][3] == f"{m['correct']}/{m['n']}"

        # a question id typed in the search box opens its page: every sample written for it
        written = _jsonl_rows(fdir / "kept.jsonl") + _jsonl_rows(fdir / "rejected.jsonl")
        qid = written[-1]["question_id"]
        page.fill("#s-qid", qid)
        page.wait_for_selector("#s-question h3")
        assert page.text_content("#s-question h3") == f"question {qid}"
        shown = table(page, "#s-question")[1:]
        assert len(shown) == sum(w["question_id"] == qid for w in written) > 0
        assert {row[0] for row in shown} == {qid}
        shots = screenshots(page, tmp_path)
        assert errors == []
    assert [p.read_bytes()[:4] for p in shots] == [b"\x89PNG"] * 5


def _card(path: Path) -> dict:
    """A card's YAML metadata block, parsed."""
    import yaml

    text = path.read_text()
    assert text.startswith("---\n"), path
    return yaml.safe_load(text[4:].split("\n---\n", 1)[0])


def test_cards_export_and_disk(chain: dict, tmp_path: Path):
    """The filter's dataset card and the student's model card name the right keys; the export
    loads in datasets, transformers and vLLM; checkpoints are gone; status shows disk use."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert run_cli("run", *chain["overrides"]).returncode == 0  # cached after the test above
    ms = _manifests(chain["runs"])
    gen = ms["generate"][0]
    capped = next(m for m in ms["filter"] if m["config"]["filter"]["per_question_cap"] == 1)
    (filt,) = [m for m in ms["filter"] if m is not capped]
    train = next(
        m
        for m in ms["train"]
        if m["inputs"] == {"filter": filt["key"]} and not m["config"]["train"]["answer_only"]
    )
    ev = next(m for m in ms["eval"] if m["inputs"]["filter"] == filt["key"])
    fdir = chain["runs"] / "filter" / filt["key"][:12]
    tdir = chain["runs"] / "train" / train["key"][:12]
    edir = chain["runs"] / "eval" / ev["key"][:12]
    kept = filt["outputs"]["kept.jsonl"]["rows"]

    card = _card(fdir / "README.md")
    assert card["distill"] == {"generate_key": gen["key"], "filter_key": filt["key"]}
    assert card["license"] == "apache-2.0" and card["size_categories"] == ["n<1K"]
    sha = filt["outputs"]["kept.jsonl"]["sha256"]
    assert card["configs"] == [
        {
            "config_name": f"kept-{sha[:12]}",
            "data_files": [{"split": "train", "path": "kept.jsonl"}],
        }
    ]
    assert len(datasets.load_dataset(str(fdir), split="train")) == kept  # by the card
    assert "README.md" in filt["outputs"]

    assert not (tdir / "checkpoints").exists()  # deleted after success
    assert "README.md" in train["outputs"]["model"]["files"]
    mcard = _card(tdir / "model" / "README.md")
    assert mcard["distill"] == {"train_key": train["key"], "filter_key": filt["key"]}
    assert mcard["base_model"] == Path(chain["overrides"][3].split("=", 1)[1]).name

    dest = tmp_path / "A" / "export"
    r = run_cli("export", *chain["overrides"], "--to", str(dest))
    assert r.returncode == 0, r.stderr[-3000:]
    # A second run's export, the same layout under another dir, with other rows: each loads as
    # itself (datasets 5.x once returned the first export's rows for the second).
    other = tmp_path / "B" / "export"
    r = run_cli("export", *chain["overrides"], CAPPED, "--to", str(other))
    assert r.returncode == 0, r.stderr[-3000:]
    capped_kept = capped["outputs"]["kept.jsonl"]["rows"]
    assert capped_kept != kept, "the cap should drop a question's second sample"
    ds = datasets.load_dataset(str(dest / "dataset"), split="train")
    assert len(ds) == kept and {"prompt", "completion", "pass_rate"} <= set(ds.column_names)
    assert len(datasets.load_dataset(str(other / "dataset"), split="train")) == capped_kept
    assert _card(dest / "dataset" / "README.md")["distill"]["filter_key"] == filt["key"]
    exported = _card(dest / "model" / "README.md")
    acc = ev["stats"]["accuracy"]["student"]
    assert exported["model-index"][0]["results"][0]["metrics"][0]["value"] == acc
    assert exported["model-index"][0]["name"] == f"tiny-distilled-{train['key'][:12]}"
    trained = "bfloat16" if train["stats"]["bf16"] else "float32"  # bf16 where the CPU has it
    assert json.loads((dest / "model" / "config.json").read_text())["dtype"] == trained
    assert not list((dest / "model").glob("*.bin")), "a pickle would be pushed to the Hub"
    assert (tdir / "model" / "training_args.bin").is_file()  # the run dir keeps it
    assert exported["distill"]["train_key"] == train["key"]
    assert "## Evaluation" in (dest / "model" / "README.md").read_text()
    assert (edir / "cards" / "student" / "README.md").is_file()
    model = AutoModelForCausalLM.from_pretrained(dest / "model")
    tok = AutoTokenizer.from_pretrained(dest / "model")
    assert model.config.num_hidden_layers == 2 and tok.chat_template
    _answers_in_vllm(dest / "model", tmp_path)

    again = run_cli("export", *chain["overrides"], "--to", str(dest))  # not empty now
    assert again.returncode == 2 and "not an empty dir" in again.stderr
    for i, (env, words) in enumerate(
        (
            ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
            (
                {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "HF_HOME": str(tmp_path)},
                "no Hugging Face token",
            ),
        )
    ):
        out = tmp_path / f"push-{i}"
        p = run_cli("export", *chain["overrides"], "--to", str(out), "--push", "me/x", env=env)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode == 2 and len(lines) == 1 and words in lines[0], p.stderr
        assert "nothing was pushed" in lines[0] and (out / "model" / "config.json").is_file()

    empty = run_cli(
        "export",
        *chain["overrides"],
        f"runs_dir={tmp_path / 'none'}",
        "--to",
        str(tmp_path / "never"),
    )
    assert empty.returncode == 2 and "run `distill train` first" in empty.stderr
    assert not (tmp_path / "never").exists()

    st = run_cli("status", *chain["overrides"])
    assert st.returncode == 0 and "disk" in st.stdout and "shared" in st.stdout


def _answers_in_vllm(model_dir: Path, tmp: Path) -> None:
    from pipeline.ask import AskSettings, ModelSpec, ask
    from pipeline.calls import Request

    got = []
    spec = ModelSpec(label="export", model_dir=model_dir, engine="offline", dtype="float32")
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    req = Request(["x"], msgs, {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8, "seed": 0})
    ask(spec, [req], got.append, lambda f: None, AskSettings(), tmp / "vllm-logs")
    assert len(got) == 1 and got[0].usage["completion_tokens"] > 0


def test_interrupt_during_train_resumes_from_checkpoint(chain: dict):
    # No validation here: 50 steps are 8 epochs of 7 steps, a vLLM start at each one's end.
    # Steps enough that the Ctrl-C, sent within 0.2 s of the first checkpoint (step 5), lands
    # long before the last (0.2 s a step alone, and a checkpoint every 5); `train`, not `run`:
    # the answer-only student's steps and eval would test nothing more.
    overrides = [
        *chain["overrides"],
        "train.max_steps=50",
        "train.save_steps=5",
        "train.validate=false",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "train", *overrides],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # A shell that starts the suite in the background (`cmd &`) ignores SIGINT, and a child
        # inherits that: Python then installs no KeyboardInterrupt handler and Ctrl-C does nothing.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 600
    ckpt = None
    while time.monotonic() < deadline and proc.poll() is None:
        # A checkpoint of this (unfinished) train key, complete enough to resume from.
        found = [
            c
            for c in chain["runs"].glob("train/*/checkpoints/checkpoint-*")
            if (c / "trainer_state.json").is_file()
            and not (c.parents[1] / "manifest.json").exists()
        ]
        if found:
            ckpt = found[0]
            break
        time.sleep(0.2)
    assert ckpt is not None, "training never wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted" in out
    train_dir = ckpt.parents[1]
    assert not (train_dir / "manifest.json").exists()

    again = run_cli("train", *overrides)
    assert again.returncode == 0, again.stderr[-4000:]
    lines = _status_lines(again.stdout)
    assert lines == {"generate": "cached", "filter": "cached", "train": "ran"}
    manifest = json.loads((train_dir / "manifest.json").read_text())
    assert manifest["stats"]["resumed_from_step"] >= 5
    assert manifest["stats"]["steps"] == 50


def test_new_student_on_cached_dataset_starts_no_server_and_stops_by_validation(
    chain: dict, tmp_path: Path
):
    """A new student on the cached dataset: no teacher. It trains with train.epochs: auto
    (issue 48) at a learning rate too small to move it, so its validation accuracy stays where
    it was: after epoch 1 and epoch 2 without a rise the rule stops it (patience 1), annealed
    at each epoch's end, and the card says why."""
    from tiny_model import build_tiny_model

    from stages.train.epochs import each_epoch_cosine

    other = build_tiny_model(tmp_path / "other-student", seed=7)
    auto = [
        "train.max_steps=-1",
        "train.epochs=auto",
        "train.max_epochs=4",
        "train.logging_steps=1",
    ]
    r = run_cli(
        "train", *chain["overrides"], f"train.student={other}", *auto, "train.learning_rate=1e-9"
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert _status_lines(r.stdout) == {"generate": "cached", "filter": "cached", "train": "ran"}
    assert "teacher: starting" not in r.stdout + r.stderr  # no teacher (validation: the student)
    trains = _manifests(chain["runs"])["train"]
    newest = trains[-1]
    filt = _manifests(chain["runs"])["filter"]
    assert newest["inputs"]["filter"] in {m["key"] for m in filt}
    assert len({m["key"] for m in trains}) == len(trains)  # a new dir keyed by the student
    stats = newest["stats"]
    measured = stats["validation"]
    assert [v["epoch"] for v in measured] == [1.0, 2.0], measured
    assert measured[0]["accuracy"] == measured[1]["accuracy"]
    assert stats["epochs"] == 2.0 and stats["steps"] == measured[1]["step"]
    assert (
        stats["epochs_auto"]["ran"] == 2.0
        and "not risen beyond noise" in (stats["epochs_auto"]["why"])
    )
    tdir = next(chain["runs"].glob(f"train/{newest['key'][:12]}"))
    # each epoch is its own cosine down to its end, where the rule may stop it, and epoch 2
    # starts again at the peak (one cosine over 4 epochs only fell); logged: each step's rate
    logged = [json.loads(x) for x in (tdir / "train_log.jsonl").open()]
    lrs = {e["step"]: e["learning_rate"] for e in logged if e.get("learning_rate") is not None}
    end = measured[0]["step"]
    per = each_epoch_cosine(end, 0.05)
    assert lrs and all(abs(lr - 1e-9 * per(s - 1)) < 1e-13 for s, lr in lrs.items()), lrs
    assert lrs[end + 1] == pytest.approx(1e-9) and lrs[end] < lrs[end + 1], lrs
    card = (tdir / "model" / "README.md").read_text()
    assert "It trained 2 epochs of at most 4 (train.epochs: auto)" in card
    assert "1e-09 (cosine to zero in each epoch, warmup 0.05 of the first)" in card


def test_accelerate_two_processes_through_cli(chain: dict):
    from transformers import AutoModelForCausalLM

    r = run_cli(
        "train",
        *chain["overrides"],
        "train.max_steps=4",
        "train.validate=false",  # validation under accelerate (rank 0 asks vLLM) is not run here
        "--launcher",
        "accelerate",
        "--num-processes",
        "2",
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert _status_lines(r.stdout)["train"] == "ran"
    done = [m for m in _manifests(chain["runs"])["train"] if m["stats"].get("num_processes") == 2]
    assert len(done) == 1 and done[0]["stats"]["steps"] == 4
    train_dir = chain["runs"] / "train" / done[0]["key"][:12]
    assert len(list(train_dir.rglob("manifest.json"))) == 1  # rank 1 wrote none
    model = AutoModelForCausalLM.from_pretrained(train_dir / "model")
    assert model.config.num_hidden_layers == 2


def _servers_of(root: Path) -> list:
    """Live vLLM server processes serving a model dir under `root`."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["status"] != psutil.STATUS_ZOMBIE and "vllm" in cmd and str(root) in cmd:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_kill9_during_eval_leaves_no_server_and_resumes(chain: dict):
    """kill -9 of the pipeline alone (not its group): its managed servers die with it, and the
    rerun asks only for the predictions that did not reach disk. Servers, not the default
    offline engine: on the tiny model that answers all 40 questions in one batch, leaving no
    moment to kill it mid-way (generate's kill -9 test covers the offline engine's child)."""
    overrides = [
        *chain["overrides"],
        "eval.sampling.max_tokens=20",  # a new eval key
        "eval.models=[teacher,student]",  # two servers, one after the other: room for the kill
        "teacher.serve.engine=server",
        "eval.serve.engine=server",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "eval", *overrides],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = chain["runs"].parents[1]  # the module's tmp dir: the teacher and students live there
    deadline = time.monotonic() + 600
    rows_at_kill = 0
    while time.monotonic() < deadline and proc.poll() is None:
        preds = [
            p
            for p in chain["runs"].glob("eval/*/predictions.jsonl")
            if not (p.parent / "manifest.json").exists()
        ]
        rows_at_kill = preds[0].read_bytes().count(b"\n") if preds else 0
        if rows_at_kill >= 5 and _servers_of(root):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "eval ended before the kill"
    assert _servers_of(root), "no server was running at the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 90
    while _servers_of(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _servers_of(root) == [], "a managed server outlived the killed pipeline"

    again = run_cli("eval", *overrides)
    assert again.returncode == 0, again.stderr[-4000:]
    eval_dir = next(
        p.parent
        for p in chain["runs"].glob("eval/*/manifest.json")
        if json.loads(p.read_text())["config"]["eval"]["sampling"]["max_tokens"] == 20
    )
    stats = json.loads((eval_dir / "manifest.json").read_text())["stats"]
    assert stats["reused"] >= rows_at_kill - 1  # what reached disk was kept (a torn tail aside)
    assert stats["reused"] + stats["requested"] == stats["predictions"] == 20
    from pipeline.records import read_jsonl  # splits on \n only: model text may hold U+2028

    ids = [r["id"] for r in read_jsonl(eval_dir / "predictions.jsonl")]
    assert len(ids) == len(set(ids)) == 20


def test_seeds_run_the_chain_per_seed_and_share_what_does_not_depend_on_it(chain: dict):
    overrides = [*chain["overrides"], "eval.models=[teacher, base, student]", "seeds=[1]"]
    r = run_cli("seeds", *overrides)
    assert r.returncode == 0, r.stderr[-4000:]
    seeds_dir = next(chain["runs"].glob("seeds/*/seeds.json")).parent
    result = json.loads((seeds_dir / "seeds.json").read_text())
    assert result["seeds"] == ["configured", "seed1"]
    per = result["per_model"]
    assert set(per) == {"teacher", "base", "student"} and per["student"]["n_seeds"] == 2
    # Teacher and base do not depend on the seed: the seed's run reused their predictions.
    assert per["teacher"]["sd"] == 0 and per["base"]["sd"] == 0
    evals = [
        json.loads(p.read_text())
        for p in chain["runs"].glob("eval/*/manifest.json")
        if json.loads(p.read_text())["config"]["eval"]["models"] == ["teacher", "base", "student"]
    ]
    assert len(evals) == 2
    # The seed's eval reuses the teacher's and the base model's 10 answers each and asks only its
    # student. The configured run's eval reuses all 30 if an earlier test here ran that chain's
    # eval (same keys), else it asks them first.
    reused = sorted(m["stats"]["reused_from_other_keys"] for m in evals)
    assert reused in ([0, 20], [20, 30])
    assert set(result["paired"]["student_vs_base"]) == {"configured", "seed1"}
    md = (seeds_dir / "seeds.md").read_text()
    assert "mean over 2 run(s)" in md and "student vs base (exact McNemar, per run;" in md
    assert "mean over 2 run(s)" in r.stdout  # the summary is printed


def test_the_chain_runs_on_a_hugging_face_dataset_in_each_form(chain: dict, tmp_path: Path) -> None:
    """task.source hf: the same rows as save_to_disk writes them, as parquet and as JSON lines
    files named by split, and as a Hub dataset's cache read with HF_HUB_OFFLINE=1 (issue 47):
    generate -> filter -> train -> eval end to end on each, its own test split as eval, golds
    after GSM8K's '####', the splits said first. Each form is its own task key, so every stage
    runs again; the run's pool and eval answers are shared, so the forms after the first ask
    the teacher nothing and their student (the same rows, the same seed) answers from the
    first's answers: a form read differently would show as new questions asked."""
    rows = [
        {"id": f"a{a}b{b}", "q": f"What is {a} + {b}?", "sol": f"{a} + {b} = {a + b}\n#### {a + b}"}
        for a in range(1, 9)
        for b in range(1, 5)
    ]
    splits = {"train": rows[:24], "test": rows[24:]}
    # not "arith": a task named so would take the bundled task's worked example (data/fewshot)
    cache = hub_cache(tmp_path / "hub", splits, name="hf_arith")
    forms = {
        "save_to_disk": f"hf:{hfforms.saved(tmp_path / 'hf_arith', splits)}",
        "parquet": f"hf:{hfforms.data_files(tmp_path / 'pq' / 'hf_arith', splits, '.parquet')}",
        "jsonl": f"hf:{hfforms.data_files(tmp_path / 'js' / 'hf_arith', splits, '.jsonl')}",
        "hub": "hf:me/hf_arith:main",
    }
    runs = chain["runs"].parent / "hf"
    for form, source in forms.items():
        r = run_cli(
            "run",
            *chain["overrides"],
            "run=hf",
            f"task.source={source}",
            "task.columns={id: id, question: q, answer: sol}",
            "task.answer_rule=gsm8k",
            "task.answer_type=numeric",
            "task.split_by=",  # the default config's split field; the dataset has its own splits
            "train.validate=false",  # the chain is what is tested here: no engine start it needs not
            "eval.models=[student]",
            env={"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
        )
        assert r.returncode == 0, form + r.stdout[-3000:] + r.stderr[-3000:]
        assert (
            "task hf_arith: train 16 · validation 6 · eval 8 (eval: the dataset's test split"
            in r.stdout
        ), form
        assert _status_lines(r.stdout) == dict.fromkeys(STAGES, "ran"), form
        gen, ev = (_newest(runs, stage) for stage in ("generate", "eval"))
        metrics = json.loads((ev.parent / "metrics.json").read_text())
        assert metrics["questions"] == 8 and set(metrics["per_model"]) == {"student"}, form
        if form != "save_to_disk":  # the same questions: nothing new asked of either model
            gen_stats, ev_stats = (json.loads(m.read_text())["stats"] for m in (gen, ev))
            assert gen_stats["requested"] == 0 and gen_stats["reused"] == 32, form
            assert ev_stats["requested"] == 0 and ev_stats["reused_from_other_keys"] == 8, form


def _newest(runs: Path, stage: str) -> Path:
    return max(runs.glob(f"{stage}/*/manifest.json"), key=lambda p: p.stat().st_mtime)
