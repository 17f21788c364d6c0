"""How many layers can be removed: the depths of a sweep, its table and the choice of a depth.

A run of several depths (``--comflp_num_prune "2 4 6"``, ``--comflp_sweep true`` for every k in
1..L-1, or ``--comflp_sweep_range A:B``) makes one search per depth k; each has a winner chosen on
the fine-search set.  This module turns those winners into one table (``sweep.json`` /
``sweep.md``): per k the winner's removed layers, learnable parameters, fine-search CER and WER
(and test CER/WER once they were decoded), the real-time factor of its full decode on the
fine-search set, the encoder's share of that time and the speed-up over the original model.

With ``--comflp_max_degradation X`` (absolute points of the primary metric on the fine-search
set: CER for char token lists, else WER) it chooses the smallest model within X of the original:
among the depths whose winner makes at most X points more errors than the original, the one that
removes the most layers.  The comparison is made on error counts (the same reference for every
model), so a winner exactly X points worse qualifies.  When no depth qualifies nothing is chosen.

Which searches go on to stages 19-21 (fine-tuning, test decoding, packing): the chosen one with
``--comflp_max_degradation`` (none when nothing qualifies); without it, every search of a list of
depths (each was asked for) and none of a sweep (the table is for the user to pick a depth from:
``--comflp_num_prune <k>``, whose search the sweep already made).

Pure module: no ESPnet, no torch, no plotting (``comflp_espnet.sweep_plot``).
"""

import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Bumped when the same searches would give another sweep document.
SWEEP_CODE = "sweep-1"
RANGE_OPTION = "--comflp_sweep_range"
DEGRADATION_OPTION = "--comflp_max_degradation"


class SweepError(ValueError):
    """A sweep option that cannot be used: one message naming the option and the fix."""


# ---------------------------------------------------------------------------- options
def parse_sweep_range(text: str, num_layers: Optional[int] = None) -> Tuple[int, int]:
    """``"A:B"`` -> (A, B), the depths A..B (layers removed, both included); with
    ``num_layers`` L, 1 <= A <= B <= L-1."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if not match:
        raise SweepError(f"{RANGE_OPTION} must be A:B, the first and last number of layers to remove "
                         f"(e.g. 1:10), got '{text}'")
    first, last = int(match.group(1)), int(match.group(2))
    if first < 1 or first > last:
        raise SweepError(f"{RANGE_OPTION} {text}: need 1 <= A <= B (layers to remove, e.g. 1:10)")
    if num_layers is not None and last >= num_layers:
        raise SweepError(f"{RANGE_OPTION} {text}: the encoder has {num_layers} layers, so at most "
                         f"{num_layers - 1} can be removed (e.g. {first}:{num_layers - 1})")
    return first, last


def parse_max_degradation(text: Any) -> Optional[float]:
    """``--comflp_max_degradation``: None when not given, else a finite number >= 0."""
    if text is None or str(text).strip() == "":
        return None
    try:
        value = float(str(text).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SweepError(f"{DEGRADATION_OPTION} must be a number >= 0 (absolute CER/WER points on the "
                         f"fine-search set, e.g. 1.0), got '{text}'")
    return value


def max_removable(allowed: Sequence[int], max_run: Optional[int]) -> int:
    """The most layers of ``allowed`` that can be removed with no run of consecutive removed
    layers longer than ``max_run``: per maximal block of m consecutive allowed layers,
    m - floor(m / (max_run + 1)) (every (max_run+1)-th layer kept)."""
    layers = sorted(set(allowed))
    if max_run is None:
        return len(layers)
    total, block, previous = 0, 0, None
    for layer in layers + [None]:
        if layer is not None and previous is not None and layer == previous + 1:
            block += 1
        else:
            total += block - block // (max_run + 1)
            block = 1
        previous = layer
    return total


def impossible_reason(num_layers: int, num_prune: int, method: str = "dp", keep_first: bool = False,
                      keep_last: bool = False, protect: Sequence[int] = (),
                      max_run: Optional[int] = None) -> Optional[str]:
    """Why the constraints rule out removing ``num_prune`` of ``num_layers`` layers (None when
    they do not)."""
    protected = set(int(x) for x in protect)
    if keep_first:
        protected.add(1)
    if keep_last:
        protected.add(num_layers)
    allowed = [layer for layer in range(1, num_layers + 1) if layer not in protected]
    named = []
    if keep_first:
        named.append("--comflp_keep_first true")
    if keep_last:
        named.append("--comflp_keep_last true")
    if protect:
        named.append(f"--comflp_protect {','.join(map(str, sorted(set(int(x) for x in protect))))}")
    if len(allowed) < num_prune:
        return f"{' and '.join(named) or 'the constraints'} leave(s) {len(allowed)} removable layers"
    if max_run is not None and max_removable(allowed, max_run) < num_prune:
        return (f"with --comflp_max_run {max_run}"
                f"{' and ' + ' and '.join(named) if named else ''} at most "
                f"{max_removable(allowed, max_run)} layers can be removed")
    if method == "angular":
        # One block of consecutive layers.
        if _longest_block(allowed) < num_prune or (max_run is not None and max_run < num_prune):
            return f"--comflp_search angular removes one block of {num_prune} consecutive removable layers"
    if method == "drop_last":
        last = list(range(num_layers - num_prune + 1, num_layers + 1))
        if any(layer in protected for layer in last) or (max_run is not None and max_run < num_prune):
            return f"--comflp_search drop_last would remove layers {last[0]}-{last[-1]}, which the constraints forbid"
    return None


def _longest_block(layers: Sequence[int]) -> int:
    longest, block, previous = 0, 0, None
    for layer in sorted(layers):
        block = block + 1 if previous is not None and layer == previous + 1 else 1
        longest = max(longest, block)
        previous = layer
    return longest


def sweep_depths(num_layers: int, sweep_range: Optional[str] = None, method: str = "dp",
                 keep_first: bool = False, keep_last: bool = False, protect: Sequence[int] = (),
                 max_run: Optional[int] = None) -> Tuple[List[int], List[Tuple[int, str]]]:
    """The depths of a sweep: every k of ``sweep_range`` (default 1..L-1) that the constraints
    allow, and the ``(k, reason)`` of those they rule out (skipped, not an error)."""
    if num_layers < 2:
        raise SweepError(f"a sweep needs an encoder of at least 2 layers, not {num_layers}")
    first, last = parse_sweep_range(sweep_range, num_layers) if sweep_range else (1, num_layers - 1)
    depths, skipped = [], []
    for k in range(first, last + 1):
        reason = impossible_reason(num_layers, k, method, keep_first, keep_last, protect, max_run)
        if reason is None:
            depths.append(k)
        else:
            skipped.append((k, reason))
    return depths, skipped


# ---------------------------------------------------------------------------- the choice
def degradation(entry: Dict[str, Any], original: Dict[str, Any]) -> Optional[float]:
    """Points of the primary metric the winner loses against the original (negative: better)."""
    if entry.get("error") is None or original.get("error") is None:
        return None
    return float(entry["error"]) - float(original["error"])


def within(entry: Dict[str, Any], original: Dict[str, Any], max_degradation: float) -> bool:
    """Whether the winner is within ``max_degradation`` points of the original: by error counts
    when both have them on the same reference (exact), else by the rates."""
    n_ref = entry.get("num_ref")
    if entry.get("num_err") is not None and original.get("num_err") is not None and n_ref \
            and n_ref == original.get("num_ref"):
        return (entry["num_err"] - original["num_err"]) * 100.0 <= max_degradation * n_ref + 1e-9 * n_ref
    points = degradation(entry, original)
    return points is not None and points <= max_degradation + 1e-9


def choose_depth(depths: Sequence[Dict[str, Any]], original: Dict[str, Any], max_degradation: Optional[float],
                 metric: str = "cer") -> Dict[str, Any]:
    """The smallest winner within ``max_degradation`` of the original: ``{"tag", "num_prune",
    "reason"}`` (tag None when not asked for or when no depth qualifies)."""
    name = metric.upper()
    if max_degradation is None:
        return {"tag": None, "num_prune": None, "max_degradation": None, "reason": "not asked for"}
    if original.get("error") is None:
        return {"tag": None, "num_prune": None, "max_degradation": max_degradation,
                "reason": "the original model was not decoded on the fine-search set, so no depth can be "
                          "compared with it"}
    limit = float(original["error"]) + max_degradation
    ok = [d for d in depths if d.get("error") is not None and within(d, original, max_degradation)]
    if not ok:
        best = min((d for d in depths if d.get("error") is not None), key=lambda d: (d["error"], -d["num_prune"]),
                   default=None)
        closest = (f"; the best winner, k = {best['num_prune']}, has {best['error']:.2f}%"
                   if best is not None else "")
        return {"tag": None, "num_prune": None, "max_degradation": max_degradation,
                "reason": f"no depth is within {max_degradation:g} points of the original's fine-search "
                          f"{name} ({original['error']:.2f}% + {max_degradation:g} = {limit:.2f}%){closest}: "
                          "nothing is chosen"}
    chosen = max(ok, key=lambda d: d["num_prune"])
    deeper = sorted((d for d in depths if d["num_prune"] > chosen["num_prune"] and d.get("decoded", True)),
                    key=lambda d: d["num_prune"])
    beyond = ""
    if deeper:
        beyond = "; deeper: " + ", ".join(
            f"k = {d['num_prune']} {'-' if d.get('error') is None else format(d['error'], '.2f') + '%'}"
            for d in deeper)
    return {"tag": chosen["tag"], "num_prune": chosen["num_prune"], "max_degradation": max_degradation,
            "reason": f"k = {chosen['num_prune']} removes the most layers among the depths whose winner's "
                      f"fine-search {name} is within {max_degradation:g} points of the original's "
                      f"({original['error']:.2f}% + {max_degradation:g} = {limit:.2f}%): "
                      f"{chosen['error']:.2f}%{beyond}"}


def final_tags(tags: Sequence[str], is_sweep: bool, choice: Dict[str, Any]) -> Tuple[List[str], str]:
    """The searches that go on to stages 19-21, and why (see the module docstring)."""
    if choice.get("max_degradation") is not None:
        if choice.get("tag") is None:
            return [], f"--comflp_max_degradation {choice['max_degradation']:g}: {choice['reason']}"
        return [choice["tag"]], f"--comflp_max_degradation {choice['max_degradation']:g}: {choice['reason']}"
    if is_sweep:
        return [], ("a sweep without --comflp_max_degradation only reports (see the sweep table): pick a depth "
                    "k with --comflp_num_prune k (its search is current) and run from stage 19")
    return list(tags), ""


# ---------------------------------------------------------------------------- the document
def build_document(num_layers: int, metric: str, original: Dict[str, Any], depths: Sequence[Dict[str, Any]],
                   max_degradation: Optional[float] = None, is_sweep: bool = True,
                   skipped: Sequence[Tuple[int, str]] = (), fine_set: str = "",
                   eval_sets: Sequence[str] = (), proxy: Optional[str] = None) -> Dict[str, Any]:
    """The sweep document (sweep.json) from the original's and every depth's figures.

    ``original``: ``error`` (primary metric, %), ``num_err``, ``num_ref``, ``cer``, ``wer``,
    ``params``, ``timing`` (decode_info: ``rtf``, ``encoder_share``, ``cpu_rtf``,
    ``encoder_cpu_share``, ``device``, ``num_threads``), ``test`` ({set: {"cer", "wer"}}).  Each
    depth: ``tag``, ``num_prune``, ``winner``, ``removed``, the same figures, and ``test`` ({set:
    {"pruned": {...}, "finetuned": {...}}}), ``proxy`` (the proxy value of the winner) and
    ``decoded`` (False for a depth a bracketing sweep scored by the proxy ``proxy`` only: its
    row has the proxy's best candidate and no decoded figures).

    The speed-up compares the time of the whole decode of the fine-search set: the process CPU
    time when every decode ran on the CPU and recorded it (the wall clock of a shared machine
    also counts the other processes' work), else the wall clock (``speed_basis``)."""
    rows = []
    basis = speed_basis([original] + list(depths))
    original_rtf, original_share = speed_of(original, basis)
    for entry in sorted(depths, key=lambda d: d["num_prune"]):
        row = dict(entry)
        row["layers_kept"] = num_layers - int(entry["num_prune"])
        row["degradation"] = degradation(entry, original)
        row["within"] = None if max_degradation is None or not entry.get("decoded", True) else (
            entry.get("error") is not None and original.get("error") is not None
            and within(entry, original, max_degradation))
        rtf, _ = speed_of(entry, basis)
        row["speedup"] = round(original_rtf / rtf, 3) if rtf and original_rtf else None
        row["expected_speedup"] = expected_speedup(original_share, int(entry["num_prune"]), num_layers)
        rows.append(row)
    choice = choose_depth(rows, original, max_degradation, metric)
    tags, why = final_tags([r["tag"] for r in rows], is_sweep, choice)
    for row in rows:
        row["chosen"] = row["tag"] == choice["tag"]
    return {"num_layers": num_layers, "metric": metric, "fine_set": fine_set, "eval_sets": list(eval_sets),
            "proxy": proxy, "max_degradation": max_degradation, "is_sweep": is_sweep, "speed_basis": basis,
            "original": dict(original, layers_kept=num_layers), "depths": rows,
            "skipped": [{"num_prune": k, "reason": reason} for k, reason in skipped],
            "choice": choice, "final_tags": tags, "final_note": why, "notes": timing_notes(original, rows, basis),
            "code": SWEEP_CODE}


def speed_basis(items: Sequence[Dict[str, Any]]) -> str:
    """``cpu`` when every timed decode ran on the CPU and recorded its CPU time, else ``wall``."""
    timed = [item.get("timing") or {} for item in items if (item.get("timing") or {}).get("rtf") is not None]
    if timed and all(t.get("device") == "cpu" and t.get("cpu_rtf") is not None for t in timed):
        return "cpu"
    return "wall"


def speed_of(item: Dict[str, Any], basis: str) -> Tuple[Optional[float], Optional[float]]:
    """(RTF, encoder share) of a decode in the document's basis."""
    timing = item.get("timing") or {}
    if basis == "cpu":
        return timing.get("cpu_rtf"), timing.get("encoder_cpu_share")
    return timing.get("rtf"), timing.get("encoder_share")


def expected_speedup(encoder_share: Optional[float], num_prune: int, num_layers: int) -> Optional[float]:
    """The speed-up if the encoder's time shrank with its layers and nothing else changed:
    1 / (1 - s k / L), s the original's encoder share.  An upper bound for the decode (the
    encoder's input layers stay) that needs no second timing: measured speed-ups far from it
    are noise of a shared machine, or other hypotheses (lengths) of the pruned model."""
    if encoder_share is None or not 0 <= encoder_share < 1:
        return None
    return round(1.0 / (1.0 - encoder_share * num_prune / num_layers), 3)


def timing_notes(original: Dict[str, Any], rows: Sequence[Dict[str, Any]], basis: str = "wall") -> List[str]:
    """What a reader of the speed columns must know: the device and threads the decodes ran
    with, when they differ, and decodes that recorded no timing."""
    settings = {}
    untimed = []
    for label, item in [("original", original)] + [(f"k = {r['num_prune']}", r) for r in rows
                                                    if r.get("decoded", True)]:
        timing = item.get("timing") or {}
        if timing.get("rtf") is None:
            untimed.append(label)
            continue
        key = (str(timing.get("device")), str(timing.get("num_threads")))
        settings.setdefault(key, []).append(label)
    notes = []
    if len(settings) == 1:
        (device, threads), = settings
        cpu = basis == "cpu"
        notes.append(f"RTF: decoding seconds (wall clock) per second of audio of the whole fine-search set, "
                     f"summed over the decoding jobs; CPU RTF: the same in CPU seconds of the decoding process; "
                     f"all on {device} with {threads} thread(s) per job. Speed-up and encoder share: "
                     f"{'of the CPU time (other processes of a shared machine disturb it less than the wall clock)' if cpu else 'of the wall clock'}. "
                     "One decode each, so speed-ups vary from run to run; the expected speed-up, "
                     "1 / (1 - s k / L) with s the original's encoder share, is what removing k of the L encoder "
                     "layers saves when nothing else changes (a pruned model whose hypotheses differ in length "
                     "also changes the decoder's time).")
    elif len(settings) > 1:
        notes.append("The decodes ran with different devices or thread settings, so their RTFs are not "
                     "comparable: " + "; ".join(f"{d}, {t} thread(s): {', '.join(labels)}"
                                                for (d, t), labels in sorted(settings.items())))
    if untimed:
        notes.append(f"No timing recorded for {', '.join(untimed)} (decoded before timings were kept; "
                     "remove its fine_evals/decode_*/hyp entry to decode it again).")
    return notes


# ---------------------------------------------------------------------------- tables
def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _pair(scores: Optional[Dict[str, Any]]) -> str:
    if not scores:
        return "-"
    return f"{_fmt(scores.get('cer'), '.1f')} / {_fmt(scores.get('wer'), '.1f')}"


def test_columns(doc: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(set, model) columns of the test results present in the document."""
    sets = list(doc.get("eval_sets") or [])
    for row in doc["depths"]:
        for name in row.get("test") or {}:
            if name not in sets:
                sets.append(name)
    columns = []
    for name in sets:
        for model in ("pruned", "finetuned"):
            if any(((row.get("test") or {}).get(name) or {}).get(model) for row in doc["depths"]):
                columns.append((name, model))
    return columns


def table_markdown(doc: Dict[str, Any]) -> str:
    """One row per depth (the original first): layers, parameters, fine-search CER/WER, the
    change of the primary metric, RTF, encoder share, speed-up, test CER / WER."""
    metric = doc["metric"].upper()
    columns = test_columns(doc)
    header = ["k (removed)", "layers kept", "removed layers", "params (M)", "fine CER", "fine WER",
              f"Δ {metric} (points)", "RTF", "CPU RTF", "encoder share", "speed-up", "expected speed-up"]
    with_proxy = proxy_only(doc)
    if with_proxy:
        header.insert(4, proxy_header(doc))
    basis = doc.get("speed_basis", "wall")
    header += [f"{name} CER / WER ({'pruned' if model == 'pruned' else 'fine-tuned'})" for name, model in columns]
    if doc.get("max_degradation") is not None:
        header.append(f"within {doc['max_degradation']:g}")
    header.append("chosen")
    lines = ["|" + "|".join(header) + "|", "|" + "|".join("---" for _ in header) + "|"]
    o = doc["original"]
    timing = o.get("timing") or {}
    cells = ["0 (original)", str(doc["num_layers"]), "-", _fmt(_millions(o.get("params")), ".2f"),
             _fmt(o.get("cer"), ".2f"), _fmt(o.get("wer"), ".2f"), "0.00", _fmt(timing.get("rtf"), ".4f"),
             _fmt(timing.get("cpu_rtf"), ".4f"), _percent(speed_of(o, basis)[1]),
             "1.00x" if speed_of(o, basis)[0] else "-", "-"]
    if with_proxy:
        cells.insert(4, _fmt(o.get("proxy"), ".2f"))
    for name, model in columns:
        cells.append(_pair((o.get("test") or {}).get(name)) if model == "pruned" else "-")
    if doc.get("max_degradation") is not None:
        cells.append("-")
    cells.append("")
    lines.append("|" + "|".join(cells) + "|")
    for row in doc["depths"]:
        timing = row.get("timing") or {}
        cells = [str(row["num_prune"]), str(row["layers_kept"]), ",".join(map(str, row.get("removed") or [])) or "-",
                 _fmt(_millions(row.get("params")), ".2f"), _fmt(row.get("cer"), ".2f"), _fmt(row.get("wer"), ".2f"),
                 _fmt(row.get("degradation"), "+.2f"), _fmt(timing.get("rtf"), ".4f"),
                 _fmt(timing.get("cpu_rtf"), ".4f"), _percent(speed_of(row, basis)[1]),
                 _times(row.get("speedup")), _times(row.get("expected_speedup"))]
        if with_proxy:
            cells.insert(4, _fmt(row.get("proxy"), ".2f") + ("" if row.get("decoded", True) else " (not decoded)"))
        for name, model in columns:
            cells.append(_pair(((row.get("test") or {}).get(name) or {}).get(model)))
        if doc.get("max_degradation") is not None:
            cells.append("-" if row.get("within") is None else "yes" if row["within"] else "no")
        cells.append("**chosen**" if row.get("chosen") else "")
        lines.append("|" + "|".join(cells) + "|")
    return "\n".join(lines) + "\n"


def proxy_only(doc: Dict[str, Any]) -> List[int]:
    """The depths a bracketing sweep scored by the proxy only."""
    return [row["num_prune"] for row in doc["depths"] if not row.get("decoded", True)]


def proxy_header(doc: Dict[str, Any]) -> str:
    if doc.get("proxy") == "loss":
        return "proxy loss"
    return f"proxy {doc['metric'].upper()} (CTC greedy)"


def _times(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _millions(n: Optional[float]) -> Optional[float]:
    return None if n is None else n / 1e6


def _percent(share: Optional[float]) -> str:
    return "-" if share is None else f"{100.0 * share:.0f}%"


def choice_text(doc: Dict[str, Any]) -> str:
    choice = doc["choice"]
    if choice.get("max_degradation") is None:
        text = "No depth chosen (no --comflp_max_degradation)."
        if doc.get("is_sweep"):
            text += (" Pick one from the table: `--comflp_num_prune <k> --stage 19` fine-tunes, evaluates and "
                     "packs that depth's winner (its search is current).")
        else:
            text += " Stages 19-21 ran for every depth."
        return text
    if choice.get("tag") is None:
        return f"**No depth chosen**: {choice['reason']}. Stages 19-21 were skipped."
    return (f"**Chosen: k = {choice['num_prune']}** ({choice['tag']}, {doc['num_layers'] - choice['num_prune']} "
            f"of {doc['num_layers']} layers kept): {choice['reason']}. Stages 19-21 ran for this depth only.")


def body_markdown(doc: Dict[str, Any], plot: Optional[str]) -> str:
    """The table, the plot, the choice and the notes (sweep.md and the RESULTS.md section)."""
    metric = doc["metric"].upper()
    parts = [f"Fine-search set: {doc.get('fine_set') or '-'}; primary metric {metric}; each row is the "
             f"winner of the search that removes k of the {doc['num_layers']} encoder layers.", "",
             table_markdown(doc)]
    if plot:
        parts += [f"![{metric} against layers kept]({plot})", ""]
    parts += [choice_text(doc), ""]
    for item in doc.get("skipped") or []:
        parts.append(f"- k = {item['num_prune']} skipped: {item['reason']}.")
    undecoded = proxy_only(doc)
    if undecoded:
        parts.append(f"- k = {', '.join(map(str, undecoded))}: not decoded (`--comflp_sweep_decode bracket` decodes "
                     "only the depths around the limit of `--comflp_max_degradation`); their rows show the "
                     f"candidate the proxy ranks best and its {proxy_header(doc)}.")
    for note in doc.get("notes") or []:
        parts.append(f"- {note}")
    return "\n".join(parts).rstrip() + "\n"


def sweep_markdown(doc: Dict[str, Any], plot: Optional[str] = "sweep.png") -> str:
    return "# How many layers can be removed\n\n" + body_markdown(doc, plot)
