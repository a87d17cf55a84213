"""`distill`: one subcommand per stage, plus `run`, `status`, `report`, `config`, `plan`,
`export`, `slurm` and `init`.

Only argparse, yaml and the config dataclasses are imported here: `distill --help` stays fast
and never imports torch or vLLM. Stage code is imported when a stage actually runs.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import time

from pipeline.config import Config, load_config, shipped_config
from pipeline.errors import Stopped, UserError

COMMANDS_HELP = {
    "run": "generate -> filter -> train -> eval, skipping what is cached",
    "status": "show every stage of a run: complete / partial / corrupt / missing / stale",
    "report": "write the run's report: one self-contained HTML file (chain, filter funnel, "
    "sample browser, training curves, eval) at runs/<run>/report.html; `run` writes it too",
    "config": "print every config field: type, default, value, whether it is in a key, doc",
    "plan": "what the run's teacher calls will be and cost, before it asks: generate's samples, "
    "expected prompt and completion tokens and cost per teacher, from the pool or a pilot "
    "(--pilot questions, asked and kept in the pool); the later stages' teacher calls at most; "
    "the whole chain against budget",
    "export": "copy the run's dataset (parquet + card) and student (+ card) to --to DIR",
    "slurm": "write (--submit: submit) sbatch scripts: generate as a Slurm job array of "
    "shards then the merge, or train across nodes",
    "init": "write a commented starting config for a task source (--source hf:... or "
    "jsonl:..., --to FILE): columns, answer rule and splits read from the data",
}


def _commands() -> dict[str, str]:
    """Each stage's own one-line HELP (read, not imported), then the chain-wide commands."""
    from pipeline.stage import STAGES, stage_help

    return {name: stage_help(name) for name in STAGES} | COMMANDS_HELP


def parser() -> argparse.ArgumentParser:
    """The command line, as `--help` shows it (docs/reference/cli.md is generated from it)."""
    ap = argparse.ArgumentParser(
        prog="distill",
        description="Sequence-level distillation: a vLLM teacher writes rationales, a TRL "
        "student learns them. Every stage is cached under runs/<run>/<stage>/<key>/.",
        epilog="Overrides: any config field as key.sub=value, e.g. generate.n=8 "
        "teacher.endpoint=http://host:8000/v1 train.student=/models/mine",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in _commands().items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--config",
            "-c",
            default=None,
            help="YAML config (default: the bundled pipeline/configs/default.yaml)",
        )
        if name == "slurm":
            _slurm_options(p)
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
        if name == "generate":
            p.add_argument(
                "--shard",
                default=None,
                metavar="I/N",
                help="ask only for shard I of N (from 0) of the questions, into its own pool "
                "file; default inside a Slurm array task: the task's own. A plain generate "
                "merges the shards",
            )
        if name == "export":
            _export_options(p)
        if name == "init":
            p.add_argument("--source", required=True, help="hf:DATASET or jsonl:PATH")
            p.add_argument("--to", required=True, help="the config file to write (a new one)")
        if name == "plan":
            p.add_argument(
                "--pilot",
                type=int,
                default=10,
                metavar="N",
                help="questions to ask per teacher when the pool holds fewer (0: never ask)",
            )
        if name not in ("config", "export", "slurm", "plan", "init", "report"):
            p.add_argument(
                "--verify",
                action="store_true",
                help="also compare every output's sha256 with its manifest"
                + ("" if name == "status" else " (a stage whose files differ is rebuilt)"),
            )
        if name not in ("status", "config", "export", "slurm", "plan", "init", "report"):
            p.add_argument(
                "--force", action="store_true", help=f"rerun {name} even if it is cached"
            )
        if name == "train":
            p.add_argument("--launcher", choices=["none", "accelerate"], default=None)
            p.add_argument("--accelerate-config", default=None)
            p.add_argument("--num-processes", type=int, default=None)
    return ap


def _export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", required=True, help="a new (or empty) dir for the export")
    p.add_argument(
        "--push",
        default="",
        metavar="REPO",
        help="also upload to the Hub: the model to model repo REPO, the dataset to "
        "dataset repo REPO (needs a token and network)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bfloat16", "float16", "float32"),
        help="the student's weights (default auto: the dtype it trained in, bf16 "
        "unless training ran in fp32)",
    )


def _slurm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=["generate", "train"],
        help="generate: a job array of shards, then the merge; train: one run across nodes",
    )
    p.add_argument("--array", type=int, default=None, metavar="N", help="generate: shards")
    p.add_argument("--nodes", type=int, default=None, help="train: machines")
    p.add_argument(
        "--processes-per-node",
        type=int,
        default=None,
        help="train: processes per node (default: --gpus-per-node, else 1)",
    )
    p.add_argument("--port", type=int, default=29500, help="train: rank 0's rendezvous port")
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--time", default="", help="each task's time limit, Slurm's format")
    p.add_argument(
        "--gpus-per-task",
        "--gpus-per-node",
        type=int,
        default=None,
        help="generate: GPUs per array task; train: GPUs per node",
    )
    p.add_argument("--cpus-per-task", type=int, default=None)
    p.add_argument("--submit", action="store_true", help="sbatch them now (needs sbatch)")


def overrides(args: argparse.Namespace) -> list[str]:
    """Every config override the command line gives: KEY=VALUE words and the options that
    stand for one (--launcher, --accelerate-config, --num-processes)."""
    extra = list(args.overrides)
    if getattr(args, "launcher", None):
        extra.append(f"train.launcher={args.launcher}")
    if getattr(args, "accelerate_config", None):
        extra.append(f"train.accelerate_config={args.accelerate_config}")
    if getattr(args, "num_processes", None) is not None:
        extra.append(f"train.num_processes={args.num_processes}")
    return extra


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """`argv` as `main` reads it; argparse's SystemExit (exit 2, its message on stderr) for a
    word it cannot place."""
    ap = parser()
    # Overrides may follow options (`slurm generate --array 4 generate.n=8`): argparse leaves
    # KEY=VALUE words after an option unparsed; they are overrides like the others.
    args, rest = ap.parse_known_args(argv)
    bad = [w for w in rest if w.startswith("-") or "=" not in w]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = [*args.overrides, *rest]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # TRL sets VLLM_LOGGING_LEVEL=ERROR when it is imported and the variable is unset: every
    # engine started after the train stage (validation, eval) would log nothing but errors
    # (the engine log would not even say the dtype it loaded). A level the user set stays.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    signal.signal(signal.SIGUSR1, _interrupt)  # Slurm's warning before a limit: stop cleanly
    try:
        return _main(args)
    except Stopped as e:  # not an error: a budget spent, an endpoint that asks to wait a day
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `distill config | head`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:
        # A path the user gave that the OS refuses (permissions, a full disk, a file where a
        # dir should be): one line, not a traceback. DISTILL_DEBUG=1 shows the traceback.
        if os.environ.get("DISTILL_DEBUG"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        hint = "; free some space" if e.errno == errno.ENOSPC else ""
        print(f"error: {where}{e.strerror or e}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished work is on disk; rerun the same command to continue",
            file=sys.stderr,
        )
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or shipped_config("default"), overrides(args))
    from pipeline import report

    if args.command == "config":
        report.print_config(cfg)
        return 0
    if args.command == "export":
        from pipeline.export import export

        export(cfg, args.to, args.push, args.dtype)
        return 0
    if args.command == "slurm":
        return _slurm(cfg, args)
    if args.command == "init":
        from pipeline.starter import write_starter

        print(write_starter(args.source, args.to))
        return 0
    if args.command == "plan":
        from pipeline.runner import cost_plan

        if args.pilot < 0:
            raise UserError(f"--pilot {args.pilot}: give 0 or more questions")
        print(cost_plan(cfg, args.pilot))
        return 0
    if args.command == "generate":
        from pipeline.runner import run_shard

        stats = run_shard(cfg, "generate", args.shard)
        if stats is not None:  # --shard, or a Slurm array task: its share only
            print(
                f"generate shard {stats['shard']}: {stats['samples']} samples for "
                f"{stats['questions']} questions ({stats['requested']} asked now); merge "
                "with a plain `distill generate` once every shard has ended"
            )
            return 0
    if args.command == "status":
        from pipeline.status import status

        report.print_status(cfg, status(cfg, verify=args.verify))
        return 0
    if args.command == "report":
        return _report(cfg)
    from pipeline.runner import run_chain

    target = "eval" if args.command == "run" else args.command
    if target in ("generate", "train", "eval"):  # what serves or trains: say on what, and how
        print("\n".join(report.machine_lines(cfg)), flush=True)
    t0 = time.monotonic()
    results = run_chain(
        cfg, target, force=args.force, verify=args.verify, on_result=report.print_stage_line
    )
    report.print_summary(cfg, results, time.monotonic() - t0)
    if args.command == "run":
        _run_report(cfg)
    return 0


def _report(cfg: Config) -> int:
    from pipeline.htmlreport import write_report

    path = write_report(cfg)
    print(f"report: {path} ({path.stat().st_size:,} bytes)")
    return 0


def _run_report(cfg: Config) -> None:
    """The report at the end of `distill run`: the run's work is done and on disk, so a report
    that cannot be written (a full disk, a damaged file) is one line, never a failed run."""
    from pipeline import htmlreport

    try:
        path = htmlreport.write_report(cfg)
    except Exception as e:  # whatever went wrong, the run itself succeeded
        print(f"report not written: {e}", file=sys.stderr)
        return
    print(f"report: {path}")


def _slurm(cfg: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline import slurm
    from pipeline.runner import run_dir

    need = "--array" if args.what == "generate" else "--nodes"
    if getattr(args, need.lstrip("-")) is None:
        raise UserError(f"distill slurm {args.what} needs {need}")
    opts = slurm.SlurmOptions(
        array=1 if args.array is None else args.array,
        partition=args.partition,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        account=args.account,
    )
    config = Path(args.config or shipped_config("default")).resolve()
    rd = run_dir(cfg).resolve()
    given = list(args.overrides)
    if args.what == "generate":
        files = slurm.render(rd, config, given, opts, Path.cwd())
    else:
        per_node = args.processes_per_node or args.gpus_per_task or 1
        # Every node's config, checked now (rank 0's stands for all): not on the cluster.
        load_config(
            config,
            [
                *given,
                *slurm.train_overrides(args.nodes, per_node),
                "train.machine_rank=0",
                "train.main_process_ip=head",
                f"train.main_process_port={args.port}",
            ],
        )
        files = slurm.render_train(
            rd, config, given, opts, Path.cwd(), args.nodes, per_node, args.port
        )
    d = slurm.write(rd, files)
    print("wrote " + ", ".join(str(d / name) for name in files))
    if args.submit:
        print(slurm.submit(d, files))
    else:
        first = slurm.SUBMIT if slurm.SUBMIT in files else next(iter(files))
        print(f"submit with: {'bash' if first == slurm.SUBMIT else 'sbatch'} {d / first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
