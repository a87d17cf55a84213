"""Validation accuracy while training, and the checkpoint it selects.

At each epoch's end (or every `train.validate_every` steps, and always after the last step) the
student as it stands is saved under `validation/step-N/model` and asked the task's validation
questions (held out of train before generate: tasks.py) through the one serve-and-ask path
(pipeline/asklog.py: vLLM, greedy, eval's sampling and serving settings), its answers graded as
eval grades them (stages/shared/verify.py: grade_row; accuracy = correct after any trace). Each
measurement is one line of `validation.jsonl` (step, epoch, accuracy; appended and recovered
through pipeline/records.py), its answers in `validation/step-N/predictions.jsonl`. The eval
split is never read here.

`train.select: best` makes the stage's model the measured one with the best validation accuracy
(the first of equals: fewer steps); `last` keeps the last step's. Only the best candidate's
weights are kept on disk. A kill resumes: a measured step is never measured again, a step whose
answers were half written asks only for the rest, and the step a checkpoint resumed at is
measured first if its measurement was cut short.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.applog import AppendLog, recover_log
from pipeline.ask import settings_from
from pipeline.asklog import RecordLog, ask_into_log, failed
from pipeline.calls import Completion, Request, sampling_dict
from pipeline.config import Config
from pipeline.prompts import render_messages
from pipeline.reasoning import Convention
from pipeline.tasks import Question, load_task
from stages.shared.layout import MODEL, VALIDATION
from stages.shared.models import student_spec
from stages.shared.verify import gold_of, grade_row
from stages.train.epochs import EpochStop
from stages.train.logs import log_line

RESULTS = VALIDATION  # one line per measurement, in the stage dir
DIR = "validation"


@dataclass
class Validator:
    """Measures the student on the validation split and keeps the best candidate's weights."""

    cfg: Config
    out: Path
    tok: Any
    lora: bool
    questions: list[Question] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # spent measuring in this process (the step time leaves it out)
    stop: EpochStop | None = None  # epochs: auto's rule, which ends training by these results

    @classmethod
    def of(cls, cfg: Config, out: Path, tok: Any) -> Validator | None:
        """None when there is nothing to validate on (train.validate off, or no split)."""
        questions = load_task(cfg.task).validation if cfg.train.validate else []
        if not questions:
            return None
        v = cls(cfg, Path(out), tok, cfg.train.lora.enabled, questions)
        path = v.out / RESULTS
        if path.is_file():  # a resumed run: what was measured stays measured
            v.results = _read_results(path)
        return v

    def measured(self, step: int) -> bool:
        return any(r["step"] == step for r in self.results)

    def measure(self, model: Any, step: int, epoch: float) -> dict[str, Any]:
        """Save the student at `step`, ask it every validation question, record its accuracy."""
        if self.measured(step):
            return next(r for r in self.results if r["step"] == step)
        t0 = time.monotonic()
        here = self.out / DIR / f"step-{step:06d}"
        self._save(model, here)
        rows = self._ask(here)
        convention = Convention.of(self.cfg.lead_teacher())
        correct = sum(
            grade_row({**rows[f"validation:{q.id}"], **gold_of(q)}, convention).correct
            for q in self.questions
        )
        n = len(self.questions)
        result = {
            "step": step,
            "epoch": round(float(epoch), 4),
            "accuracy": round(correct / n, 4),
            "correct": correct,
            "n": n,
        }
        self.results.append(result)
        _append_result(self.out / RESULTS, result)
        self._prune(keep=self.best() if self.cfg.train.select == "best" else None)
        self.seconds += time.monotonic() - t0
        log_line(f"validation accuracy at step {step}: {result['accuracy']:.3f} ({correct}/{n})")
        return result

    def best(self) -> dict[str, Any] | None:
        """The first measurement with the highest accuracy."""
        return max(self.results, key=lambda r: (r["accuracy"], -r["step"]), default=None)

    def candidate(self, step: int) -> Path:
        return self.out / DIR / f"step-{step:06d}"

    def _save(self, model: Any, here: Path) -> None:
        """The student as vLLM loads it (a LoRA adapter merged into a copy), and with LoRA the
        adapter too (what select: best puts in adapter/)."""
        target = here / MODEL
        if (target / "config.json").is_file():
            return  # saved before a kill: the same weights (the checkpoint holds this step)
        tmp = here / "model.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = getattr(model, "module", model)
        if self.lora:
            unwrapped.save_pretrained(here / "adapter")
            copy.deepcopy(unwrapped).merge_and_unload().save_pretrained(tmp)
        else:
            unwrapped.save_pretrained(tmp)
        self.tok.save_pretrained(tmp)
        os.replace(tmp, target)

    def _ask(self, here: Path) -> dict[str, dict[str, Any]]:
        cfg = self.cfg
        spec = student_spec(cfg, here / MODEL, "validation", served_name="student")
        sampling = sampling_dict(cfg.eval.sampling, keep_empty_stop=False)
        reqs = [
            Request([f"validation:{q.id}"], render_messages(cfg.student_template, q), sampling)
            for q in self.questions
        ]

        def row(c: Completion) -> dict[str, Any]:
            out = {"id": c.id, "completion": c.text, "finish_reason": c.finish_reason}
            return out | ({"reasoning": c.reasoning} if c.reasoning is not None else {})

        path = here / "predictions.jsonl"
        with RecordLog.open(path, None, "answers") as log:
            how = settings_from(cfg.eval)
            asked = ask_into_log(
                spec, reqs, log, row, how, here / "logs", unit="q", desc="validation"
            )
        if asked.failures:
            raise failed("validation answers", asked.failures, len(asked.new), path)
        return log.rows

    def drop_weights(self) -> None:
        """After the stage's model is in place: no candidate's weights are needed any more."""
        self._prune(keep=None)

    def _prune(self, keep: dict[str, Any] | None = None) -> None:
        """Keep the weights of `keep` only (select: best needs the best candidate's; last needs
        none): a 135M student is 0.5 GB a candidate."""
        for r in self.results:
            if keep is None or r["step"] != keep["step"]:
                here = self.candidate(r["step"])
                shutil.rmtree(here / MODEL, ignore_errors=True)
                shutil.rmtree(here / "adapter", ignore_errors=True)


def _check_result(row: dict[str, Any]) -> str | None:
    if not {"step", "accuracy", "n"} <= row.keys():
        return "not a measurement (step, accuracy, n)"
    return None


def _read_results(path: Path) -> list[dict[str, Any]]:
    """The measurements on disk, through the records module's recovery: a line a kill cut short
    is cut, a damaged one moved to `validation.jsonl.quarantine` (that step is measured again:
    its answers are in its predictions log, so nothing is asked twice)."""
    got = recover_log(path, _check_result)
    message = got.message(path, path.with_name(path.name + ".quarantine"), "measurements")
    if message:
        log_line(message)
    return [{k: v for k, v in r.items() if k != "id"} for r in got.rows]


def _append_result(path: Path, result: dict[str, Any]) -> None:
    """One line, fsynced, with the step as its record id: the record of the measurement."""
    with AppendLog(path, fsync_every=1) as log:
        log.write({"id": f"step-{result['step']:06d}", **result})


def validation_callback(validator: Validator, every: int, handler: Any):
    """A TrainerCallback measuring at each epoch's end (every == 0) or every `every` steps,
    after the last step, and, on a resumed run, at the step it resumed from if that step's
    measurement was cut short. Rank 0 measures; the other ranks wait at their next collective.
    It is logged as the loss is (history, each callback's on_log: train.log, the tracker). With
    `stop` (epochs: auto) it ends training when the rule says so after an epoch's measurement;
    a run resumed after that verdict trains up to the same step and stops there (from a
    checkpoint at that very step, one step more: select: best puts the best in place)."""
    from transformers import TrainerCallback

    stop = validator.stop

    def due(state) -> bool:
        if every:
            return state.global_step % every == 0
        return float(state.epoch or 0).is_integer()

    def reached(state) -> bool:
        """The rule has said stop, at this step or before it."""
        return stop is not None and stop.step is not None and state.global_step >= stop.step

    def stopping(state, control) -> None:
        if stop is None:
            return
        if stop.step is None:
            stop.check(validator.results)
        if reached(state):
            control.should_training_stop = True

    class Validate(TrainerCallback):
        def _measure(self, args, state, control, model) -> None:
            if state.is_world_process_zero and not validator.measured(state.global_step):
                r = validator.measure(model, state.global_step, state.epoch or 0)
                logs = {"epoch": r["epoch"], "validation_accuracy": r["accuracy"]}
                state.log_history.append({"step": r["step"], **logs})
                # not handler.on_log: it clears should_log, and this step's loss would be lost
                handler.call_event("on_log", args, state, control, logs=logs)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step and due(state):
                self._measure(args, state, control, model)
            stopping(state, control)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and due(state):
                self._measure(args, state, control, model)
            if reached(state):  # a resumed run, up to the step the rule stopped at
                control.should_training_stop = True

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if not every and not control.should_training_stop:
                self._measure(args, state, control, model)
                if stop is not None:
                    _share_results(validator, state)
                stopping(state, control)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self._measure(args, state, control, model)

    return Validate()


def _share_results(validator: Validator, state) -> None:
    """Under several processes rank 0 measures: the others wait for it, then read what it
    wrote, so that every rank stops at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    if not state.is_world_process_zero:
        validator.results = _read_results(validator.out / RESULTS)


ARGS_FILE = "training_args.bin"


def select(validator: Validator | None, cfg: Config, out: Path, last_step: int) -> dict[str, Any]:
    """Put the selected candidate in place of the last step's weights (select: best), and
    return what the stats and the card say about the choice."""
    if validator is None:
        return {}
    stats: dict[str, Any] = {"validation": validator.results, "select": cfg.train.select}
    last = next((r for r in validator.results if r["step"] == last_step), None)
    chosen = validator.best() if cfg.train.select == "best" else last
    if chosen is None:
        return stats
    stats |= {"selected_step": chosen["step"], "selected_validation_accuracy": chosen["accuracy"]}
    if cfg.train.select == "best" and chosen["step"] != last_step:
        here = validator.candidate(chosen["step"])
        name = "adapter" if validator.lora else MODEL
        # The Trainer's record of this run's arguments stays in the run dir whichever step is
        # kept (the export leaves the pickle out); a candidate's dir has none.
        args = out / name / ARGS_FILE
        kept = args.read_bytes() if args.is_file() else None
        shutil.rmtree(out / name, ignore_errors=True)
        shutil.copytree(here / name, out / name)
        if kept is not None and not (out / name / ARGS_FILE).exists():
            (out / name / ARGS_FILE).write_bytes(kept)
        log_line(
            f"selected step {chosen['step']} (validation accuracy {chosen['accuracy']:.3f}, "
            f"best of {len(validator.results)}) over the last step {last_step}"
        )
    return stats
