"""Write the CoMFLP section of an ESPnet-style RESULTS.md.

The section sits between ``<!-- comflp:begin TAG -->`` and
``<!-- comflp:end TAG -->``; a rerun replaces exactly that block and keeps
everything else in the file (other tags, text written by hand or by ESPnet's
show_asr_result.sh).  A new tag is appended.  The file is replaced atomically.

Section contents, in ESPnet's RESULTS.md layout:

* ``## Environments``: date, python / espnet / pytorch versions, git hash;
* ``## Model``: original experiment and model file, removed layers, layer and
  learnable-parameter counts before/after (from the winner's prune.yaml), coarse
  score and rank (from the ranking), search settings (from proposals.json),
  decoding and fine-tuning configs;
* the correlation heatmap image;
* the fine-search candidate ranking (from comflp_score's ranking.json);
* ``### CER`` and ``### WER`` tables with a row ``<model>/<test set>`` for each
  model scored on each test set (``original``, ``pruned``, ``finetuned`` ...),
  from comflp_score's scores.json.
"""

import datetime
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import comflp_espnet
from comflp_espnet import scoring
from comflp_espnet.cli import InputError
from comflp_espnet.ranking import ranking_markdown
from comflp_espnet.rundir import DecodeDir, Proposals, read_proposals, read_ranking, read_scores_json
from comflp_espnet.surgery import PRUNE_RECORD, PruneError, read_prune_record

MODEL_ORDER = ("original", "pruned", "finetuned")
TAG_PATTERN = r"[A-Za-z0-9_.+-]+"


def begin_marker(tag: str) -> str:
    return f"<!-- comflp:begin {tag} -->"


def end_marker(tag: str) -> str:
    return f"<!-- comflp:end {tag} -->"


def replace_section(document: str, tag: str, section: str, source: str = "") -> str:
    """Put ``section`` between the tag's markers, replacing the old block or
    appending a new one; all other text is kept byte for byte."""
    begin, end = begin_marker(tag), end_marker(tag)
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    n_begin, n_end = document.count(begin), document.count(end)
    if n_begin == 0 and n_end == 0:
        if document and not document.endswith("\n"):
            document += "\n"
        separator = "\n" if document else ""
        return document + separator + block
    if n_begin != 1 or n_end != 1:
        raise InputError(
            f"{source or 'document'}: expected one '{begin}' and one '{end}', found "
            f"{n_begin} and {n_end}; repair or remove the markers by hand"
        )
    start, stop = document.index(begin), document.index(end)
    if stop < start:
        raise InputError(f"{source or 'document'}: '{end}' comes before '{begin}'")
    stop += len(end)
    if document[stop : stop + 1] == "\n":
        stop += 1
    return document[:start] + block + document[stop:]


def package_version(name: str, fallback: str = "not installed") -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return fallback


def git_lines() -> List[str]:
    """Git hash and commit date of the working directory's repository, if any."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        date = subprocess.run(
            ["git", "log", "-1", "--format=%cd"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return []
    return [f"- Git hash: `{rev}`", f"  - Commit date: `{date}`"]


def environment_section(date: Optional[str]) -> str:
    if date is None:
        date = datetime.datetime.now().astimezone().strftime("%a %b %d %H:%M:%S %Z %Y")
    python = sys.version.replace("\n", " ")
    lines = [
        "## Environments",
        f"- date: `{date}`",
        f"- python version: `{python}`",
        f"- espnet version: `espnet {package_version('espnet')}`",
        f"- pytorch version: `pytorch {package_version('torch')}`",
        # Run from a checkout without pip install: the package still knows its version.
        f"- comflp-espnet version: "
        f"`{package_version('comflp-espnet', comflp_espnet.__version__)}`",
    ] + git_lines()
    return "\n".join(lines) + "\n"


def relative(path: str, base: Path) -> str:
    """``path`` relative to the RESULTS.md directory, so that links work where it is viewed."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(base))


def link(path: str, base: Path) -> str:
    """Markdown link to ``path``."""
    return f"[{path}]({relative(path, base)})"


def winner_record(winner_dir: Optional[str]) -> Dict[str, Any]:
    if winner_dir is None:
        return {}
    try:
        record = read_prune_record(winner_dir)
    except PruneError as e:
        raise InputError(f"--winner_dir {winner_dir}: {e}")
    if record is None:
        raise InputError(
            f"--winner_dir {winner_dir}: no {PRUNE_RECORD} (not a pruned candidate)"
        )
    return record


def millions(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def model_section(args, record: Dict[str, Any], proposals: Optional[Proposals], base: Path,
                  winner_row: Optional[Dict[str, Any]] = None) -> str:
    def links(*labelled_paths: Tuple[str, Optional[str]]) -> List[str]:
        return [f"- {label}: {link(path, base)}" for label, path in labelled_paths if path]

    lines = ["## Model"] + links(
        ("Original experiment", args.asr_exp),
        ("Original model", args.asr_model_file),
        ("Pruned model (winner)", args.winner_dir),
    )
    if record:
        removed = record.get("pruned_encoder_layers") or []
        before = record.get("num_encoder_layers_before")
        after = record.get("num_encoder_layers_after")
        lines.append(
            f"- Removed encoder layers: {', '.join(map(str, removed)) or 'none'} "
            f"({before} -> {after} layers)"
        )
        if record.get("pruned_decoder_layers"):
            lines.append(
                "- Removed decoder layers: "
                + ", ".join(map(str, record["pruned_decoder_layers"]))
                + f" ({record.get('num_decoder_layers_before')} -> "
                f"{record.get('num_decoder_layers_after')} layers)"
            )
        p_before, p_after = record.get("params_before"), record.get("params_after")
        change = ""
        if p_before and p_after is not None:
            change = f" ({100.0 * (p_after - p_before) / p_before:+.1f}%)"
        lines.append(f"- Params: {millions(p_before)} -> {millions(p_after)}{change}")
    if winner_row and winner_row.get("coarse_score") is not None:
        lines.append(
            f"- Coarse score: {winner_row['coarse_score']:.4f} (coarse rank {winner_row.get('coarse_rank')})"
        )
    if proposals is not None:
        settings = [
            f"method {proposals.data.get('method')}",
            f"num_prune {proposals.data.get('num_prune')}",
            f"topk {proposals.data.get('topk')}",
        ]
        if args.measure:
            settings.insert(0, f"measure {args.measure}")
        constraints = proposals.data.get("constraints") or {}
        active = {k: v for k, v in constraints.items() if v not in (None, False, [], ())}
        if active:
            settings.append(
                "constraints " + ", ".join(f"{k}={v}" for k, v in sorted(active.items()))
            )
        lines.append("- Search: " + ", ".join(settings))
    elif args.measure:
        lines.append(f"- Correlation measure: {args.measure}")
    lines += links(
        ("Decode config", args.inference_config),
        ("Fine-tune config", args.finetune_config),
        ("Fine-tuned model", args.finetune_dir),
    )
    return "\n".join(lines) + "\n"


def ranking_section(ranking: Dict[str, Any], fine_set: Optional[str]) -> str:
    where = f" on {fine_set}" if fine_set else ""
    return f"## Candidates (fine search{where})\n\n" + ranking_markdown(ranking)


def parse_test_scores(values: List[str]) -> List[Tuple[str, str]]:
    pairs = []
    for value in values:
        if "=" not in value:
            raise InputError(
                f"--test_scores {value!r}: expected NAME=PATH (test set name and "
                "comflp_score's output dir or scores.json)"
            )
        name, path = value.split("=", 1)
        if Path(path).is_dir():
            # A scores directory, or a decoding directory whose scores are in its score/.
            scored = Path(path) / "scores.json"
            path = str(scored if scored.is_file() else DecodeDir(path).score / "scores.json")
        pairs.append((name, path))
    return pairs


def counts_from_json(d: Dict[str, Any]) -> scoring.ErrorCounts:
    return scoring.ErrorCounts(
        num_snt=d["num_snt"], num_ref=d["num_ref"], corr=d["corr"], sub=d["sub"],
        dele=d["del"], ins=d["ins"], num_snt_err=d["num_snt_err"],
    )


def model_sort_key(name: str) -> Tuple[int, str]:
    """original, pruned, finetuned first, then any other model by name."""
    return (MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER), name)


def results_tables(test_scores: List[Tuple[str, str]]) -> str:
    """### CER and ### WER tables, rows <model>/<test set>."""
    rows: Dict[str, List[Tuple[str, str, scoring.ErrorCounts]]] = {"cer": [], "wer": []}
    for test_set, path in test_scores:
        models = read_scores_json(path, "--test_scores")["models"]
        for name, scores in models.items():
            for metric in ("cer", "wer"):
                try:
                    counts = counts_from_json(scores[metric])
                except (KeyError, TypeError):
                    raise InputError(
                        f"--test_scores {path}: model {name!r} lacks {metric} counts "
                        "(not a comflp_score output; rerun its scoring)"
                    )
                rows[metric].append((name, test_set, counts))
    # Group rows by model, as ESPnet lists one decoding's test sets together;
    # the sort is stable, so test sets keep their command-line order.
    parts = ["## Results\n"]
    for metric in ("cer", "wer"):
        ordered = sorted(rows[metric], key=lambda r: model_sort_key(r[0]))
        table = [(f"{name}/{test_set}", counts) for name, test_set, counts in ordered]
        parts.append(f"### {metric.upper()}\n\n" + scoring.markdown_table(table))
    return "\n".join(parts)


def build_section(args, base: Path) -> str:
    """The section's markdown.  ``args`` holds the paths and names of
    comflp_results' options (tag, title, asr_exp, asr_model_file, winner_dir,
    proposals, ranking, fine_set, measure, heatmap, test_scores, inference_config,
    finetune_config, finetune_dir, date)."""
    record = winner_record(args.winner_dir)
    proposals = read_proposals(args.proposals) if args.proposals else None
    ranking = read_ranking(args.ranking) if args.ranking else None
    winner_row = None
    if ranking is not None:
        winner_row = next((r for r in ranking["ranking"] if r.get("name") == ranking["winner"]), None)
    test_scores = parse_test_scores(args.test_scores)
    title = args.title or f"CoMFLP layer pruning ({args.tag})"
    parts = [f"# {title}\n", environment_section(args.date),
             model_section(args, record, proposals, base, winner_row)]
    if args.heatmap:
        measure = args.measure or "correlation"
        parts.append(
            f"## Correlation matrix\n\n![{measure} correlation between h_0..h_L]"
            f"({relative(args.heatmap, base)})\n"
        )
    if ranking is not None:
        parts.append(ranking_section(ranking, args.fine_set))
    if test_scores:
        parts.append(results_tables(test_scores))
    return "\n".join(parts)
