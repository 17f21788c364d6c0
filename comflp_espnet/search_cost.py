"""What a layer-pruning search cost: proxy evaluations and full decodes of the fine-search set,
and wall-clock seconds.

The seconds of each part come from the freshness records of the outputs that
part made (each record keeps the time it took to make its output; an output
reused by a resumed stage, or made by another search of the same run
directory, counts the time recorded when it was made):

    states         stage 14, encoder states of the calibration set
    matrix         stage 15, the correlation matrix of each measure the search reads
    coarse_search  stage 16, the coarse search
    proxy          stage 17, proxy scoring of the candidates (its share of the proxy array)
    materialize    stage 17, writing the finalists as ESPnet model dirs
    fine_decode    stage 17, full decodes of the finalists (their share of the decode array;
                   the unpruned reference decoded beside them is not counted)
    fine_overhead  stage 17, the stage's own work between the arrays (shared by its searches)
    scoring        stage 17-18, scoring the proxy hypotheses and the finalists, ranking
    greedy_loop    glp only: all steps of the greedy search (stage 16)

``proxy_evaluations`` counts the candidates scored by the proxy, ``search_decodes``
the full (beam-search) decodes of the fine-search set the search needed to
choose its model: the finalists (every candidate with ``--comflp_fine_proxy
none``), or every model of every greedy step for glp with
``--comflp_glp_metric decode`` (k*L - k(k-1)/2 without constraints; with a proxy
metric they are proxy evaluations).  glp's re-decoding of its final model in
stages 17-18 is reported but not counted.  Parts a method does not use (the
states and matrix for drop_last, random, glp and none) are left out of its total.
"""

import math
from typing import Any, Dict, List, Optional, Sequence

from comflp_espnet import records, rundir

PARTS = ("states", "matrix", "coarse_search", "proxy", "materialize", "fine_decode", "fine_overhead", "scoring",
         "greedy_loop")
# Searches that do not read the correlation matrix (so neither the states).
WITHOUT_MATRIX = ("drop_last", "random", "glp", "none")
REFERENCE_NAME = "original"


def counted_parts(method: str) -> List[str]:
    """The parts of the search that ``method`` uses."""
    if method == "glp":
        return ["greedy_loop"]
    parts = ["coarse_search", "proxy", "materialize", "fine_decode", "fine_overhead", "scoring"]
    if method not in WITHOUT_MATRIX:
        parts = ["states", "matrix"] + parts
    return parts


def search_cost(tag: str, method: str, seconds: Dict[str, Optional[float]], proposals: Dict[str, Any],
                fine: Dict[str, Any], reference_seconds: Optional[float],
                fine_set_utts: Optional[int]) -> Dict[str, Any]:
    """The cost record: ``seconds`` per part (None: not recorded), ``proposals`` (the proposals
    document), ``fine`` (the fine search's record info: finalists, proxy evaluations)."""
    seconds = {part: seconds.get(part) for part in PARTS}
    counted = counted_parts(method)
    record: Dict[str, Any] = {
        "tag": tag,
        "method": method,
        "num_layers": proposals.get("num_layers"),
        "num_prune": proposals.get("num_prune"),
        "fine_set_utts": fine_set_utts,
        "fine_proxy": fine.get("proxy"),
    }
    if method == "glp":
        glp = proposals.get("glp") or {}
        seconds["greedy_loop"] = glp.get("seconds")
        record["search_decodes"] = glp.get("num_decodes")
        record["proxy_evaluations"] = glp.get("num_proxy") or 0
        record["glp_steps"] = glp.get("steps", [])
        record["final_decodes"] = fine.get("full_decodes")
    else:
        record["search_decodes"] = fine.get("full_decodes")
        record["proxy_evaluations"] = fine.get("proxy_evaluations")
    record["finalists"] = fine.get("finalists")
    record["reference_decodes"] = 1 if reference_seconds is not None else 0
    record["seconds"] = seconds
    record["reference_decode_seconds"] = reference_seconds
    record["counted"] = counted
    missing = [p for p in counted if seconds[p] is None]
    record["not_recorded"] = missing
    record["search_seconds"] = None if missing else round(math.fsum(seconds[p] for p in counted), 3)
    return record


def fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(record: Dict[str, Any]) -> str:
    header = ["tag", "method", "proxy evaluations", "full decodes", "states (s)", "matrix (s)",
              "coarse search (s)", "proxy (s)", "materialize (s)", "finalist decode (s)", "fine search steps (s)",
              "scoring (s)", "greedy loop (s)", "search total (s)"]
    seconds = record["seconds"]
    cells = [record["tag"], record["method"], fmt(record.get("proxy_evaluations"), "d"),
             fmt(record["search_decodes"], "d")]
    # Parts the method does not use are shown as "-".
    cells += [fmt(seconds[p]) if p in record["counted"] else "-" for p in PARTS]
    cells.append(fmt(record["search_seconds"]))
    note = (
        f"Search cost on {fmt(record['fine_set_utts'], 'd')} fine-search utterances: proxy evaluations = "
        "candidates scored by the cheap proxy; full decodes = pruned models decoded with the inference config "
        "to choose; the total is the sum of the parts shown (the unpruned reference model's decode, "
        f"{fmt(record.get('reference_decode_seconds'))} s, is not counted)."
    )
    return "\n".join([
        note, "",
        "|" + "|".join(header) + "|",
        "|" + "|".join("---" for _ in header) + "|",
        "|" + "|".join(cells) + "|",
    ]) + "\n"


def recorded_seconds(*outputs) -> Optional[float]:
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


def gather(run_dir: rundir.RunDir, tag_dir: rundir.TagDir, measures: Sequence[str], method: str) -> Dict[str, Any]:
    """The cost record of one search, from the records of its outputs."""
    t = tag_dir
    try:
        fine_record = records.read_record(t.fine_search)
    except records.RecordError:
        fine_record = None
    fine = dict(fine_record.info) if fine_record else {}
    fine_seconds = fine.get("seconds") or {}
    parts = {"states": recorded_seconds(run_dir.states),
             "matrix": recorded_seconds(*[run_dir.corr(m) for m in measures]),
             "coarse_search": recorded_seconds(t.proposals),
             "proxy": fine_seconds.get("proxy"), "materialize": fine_seconds.get("materialize"),
             "fine_decode": fine_seconds.get("finalist_decode"), "fine_overhead": fine_seconds.get("other")}
    score = recorded_seconds(t.scores)
    parts["scoring"] = None if score is None or fine_record is None else \
        round(score + (fine_seconds.get("proxy_scoring") or 0.0), 3)
    proposals = rundir.read_proposals(t.proposals).data
    try:
        subset = records.read_record(run_dir.fine)
    except records.RecordError:
        subset = None
    fine_utts = subset.info.get("num_utts") if subset else None
    return search_cost(t.name, method, parts, proposals, fine, fine_seconds.get("reference_decode"), fine_utts)
