"""The sweep of a run of several depths, after stage 18 (and again after stage 20).

``comflp_stage sweep`` (``asr_comflp.sh``) gathers every depth's winner from its search directory
(``comflp_espnet.rundir``):

* ``scores/ranking.json`` and ``scores/scores.json`` (stage 18): the winner, its removed layers,
  learnable parameters and fine-search CER/WER (error counts too), the original's;
* ``fine_search/fine_search.json`` (stage 17): where the winner's and the original's decodes of the
  fine-search set are (``fine_evals/decode_<h>/hyp/<key>``), whose merged ``decode_info.yaml``
  (``comflp_espnet.decoding``) gives decoding seconds, encoder seconds, audio seconds, device and
  threads;
* ``test_decode/<inference_tag>/<set>/score/scores.json`` (stage 20), only while that decoding
  is current for the current winner (and fine-tuned model);

builds the document of ``comflp_espnet.sweep`` and writes ``<comflp_dir>/sweep/`` with
``sweep.json``, ``sweep.md`` and ``sweep.png`` (``comflp_espnet.sweep_plot``) when the run has more
than one depth.  The directory has a freshness record made from the document's digest: a rerun
whose figures did not change rewrites nothing, a damaged file is rewritten.  It also says which
searches go on to stages 19-21 (``final_tags``), and after stage 20 puts the sweep section into
the RESULTS.md of those searches and of ``${asr_exp}``.
"""

import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from comflp_espnet import records, rundir, sweep
from comflp_espnet.atomic import atomic_output_dir, atomic_output_file
from comflp_espnet.rundir import ORIGINAL_NAME
from comflp_espnet.stages import Run, StageError

SWEEP_DIR = "sweep"
SECTION = "sweep"


def sweep_dir(run: Run) -> Path:
    return run.dir.root / SWEEP_DIR


def is_sweep(run: Run) -> bool:
    """A sweep (``--comflp_sweep`` / ``--comflp_sweep_range``), not a list of depths."""
    return bool(run.o.sweep or run.o.sweep_range)


def depths_of_run(run: Run, num_layers: int, verbose: bool) -> List[int]:
    """The depths of a sweep (``Run.parse_depths``): those the constraints rule out are skipped
    with a log line; none left is an error."""
    if run.o.search in ("none", "glp"):
        hint = ("glp's steps give every depth on the way: run --comflp_search glp --comflp_num_prune <deepest> and "
                "read glp/stepNN/step.json" if run.o.search == "glp" else "the unpruned model has no depth")
        raise StageError(f"--comflp_sweep / --comflp_sweep_range need a pruning search, not --comflp_search "
                         f"{run.o.search} ({hint})")
    try:
        depths, skipped = sweep.sweep_depths(num_layers, run.o.sweep_range or None, run.o.search,
                                             run.o.keep_first, run.o.keep_last, run.protect, run.max_run)
    except sweep.SweepError as e:
        raise StageError(str(e))
    if verbose:
        for k, reason in skipped:
            logging.info(f"sweep: k = {k} skipped: {reason}")
    if not depths:
        raise StageError(f"no depth of the sweep ({run.o.sweep_range or f'1:{num_layers - 1}'}) is possible: "
                         f"{skipped[0][1]}; relax the constraints or change --comflp_sweep_range")
    if verbose:
        logging.info(f"sweep: {len(depths)} depth(s), k = {', '.join(map(str, depths))} of {num_layers} layers")
    return depths


def skipped_depths(run: Run) -> List[Any]:
    if not is_sweep(run):
        return []
    return sweep.sweep_depths(run.num_layers, run.o.sweep_range or None, run.o.search, run.o.keep_first,
                              run.o.keep_last, run.protect, run.max_run)[1]


def max_degradation(run: Run) -> Optional[float]:
    try:
        return sweep.parse_max_degradation(run.o.max_degradation)
    except sweep.SweepError as e:
        raise StageError(str(e))


# ---------------------------------------------------------------------------- gathering
def _counts(scores: Dict[str, Any], name: str, metric: str) -> Dict[str, Any]:
    model = scores["models"].get(name)
    if model is None:
        return {}
    return {"cer": model["cer"]["error_rate"], "wer": model["wer"]["error_rate"],
            "error": model[metric]["error_rate"], "num_err": model[metric]["num_err"],
            "num_ref": model[metric]["num_ref"]}


def timing_of(hyp: Optional[str]) -> Dict[str, Any]:
    """The speed figures of a decode of the fine-search set (its merged decode_info.yaml)."""
    from comflp_espnet.decoding import read_decode_info

    info = read_decode_info(hyp) if hyp else None
    if not info:
        return {}
    return {k: info.get(k) for k in ("rtf", "encoder_share", "cpu_rtf", "encoder_cpu_share", "decode_time",
                                     "encoder_time", "decode_cpu_time", "encoder_cpu_time", "audio_seconds",
                                     "device", "num_threads", "num_utts")}


def gather_depth(view: Run, for_stage: int) -> Dict[str, Any]:
    """One depth's winner, and the original's figures as this search measured them."""
    view.require("scores", for_stage)
    t = view.t
    ranking = rundir.read_ranking(t.ranking_json)
    scores = rundir.read_scores_json(t.scores / "scores.json")
    metric = scores["metric"]
    winner = ranking["winner"]
    row = next(r for r in ranking["ranking"] if r["name"] == winner)
    doc = rundir.read_fine_search(t)
    item = next((c for c in doc["candidates"] if c["name"] == winner), {})
    entry = {"tag": view.tag, "num_prune": view.num_prune, "winner": winner, "removed": sorted(row["pruned"]),
             "params": row.get("params"), "timing": timing_of(item.get("hyp")), "decoded": True,
             "proxy": (item.get("proxy") or {}).get("value")}
    entry.update(_counts(scores, winner, metric))
    original = {"params": (ranking.get("original") or {}).get("params")}
    original.update(_counts(scores, ORIGINAL_NAME, metric))
    if doc.get("original"):
        original["timing"] = timing_of(doc["original"]["hyp"])
    return {"metric": metric, "entry": entry, "original": original}


def proxy_depth(view: Run, for_stage: int) -> Dict[str, Any]:
    """A depth that a bracketing sweep did not decode: its best candidate by the proxy."""
    from comflp_espnet.fine_search import read_reference, scored_items
    from comflp_espnet.stages import _NotCurrent

    proxy = view.fine_proxy
    params = rundir.read_parameters(view.dir) if view.dir.parameters.is_file() else {}
    try:
        items = scored_items(view, proxy, read_reference(view) if proxy == "ctc_greedy" else None, params or {})
    except _NotCurrent as e:
        raise StageError(f"stage {for_stage} reads the proxy scores of {view.tag}, and {e.status.output} is not "
                         f"current ({e.status.describe()}): run stage 17 first (--stage 17)")
    best = min(items, key=lambda i: i["proxy_rank"])
    return {"tag": view.tag, "num_prune": view.num_prune, "winner": None, "removed": best["pruned"],
            "params": best["params"], "timing": {}, "decoded": False, "proxy": best["proxy"]["value"]}


def eval_set_scores(view: Run) -> Dict[str, Dict[str, Any]]:
    """{set: {model: {"cer", "wer"}}} of stage 20's decodings that are current for the current
    winner (and fine-tuned model); sets not decoded (or not current) are left out."""
    from comflp_espnet.decode_dir import DecodeJob
    from comflp_espnet.stages import test_models

    o = view.o
    out: Dict[str, Dict[str, Any]] = {}
    if not any(view.t.test_decode(o.inference_tag, dset).is_dir() for dset in o.eval_sets):
        return out
    try:
        models = test_models(view)
    except StageError:
        return out
    for dset in o.eval_sets:
        decode = view.t.test_decode(o.inference_tag, dset)
        if not (decode / "score" / "scores.json").is_file():
            continue
        job = DecodeJob(models_scp=str(view.t.test_models_scp(o.inference_tag)), data_dir=str(Path(o.data_feats) / dset),
                        output_dir=str(decode), nj=o.inference_nj, inference_config=o.inference_config,
                        inference_args=o.inference_args, batch_size=o.batch_size,
                        ngpu=1 if o.gpu_inference else 0, audio_format=o.audio_format,
                        skip_bad_utts=o.skip_bad_utts, score=True, token_type=o.token_type,
                        nlsyms_txt=o.nlsyms_txt, label_prefix=f"{dset}/")
        try:
            current = all(records.check(job.out.hyp(n), job.hyp_expected(c, m)).current for n, c, m in models) \
                and records.check(job.scores, job.score_expected(models)).current
            if not current:
                continue
            summary = rundir.read_scores_json(decode / "score" / "scores.json")
        except (OSError, ValueError):
            continue
        out[dset] = {name: {"cer": s["cer"]["error_rate"], "wer": s["wer"]["error_rate"]}
                     for name, s in summary["models"].items()}
    return out


def gather(run: Run, for_stage: int = 18, with_tests: bool = True) -> Dict[str, Any]:
    """The sweep document of the run (every depth's search must have current scores); test
    results only ``with_tests``."""
    depths = []
    original: Dict[str, Any] = {}
    metric = "cer"
    original_test: Dict[str, Any] = {}
    from comflp_espnet.fine_search import fine_tags, is_bracket

    decoded = fine_tags(run) if is_bracket(run) else None
    for tag in run.tags:
        view = run.for_tag(tag)
        if decoded is not None and tag not in decoded and not view.status("scores").current:
            depths.append(dict(proxy_depth(view, for_stage), test={}))
            continue
        found = gather_depth(view, for_stage)
        metric = found["metric"]
        entry = found["entry"]
        tests = eval_set_scores(view) if with_tests else {}
        entry["test"] = {dset: {m: v for m, v in models.items() if m in ("pruned", "finetuned")}
                         for dset, models in tests.items()}
        for dset, models in tests.items():
            if ORIGINAL_NAME in models:
                original_test.setdefault(dset, models[ORIGINAL_NAME])
        depths.append(entry)
        # Every search decoded the original on the same subset with the same options (one cache
        # entry): the first search that has it speaks for all.
        for key, value in found["original"].items():
            if original.get(key) in (None, {}) and value not in (None, {}):
                original[key] = value
    if decoded is not None and run.fine_proxy == "ctc_greedy":
        from comflp_espnet.fine_search import proxy_entry_status, proxy_value, read_reference

        if proxy_entry_status(run, run.fine_proxy, []).current:
            original["proxy"] = proxy_value(run, run.fine_proxy, [], read_reference(run))["value"]
    if original.get("params") is None:
        params = rundir.read_parameters(run.dir) if run.dir.parameters.is_file() else None
        original["params"] = (params or {}).get("total")
    original["test"] = original_test
    return sweep.build_document(run.num_layers, metric, original, depths, max_degradation(run), is_sweep(run),
                                skipped_depths(run), fine_set=run.o.fine_set, eval_sets=list(run.o.eval_sets),
                                proxy=run.fine_proxy)


# ---------------------------------------------------------------------------- writing
def write_sweep(run: Run, doc: Dict[str, Any]) -> bool:
    """``<comflp_dir>/sweep/sweep.{json,md,png}``, unless current for this document; True when written."""
    import json

    from comflp_espnet.sweep_plot import save_sweep_plot

    out = sweep_dir(run)
    expected = records.made_from({"document": records.value_digest(doc)}, {"code": sweep.SWEEP_CODE})
    if records.check(out, expected).current:
        return False
    records.remove_record(out)
    with atomic_output_dir(out) as tmp:
        (tmp / "sweep.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (tmp / "sweep.md").write_text(sweep.sweep_markdown(doc, "sweep.png"), encoding="utf-8")
        save_sweep_plot(doc, tmp / "sweep.png")
    records.write_record(out, expected)
    return True


def section_id(run: Run) -> str:
    """The sweep's section in ``${asr_exp}/RESULTS.md`` (as a search's: prefixed by --comflp_dir
    when that is not the default)."""
    asr_exp = os.path.normpath(run.o.asr_exp)
    comflp_dir = os.path.normpath(run.o.comflp_dir)
    if comflp_dir == os.path.join(asr_exp, "comflp"):
        return SECTION
    rel = comflp_dir[len(asr_exp) + 1:] if comflp_dir.startswith(asr_exp + os.sep) else comflp_dir
    return re.sub(r"[^A-Za-z0-9_.+-]", "+", f"{rel}/{SECTION}")


def results_section(run: Run, doc: Dict[str, Any], results: Path) -> str:
    def relative(name: str) -> str:
        return os.path.relpath(os.path.abspath(sweep_dir(run) / name), os.path.abspath(results.parent))

    depths = ", ".join(str(r["num_prune"]) for r in doc["depths"])
    return (f"# CoMFLP depth sweep ({run.dir.root})\n\n"
            f"Searches of k = {depths} removed layers: [{sweep_dir(run) / 'sweep.md'}]({relative('sweep.md')})\n\n"
            + sweep.body_markdown(doc, relative("sweep.png")))


def write_results(run: Run, doc: Dict[str, Any]) -> List[Path]:
    """The sweep section in the RESULTS.md of the searches that went on to stage 20 (and made
    one) and in ``${asr_exp}/RESULTS.md`` (rewritten in place)."""
    from comflp_espnet.results import replace_section

    written = []
    targets = [(run.dir.tag(tag).results, SECTION) for tag in doc["final_tags"] if run.dir.tag(tag).results.is_file()]
    targets.append((Path(run.o.asr_exp) / "RESULTS.md", section_id(run)))
    for path, section in targets:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        updated = replace_section(text, section, results_section(run, doc, path), source=str(path))
        if updated != text:
            with atomic_output_file(path, encoding="utf-8") as f:
                f.write(updated)
        written.append(path)
    return written


def run_sweep(run: Run, results: bool = False, for_stage: int = 18) -> Dict[str, Any]:
    """The ``sweep`` command: the sweep directory (runs of several depths), the searches of
    stages 19-21 (``final_tags``), and with ``results`` the RESULTS.md sections (``for_stage``:
    the stage that reads the scores, named when they are not current)."""
    several = len(run.tags) > 1
    if not several and max_degradation(run) is None:
        return {"final_tags": " ".join(run.tags), "final_note": "", "sweep_results": False}
    doc = gather(run, for_stage)
    if several:
        changed = write_sweep(run, doc)
        logging.info(f"sweep of k = {', '.join(str(r['num_prune']) for r in doc['depths'])}: "
                     f"{sweep_dir(run) / 'sweep.md'}{'' if changed else ' (unchanged)'}")
    choice = doc["choice"]
    if choice.get("max_degradation") is not None:
        logging.info(f"--comflp_max_degradation {choice['max_degradation']:g}: "
                     + (f"chose k = {choice['num_prune']} ({choice['tag']}): " if choice["tag"] else "")
                     + choice["reason"])
    elif several and is_sweep(run):
        logging.info(doc["final_note"])
    if results and several:
        for path in write_results(run, doc):
            logging.info(f"sweep section -> {path}")
    return {"final_tags": " ".join(doc["final_tags"]), "final_note": doc["final_note"],
            "sweep_results": several}


def final_tags(run: Run, for_stage: int) -> List[str]:
    """The searches that stages 19-21 work on (for the checks before they run)."""
    if len(run.tags) == 1 and max_degradation(run) is None:
        return list(run.tags)
    return gather(run, for_stage, with_tests=False)["final_tags"]
