#!/usr/bin/env python3
"""What a layer-pruning search cost: decodes of the fine-search set and wall-clock seconds.

asr_comflp.sh writes the wall-clock seconds of each part into one-number files
as it runs them (a part skipped because its output exists keeps the time of
the run that made it):

    states         stage 14, encoder states of the calibration set
    matrix         stage 15, correlation matrix
    coarse_search  stage 16, coarse search and writing the candidate models
    fine_decode    stage 17, decoding the candidates (and the unpruned reference)
    fine_score     stage 18, scoring and ranking
    greedy_loop    glp only: all steps of the greedy search (stage 16)

This tool gathers them into ``OUT/search_cost.json`` and a one-row markdown
table ``OUT/search_cost.md``.  ``search_decodes`` counts the model x fine-set
decodes the search needed to choose its model: the candidates of the fine
search (top K for CoMFLP, 1 for drop_last/bi, K for random/angular), or every
model of every greedy step for glp (k*L - k(k-1)/2 without constraints).  The
unpruned model, decoded next to the candidates for reference, is not counted,
and its decoding time is subtracted from ``search_seconds``; glp's stage 17-18
re-decoding of its final model is reported but not counted either.  Parts a
method does not use (the states and matrix for drop_last, random and glp) are
left out of its total.  The files are rewritten only when their content
changes.
"""

import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.cli import InputError, exit_on_error, new_parser, read_json, setup_logging
PARTS = ("states", "matrix", "coarse_search", "fine_decode", "fine_score", "greedy_loop")
# Searches that do not read the correlation matrix (so neither the states).
WITHOUT_MATRIX = ("drop_last", "random", "glp")
REFERENCE_NAME = "original"


def read_seconds(path: Optional[str]) -> Optional[float]:
    """Sum of the numbers in a file (one per line), None when it does not exist."""
    if not path or not os.path.isfile(path):
        return None
    total = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    total.append(float(line))
                except ValueError:
                    raise InputError(f"{path}: not a number: {line!r}")
    return float(math.fsum(total))


def count_lines(path: Optional[str]) -> Optional[int]:
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def decoded_models(models_scp: Optional[str]) -> List[str]:
    if not models_scp or not os.path.isfile(models_scp):
        return []
    with open(models_scp, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def counted_parts(method: str) -> List[str]:
    if method == "glp":
        return ["greedy_loop"]
    parts = ["coarse_search", "fine_decode", "fine_score"]
    if method not in WITHOUT_MATRIX:
        parts = ["states", "matrix"] + parts
    return parts


def search_cost(args) -> Dict[str, Any]:
    seconds = {part: read_seconds(getattr(args, f"{part}_seconds")) for part in PARTS}
    proposals = {}
    if args.proposals and os.path.isfile(args.proposals):
        proposals = read_json(args.proposals, "--proposals")
    models = decoded_models(args.fine_models_scp)
    candidates = [m for m in models if m != REFERENCE_NAME]
    reference_seconds = None
    if REFERENCE_NAME in models and args.fine_hyp_dir:
        reference_seconds = read_seconds(os.path.join(args.fine_hyp_dir, REFERENCE_NAME, "decode_time"))

    counted = counted_parts(args.method)
    record: Dict[str, Any] = {
        "tag": args.tag,
        "method": args.method,
        "num_layers": proposals.get("num_layers"),
        "num_prune": proposals.get("num_prune"),
        "fine_set_utts": count_lines(args.fine_text),
    }
    if args.method == "glp":
        glp = proposals.get("glp") or {}
        seconds["greedy_loop"] = glp.get("seconds")
        record["search_decodes"] = glp.get("num_decodes")
        record["glp_steps"] = glp.get("steps", [])
    else:
        record["search_decodes"] = len(candidates) if models else None
    record["reference_decodes"] = 1 if REFERENCE_NAME in models else 0
    record["seconds"] = seconds
    record["reference_decode_seconds"] = reference_seconds
    record["counted"] = counted
    missing = [p for p in counted if seconds[p] is None]
    record["not_recorded"] = missing
    if missing:
        total = None
    else:
        total = math.fsum(seconds[p] for p in counted)
        if "fine_decode" in counted and reference_seconds is not None:
            total -= reference_seconds
        total = round(total, 3)
    record["search_seconds"] = total
    return record


def fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(record: Dict[str, Any]) -> str:
    header = ["tag", "method", "decodes", "states (s)", "matrix (s)", "coarse search (s)",
              "fine decode (s)", "fine score (s)", "greedy loop (s)", "search total (s)"]
    seconds = record["seconds"]
    cells = [record["tag"], record["method"], fmt(record["search_decodes"], "d")]
    # Parts the method does not use are shown as "-".
    cells += [fmt(seconds[p]) if p in record["counted"] else "-" for p in PARTS]
    cells.append(fmt(record["search_seconds"]))
    note = (
        f"Search cost on {fmt(record['fine_set_utts'], 'd')} fine-search utterances: decodes = "
        "pruned models decoded to choose; the total is the sum of the parts shown, less the "
        "unpruned reference model's decoding time."
    )
    return "\n".join([
        note, "",
        "|" + "|".join(header) + "|",
        "|" + "|".join("---" for _ in header) + "|",
        "|" + "|".join(cells) + "|",
    ]) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    with atomic_output_file(path, encoding="utf-8") as f:
        f.write(text)
    return True


def get_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "comflp_search_cost", "Gather the decodes and wall-clock seconds of a layer-pruning search"
    )
    parser.add_argument("--method", required=True, help="search method (--comflp_search)")
    parser.add_argument("--tag", required=True, help="name of the search directory")
    for part in PARTS:
        if part != "greedy_loop":
            parser.add_argument(f"--{part}_seconds", default=None,
                                help=f"file with the wall-clock seconds of {part}")
    parser.add_argument("--proposals", default=None, help="proposals JSON of the search")
    parser.add_argument("--fine_models_scp", default=None, help="models.scp of the fine search")
    parser.add_argument("--fine_hyp_dir", default=None, help="merged fine-search hypotheses")
    parser.add_argument("--fine_text", default=None, help="reference text of the fine-search set")
    parser.add_argument("--output_dir", required=True, help="where search_cost.{json,md} go")
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    args.greedy_loop_seconds = None  # glp's comes from its proposals JSON
    setup_logging(args.log_level)
    out = Path(args.output_dir)
    with exit_on_error("comflp_search_cost"):
        if not out.is_dir():
            raise InputError(f"--output_dir {out}: no such directory")
        record = search_cost(args)
        changed = write_if_changed(out / "search_cost.json", json.dumps(record, indent=2) + "\n")
        changed |= write_if_changed(out / "search_cost.md", markdown(record))
    if record["not_recorded"]:
        logging.warning(
            f"no wall-clock time recorded for {', '.join(record['not_recorded'])} "
            "(made before times were recorded?): search_seconds left empty"
        )
    logging.info(
        f"{args.tag}: {record['search_decodes']} decodes, search {fmt(record['search_seconds'])} s"
        f" -> {out / 'search_cost.json'}{'' if changed else ' (unchanged)'}"
    )


if __name__ == "__main__":
    main()
