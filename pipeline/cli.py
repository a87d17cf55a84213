"""`distill`: one subcommand per stage, plus `run`, `status`, `config` and `export`.

Only argparse, yaml and the config dataclasses are imported here: `distill --help` stays fast
and never imports torch or vLLM. Stage code is imported when a stage actually runs.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time

from pipeline.config import load_config, shipped_config
from pipeline.errors import UserError

COMMANDS_HELP = {
    "run": "generate -> filter -> train -> eval, skipping what is cached",
    "status": "show every stage of a run: complete / partial / corrupt / missing / stale",
    "config": "print every config field: type, default, value, whether it is in a key, doc",
    "export": "copy the run's dataset (parquet + card) and student (+ card) to --to DIR",
}


def _commands() -> dict[str, str]:
    """Each stage's own one-line HELP (read, not imported), then the chain-wide commands."""
    from pipeline.stage import STAGES, stage_help

    return {name: stage_help(name) for name in STAGES} | COMMANDS_HELP


def _parser() -> argparse.ArgumentParser:
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
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
        if name == "export":
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
        if name not in ("config", "export"):
            p.add_argument(
                "--verify",
                action="store_true",
                help="also compare every output's sha256 with its manifest"
                + ("" if name == "status" else " (a stage whose files differ is rebuilt)"),
            )
        if name not in ("status", "config", "export"):
            p.add_argument(
                "--force", action="store_true", help=f"rerun {name} even if it is cached"
            )
        if name == "train":
            p.add_argument("--launcher", choices=["none", "accelerate"], default=None)
            p.add_argument("--accelerate-config", default=None)
            p.add_argument("--num-processes", type=int, default=None)
    return ap


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "launcher", None):
        extra.append(f"train.launcher={args.launcher}")
    if getattr(args, "accelerate_config", None):
        extra.append(f"train.accelerate_config={args.accelerate_config}")
    if getattr(args, "num_processes", None) is not None:
        extra.append(f"train.num_processes={args.num_processes}")
    return extra


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
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


def _main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or shipped_config("default"), _overrides(args))
    from pipeline import report

    if args.command == "config":
        report.print_config(cfg)
        return 0
    if args.command == "export":
        from pipeline.export import export

        export(cfg, args.to, args.push, args.dtype)
        return 0
    if args.command == "status":
        from pipeline.runner import status

        report.print_status(cfg, status(cfg, verify=args.verify))
        return 0
    from pipeline.runner import run_chain

    target = "eval" if args.command == "run" else args.command
    t0 = time.monotonic()
    results = run_chain(
        cfg, target, force=args.force, verify=args.verify, on_result=report.print_stage_line
    )
    report.print_summary(cfg, results, time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
