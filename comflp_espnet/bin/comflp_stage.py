#!/usr/bin/env python3
"""The CoMFLP stages' work around the recipe's job arrays (called by asr_comflp.sh).

    python -m comflp_espnet.bin.comflp_stage COMMAND [--stage N] --comflp_dir=D --asr_exp=E ...

Commands (``comflp_espnet.stages``): ``check`` (the checks of options and
inputs before any work; prints the layout as shell assignments), ``lock`` (take
the run lock of --comflp_dir on descriptor --fd; ``unlock`` clears its
description at the end), ``check_run_dir`` (the checks that read the run
directory, under the lock), ``layout`` (the paths of one search, --only_tag),
``status`` (``stage_state=current|run``), ``begin`` / ``end`` (around a stage's
job array), ``finalists`` (stage 17 between its proxy and decode arrays),
``run`` (a stage without job array), ``glp_step_begin`` / ``glp_step_end`` (one
greedy step), ``search_cost``, ``sweep`` (the sweep of a run of several depths and
the searches of stages 19-21, ``comflp_espnet.sweep_stage``; ``--results true``
also its RESULTS.md sections), and
``decode_begin`` / ``decode_end`` (decoding a models list on a data set,
scripts/decode_models.sh; ``comflp_espnet.decode_dir``).  Output on stdout is
``name='value'`` lines for the shell's ``eval``; messages go to stderr; an error
is one line naming the file or option and the fix, with exit status 1.
"""

import argparse
import contextlib
import dataclasses
import os
import sys
from typing import List, Optional

from comflp_espnet import decode_dir, stages
from comflp_espnet.cli import exit_on_error, new_parser, setup_logging, str2bool

RUN_COMMANDS = ("check", "lock", "unlock", "check_run_dir", "layout", "status", "begin", "end", "finalists", "next", "run",
                "glp_step_begin", "glp_step_end", "search_cost", "sweep")
DECODE_COMMANDS = ("decode_begin", "decode_end")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(stages.Options):
        name = field.name
        if name == "stages":
            parser.add_argument("--stages", default="", help="the stages of this run, e.g. '14 15 16'")
        elif field.type is bool:
            parser.add_argument(f"--{name}", type=str2bool, default=field.default)
        elif field.type is int:
            parser.add_argument(f"--{name}", type=int, default=field.default)
        elif name == "eval_sets":
            parser.add_argument("--eval_sets", default="", help="test sets, space separated")
        else:
            parser.add_argument(f"--{name}", default=field.default,
                                required=name in ("comflp_dir", "asr_exp"))


def add_decode_options(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(decode_dir.DecodeJob):
        required = field.default is dataclasses.MISSING
        if field.type is bool:
            parser.add_argument(f"--{field.name}", type=str2bool, default=field.default)
        elif field.type is int:
            parser.add_argument(f"--{field.name}", type=int, default=None if required else field.default,
                                required=required)
        else:
            parser.add_argument(f"--{field.name}", default=None if required else field.default, required=required)


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser("comflp_stage", "The CoMFLP stages' work around the recipe's job arrays")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in RUN_COMMANDS:
        p = sub.add_parser(command)
        add_run_options(p)
        p.add_argument("--stage", type=int, default=None, help="stage number (status, begin, end, run)")
        p.add_argument("--step", type=int, default=None, help="greedy step (glp_step_*)")
        p.add_argument("--start", type=float, default=None, help="start time of the stage or its array (seconds)")
        p.add_argument("--stage_start", type=float, default=None, help="start time of the stage (end of stage 17)")
        p.add_argument("--jobs", type=int, default=None, help="jobs of the stage's array (end)")
        p.add_argument("--fd", type=int, default=None, help="open descriptor of the lock file (lock)")
        p.add_argument("--pid", type=int, default=None, help="pid of the run (lock)")
        p.add_argument("--command_line", default="", help="the run's command line (lock)")
        p.add_argument("--lock_wait", type=float, default=0, help="seconds to wait for the lock (lock)")
        p.add_argument("--results", type=str2bool, default=False, help="also the RESULTS.md sections (sweep)")
    for command in DECODE_COMMANDS:
        p = sub.add_parser(command)
        add_decode_options(p)
        p.add_argument("--jobs", type=int, default=0, help="jobs that ran (decode_end)")
    return parser


def run_options(args: argparse.Namespace) -> stages.Options:
    values = {}
    for field in dataclasses.fields(stages.Options):
        value = getattr(args, field.name)
        if field.name == "stages":
            value = [int(x) for x in value.split()]
        elif field.name == "eval_sets":
            value = value.split()
        values[field.name] = value
    return stages.Options(**values)


def dispatch(args: argparse.Namespace) -> dict:
    if args.command in DECODE_COMMANDS:
        job = decode_dir.DecodeJob(**{f.name: getattr(args, f.name) for f in dataclasses.fields(decode_dir.DecodeJob)})
        return decode_dir.decode_begin(job) if args.command == "decode_begin" else decode_dir.decode_end(job, args.jobs)
    run = stages.Run(run_options(args))
    if args.command == "lock":
        from comflp_espnet.runlock import LockBusy

        try:
            stages.acquire_lock(run.dir, args.fd, args.pid, args.command_line, args.lock_wait)
        except LockBusy as e:
            raise stages.StageError(str(e))
        return {}
    if args.command == "unlock":
        from comflp_espnet.runlock import release

        release(args.fd)
        return {}
    if args.command == "check":
        return stages.check(run)
    run.read_model()
    if args.command == "check_run_dir":
        stages.check_run_dir(run)
        return {}
    if args.command == "layout":
        return run.layout()
    if args.command == "finalists":
        return stages.finalists_17(run, args.start)
    if args.command == "status":
        return stages.stage_status(run, args.stage)
    if args.command == "search_cost":
        stages.write_search_cost(run)
        return {}
    if args.command == "sweep":
        from comflp_espnet.sweep_stage import run_sweep

        return run_sweep(run, args.results, args.stage or (20 if args.results else 18))
    if args.command == "glp_step_begin":
        return stages.glp_step_begin(run, args.step)
    if args.command == "glp_step_end":
        return stages.glp_step_end(run, args.step, args.start)
    name = f"{args.command}_{args.stage}"
    function = getattr(stages, name, None)
    if function is None:
        raise stages.StageError(f"stage {args.stage} has no '{args.command}' step")
    if args.command == "begin":
        return function(run)
    if args.command == "end" and args.stage == 14:
        return function(run, args.start, args.jobs) or {}
    if args.command == "end" and args.stage == 17:
        return function(run, args.start, args.stage_start) or {}
    return function(run, args.start) or {}


@contextlib.contextmanager
def stdout_to_stderr():
    """Whatever the work prints (ESPnet prints to stdout on import) goes to stderr: stdout
    carries only the assignments for the shell's eval."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error(parser.prog, ValueError, FileNotFoundError), stdout_to_stderr():
        values = dispatch(args)
    sys.stdout.write(stages.shell_assignments(values or {}))


if __name__ == "__main__":
    main()
