#!/usr/bin/env python3
"""Bookkeeping of greedy layer pruning by the task metric (glp), step by step.

The search and its layout: ``comflp_espnet.glp``.  Sub-commands::

    prepare --glp_dir D --step S --num_layers L --num_prune K [constraints] \
        --output D/stepNN/proposals.json
    choose  --glp_dir D --step S --scores D/stepNN/scores/scores.json [--seconds T]
    finish  --glp_dir D --num_layers L --num_prune K [constraints] --output proposals.json

``finish`` writes the proposals JSON of the whole search with one proposal (the
layers removed after K steps) and the record of every step under ``"glp"``.
"""

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from comflp_espnet import glp
from comflp_espnet.cli import exit_on_error, layer_list, max_run_type, new_parser, setup_logging, str2bool
from comflp_espnet.rundir import (
    DocumentError, read_json, read_scores_json, write_json, write_proposals, write_step,
)


def constraints(args) -> dict:
    return {"keep_first": args.keep_first, "keep_last": args.keep_last, "protect": args.protect,
            "max_run": args.max_run}


def prepare(args) -> None:
    removed = glp.removed_after(glp.completed_steps(args.glp_dir, args.step - 1)) if args.step > 1 else []
    data = glp.step_proposals(args.step, removed, args.num_layers, args.num_prune, **constraints(args))
    write_json(args.output, data)
    logging.info(f"greedy step {args.step}/{args.num_prune}: {len(data['proposals'])} model(s), each removing "
                 f"one more layer than {removed or 'none'} -> {args.output}")


def choose(args) -> None:
    directory = glp.step_dir(args.glp_dir, args.step)
    props = read_json(directory / "proposals.json", f"models of greedy step {args.step}")
    record = glp.choose(args.step, props, read_scores_json(args.scores), args.seconds, args.scores)
    write_step(directory, record)
    logging.info(f"greedy step {args.step}: remove layer {record['chosen_layer']} "
                 f"({record['metric'].upper()} {record['error_rate']:.2f}%, {record['num_err']} errors) "
                 f"-> removed {record['removed']}")


def finish(args) -> None:
    steps = glp.completed_steps(args.glp_dir, args.num_prune)
    data = glp.finish(steps, args.num_layers, args.num_prune, **constraints(args))
    write_proposals(args.output, data)
    logging.info(f"greedy search: removed layers {data['proposals'][0]['pruned']} in {len(steps)} steps, "
                 f"{data['glp']['num_decodes']} decodes of the fine-search set -> {args.output}")


def add_constraints(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_layers", type=int, required=True, help="encoder layers L")
    parser.add_argument("--num_prune", type=int, required=True, help="layers to remove k")
    parser.add_argument("--keep_first", type=str2bool, default=False, help="never remove layer 1")
    parser.add_argument("--keep_last", type=str2bool, default=False, help="never remove layer L")
    parser.add_argument("--protect", type=layer_list, default=[], help="layers never removed, e.g. 1,2")
    parser.add_argument("--max_run", type=max_run_type, default=None,
                        help="longest run of consecutive removed layers (0 or none: no limit)")


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser("comflp_glp", "Bookkeeping of greedy layer pruning by the task metric (glp)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="write the models of one step as proposals JSON")
    p.add_argument("--glp_dir", type=Path, required=True, help="directory of the steps")
    p.add_argument("--step", type=int, required=True, help="step number, 1-based")
    add_constraints(p)
    p.add_argument("--output", required=True, help="proposals JSON of the step")

    p = sub.add_parser("choose", help="record the best layer of one step from its scores")
    p.add_argument("--glp_dir", type=Path, required=True, help="directory of the steps")
    p.add_argument("--step", type=int, required=True, help="step number, 1-based")
    p.add_argument("--scores", required=True, help="scores.json of comflp_score for the step")
    p.add_argument("--seconds", type=float, default=None, help="wall-clock seconds of the step")

    p = sub.add_parser("finish", help="write the search's proposals JSON after the last step")
    p.add_argument("--glp_dir", type=Path, required=True, help="directory of the steps")
    add_constraints(p)
    p.add_argument("--output", required=True, help="proposals JSON of the search")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    with exit_on_error("comflp_glp", glp.GlpError, DocumentError):
        {"prepare": prepare, "choose": choose, "finish": finish}[args.command](args)


if __name__ == "__main__":
    main()
