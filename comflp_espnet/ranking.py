"""Score decoded models (CER and WER with jiwer) and pick the CoMFLP winner.

Input: a reference Kaldi ``text`` and a directory whose subdirectories
``<name>/text`` hold each model's hypotheses (the merged outputs of
``comflp_decode``).  Every model is scored in characters (CER; spaces count as
``<space>`` tokens, as in ESPnet's asr.sh) and in words (WER).

Outputs (the whole output directory is replaced atomically)::

    OUT/<name>/result.txt            primary metric: sclite-like speaker summary
                                     (| SPKR | #Snt | #Wrd | Corr | Sub | Del |
                                     Ins | Err | S.Err |) and per-utterance
                                     alignments
    OUT/<name>/score_cer/result.txt  the same for CER
    OUT/<name>/score_wer/result.txt  the same for WER
    OUT/scores.md                    ### CER / ### WER tables as in RESULTS.md
    OUT/scores.json                  all counts, per model and metric

The primary metric is CER for char token lists and WER otherwise
(``--metric auto``), or as given.  An utterance of the reference that a model
did not decode is scored as an empty hypothesis (its tokens count as
deletions) with a warning, as sclite does; hypotheses for utterances outside
the reference are ignored with a warning.

With ``--proposals`` the candidates ``candNN`` are ranked: lowest primary
error first, ties broken by higher coarse (correlation) score, then by coarse
rank.  ``original`` (the unpruned model, when decoded too) is listed for
comparison but never wins.  Extra outputs::

    OUT/winner        the winning candidate's name, one line
    OUT/ranking.md    ranking table: removed layers, coarse score, CER, WER,
                      params (M), decode time
    OUT/ranking.json  the same, machine-readable

The recipe's fine search (``score_fine_search``) decodes only its finalists: the
ranking lists every candidate with its coarse rank(s) and score(s) and its proxy
value and rank, and for the finalists their real CER and WER; the finalists come
first, best real error first (ties: the proxy rank, then the coarse rank), then
the other candidates by proxy rank.  The winner is the best finalist.
"""

import argparse
import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from comflp_espnet import scoring
from comflp_espnet.atomic import atomic_output_dir
from comflp_espnet.cli import InputError
from comflp_espnet.rundir import ORIGINAL_NAME, Proposals, read_hyp_number, write_ranking, write_scores_json
from comflp_espnet.surgery import read_prune_record


def resolve_unit(metric: str, token_type: Optional[str]) -> str:
    if metric != "auto":
        return scoring.UNIT_OF_METRIC[metric]
    if token_type is None:
        raise InputError(
            "--metric auto needs --token_type (char -> CER, otherwise WER); "
            "or give --metric cer|wer"
        )
    return "char" if token_type == "char" else "word"


def score_model(name, ref, hyp_path: Path, utt2spk, nlsyms) -> Dict[str, Any]:
    hyps = scoring.read_kaldi_text(hyp_path)
    missing = [k for k in ref if k not in hyps]
    extra = [k for k in hyps if k not in ref]
    if missing:
        logging.warning(
            f"{name}: {len(missing)} of {len(ref)} reference utterance(s) have no "
            f"hypothesis in {hyp_path} (e.g. {missing[0]}); scored as empty hypotheses"
        )
    if extra:
        logging.warning(
            f"{name}: {len(extra)} hypothesis utterance(s) in {hyp_path} are not in the "
            f"reference (e.g. {extra[0]}); ignored"
        )
    by_unit = {
        unit: scoring.score_texts(ref, hyps, unit, nlsyms) for unit in scoring.UNITS
    }
    return {
        "scores": by_unit,
        "totals": {unit: scoring.total(scores) for unit, scores in by_unit.items()},
        "missing": missing,
        "extra": extra,
    }


def fmt(value, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def rank_candidates(
    results: Dict[str, Dict[str, Any]],
    proposals: Proposals,
    primary: str,
    hyp_dir: Path,
    candidates_dir: Optional[Path],
) -> Dict[str, Any]:
    """Ranking rows (winner first) plus the original model's row, if decoded."""
    named = proposals.named()
    absent = [n for n in named if n not in results]
    if absent:
        raise InputError(
            f"--hyp_dir {hyp_dir}: no decoding for candidate(s) {', '.join(absent)} "
            "of --proposals; run the fine-search decoding stage first"
        )
    rows = []
    original_params = None
    for name in list(named) + ([ORIGINAL_NAME] if ORIGINAL_NAME in results else []):
        prop = named.get(name, {})
        totals = results[name]["totals"]
        prune_record = (read_prune_record(candidates_dir / name) if candidates_dir else None) or {}
        if name == ORIGINAL_NAME:
            # The original's size is the 'before' of the candidates' records.
            params = original_params
        else:
            params = prune_record.get("params_after")
            original_params = original_params or prune_record.get("params_before")
        rows.append(
            {
                "name": name,
                "is_original": name == ORIGINAL_NAME,
                "coarse_rank": prop.get("rank"),
                "coarse_score": prop.get("score"),
                "pruned": prop.get("pruned", []),
                "runs": prop.get("runs"),
                "cer": totals["char"].error_rate,
                "wer": totals["word"].error_rate,
                "num_err": totals[scoring.UNIT_OF_METRIC[primary]].num_err,
                "params": params,
                "decode_time": read_hyp_number(hyp_dir / name, "decode_time"),
                "num_utts": read_hyp_number(hyp_dir / name, "num_utts"),
                "missing_hyps": len(results[name]["missing"]),
            }
        )
    candidates = [r for r in rows if not r["is_original"]]
    candidates.sort(
        key=lambda r: (
            r["num_err"],
            -(r["coarse_score"] if r["coarse_score"] is not None else -math.inf),
            r["coarse_rank"],
        )
    )
    for position, row in enumerate(candidates, 1):
        row["fine_rank"] = position
    original = next((r for r in rows if r["is_original"]), None)
    return {
        "metric": primary,
        "winner": candidates[0]["name"],
        "ranking": candidates,
        "original": original,
    }


def ranking_markdown(ranking: Dict[str, Any]) -> str:
    primary = ranking["metric"].upper()
    rows = list(ranking["ranking"])
    measures = ranking.get("measures") or []
    proxy_metric = ranking.get("proxy_metric")
    header = ["fine rank", "model", "removed layers", "coarse rank"]
    header += [f"{m} rank" for m in measures] + [f"{m} score" for m in measures] if len(measures) > 1 \
        else ["coarse score"]
    if proxy_metric:
        header += [f"proxy {proxy_metric.upper() if proxy_metric != 'loss' else 'loss/token'}", "proxy rank",
                   "finalist"]
    header += ["CER", "WER", "params (M)", "decode time (s)"]
    if proxy_metric:
        intro = (f"Fine search: every candidate scored by the {ranking.get('proxy')} proxy, the "
                 f"{ranking.get('num_finalists')} best decoded (finalists); the finalist with the lowest "
                 f"{primary} wins (ties: proxy rank, then coarse rank).")
    else:
        intro = f"Fine search: lowest {primary} wins; ties go to the coarse rank."
    lines = [f"{intro} Winner: **{ranking['winner']}**", "",
             "|" + "|".join(header) + "|", "|" + "|".join("---" for _ in header) + "|"]
    if ranking["original"] is not None:
        rows = [ranking["original"]] + rows
    for r in rows:
        params = r["params"] / 1e6 if r.get("params") is not None else None
        cells = ["-" if r["is_original"] else str(r["fine_rank"]),
                 f"{r['name']} (unpruned)" if r["is_original"] else r["name"],
                 ",".join(map(str, r["pruned"])) or "-", fmt(r.get("coarse_rank"), "d")]
        if len(measures) > 1:
            per = r.get("measures") or {}
            cells += [fmt((per.get(m) or {}).get("rank"), "d") for m in measures]
            cells += [fmt((per.get(m) or {}).get("score"), ".4f") for m in measures]
        else:
            cells.append(fmt(r.get("coarse_score"), ".4f"))
        if proxy_metric:
            spec = ".4f" if proxy_metric == "loss" else ".1f"
            cells += [fmt(r.get("proxy"), spec), fmt(r.get("proxy_rank"), "d"),
                      "-" if r["is_original"] else ("yes" if r.get("finalist") else "no")]
        cells += [fmt(r.get("cer"), ".1f"), fmt(r.get("wer"), ".1f"), fmt(params, ".2f"),
                  fmt(r.get("decode_time"), ".1f")]
        lines.append("|" + "|".join(cells) + "|")
    return "\n".join(lines) + "\n"


def rank_fine_search(results: Dict[str, Dict[str, Any]], doc: Dict[str, Any], proposals: Proposals,
                     primary: str, hyp_dirs: Dict[str, Path], candidates_dir: Optional[Path]) -> Dict[str, Any]:
    """Ranking rows of every candidate of a fine search (``doc``, fine_search.json): proxy values
    for all, real CER/WER for the finalists (in ``results``); the winner is the best finalist."""
    named = proposals.named()
    unit = scoring.UNIT_OF_METRIC[primary]
    rows = []
    original_params = None
    for item in doc["candidates"]:
        name = item["name"]
        prop = named.get(name, {})
        proxy = item.get("proxy") or {}
        row = {"name": name, "is_original": False, "finalist": bool(item.get("finalist")),
               "coarse_rank": prop.get("rank", item.get("rank")), "coarse_score": prop.get("score"),
               "measures": prop.get("measures"), "proposed_by": prop.get("proposed_by"),
               "pruned": item["pruned"], "runs": prop.get("runs"), "eval_key": item.get("key"),
               "proxy": proxy.get("value"), "proxy_num_err": proxy.get("num_err"),
               "proxy_cer": proxy.get("cer"), "proxy_wer": proxy.get("wer"), "proxy_rank": item.get("proxy_rank"),
               "cer": None, "wer": None, "num_err": None, "params": item.get("params"), "decode_time": None,
               "num_utts": None, "missing_hyps": None}
        if row["finalist"]:
            if name not in results:
                raise InputError(f"no decoding of the finalist {name} ({item.get('hyp')}); run stage 17 again")
            totals = results[name]["totals"]
            prune_record = (read_prune_record(candidates_dir / name) if candidates_dir else None) or {}
            row.update(cer=totals["char"].error_rate, wer=totals["word"].error_rate,
                       num_err=totals[unit].num_err, decode_time=read_hyp_number(hyp_dirs[name], "decode_time"),
                       num_utts=read_hyp_number(hyp_dirs[name], "num_utts"),
                       missing_hyps=len(results[name]["missing"]))
            if prune_record.get("params_after") is not None:
                row["params"] = prune_record["params_after"]
            original_params = original_params or prune_record.get("params_before")
        rows.append(row)
    if not any(r["finalist"] for r in rows):
        raise InputError("the fine search has no finalist; run stage 17 again")

    def order(r):
        if r["finalist"]:
            return (0, r["num_err"], r["proxy_rank"] or 0, r["coarse_rank"] or 0)
        return (1, r["proxy_rank"] or 0, r["coarse_rank"] or 0, 0)

    rows.sort(key=order)
    for position, row in enumerate(rows, 1):
        row["fine_rank"] = position
    original = None
    if ORIGINAL_NAME in results:
        totals = results[ORIGINAL_NAME]["totals"]
        original = {"name": ORIGINAL_NAME, "is_original": True, "finalist": None, "coarse_rank": None,
                    "coarse_score": None, "measures": None, "pruned": [], "runs": None, "proxy": None,
                    "proxy_rank": None, "cer": totals["char"].error_rate, "wer": totals["word"].error_rate,
                    "num_err": totals[unit].num_err, "params": original_params or doc.get("params_total"),
                    "decode_time": read_hyp_number(hyp_dirs[ORIGINAL_NAME], "decode_time"),
                    "num_utts": read_hyp_number(hyp_dirs[ORIGINAL_NAME], "num_utts"),
                    "missing_hyps": len(results[ORIGINAL_NAME]["missing"])}
    measures = proposals.data.get("measures") or []
    return {"metric": primary, "winner": rows[0]["name"], "ranking": rows, "original": original,
            "proxy": doc.get("proxy") if doc.get("proxy") != "none" else None,
            "proxy_metric": doc.get("metric") if doc.get("proxy") != "none" else None,
            "num_finalists": len(doc["finalists"]), "finalists": list(doc["finalists"]),
            "measures": measures}


def score_fine_search(ref: str, doc: Dict[str, Any], proposals: Proposals, output_dir: str,
                      token_type: Optional[str] = None, nlsyms_txt: Optional[str] = None,
                      candidates_dir: Optional[str] = None) -> Dict[str, Any]:
    """Score a fine search's finalists (and the unpruned model) against ``ref`` and rank every
    candidate (``rank_fine_search``); write ``output_dir`` as ``score_hyp_dir`` does."""
    hyp_dirs = {item["name"]: Path(item["hyp"]) for item in doc["candidates"] if item.get("finalist")}
    if doc.get("original"):
        hyp_dirs[ORIGINAL_NAME] = Path(doc["original"]["hyp"])
    cand_dir = Path(candidates_dir) if candidates_dir else None
    return _score_and_write(
        ref, hyp_dirs, output_dir, "auto", token_type, None, nlsyms_txt, "",
        lambda results, primary: rank_fine_search(results, doc, proposals, primary, hyp_dirs, cand_dir))


def scores_markdown(results: Dict[str, Dict[str, Any]], label_prefix: str = "") -> str:
    parts = []
    for unit in ("char", "word"):
        metric = scoring.METRIC_OF_UNIT[unit].upper()
        rows = [
            (f"{label_prefix}{name}", res["totals"][unit])
            for name, res in results.items()
        ]
        parts.append(f"### {metric}\n\n" + scoring.markdown_table(rows) + "\n")
    return "".join(parts)


def score_hyp_dir(ref: str, hyp_dir: str, output_dir: str, metric: str = "auto",
                  token_type: Optional[str] = None, utt2spk: Optional[str] = None,
                  nlsyms_txt: Optional[str] = None, models: Optional[Sequence[str]] = None,
                  proposals: Optional[Proposals] = None, candidates_dir: Optional[str] = None,
                  label_prefix: str = "") -> Dict[str, Any]:
    """Score every ``<name>/text`` of ``hyp_dir`` against ``ref``; write ``output_dir``
    (atomically); with ``proposals``, rank the candidates and choose the winner.
    Returns the summary written to scores.json (with "ranking" when ranked)."""
    hyp_root = Path(hyp_dir)
    if not hyp_root.is_dir():
        raise InputError(f"--hyp_dir {hyp_root}: no such directory")
    if models:
        names = [n for n in models if n]
        absent = [n for n in names if not (hyp_root / n / "text").is_file()]
        if absent:
            raise InputError(f"--hyp_dir {hyp_root}: no <name>/text for {', '.join(absent)}")
    else:
        names = sorted(
            d.name for d in hyp_root.iterdir()
            if (d / "text").is_file() and not d.name.startswith(".")
        )
    if not names:
        raise InputError(f"--hyp_dir {hyp_root}: no <name>/text hypothesis files")
    cand_dir = Path(candidates_dir) if candidates_dir else None
    ranker = None
    if proposals is not None:
        ranker = lambda results, primary: rank_candidates(results, proposals, primary, hyp_root, cand_dir)  # noqa: E731
    return _score_and_write(ref, {n: hyp_root / n for n in names}, output_dir, metric, token_type, utt2spk,
                            nlsyms_txt, label_prefix, ranker, hyp_label=str(hyp_root))


def _score_and_write(ref: str, hyp_dirs: Dict[str, Path], output_dir: str, metric: str,
                     token_type: Optional[str], utt2spk: Optional[str], nlsyms_txt: Optional[str],
                     label_prefix: str, ranker, hyp_label: str = "") -> Dict[str, Any]:
    args = argparse.Namespace(ref=ref, output_dir=output_dir, metric=metric, token_type=token_type,
                              utt2spk=utt2spk, nlsyms_txt=nlsyms_txt, label_prefix=label_prefix)
    primary_unit = resolve_unit(args.metric, args.token_type)
    primary = scoring.METRIC_OF_UNIT[primary_unit]
    ref_path = Path(args.ref)
    if not ref_path.is_file():
        raise InputError(f"--ref {ref_path}: no such reference text")
    ref = scoring.read_kaldi_text(ref_path)
    if not ref:
        raise InputError(f"--ref {ref_path}: no utterances")
    utt2spk_path = Path(args.utt2spk) if args.utt2spk else ref_path.parent / "utt2spk"
    utt2spk = None
    if utt2spk_path.is_file():
        utt2spk = scoring.read_kaldi_text(utt2spk_path)
    elif args.utt2spk:
        raise InputError(f"--utt2spk {utt2spk_path}: no such file")
    nlsyms = (
        scoring.read_symbol_list(args.nlsyms_txt)
        if args.nlsyms_txt not in (None, "none", "")
        else []
    )
    for name, d in hyp_dirs.items():
        if not (d / "text").is_file():
            raise InputError(f"{d / 'text'}: no hypotheses of {name}")
    # The reference model first, then the rest in name order.
    names = sorted(hyp_dirs, key=lambda n: (n != ORIGINAL_NAME, n))
    results = {}
    for name in names:
        results[name] = score_model(name, ref, hyp_dirs[name] / "text", utt2spk, nlsyms)
        logging.info(
            f"{name}: CER {results[name]['totals']['char'].error_rate:.2f}% "
            f"WER {results[name]['totals']['word'].error_rate:.2f}%"
        )
    ranking = ranker(results, primary) if ranker is not None else None

    summary = {
        "ref": str(ref_path),
        "hyp_dir": hyp_label or {n: str(d) for n, d in hyp_dirs.items()},
        "metric": primary,
        "num_utts": len(ref),
        "models": {
            name: {
                "cer": res["totals"]["char"].to_dict(),
                "wer": res["totals"]["word"].to_dict(),
                "missing_hyps": res["missing"],
                "extra_hyps": len(res["extra"]),
            }
            for name, res in results.items()
        },
    }
    out_dir = Path(args.output_dir)
    with atomic_output_dir(out_dir) as tmp:
        for name, res in results.items():
            for unit in scoring.UNITS:
                metric = scoring.METRIC_OF_UNIT[unit]
                text = scoring.format_result(
                    res["scores"][unit], unit, utt2spk,
                    title=f"{name}: {hyp_dirs[name] / 'text'} vs {ref_path}",
                )
                (tmp / name / f"score_{metric}").mkdir(parents=True, exist_ok=True)
                (tmp / name / f"score_{metric}" / "result.txt").write_text(
                    text, encoding="utf-8"
                )
                if unit == primary_unit:
                    (tmp / name / "result.txt").write_text(text, encoding="utf-8")
        (tmp / "scores.md").write_text(
            scores_markdown(results, args.label_prefix), encoding="utf-8"
        )
        write_scores_json(tmp / "scores.json", summary)
        if ranking is not None:
            write_ranking(tmp, ranking, ranking_markdown(ranking))
    if ranking is not None:
        best = ranking["ranking"][0]
        logging.info(
            f"winner: {best['name']} (removed layers {best['pruned']}, "
            f"{primary.upper()} {best[primary]:.2f}%)"
        )
    logging.info(f"wrote {out_dir}/scores.md")
    return dict(summary, ranking=ranking, markdown=scores_markdown(results, args.label_prefix))
