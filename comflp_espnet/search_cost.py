"""What a layer-pruning search cost: decodes of the fine-search set and wall-clock seconds.

The seconds of each part come from the freshness records of the outputs that
part made (each record keeps the time it took to make its output; an output
reused by a resumed stage adds the time recorded when it was made):

    states         stage 14, encoder states of the calibration set
    matrix         stage 15, correlation matrix
    coarse_search  stage 16, coarse search and writing the candidate models
    fine_decode    stage 17, decoding the candidates (and the unpruned reference)
    fine_score     stage 18, scoring and ranking
    greedy_loop    glp only: all steps of the greedy search (stage 16)

``search_decodes`` counts the model x fine-set decodes the search needed to
choose its model: the candidates of the fine search (top K for CoMFLP, 1 for
drop_last/bi, K for random/angular), or every model of every greedy step for
glp (k*L - k(k-1)/2 without constraints).  The unpruned model, decoded next to
the candidates for reference, is not counted, and its decoding time is
subtracted from ``search_seconds``; glp's stage 17-18 re-decoding of its final
model is reported but not counted either.  Parts a method does not use (the
states and matrix for drop_last, random, glp and none) are left out of its total.
"""

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from comflp_espnet import records, rundir

PARTS = ("states", "matrix", "coarse_search", "fine_decode", "fine_score", "greedy_loop")
# Searches that do not read the correlation matrix (so neither the states).
WITHOUT_MATRIX = ("drop_last", "random", "glp", "none")
REFERENCE_NAME = "original"


def counted_parts(method: str) -> List[str]:
    """The parts of the search that ``method`` uses."""
    if method == "glp":
        return ["greedy_loop"]
    parts = ["coarse_search", "fine_decode", "fine_score"]
    if method not in WITHOUT_MATRIX:
        parts = ["states", "matrix"] + parts
    return parts


def search_cost(tag: str, method: str, seconds: Dict[str, Optional[float]], proposals: Dict[str, Any],
                models: List[str], reference_seconds: Optional[float],
                fine_set_utts: Optional[int]) -> Dict[str, Any]:
    """The cost record: ``seconds`` per part (None: not recorded), ``proposals`` (the
    proposals document), ``models`` decoded in the fine search."""
    seconds = {part: seconds.get(part) for part in PARTS}
    candidates = [m for m in models if m != REFERENCE_NAME]
    counted = counted_parts(method)
    record: Dict[str, Any] = {
        "tag": tag,
        "method": method,
        "num_layers": proposals.get("num_layers"),
        "num_prune": proposals.get("num_prune"),
        "fine_set_utts": fine_set_utts,
    }
    if method == "glp":
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


def recorded_seconds(*outputs: Path) -> Optional[float]:
    """Sum of the seconds the outputs' records hold (None when one has none)."""
    total = 0.0
    for output in outputs:
        try:
            record = records.read_record(output)
        except records.RecordError:
            return None
        if record is None or record.seconds is None:
            return None
        total += record.seconds
    return round(total, 3)


def gather(run_dir: rundir.RunDir, tag_dir: rundir.TagDir, measure: str, method: str) -> Dict[str, Any]:
    """The cost record of one search, from the records of its outputs."""
    t = tag_dir
    parts = {"states": recorded_seconds(run_dir.states), "matrix": recorded_seconds(run_dir.corr(measure)),
             "coarse_search": recorded_seconds(t.proposals, t.models_scp),
             "fine_decode": recorded_seconds(t.fine_decode), "fine_score": recorded_seconds(t.scores)}
    if method == "glp":
        parts["coarse_search"] = recorded_seconds(t.models_scp)
    proposals = rundir.read_proposals(t.proposals).data
    decoding = t.fine_decoding
    models = [m[0] for m in rundir.read_models_scp(decoding.models_scp, check_files=False)]
    reference = None
    if REFERENCE_NAME in models:
        reference = rundir.read_hyp_number(decoding.hyp(REFERENCE_NAME), "decode_time")
    try:
        fine = records.read_record(run_dir.fine)
    except records.RecordError:
        fine = None
    fine_utts = fine.info.get("num_utts") if fine else None
    return search_cost(t.name, method, parts, proposals, models, reference, fine_utts)
