"""What a CoMFLP search made, in a few lines: where to look and one summary line.

Reads a search directory ``<comflp_dir>/<tag>`` (the layout of ``comflp_espnet.rundir``):

* the winner: the ``winner`` link, else ``scores/winner`` (a candidate under ``candidates/``);
  its ``prune.yaml`` gives the removed layers and the layer and parameter counts, else the
  winner's row of ``scores/ranking.json`` (removed layers, parameters) and ``proposals.json``
  (layers);
* the fine-tuned model: ``finetune/`` when it holds a model file;
* the test error rates of the original, pruned and fine-tuned models: each test set's
  ``test_decode/<inference_tag>/<set>/score/scores.json`` (stage 20), else the ``### CER`` (or
  ``### WER``) table of the search's ``RESULTS.md``;
* the search time: ``search_cost.json``'s ``search_seconds``.

Whatever is missing (a stage not run yet, a file removed) or unreadable is left out of the
summary; only a search directory that does not exist is an error.

Pure module: no ESPnet, no torch.
"""

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

# The models of the test tables, in the order the summary shows them, and how it names them.
MODELS = (("original", "original"), ("pruned", "pruned"), ("finetuned", "fine-tuned"))
PRUNE_RECORD = "prune.yaml"
MODEL_SUFFIXES = (".pth",)


class SummaryError(ValueError):
    """The search directory cannot be summarized at all."""


def _json(path: Path, notes: List[str]) -> Optional[Any]:
    """Parsed JSON of ``path``; None (and a note) when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        notes.append(f"{path}: not readable JSON ({e.__class__.__name__}); left out")
        return None


def _yaml_mapping(path: Path, notes: List[str]) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        notes.append(f"{path}: not readable YAML ({e.__class__.__name__}); left out")
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _layers(value: Any) -> Optional[List[int]]:
    if isinstance(value, list) and all(_int(x) is not None for x in value):
        return sorted(value)
    return None


def _plain_name(name: Any) -> Optional[str]:
    if isinstance(name, str) and name and "/" not in name and not name.startswith("."):
        return name
    return None


def find_winner(search_dir: Path, ranking: Optional[Dict[str, Any]]) -> Tuple[Optional[str], Optional[Path]]:
    """(name, directory) of the winning candidate; the directory as the search directory names
    it (``<search_dir>/candidates/candNN``), None when it does not exist."""
    link = search_dir / "winner"
    if link.is_symlink() and link.exists():
        target = os.readlink(link)
        path = Path(target) if os.path.isabs(target) else Path(os.path.normpath(search_dir / target))
        return path.name, path
    name = None
    winner_file = search_dir / "scores" / "winner"
    if winner_file.is_file():
        name = _plain_name(winner_file.read_text(encoding="utf-8").strip())
    if name is None and isinstance(ranking, dict):
        name = _plain_name(ranking.get("winner"))
    if name is None:
        return None, None
    path = search_dir / "candidates" / name
    return name, (path if path.is_dir() else None)


def _ranking_row(ranking: Optional[Dict[str, Any]], name: Optional[str]) -> Dict[str, Any]:
    if not isinstance(ranking, dict) or name is None or not isinstance(ranking.get("ranking"), list):
        return {}
    return next((r for r in ranking["ranking"] if isinstance(r, dict) and r.get("name") == name), {})


def has_model(directory: Path) -> bool:
    return directory.is_dir() and any(p.suffix in MODEL_SUFFIXES for p in directory.iterdir() if p.is_file())


def scores_from_decodes(search_dir: Path, inference_tag: Optional[str], notes: List[str]
                        ) -> Tuple[Optional[str], Dict[str, Dict[str, float]]]:
    """(metric, {test set: {model: error rate}}) from stage 20's scores, of ``inference_tag``
    or, when there are several decodings, of the one scored last."""
    root = search_dir / "test_decode"
    if not root.is_dir():
        return None, {}
    if inference_tag is not None:
        tags = [root / inference_tag]
    else:
        tags = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name)
    found = []
    for tag in tags:
        scores = sorted(tag.glob("**/score/scores.json"))
        if scores:
            found.append((max(p.stat().st_mtime for p in scores), tag, scores))
    if not found:
        return None, {}
    _, tag, files = max(found, key=lambda x: x[0])
    metric, table = None, {}
    for path in files:
        data = _json(path, notes)
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            continue
        metric = metric or (data.get("metric") if data.get("metric") in ("cer", "wer") else None)
        test_set = str(path.parent.parent.relative_to(tag))
        for model, _ in MODELS:
            entry = data["models"].get(model)
            rate = _number(((entry or {}).get(metric or "cer") or {}).get("error_rate")) \
                if isinstance(entry, dict) else None
            if rate is not None:
                table.setdefault(test_set, {})[model] = rate
    return metric, table


def scores_from_results_md(path: Path) -> Tuple[Optional[str], Dict[str, Dict[str, float]]]:
    """(metric, {test set: {model: error rate}}) from the ``### CER`` table of a RESULTS.md
    (``### WER`` when it has no CER table); rows ``|<model>/<set>|Snt|Wrd|...|Err|S.Err|``."""
    if not path.is_file():
        return None, {}
    text = path.read_text(encoding="utf-8", errors="replace")
    for metric in ("cer", "wer"):
        match = re.search(rf"^### {metric.upper()}\s*\n(.*?)(?=^#|\Z)", text, re.M | re.S)
        if not match:
            continue
        rows = [line.strip().strip("|").split("|") for line in match.group(1).splitlines()
                if line.strip().startswith("|")]
        if len(rows) < 3 or "Err" not in rows[0]:
            continue
        err = rows[0].index("Err")
        table: Dict[str, Dict[str, float]] = {}
        for cells in rows[2:]:
            if len(cells) <= err or "/" not in cells[0]:
                continue
            model, test_set = cells[0].strip().split("/", 1)
            try:
                table.setdefault(test_set, {})[model] = float(cells[err])
            except ValueError:
                continue
        if table:
            return metric, table
    return None, {}


def summarize(search_dir, inference_tag: Optional[str] = None) -> Dict[str, Any]:
    """Everything the summary shows, as a dict; keys whose value is unknown hold None (``test``:
    {} when no test set was scored).  ``notes`` lists files that were there but unreadable."""
    search_dir = Path(search_dir)
    if not search_dir.is_dir():
        raise SummaryError(f"--search_dir {search_dir}: no such directory (a search's output, "
                           "<asr_exp>/comflp/<tag>, made by stages 16-20)")
    notes: List[str] = []
    ranking = _json(search_dir / "scores" / "ranking.json", notes)
    proposals = _json(search_dir / "proposals.json", notes)
    name, winner_dir = find_winner(search_dir, ranking)
    record = (_yaml_mapping(winner_dir / PRUNE_RECORD, notes) if winner_dir else None) or {}
    row = _ranking_row(ranking, name)
    original = ranking.get("original") if isinstance(ranking, dict) else None

    removed = _layers(record.get("pruned_encoder_layers"))
    if removed is None:
        removed = _layers(row.get("pruned"))
    layers_before = _int(record.get("num_encoder_layers_before"))
    if layers_before is None and isinstance(proposals, dict):
        layers_before = _int(proposals.get("num_layers"))
    layers_after = _int(record.get("num_encoder_layers_after"))
    if layers_after is None and layers_before is not None and removed is not None:
        layers_after = layers_before - len(removed)
    params_before = _int(record.get("params_before"))
    if params_before is None and isinstance(original, dict):
        params_before = _int(original.get("params"))
    params_after = _int(record.get("params_after"))
    if params_after is None:
        params_after = _int(row.get("params"))

    finetune_dir = search_dir / "finetune"
    results_md = search_dir / "RESULTS.md"
    metric, test = scores_from_decodes(search_dir, inference_tag, notes)
    if not test:
        metric, test = scores_from_results_md(results_md)
    cost = _json(search_dir / "search_cost.json", notes)
    return {
        "search_dir": search_dir,
        "tag": search_dir.name,
        "results_md": results_md if results_md.is_file() else None,
        "winner": name,
        "winner_dir": winner_dir,
        "finetune_dir": finetune_dir if has_model(finetune_dir) else None,
        "removed": removed,
        "layers_before": layers_before,
        "layers_after": layers_after,
        "params_before": params_before,
        "params_after": params_after,
        "metric": metric,
        "test": test,
        "search_seconds": _number(cost.get("search_seconds")) if isinstance(cost, dict) else None,
        "notes": notes,
    }


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    minutes, seconds = divmod(int(round(s)), 60)
    return f"{minutes} min {seconds:02d} s"


def summary_line(summary: Dict[str, Any]) -> str:
    """``<tag>: removed encoder layers 2,4,6 (12 -> 9); params 1.20 M -> 0.95 M (-20.8%);
    test CER original 8.7% / pruned 30.1% / fine-tuned 9.9%; search 1 min 02 s`` with the parts
    that are known."""
    parts = []
    removed = summary["removed"]
    if removed is not None:
        text = f"removed encoder layers {','.join(map(str, removed)) or 'none'}"
        if summary["layers_before"] is not None and summary["layers_after"] is not None:
            text += f" ({summary['layers_before']} -> {summary['layers_after']})"
        parts.append(text)
    before, after = summary["params_before"], summary["params_after"]
    if before is not None and after is not None:
        change = f" ({100.0 * (after - before) / before:+.1f}%)" if before else ""
        parts.append(f"params {_millions(before)} -> {_millions(after)}{change}")
    elif after is not None:
        parts.append(f"params {_millions(after)}")
    metric = (summary["metric"] or "cer").upper()
    for test_set, rates in summary["test"].items():
        shown = [f"{label} {rates[model]:.1f}%" for model, label in MODELS if model in rates]
        if shown:
            parts.append(f"{test_set} {metric} " + " / ".join(shown))
    if summary["search_seconds"] is not None:
        parts.append(f"search {_seconds(summary['search_seconds'])}")
    return f"{summary['tag']}: " + ("; ".join(parts) if parts else "no results yet")


def summary_lines(summary: Dict[str, Any]) -> List[str]:
    """Where to look (the RESULTS.md, the pruned and the fine-tuned model), then the summary line."""
    lines = []
    if summary["results_md"] is not None:
        lines.append(f"Results: {summary['results_md']}")
    if summary["winner_dir"] is not None:
        lines.append(f"Pruned model (winner {summary['winner']}): {summary['winner_dir']}")
    if summary["finetune_dir"] is not None:
        lines.append(f"Fine-tuned model: {summary['finetune_dir']}")
    lines.append(summary_line(summary))
    return lines
