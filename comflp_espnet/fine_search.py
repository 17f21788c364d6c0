"""The fine search (stage 17): rank every candidate by a cheap proxy, decode the finalists.

For every search (tag) of the run, in one pass:

1. **Proxy** (``--comflp_fine_proxy ctc_greedy|loss``): every candidate of every
   search that has more candidates than finalists is scored on the fine-search
   subset by ``comflp_proxy`` jobs, one ``${cmd} JOB=1:inference_nj`` array for
   all of them (the model is loaded once per job, candidates are the model with
   layers skipped: no checkpoint per candidate).  ``ctc_greedy``: CER/WER of CTC
   greedy decoding (the project's scoring); ``loss``: the model's teacher-forced
   loss per reference token.  ``none``: every candidate is a finalist.
2. **Finalists**: the ``--comflp_fine_finalists`` M best by proxy (ties: the
   coarse rank) are materialized as stock ESPnet model dirs
   (``<tag>/candidates/candNN``) and decoded with the user's inference options,
   together with the unpruned model (once for all searches), in one
   ``comflp_decode`` array.  Stage 18 picks the winner among the finalists by
   their real CER/WER.

Every evaluation is an entry of the shared cache ``<comflp_dir>/fine_evals/``,
keyed by what was evaluated (the pruned set, ``rundir.eval_key``), how (the
proxy and its options, or the decoding options: one directory per way, named by
its digest and described in its how.json), on what (the fine-search subset) and
with what (the model): the last two are in each entry's freshness record, the
first two in its path.  So a search of one depth, a run of several depths, the
greedy search's proxy steps and searches with other measures or K evaluate a
pruned set once and share it, and a rerun resumes with what is current.  A
changed proxy option is another directory (nothing else is redone but what
depends on it); a changed or damaged entry is redone alone.

Each search's result is ``<tag>/fine_search/fine_search.json`` (every
candidate's proxy value, the finalists and their decodes, the seconds of each
part) with its record, made from the proposals, the subset and the proxy
entries of its candidates; it is current only while its finalists and their
decodes are current too.

Seconds: an entry made by an array is charged the array's wall time shared
among the entries it made (proxy: evenly; decode: in proportion to each
model's decoding time), so that a search is charged what its own evaluations
cost whoever made them; the stage's own work is shared among the searches it
served.
"""

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from comflp_espnet import records, rundir
from comflp_espnet.rundir import ORIGINAL_NAME
from comflp_espnet.stages import Run, StageError, _NotCurrent, batched_job_lists, elapsed, make_subset

# Bumped when the same inputs would give another fine search.
FINE_CODE = "fine-1"
PARAMETERS_CODE = "parameters-1"


# ---------------------------------------------------------------------------- the ways of evaluating
def proxy_how(proxy: str, batch_size: int, gpu: bool, skip_bad_utts: bool) -> Dict[str, Any]:
    """The options that shape a proxy's scores (its fine_evals directory is named by their digest)."""
    from comflp_espnet.proxy_job import PROXY_CODE

    return {"proxy": proxy, "batch_size": int(batch_size), "dtype": "float32",
            "device": "cuda" if gpu else "cpu", "skip_bad_utts": bool(skip_bad_utts), "code": PROXY_CODE}


def proxy_dir(run: Run, proxy: str) -> rundir.ProxyEvalDir:
    return run.dir.proxy_evals(proxy, records.value_digest(run.proxy_how(proxy)))


def decode_dir(run: Run) -> rundir.DecodeDir:
    return run.dir.decode_evals(records.value_digest(run.inference_options()))


def fine_digest(run: Run) -> str:
    status = run.status("fine")
    if not status.current:
        raise _NotCurrent(status, "fine")
    return status.record.digest


def proxy_entry_made_from(run: Run, proxy: str, pruned: Sequence[int]) -> Dict[str, Any]:
    return records.made_from(dict(run.original(), fine=fine_digest(run)),
                             dict(run.proxy_how(proxy), pruned=sorted(int(x) for x in pruned)))


def proxy_entry_status(run: Run, proxy: str, pruned: Sequence[int]) -> records.Status:
    return records.check(proxy_dir(run, proxy).entry(rundir.eval_key(pruned)),
                         proxy_entry_made_from(run, proxy, pruned))


def fine_triples(run: Run) -> List[Tuple[str, str, str]]:
    from comflp_espnet.datadir import input_spec

    scp, kind = input_spec(run.dir.fine, run.o.audio_format)
    return [(str(run.dir.fine / scp), "speech", kind)]


def decode_entry_made_from(run: Run, config, model) -> Dict[str, Any]:
    from comflp_espnet import decoding

    return decoding.hyp_made_from(config, model, fine_triples(run), run.inference_options())


# ---------------------------------------------------------------------------- a search's candidates
def candidates_of(view: Run) -> Dict[str, Dict[str, Any]]:
    """``candNN`` -> proposal, in coarse rank order."""
    return rundir.read_proposals(view.t.proposals).named()


def is_bracket(run: Run) -> bool:
    """``--comflp_sweep_decode bracket`` on a run of several depths: only the depths around the
    tolerance's limit are decoded (one depth is decoded as usual)."""
    return run.o.sweep_decode == "bracket" and len(run.tags) > 1


def uses_proxy(view: Run, num_candidates: Optional[int] = None) -> bool:
    """A search is proxy-scored when it has more candidates than finalists (or in a bracketing
    sweep)."""
    if view.fine_proxy == "none":
        return False
    if is_bracket(view):
        return True  # the depths to decode are chosen by every depth's proxy-best
    if num_candidates is None:
        num_candidates = len(candidates_of(view))
    return num_candidates > view.o.fine_finalists


def proxy_inputs(view: Run) -> Dict[str, Any]:
    """The proxy entries a search's fine search is made from (each must be current)."""
    if not view.status("proposals").current or not uses_proxy(view):
        return {}
    inputs = {}
    for name, prop in candidates_of(view).items():
        status = proxy_entry_status(view, view.fine_proxy, prop["pruned"])
        if not status.current:
            raise _NotCurrent(status)
        inputs[f"proxy:{name}"] = status.record.digest
    return inputs


def finalists_status(view: Run, status: records.Status) -> records.Status:
    """A current fine search whose finalists or their decodes are no longer current is stale."""
    from comflp_espnet.candidates import candidate_made_from

    try:
        doc = rundir.read_fine_search(view.t)
    except rundir.DocumentError as e:
        return records.Status(status.output, records.DAMAGED, str(e), status.record)
    original = view.original()
    checks = []
    for item in doc["candidates"]:
        if not item.get("finalist"):
            continue
        cand = view.t.candidate(item["name"])
        cand_status = records.check(cand, candidate_made_from(original, item["pruned"]))
        if not cand_status.current:
            return records.Status(status.output, records.STALE, f"has a finalist that {cand_status.describe()}",
                                  status.record)
        checks.append((item["hyp"], cand / "config.yaml", cand / view.o.inference_asr_model, "a finalist's decode"))
    if doc.get("original"):
        checks.append((doc["original"]["hyp"], view.asr_train_config, view.asr_model_file,
                       "the unpruned model's decode"))
    for hyp, config, model, what in checks:
        hyp_status = records.check(hyp, decode_entry_made_from(view, config, model))
        if not hyp_status.current:
            return records.Status(status.output, records.STALE, f"has {what}: {hyp_status.describe()}",
                                  status.record)
    return status


# ---------------------------------------------------------------------------- the model's parameters
def parameters(run: Run, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The original model's learnable parameters (names, values per encoder layer, total):
    ``parameters.json``, made from a proxy job's ``info`` when given, else by building the
    model (an ESPnet import, once per --comflp_dir)."""
    expected = records.made_from(run.original(), {"code": PARAMETERS_CODE})
    path = run.dir.parameters
    if records.check(path, expected).current:
        return rundir.read_parameters(run.dir)
    start = time.perf_counter()
    if info is None:
        from comflp_espnet.model_io import load_asr_model
        from comflp_espnet.proxy_job import learnable_parameters

        logging.info(f"counting the learnable parameters of {run.asr_model_file} (once per --comflp_dir)")
        model, _ = load_asr_model(run.asr_train_config, run.asr_model_file)
        info = learnable_parameters(model)
    records.remove_record(path)
    rundir.write_parameters(run.dir, info)
    records.write_record(path, expected, seconds=time.perf_counter() - start)
    return info


def params_after(params: Dict[str, Any], pruned: Sequence[int]) -> Optional[int]:
    per_layer = params.get("layer_params") or []
    try:
        return int(params["total"]) - sum(int(per_layer[i - 1]) for i in pruned)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------- proxy arrays
def prepare_proxy(run: Run, proxy: str, pruned_sets: Dict[str, Sequence[int]]) -> Dict[str, Any]:
    """The proxy array's inputs for the pruned sets (eval key -> pruned) whose entries are not
    current: the candidates file and each job's data lists (whole length-sorted batches).
    ``proxy_count`` 0 when there is nothing to score."""
    from comflp_espnet.datadir import input_spec
    from comflp_espnet.job_batches import write_job_lists
    from comflp_espnet.proxy_job import write_candidates

    ev = proxy_dir(run, proxy)
    todo = {key: pruned for key, pruned in pruned_sets.items()
            if not proxy_entry_status(run, proxy, pruned).current}
    if ev.logdir.is_dir():
        shutil.rmtree(ev.logdir)
    if not todo:
        return {"proxy_count": 0}
    rundir.write_how(ev.how_json, run.proxy_how(proxy))
    ev.logdir.mkdir(parents=True)
    write_candidates(ev.candidates_file, sorted(todo.items()))
    scp, kind = input_spec(run.dir.fine, run.o.audio_format)
    jobs = batched_job_lists(run.dir.fine, scp, run.o.inference_nj, run.o.proxy_batch_size)
    files, patterns = [scp], [ev.wav_pattern]
    if proxy == "loss":
        files.append("text")
        patterns.append(ev.text_pattern)
    write_job_lists(run.dir.fine, files, jobs, patterns)
    return {"proxy_count": len(todo), "proxy_nj": len(jobs), "proxy_name": proxy,
            "proxy_candidates": ev.candidates_file, "proxy_data": ev.wav_pattern, "proxy_type": kind,
            "proxy_text": ev.text_pattern if proxy == "loss" else "", "proxy_output": ev.job_pattern,
            "proxy_log": ev.log_pattern, "proxy_batch_size": run.o.proxy_batch_size}


def merge_proxy(run: Run, proxy: str, start: Optional[float]) -> Dict[str, records.Record]:
    """The proxy jobs' outputs joined into one cache entry per pruned set, each with its record
    (charged an even share of the array's time); parameters.json from the jobs' info."""
    from comflp_espnet.atomic import atomic_output_dir
    from comflp_espnet.datadir import input_spec, read_keys
    from comflp_espnet.proxy_job import RESULT_FILE, job_made_from, read_candidates, read_info

    ev = proxy_dir(run, proxy)
    if not ev.candidates_file.is_file():
        return {}
    candidates = read_candidates(str(ev.candidates_file))
    nj = len(list(ev.logdir.glob("wav.*.scp")))
    _, kind = input_spec(run.dir.fine, run.o.audio_format)
    options = {"proxy": proxy, "batch_size": run.o.proxy_batch_size, "sort_chunk": 0, "dtype": "float32",
               "skip_bad_utts": run.o.skip_bad_utts}
    jobs = []
    for n in range(1, nj + 1):
        wav = str(ev.wav_pattern).replace("JOB", str(n))
        triples = [(wav, "speech", kind)]
        if proxy == "loss":
            triples.append((str(ev.text_pattern).replace("JOB", str(n)), "text", "text"))
        status = records.check(ev.job(n), job_made_from(run.asr_train_config, run.asr_model_file, triples,
                                                        read_keys(wav), candidates, options))
        if not status.current:
            raise StageError(f"proxy job {n}: {status.describe()}; the job did not finish (see "
                             f"{str(ev.log_pattern).replace('JOB', str(n))}): run the stage again")
        jobs.append(ev.job(n))
    parameters(run, read_info(jobs[0]).get("parameters"))
    share = (elapsed(start) or 0.0) / max(1, len(candidates))
    result = RESULT_FILE[proxy]
    made = {}
    for key, pruned, _ in candidates:
        entry = ev.entry(key)
        records.remove_record(entry)
        lines: List[str] = []
        for job in jobs:
            lines += (job / key / result).read_text(encoding="utf-8").splitlines(keepends=True)
        lines.sort(key=lambda line: line.split(maxsplit=1)[0])
        with atomic_output_dir(entry) as tmp:
            (tmp / result).write_text("".join(lines), encoding="utf-8")
        made[key] = records.write_record(entry, proxy_entry_made_from(run, proxy, pruned), seconds=share,
                                         info={"proxy": proxy, "jobs": nj})
    logging.info(f"{len(made)} proxy score(s) ({proxy}) -> {ev.root}")
    return made


# Set-level proxy values already scored, per proxy directory (its values.json, read once per
# process): a bracketing sweep ranks every candidate of every depth in each of its steps, and
# scoring their texts again each time would cost more than the steps' own work.
_VALUES: Dict[str, Dict[str, Any]] = {}
_VALUES_CHANGED: set = set()


def _stored_values(path: Path) -> Dict[str, Any]:
    if str(path) not in _VALUES:
        try:
            _VALUES[str(path)] = rundir.read_json(path, "proxy values") if path.is_file() else {}
        except rundir.DocumentError:
            _VALUES[str(path)] = {}  # rebuilt from the entries
    return _VALUES[str(path)]


def save_proxy_values(run: Run, proxy: str) -> None:
    """Write the values scored since the last save to the proxy directory's values.json."""
    path = proxy_dir(run, proxy).root / "values.json"
    if str(path) in _VALUES_CHANGED and path.parent.is_dir():
        rundir.write_json(path, _VALUES[str(path)])
        _VALUES_CHANGED.discard(str(path))


def proxy_value(run: Run, proxy: str, pruned: Sequence[int], reference: Dict[str, str]) -> Dict[str, Any]:
    """A pruned set's set-level proxy value (lower is better): ctc_greedy, the error rate of the
    primary metric (CER for char tokens, else WER) with both rates; loss, per reference token.
    A ctc_greedy value is kept in values.json under the digest of its entry's record and of
    the reference, and used while both are the same."""
    entry = proxy_dir(run, proxy).entry(rundir.eval_key(pruned))
    if proxy == "loss":
        from comflp_espnet.proxy_job import aggregate_loss

        agg = aggregate_loss([str(entry / "loss")])
        return {"value": agg["per_token"], "num_tokens": agg["num_tokens"], "num_utts": agg["num_utts"]}
    from comflp_espnet import scoring

    record = records.read_record(entry)
    signature = records.value_digest({"entry": record.digest if record else None,
                                      "reference": records.file_digest(run.dir.fine / "text"),
                                      "unit": primary_unit(run), "nlsyms": run.o.nlsyms_txt})
    values_file = proxy_dir(run, proxy).root / "values.json"
    stored = _stored_values(values_file)
    known = stored.get(entry.name)
    if isinstance(known, dict) and known.get("signature") == signature and isinstance(known.get("value"), dict):
        return dict(known["value"])
    totals = text_totals(run, reference, entry / "text", scoring.UNITS)
    primary = primary_unit(run)
    value = {"value": totals[primary].error_rate, "num_err": totals[primary].num_err,
             "num_ref": totals[primary].num_ref, "cer": totals["char"].error_rate, "wer": totals["word"].error_rate}
    stored[entry.name] = {"signature": signature, "value": value}
    _VALUES_CHANGED.add(str(values_file))
    return dict(value)


def text_totals(run: Run, reference: Dict[str, str], text: Path, units: Sequence[str]) -> Dict[str, Any]:
    """The error counts of a Kaldi text of the fine-search set against ``reference``, per unit."""
    from comflp_espnet import scoring

    hyps = scoring.read_kaldi_text(text)
    nlsyms = scoring.read_symbol_list(run.o.nlsyms_txt) if run.o.nlsyms_txt not in ("", "none") else []
    return {unit: scoring.total(scoring.score_texts(reference, hyps, unit, nlsyms)) for unit in units}


def primary_unit(run: Run) -> str:
    return "char" if run.o.token_type == "char" else "word"


def metric_name(run: Run, proxy: str) -> str:
    if proxy == "loss":
        return "loss"
    return "cer" if primary_unit(run) == "char" else "wer"


def read_reference(run: Run) -> Dict[str, str]:
    from comflp_espnet import scoring

    return scoring.read_kaldi_text(run.dir.fine / "text")


# ---------------------------------------------------------------------------- stage 17
def views_to_do(run: Run, planned: Optional[Sequence[str]] = None) -> List[Run]:
    """The searches whose fine search is not current (their proposals must be), among the
    ``planned`` ones when given."""
    views = [v for v in run.tag_runs() if (planned is None or v.tag in planned) and not v.status("fine_search").current]
    for view in views:
        view.require("proposals", 17)
    return views


def begin_17(run: Run) -> Dict[str, Any]:
    """The fine-search subset; the proxy array over every candidate of every search to do."""
    make_subset(run, "fine")
    run.forget()
    views = views_to_do(run)
    proxy = run.fine_proxy
    pruned_sets: Dict[str, Sequence[int]] = {}
    for view in views:
        records.remove_record(view.t.fine_search)
        if uses_proxy(view):
            for prop in candidates_of(view).values():
                pruned_sets[rundir.eval_key(prop["pruned"])] = prop["pruned"]
    if is_bracket(run) and pruned_sets and proxy == "ctc_greedy":
        pruned_sets[rundir.eval_key([])] = []  # the original's proxy value: the scale of the first guess
    values = {"fine_dir": run.dir.fine, "fine_searches": " ".join(v.tag for v in views)}
    if proxy == "none" or not pruned_sets:
        return dict(values, proxy_count=0)
    values.update(prepare_proxy(run, proxy, pruned_sets))
    if values["proxy_count"]:
        logging.info(f"proxy ({proxy}): {values['proxy_count']} candidate(s) to score, "
                     f"{len(pruned_sets) - values['proxy_count']} current")
    return values


def choose_finalists(items: List[Dict[str, Any]], num_finalists: int) -> List[str]:
    """The names of the ``num_finalists`` best candidates by proxy (lower value first; ties:
    the coarse rank); every candidate when none has a proxy value."""
    scored = [i for i in items if i.get("proxy") is not None]
    if not scored:
        return [i["name"] for i in items]
    return [i["name"] for i in sorted(scored, key=proxy_order)[:num_finalists]]


def proxy_order(item: Dict[str, Any]):
    """Sort key of a scored candidate: its proxy value (errors when counted), then its coarse rank."""
    proxy = item["proxy"]
    return (proxy.get("num_err", proxy["value"]), item["rank"])


def scored_items(view: Run, proxy: str, reference: Optional[Dict[str, str]], params: Dict[str, Any],
                 named: Optional[Dict[str, Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """A search's candidates (``named``, else read; coarse rank order) with their proxy values
    and proxy ranks when it uses the proxy; raises _NotCurrent when a proxy score is not current."""
    if named is None:
        named = candidates_of(view)
    with_proxy = uses_proxy(view, len(named))
    items = []
    for name, prop in named.items():
        item = {"name": name, "rank": prop["rank"], "pruned": sorted(prop["pruned"]),
                "key": rundir.eval_key(prop["pruned"]), "params": params_after(params, prop["pruned"]),
                "proxy": None, "proxy_rank": None, "proxy_seconds": None}
        if with_proxy:
            status = proxy_entry_status(view, proxy, prop["pruned"])
            if not status.current:
                raise _NotCurrent(status, name)
            item["proxy"] = proxy_value(view, proxy, prop["pruned"], reference)
            item["proxy_seconds"] = status.record.seconds
        items.append(item)
    if with_proxy:
        save_proxy_values(view, proxy)
        order = sorted(items, key=proxy_order)
        for position, item in enumerate(order, 1):
            item["proxy_rank"] = position
    return items


def finalists_17(run: Run, start: Optional[float], with_proxy_array: bool = True) -> Dict[str, Any]:
    """After the proxy array: proxy values, the finalists of every search materialized, and
    the decode array's inputs (finalists and the unpruned model not decoded yet).  In a
    bracketing sweep, only the depths planned so far (``bracket_plan``); ``next_17`` calls it
    again after each decode array until the plan is done."""
    from comflp_espnet.candidates import ensure_candidate

    t0 = time.perf_counter()
    proxy = run.fine_proxy
    made = merge_proxy(run, proxy, start) if proxy != "none" and with_proxy_array else {}
    run.forget()
    planned = None
    if is_bracket(run):
        plan = bracket_plan(run)
        planned = plan["tags"]
        logging.info(bracket_text(plan))
    views = views_to_do(run, planned)
    reference = read_reference(run) if proxy == "ctc_greedy" else None
    params = parameters(run)
    original = run.original()
    models: Dict[str, Tuple[str, str]] = {}
    if any(v.include_original for v in views):
        models[ORIGINAL_NAME] = (str(run.asr_train_config), str(run.asr_model_file))
    proxy_scoring = 0.0
    materialized = 0.0
    for view in views:
        t = view.t
        named = candidates_of(view)
        with_proxy = uses_proxy(view, len(named))
        scoring_start = time.perf_counter()
        try:
            items = scored_items(view, proxy, reference, params, named)
        except _NotCurrent as e:
            raise StageError(f"the proxy score of {e.name}: {e.status.describe()}; run stage 17 again")
        scoring_seconds = time.perf_counter() - scoring_start
        proxy_scoring += scoring_seconds
        finalists = choose_finalists(items, view.o.fine_finalists)
        for name in finalists:
            prop = named[name]
            cand = t.candidate(name)
            record, reused = ensure_candidate(cand, original, view.asr_train_config, view.asr_model_file,
                                              prop["pruned"], prop.get("pruned_decoder", []), params["learnable"])
            if not reused:
                materialized += record.seconds or 0.0
            key = rundir.eval_key(prop["pruned"])
            models.setdefault(key, (str(cand / "config.yaml"), str(cand / view.o.inference_asr_model)))
        remove_other_candidates(t, finalists)
        dd = decode_dir(view)
        for item in items:
            item["finalist"] = item["name"] in finalists
            item["hyp"] = str(dd.hyp(item["key"])) if item["finalist"] else None
        doc = {"tag": view.tag, "proxy": proxy if with_proxy else "none",
               "proxy_requested": view.o.fine_proxy,
               "metric": metric_name(view, proxy) if with_proxy else None,
               "proxy_dir": str(proxy_dir(view, proxy).root) if with_proxy else None,
               "decode_dir": str(dd.root), "num_finalists": view.o.fine_finalists, "finalists": finalists,
               "original": {"key": ORIGINAL_NAME, "hyp": str(dd.hyp(ORIGINAL_NAME))} if view.include_original
               else None,
               "candidates": items, "proxy_scoring_seconds": round(scoring_seconds, 3)}
        rundir.write_fine_search(t, doc)
        if with_proxy:
            logging.info(f"{view.tag}: {len(items)} candidates by {proxy}; finalists "
                         + ", ".join(f"{n} ({fmt_value(next(i for i in items if i['name'] == n)['proxy'])})"
                                     for n in finalists))
    values = prepare_decode(run, models)
    # What this step did besides the arrays (shared among the searches in end_17); the steps of
    # a bracketing sweep add up.
    step = {"proxy_scoring": proxy_scoring, "materialize": materialized,
            "finalists_step": time.perf_counter() - t0, "proxy_made": len(made)}
    if not with_proxy_array:
        earlier = read_step_seconds(run)
        step = {k: v + (earlier.get(k) or 0) for k, v in step.items()}
    write_step_seconds(run, step)
    return values


def next_17(run: Run, start: Optional[float]) -> Dict[str, Any]:
    """A bracketing sweep after a decode array: its decodes into the cache, then the next
    depths' finalists and decode array (``decode_count`` 0 when the plan is done)."""
    merge_decodes(run, start)
    run.forget()
    return finalists_17(run, None, with_proxy_array=False)


# ---------------------------------------------------------------------------- bracketing sweep
def _as_entry(value: Dict[str, Any]) -> Dict[str, Any]:
    return {"error": value["value"], "num_err": value.get("num_err"), "num_ref": value.get("num_ref")}


def decoded_error(view: Run, key: str, config: Path, model: Path, reference: Dict[str, str]) -> Optional[Dict[str, Any]]:
    """The primary metric of a current decode of the fine-search set (None when there is none)."""
    hyp = decode_dir(view).hyp(key)
    if not records.check(hyp, decode_entry_made_from(view, config, model)).current:
        return None
    unit = primary_unit(view)
    total = text_totals(view, reference, Path(hyp) / "text", [unit])[unit]
    return {"error": total.error_rate, "num_err": total.num_err, "num_ref": total.num_ref}


def depth_result(view: Run, items: List[Dict[str, Any]], reference: Dict[str, str]) -> Optional[Dict[str, Any]]:
    """The best finalist's decoded error of one depth, or None while a finalist is not
    materialized and decoded."""
    from comflp_espnet.candidates import candidate_made_from

    original = view.original()
    best = None
    for name in choose_finalists(items, view.o.fine_finalists):
        item = next(i for i in items if i["name"] == name)
        cand = view.t.candidate(name)
        if not records.check(cand, candidate_made_from(original, item["pruned"])).current:
            return None
        result = decoded_error(view, item["key"], cand / "config.yaml", cand / view.o.inference_asr_model, reference)
        if result is None:
            return None
        if best is None or result["num_err"] < best["num_err"]:
            best = result
    return best


def bracket_plan(run: Run) -> Dict[str, Any]:
    """The depths a bracketing sweep decodes (``comflp_espnet.bracket``), replayed from the
    cache: ``tags`` (depth order), ``done`` (every one decoded and the limit bracketed) and
    ``within`` ({depth: within the tolerance} of the decoded).  Raises _NotCurrent while a
    proxy score or a proposal is missing."""
    from comflp_espnet import bracket, sweep
    from comflp_espnet.sweep_stage import max_degradation

    tolerance = max_degradation(run)
    proxy = run.fine_proxy
    status = run.status("fine")
    if not status.current:
        raise _NotCurrent(status, "the fine-search subset")
    reference = read_reference(run)
    views = {}
    items_of = {}
    for view in (run.for_tag(tag) for tag in run.tags):
        status = view.status("proposals")
        if not status.current:
            raise _NotCurrent(status, "proposals")
        views[view.num_prune] = view
        items_of[view.num_prune] = scored_items(view, proxy, reference if proxy == "ctc_greedy" else None, {})
    depths = sorted(views)
    guess: Dict[int, Optional[bool]] = {k: None for k in depths}
    if proxy == "ctc_greedy":
        status = proxy_entry_status(run, proxy, [])
        if not status.current:
            raise _NotCurrent(status, "the original's proxy score")
        original_proxy = _as_entry(proxy_value(run, proxy, [], reference))
        save_proxy_values(run, proxy)
        for k in depths:
            best = min(items_of[k], key=lambda i: (i["proxy"]["num_err"], i["rank"]))
            guess[k] = sweep.within(_as_entry(best["proxy"]), original_proxy, tolerance)
    start = bracket.start_depths(depths, guess)
    planned = list(start)
    original = decoded_error(run, ORIGINAL_NAME, run.asr_train_config, run.asr_model_file, reference)
    within: Dict[int, bool] = {}
    errors: Dict[int, float] = {}

    def plan(done: bool) -> Dict[str, Any]:
        return {"tags": [views[d].tag for d in sorted(planned)], "depths": sorted(planned), "done": done,
                "within": within, "errors": errors, "original": original, "tolerance": tolerance,
                "start": start, "guessed": any(v is not None for v in guess.values())}

    while True:
        for k in planned:
            if k not in within:
                result = depth_result(views[k], items_of[k], reference) if original is not None else None
                if result is None:
                    return plan(False)
                within[k] = sweep.within(result, original, tolerance)
                errors[k] = result["error"]
        following = bracket.next_depth(depths, within)
        if following is None:
            return plan(True)
        planned.append(following)


def bracket_text(plan: Dict[str, Any]) -> str:
    """One log line: where the bracketing sweep stands and what it decodes."""
    x = plan["tolerance"]
    if not plan["within"]:
        start = ", ".join(f"k = {k}" for k in plan["start"])
        why = (f"the deepest depth whose proxy-best is within {x:g} points of the original's proxy value, and the "
               "next deeper" if plan["guessed"] else "the middle of the depths (the proxy is not an error rate)")
        return f"bracket (--comflp_max_degradation {x:g}): decode {start}: {why}"
    base = plan["original"]["error"]
    seen = "; ".join(f"k = {k} {plan['errors'][k]:.2f}% {'within' if ok else 'not within'}"
                     for k, ok in sorted(plan["within"].items()))
    todo = [k for k in plan["depths"] if k not in plan["within"]]
    step = (f"decode k = {', '.join(map(str, todo))}" if todo
            else "done: the limit is bracketed" if any(plan["within"].values())
            else "done: no depth is within it")
    return f"bracket (original {base:.2f}% + {x:g}): {seen}: {step}"


def fine_tags(run: Run) -> Optional[List[str]]:
    """The searches that stages 17-18 decode and score: every search of the run, or in a
    bracketing sweep those of its finished plan (None while it is not finished)."""
    if not is_bracket(run):
        return list(run.tags)
    try:
        plan = bracket_plan(run)
    except (_NotCurrent, StageError):
        return None
    return plan["tags"] if plan["done"] else None


def fmt_value(proxy: Dict[str, Any]) -> str:
    return f"{proxy['value']:.2f}" + ("%" if "num_err" in proxy else "")


def remove_other_candidates(t: rundir.TagDir, finalists: Sequence[str]) -> None:
    """Candidate dirs of this search that are not finalists (of an earlier choice) go."""
    if not t.candidates.is_dir():
        return
    for stale in sorted(t.candidates.iterdir()):
        if stale.is_dir() and rundir.is_candidate_name(stale.name) and stale.name not in finalists:
            shutil.rmtree(stale)
            records.remove_record(stale)
    for leftover in (t.candidates / "models.scp",):
        if leftover.exists():
            leftover.unlink()
            records.remove_record(leftover)


def step_seconds_path(run: Run) -> Path:
    return run.dir.fine_evals / "logdir" / "stage17_seconds.json"


def write_step_seconds(run: Run, values: Dict[str, Any]) -> None:
    rundir.write_json(step_seconds_path(run), values)


def read_step_seconds(run: Run) -> Dict[str, Any]:
    try:
        return rundir.read_json(step_seconds_path(run), "stage 17 seconds")
    except rundir.DocumentError:
        return {}


def prepare_decode(run: Run, models: Dict[str, Tuple[str, str]]) -> Dict[str, Any]:
    """The decode array's inputs: the models (eval key -> config, model) whose decode entries
    are not current, and the key shares."""
    from comflp_espnet.datadir import input_spec, write_job_keys

    dd = decode_dir(run)
    todo = [(key, c, m) for key, (c, m) in models.items()
            if not records.check(dd.hyp(key), decode_entry_made_from(run, c, m)).current]
    if dd.logdir.is_dir():
        shutil.rmtree(dd.logdir)
    if not todo:
        return {"decode_count": 0}
    rundir.write_how(dd.how_json, run.inference_options())
    dd.logdir.mkdir(parents=True)
    rundir.write_models_scp(dd.job_models_scp, todo)
    scp, kind = input_spec(run.dir.fine, run.o.audio_format)
    nj = write_job_keys(run.dir.fine / scp, run.o.inference_nj, dd.keys_pattern)
    logging.info(f"decoding {len(todo)} model(s) on the fine-search set ({len(models) - len(todo)} current): "
                 + ", ".join(k for k, _, _ in todo))
    return {"decode_count": len(todo), "decode_nj": nj, "decode_models_scp": dd.job_models_scp,
            "decode_keys": dd.keys_pattern, "decode_output": dd.job_pattern, "decode_log": dd.log_pattern,
            "decode_scp": run.dir.fine / scp, "decode_type": kind}


def merge_decodes(run: Run, start: Optional[float]) -> Dict[str, records.Record]:
    """The decode jobs' outputs joined per model into the cache, each charged its share of the
    array's wall time (in proportion to its decoding time)."""
    from comflp_espnet import decoding

    dd = decode_dir(run)
    if not dd.job_models_scp.is_file():
        return {}
    todo = rundir.read_models_scp(dd.job_models_scp, check_files=False)
    nj = len(list(dd.logdir.glob("keys.*.scp")))
    jobs = [dd.job(n) for n in range(1, nj + 1)]
    keys = [dd.keys(n) for n in range(1, nj + 1)]
    own = {}
    for key, _, _ in todo:
        job_records = [records.read_record(job / key) for job in jobs]
        own[key] = max([(r.seconds or 0.0) for r in job_records if r is not None] or [0.0])
    total = sum(own.values()) or 1.0
    wall = elapsed(start) or 0.0
    made = {}
    for key, config, model in todo:
        made[key] = decoding.merge_job_outputs(key, config, model, fine_triples(run), run.inference_options(),
                                               jobs, keys, dd.hyp(key), seconds=wall * own[key] / total)
    return made


def end_17(run: Run, start: Optional[float], stage_start: Optional[float] = None) -> None:
    """After the decode array: the decodes into the cache, then every search's fine search
    with its record and the seconds of its parts."""
    merge_decodes(run, start)
    run.forget()
    step = read_step_seconds(run)
    planned = None
    if is_bracket(run):
        plan = bracket_plan(run)
        if not plan["done"]:
            raise StageError(f"the bracketing sweep still has depths to decode ({', '.join(plan['tags'])}): "
                             "run stage 17 again")
        planned = plan["tags"]
    views = views_to_do(run, planned)
    # What the arrays made in this run is in the entries' seconds, the candidates' writing in
    # their records; the rest of the stage's wall time (its light steps) is shared among the
    # searches it served.
    other = 0.0
    stage_seconds = elapsed(stage_start)
    if stage_seconds is not None and views:
        known = math.fsum(list_made_this_run(run)) + step.get("materialize", 0.0) + step.get("proxy_scoring", 0.0)
        other = max(0.0, stage_seconds - known) / len(views)
    for view in views:
        doc = rundir.read_fine_search(view.t)
        seconds = search_seconds(view, doc)
        seconds["other"] = round(other, 3)
        doc["seconds"] = seconds
        rundir.write_fine_search(view.t, doc)
        view.forget()
        record = records.write_record(
            view.t.fine_search, view.expected("fine_search"), files=[view.t.fine_search_json],
            seconds=math.fsum(v for k, v in seconds.items() if v is not None and k != "reference_decode"),
            info={"finalists": doc["finalists"], "proxy": doc["proxy"],
                  "proxy_evaluations": sum(1 for c in doc["candidates"] if c.get("proxy") is not None),
                  "full_decodes": len(doc["finalists"]), "seconds": seconds})
        view.forget()
        status = view.status("fine_search")
        if not status.current:
            raise StageError(f"{view.t.fine_search} is not current right after it was made ({status.describe()})")
        logging.info(f"{view.tag}: fine search done ({len(doc['finalists'])} finalist(s) decoded; "
                     f"{record.seconds:.1f} s) -> {view.t.fine_search}")


def list_made_this_run(run: Run) -> List[float]:
    """Seconds of the cache entries the arrays of this run made (from their logdirs)."""
    out = []
    from comflp_espnet.proxy_job import read_candidates

    ev = proxy_dir(run, run.fine_proxy) if run.fine_proxy != "none" else None
    if ev is not None and ev.candidates_file.is_file():
        for key, _, _ in read_candidates(str(ev.candidates_file)):
            record = records.read_record(ev.entry(key))
            out.append((record.seconds or 0.0) if record else 0.0)
    dd = decode_dir(run)
    if dd.job_models_scp.is_file():
        for key, _, _ in rundir.read_models_scp(dd.job_models_scp, check_files=False):
            record = records.read_record(dd.hyp(key))
            out.append((record.seconds or 0.0) if record else 0.0)
    return out


def search_seconds(view: Run, doc: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The seconds of a search's fine search from the records of what it used."""
    proxy = sum(c.get("proxy_seconds") or 0.0 for c in doc["candidates"])
    materialize = 0.0
    finalist_decode = 0.0
    for item in doc["candidates"]:
        if not item.get("finalist"):
            continue
        record = records.read_record(view.t.candidate(item["name"]))
        materialize += (record.seconds or 0.0) if record else 0.0
        hyp = records.read_record(item["hyp"])
        finalist_decode += (hyp.seconds or 0.0) if hyp else 0.0
    reference = None
    if doc.get("original"):
        hyp = records.read_record(doc["original"]["hyp"])
        reference = (hyp.seconds or 0.0) if hyp else None
    return {"proxy": round(proxy, 3), "proxy_scoring": doc.get("proxy_scoring_seconds") or 0.0,
            "materialize": round(materialize, 3), "finalist_decode": round(finalist_decode, 3),
            "reference_decode": reference}
