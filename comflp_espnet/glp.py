"""Greedy layer pruning by the task metric (glp): the search CoMFLP is compared with.

At step s (1..k) every layer still present is tried: the model with the layers
removed in steps 1..s-1 plus that one layer removed is decoded on the
fine-search set, and the layer whose removal gives the fewest errors is removed
(ties: the lower layer id).  With a proxy (``--comflp_glp_metric ctc_greedy``
or ``loss``) the step's models are scored by the proxy instead of decoded (one
proxy array per step, no model written: ``comflp_espnet.fine_search``), and the
layer with the best proxy value is removed.  Step s therefore decodes L - s + 1 models (fewer
under constraints), k*L - k(k-1)/2 in all.  This module does the bookkeeping
of the steps (only numbers and JSON, no model is loaded); building, decoding
and scoring the step's models is the recipe's (stage 16, through the same
candidate, decoding and scoring code as the fine search).

A step's directory (``comflp_espnet.rundir.TagDir.glp_step``) holds::

    proposals.json   the step's models, one proposal per tried layer (rank =
                     position in layer order), the proposals format
    step.json        the tried layers with their errors (or proxy values), the
                     chosen layer, the layers removed so far, the number of
                     decodes / proxy evaluations and seconds
    proxy.json       (proxy metric) each tried model's proxy value
"""

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from comflp_espnet.rundir import candidate_names, read_step
from comflp_espnet.search import Proposal, check_num_prune, prunable_layers, runs_of


class GlpError(ValueError):
    """A greedy search that cannot go on as asked."""


def step_dir(glp_dir, step: int) -> Path:
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


def completed_steps(glp_dir, upto: int) -> List[Dict[str, Any]]:
    """Records of steps 1..upto, checked to follow one another."""
    steps = []
    removed: List[int] = []
    for step in range(1, upto + 1):
        directory = step_dir(glp_dir, step)
        record = read_step(directory)
        if record is None:
            raise GlpError(f"{directory / 'step.json'} not found: step {step} of the greedy search is not complete")
        if record.get("step") != step or sorted(record.get("removed_before", [])) != removed:
            raise GlpError(
                f"{directory / 'step.json'} does not continue step {step - 1} (layers removed before: "
                f"{record.get('removed_before')}, expected {removed}); remove {glp_dir} and rerun stage 16"
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


def step_proposals(step: int, removed: Sequence[int], num_layers: int, num_prune: int,
                   keep_first: bool = False, keep_last: bool = False, protect: Sequence[int] = (),
                   max_run: Optional[int] = None) -> Dict[str, Any]:
    """The models of step ``step``: one per layer that may be removed next, on top of ``removed``."""
    try:
        check_num_prune(num_prune, num_layers)
        allowed = prunable_layers(num_layers, keep_first, keep_last, protect)
    except ValueError as e:
        raise GlpError(str(e))
    if not 1 <= step <= num_prune:
        raise GlpError(f"--step {step} must be in 1..--num_prune ({num_prune})")
    removed = sorted(removed)
    layers = layers_to_try(removed, allowed, max_run)
    if not layers:
        raise GlpError(
            f"greedy step {step}: no layer can be removed after {removed} under the "
            f"constraints (removable {allowed}, max_run {max_run}); relax "
            "--comflp_protect / --comflp_keep_first / --comflp_keep_last / --comflp_max_run "
            "or lower --comflp_num_prune"
        )
    proposals = [proposal_item(removed + [layer], num_layers, rank=rank, layer=layer)
                 for rank, layer in enumerate(layers, 1)]
    return {"num_layers": num_layers, "num_prune": len(removed) + 1, "method": "glp", "step": step,
            "removed_before": removed, "topk": len(proposals), "proposals": proposals}


def choose(step: int, props: Dict[str, Any], summary: Dict[str, Any], seconds: Optional[float],
           scores_path: str = "scores") -> Dict[str, Any]:
    """Record of step ``step`` from its models (``props``) and their scores
    (``summary``, a scores.json): the tried layer with the fewest errors wins."""
    metric = summary.get("metric")
    models = summary.get("models")
    if metric not in ("cer", "wer") or not isinstance(models, dict):
        raise GlpError(f"--scores {scores_path}: no 'metric' / 'models' (not a comflp_score output)")
    proposals = props.get("proposals")
    if not isinstance(proposals, list) or not proposals:
        raise GlpError(f"greedy step {step}: no models")
    tried = []
    for name, prop in candidate_names(proposals).items():
        if name not in models:
            raise GlpError(
                f"--scores {scores_path}: no score for {name} (layer {prop['layer']}); "
                "decode and score every model of the step"
            )
        counts = models[name][metric]
        tried.append({"name": name, "layer": int(prop["layer"]), "pruned": prop["pruned"],
                      "num_err": int(counts["num_err"]), "num_ref": int(counts["num_ref"]),
                      "error_rate": float(counts["error_rate"])})
    best = min(tried, key=lambda t: (t["num_err"], t["layer"]))
    return {"step": step, "metric": metric, "removed_before": props.get("removed_before", []),
            "chosen_layer": best["layer"], "chosen_name": best["name"], "removed": best["pruned"],
            "num_err": best["num_err"], "error_rate": best["error_rate"], "value": best["error_rate"],
            "num_decodes": len(tried), "num_proxy": 0, "num_utts": summary.get("num_utts"), "seconds": seconds,
            "tried": tried}


def choose_by_proxy(step: int, props: Dict[str, Any], values: Dict[str, Dict[str, Any]], metric: str,
                    seconds: Optional[float]) -> Dict[str, Any]:
    """Record of step ``step`` from its models' proxy values (``values``: name -> {"value", and
    for an error rate "num_err", "num_ref"}; lower is better): the best wins, ties the lower layer."""
    proposals = props.get("proposals")
    if not isinstance(proposals, list) or not proposals:
        raise GlpError(f"greedy step {step}: no models")
    tried = []
    for name, prop in candidate_names(proposals).items():
        if name not in values:
            raise GlpError(f"greedy step {step}: no proxy value for {name} (layer {prop['layer']})")
        v = values[name]
        tried.append({"name": name, "layer": int(prop["layer"]), "pruned": prop["pruned"],
                      "value": float(v["value"]), "num_err": v.get("num_err"), "num_ref": v.get("num_ref"),
                      "error_rate": float(v["value"]) if v.get("num_err") is not None else None})
    best = min(tried, key=lambda t: (t["num_err"] if t["num_err"] is not None else t["value"], t["layer"]))
    return {"step": step, "metric": metric, "removed_before": props.get("removed_before", []),
            "chosen_layer": best["layer"], "chosen_name": best["name"], "removed": best["pruned"],
            "num_err": best["num_err"], "error_rate": best["error_rate"], "value": best["value"],
            "num_decodes": 0, "num_proxy": len(tried), "seconds": seconds, "tried": tried}


def finish(steps: Sequence[Dict[str, Any]], num_layers: int, num_prune: int, keep_first: bool = False,
           keep_last: bool = False, protect: Sequence[int] = (), max_run: Optional[int] = None
           ) -> Dict[str, Any]:
    """Proposals JSON of the whole search: one proposal (the greedy result), every step under "glp"."""
    pruned = removed_after(steps)
    total_decodes = sum(int(s["num_decodes"]) for s in steps)
    total_proxy = sum(int(s.get("num_proxy") or 0) for s in steps)
    seconds = [s.get("seconds") for s in steps]
    total_seconds = None if any(x is None for x in seconds) else round(math.fsum(seconds), 3)
    return {
        "num_layers": num_layers, "num_prune": num_prune, "method": "glp", "topk": 1,
        "constraints": {"keep_first": keep_first, "keep_last": keep_last, "max_run": max_run,
                        "protect": sorted(set(protect))},
        "options": {"metric": steps[-1]["metric"]},
        "corr": None,
        "proposals": [proposal_item(pruned, num_layers, rank=1)],
        "glp": {
            "num_decodes": total_decodes,
            "num_proxy": total_proxy,
            "seconds": total_seconds,
            "steps": [{k: s.get(k) for k in ("step", "chosen_layer", "removed", "metric", "num_err",
                                             "error_rate", "value", "num_decodes", "num_proxy", "seconds")}
                      for s in steps],
        },
    }


