#!/usr/bin/env python3
"""Greedy layer pruning by the task metric (glp): the search CoMFLP is compared with.

At step s (1..k) every layer still present is tried: the model with the layers
removed in steps 1..s-1 plus that one layer removed is decoded on the
fine-search set, and the layer whose removal gives the fewest errors is removed
(ties: the lower layer id).  Step s therefore decodes L - s + 1 models (fewer
under constraints), k*L - k(k-1)/2 in all.  This tool does the bookkeeping of
the steps; building, decoding and scoring the step's models is the recipe's
(asr_comflp.sh stage 16, through comflp_candidates, comflp_decode over
``${decode_cmd} JOB=1:nj`` and comflp_score, exactly as the fine search).

Layout of ``--glp_dir`` (one directory per step; a step is complete when its
``step.json`` exists, so a rerun continues after the last complete step)::

    stepNN/proposals.json   the step's models, one proposal per tried layer
                            (rank = position in layer order), the proposals
                            format of comflp_search
    stepNN/step.json        the tried layers with their errors, the chosen
                            layer, the layers removed so far, the number of
                            decodes and the step's wall-clock seconds

Sub-commands::

    prepare --glp_dir D --step S --num_layers L --num_prune K [constraints] \
        --output D/stepNN/proposals.json
    choose  --glp_dir D --step S --scores D/stepNN/scores/scores.json [--seconds T]
    finish  --glp_dir D --num_layers L --num_prune K [constraints] --output proposals.json

``finish`` writes the proposals JSON of the whole search with one proposal (the
layers removed after K steps) and the record of every step under ``"glp"``.
Only numbers and JSON are handled here; no model is loaded.
"""

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.bin.comflp_candidates import candidate_names
from comflp_espnet.bin.comflp_search import layer_list, max_run_type
from comflp_espnet.cli import InputError, exit_on_error, new_parser, read_json, setup_logging, str2bool
from comflp_espnet.search import Proposal, check_num_prune, prunable_layers, runs_of

STEP_RECORD = "step.json"


def step_dir(glp_dir: Path, step: int) -> Path:
    return Path(glp_dir) / f"step{step:02d}"


def layers_to_try(removed: Sequence[int], allowed: Sequence[int], max_run: Optional[int] = None) -> List[int]:
    """Layers of ``allowed`` whose removal on top of ``removed`` a step tries, in layer order."""
    layers = []
    for layer in sorted(allowed):
        if layer in removed:
            continue
        if max_run is not None:
            longest = max(b - a + 1 for a, b in runs_of(list(removed) + [layer]))
            if longest > max_run:
                continue
        layers.append(layer)
    return layers


def write_json(path: Path, data: Dict[str, Any]) -> None:
    with atomic_output_file(path, encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def read_object(path: Path, what: str) -> Dict[str, Any]:
    data = read_json(str(path), what)
    if not isinstance(data, dict):
        raise InputError(f"{what} {path}: expected a JSON object")
    return data


def completed_steps(glp_dir: Path, upto: int) -> List[Dict[str, Any]]:
    """Records of steps 1..upto, checked to follow one another."""
    steps = []
    removed: List[int] = []
    for step in range(1, upto + 1):
        path = step_dir(glp_dir, step) / STEP_RECORD
        if not path.is_file():
            raise InputError(f"{path} not found: step {step} of the greedy search is not complete")
        record = read_object(path, f"record of greedy step {step}")
        if record.get("step") != step or sorted(record.get("removed_before", [])) != removed:
            raise InputError(
                f"{path} does not continue step {step - 1} (layers removed before: "
                f"{record.get('removed_before')}, expected {removed}); remove {glp_dir} and rerun"
            )
        removed = sorted(removed + [int(record["chosen_layer"])])
        steps.append(record)
    return steps


def removed_after(steps: Sequence[Dict[str, Any]]) -> List[int]:
    return sorted(int(s["chosen_layer"]) for s in steps)


def proposal_item(pruned: Sequence[int], num_layers: int, **extra) -> Dict[str, Any]:
    """One proposal of a proposals JSON (comflp_search's format) without a coarse score."""
    item = Proposal(tuple(pruned), num_layers).to_dict()
    del item["num_layers"]
    return {**extra, **item}


# ---------------------------------------------------------------------------- sub-commands
def prepare(args) -> Dict[str, Any]:
    """Proposals of step ``args.step``: one per layer that may be removed next."""
    try:
        check_num_prune(args.num_prune, args.num_layers)
        allowed = prunable_layers(args.num_layers, args.keep_first, args.keep_last, args.protect)
    except ValueError as e:
        raise InputError(str(e))
    if not 1 <= args.step <= args.num_prune:
        raise InputError(f"--step {args.step} must be in 1..--num_prune ({args.num_prune})")
    removed = removed_after(completed_steps(args.glp_dir, args.step - 1))
    layers = layers_to_try(removed, allowed, args.max_run)
    if not layers:
        raise InputError(
            f"greedy step {args.step}: no layer can be removed after {removed} under the "
            f"constraints (removable {allowed}, max_run {args.max_run}); relax "
            "--comflp_protect / --comflp_keep_first / --comflp_keep_last / --comflp_max_run "
            "or lower --comflp_num_prune"
        )
    proposals = [
        proposal_item(removed + [layer], args.num_layers, rank=rank, layer=layer)
        for rank, layer in enumerate(layers, 1)
    ]
    data = {
        "num_layers": args.num_layers,
        "num_prune": len(removed) + 1,
        "method": "glp",
        "step": args.step,
        "removed_before": removed,
        "topk": len(proposals),
        "proposals": proposals,
    }
    write_json(Path(args.output), data)
    logging.info(
        f"greedy step {args.step}/{args.num_prune}: {len(proposals)} model(s), each removing "
        f"one more layer than {removed or 'none'} -> {args.output}"
    )
    return data


def choose(args) -> Dict[str, Any]:
    """Record of step ``args.step``: the tried layer with the fewest errors wins."""
    directory = step_dir(args.glp_dir, args.step)
    props = read_object(directory / "proposals.json", f"models of greedy step {args.step}")
    summary = read_object(Path(args.scores), "--scores")
    metric = summary.get("metric")
    models = summary.get("models")
    if metric not in ("cer", "wer") or not isinstance(models, dict):
        raise InputError(f"--scores {args.scores}: no 'metric' / 'models' (not a comflp_score output)")
    proposals = props.get("proposals")
    if not isinstance(proposals, list) or not proposals:
        raise InputError(f"{directory / 'proposals.json'}: no models")
    tried = []
    for name, prop in candidate_names(proposals).items():
        if name not in models:
            raise InputError(
                f"--scores {args.scores}: no score for {name} (layer {prop['layer']}); "
                "decode and score every model of the step"
            )
        counts = models[name][metric]
        tried.append(
            {
                "name": name,
                "layer": int(prop["layer"]),
                "pruned": prop["pruned"],
                "num_err": int(counts["num_err"]),
                "num_ref": int(counts["num_ref"]),
                "error_rate": float(counts["error_rate"]),
            }
        )
    best = min(tried, key=lambda t: (t["num_err"], t["layer"]))
    record = {
        "step": args.step,
        "metric": metric,
        "removed_before": props.get("removed_before", []),
        "chosen_layer": best["layer"],
        "chosen_name": best["name"],
        "removed": best["pruned"],
        "num_err": best["num_err"],
        "error_rate": best["error_rate"],
        "num_decodes": len(tried),
        "num_utts": summary.get("num_utts"),
        "seconds": args.seconds,
        "tried": tried,
    }
    write_json(directory / STEP_RECORD, record)
    logging.info(
        f"greedy step {args.step}: remove layer {best['layer']} ({metric.upper()} "
        f"{best['error_rate']:.2f}%, {best['num_err']} errors) -> removed {best['pruned']}"
    )
    return record


def finish(args) -> Dict[str, Any]:
    """Proposals JSON of the whole search: one proposal, the greedy result."""
    steps = completed_steps(args.glp_dir, args.num_prune)
    pruned = removed_after(steps)
    total_decodes = sum(int(s["num_decodes"]) for s in steps)
    seconds = [s.get("seconds") for s in steps]
    total_seconds = None if any(x is None for x in seconds) else round(math.fsum(seconds), 3)
    data = {
        "num_layers": args.num_layers,
        "num_prune": args.num_prune,
        "method": "glp",
        "topk": 1,
        "constraints": {
            "keep_first": args.keep_first,
            "keep_last": args.keep_last,
            "max_run": args.max_run,
            "protect": sorted(set(args.protect)),
        },
        "options": {"metric": steps[-1]["metric"]},
        "corr": None,
        "proposals": [proposal_item(pruned, args.num_layers, rank=1)],
        "glp": {
            "num_decodes": total_decodes,
            "seconds": total_seconds,
            "steps": [
                {k: s.get(k) for k in (
                    "step", "chosen_layer", "removed", "metric", "num_err", "error_rate",
                    "num_decodes", "seconds",
                )}
                for s in steps
            ],
        },
    }
    write_json(Path(args.output), data)
    logging.info(
        f"greedy search: removed layers {pruned} in {len(steps)} steps, {total_decodes} decodes "
        f"of the fine-search set -> {args.output}"
    )
    return data


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
    with exit_on_error("comflp_glp"):
        {"prepare": prepare, "choose": choose, "finish": finish}[args.command](args)


if __name__ == "__main__":
    main()
