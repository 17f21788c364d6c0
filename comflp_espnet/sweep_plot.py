"""The sweep's plot: error rate against encoder layers kept (``comflp_espnet.sweep``'s document).

One line for the winners' fine-search error (the primary metric), one per test set once the
winners were decoded on it, the original model as a horizontal reference line (and the limit
original + ``--comflp_max_degradation`` when given), and the chosen depth marked.  Other curves
(e.g. greedy layer pruning's steps in the benchmark) can be overlaid.
"""

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.gc_tuning import collector_paused


def save_sweep_plot(doc: Dict[str, Any], path, extra_curves: Sequence[Dict[str, Any]] = (),
                    title: Optional[str] = None) -> None:
    """Write the plot (format from the suffix).  ``extra_curves``: dicts with ``label``,
    ``layers_kept`` and ``error`` (lists of the same length)."""
    with collector_paused():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    metric = doc["metric"]
    name = metric.upper()
    L = doc["num_layers"]
    rows = [r for r in doc["depths"] if r.get("error") is not None]
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    xs = [r["layers_kept"] for r in rows]
    ax.plot(xs, [r["error"] for r in rows], "o-", color="C0", label=f"winner, fine-search {name}")
    for i, (test_set, model) in enumerate(_test_series(doc)):
        points = [(r["layers_kept"], ((r.get("test") or {}).get(test_set) or {}).get(model, {}).get(metric))
                  for r in doc["depths"]]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            label = f"{'winner' if model == 'pruned' else 'fine-tuned winner'}, {test_set} {name}"
            ax.plot(*zip(*points), "s--", color=f"C{2 + i}", alpha=0.8, markerfacecolor="none", label=label)
    for i, curve in enumerate(extra_curves):
        ax.plot(curve["layers_kept"], curve["error"], "^:", color=f"C{5 + i}", label=curve["label"])
    original = doc["original"].get("error")
    if original is not None:
        ax.axhline(original, color="black", linestyle="--", linewidth=1,
                   label=f"original ({L} layers), fine-search {name} {original:.1f}%")
        ax.plot([L], [original], "D", color="black")
        if doc.get("max_degradation") is not None:
            ax.axhline(original + doc["max_degradation"], color="grey", linestyle=":", linewidth=1,
                       label=f"original + {doc['max_degradation']:g} (--comflp_max_degradation)")
    chosen = next((r for r in rows if r.get("chosen")), None)
    if chosen is not None:
        ax.plot([chosen["layers_kept"]], [chosen["error"]], "*", color="C3", markersize=16,
                label=f"chosen: k = {chosen['num_prune']} ({chosen['layers_kept']} layer(s) kept)")
    ax.set_xlabel("encoder layers kept")
    ax.set_ylabel(f"{name} (%)")
    ax.set_xticks(range(1, L + 1) if L <= 24 else range(0, L + 1, max(1, L // 12)))
    ax.set_xlim(0.5, L + 0.5)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{name} against layers kept ({L}-layer encoder)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    with atomic_output_file(path, "wb") as f:
        fig.savefig(f, format=suffix, dpi=110, metadata={"Software": None} if suffix == "png" else None)
    plt.close(fig)


def _test_series(doc: Dict[str, Any]):
    from comflp_espnet.sweep import test_columns

    return test_columns(doc)
