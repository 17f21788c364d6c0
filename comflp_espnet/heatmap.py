"""Heatmap image of a correlation matrix between hidden states."""

from pathlib import Path

import numpy as np

from comflp_espnet.atomic import atomic_output_file
from comflp_espnet.gc_tuning import collector_paused


def save_heatmap(corr: np.ndarray, path: str, measure: str, num_items: int, unit: str) -> None:
    """Save the matrix as an annotated heatmap image (format from the suffix)."""
    with collector_paused():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    n = corr.shape[0]
    size = max(4.0, min(16.0, 0.45 * n + 2.5))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(corr, cmap="viridis", origin="upper")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    labels = [f"h{i}" for i in range(n)]
    step = 1 if n <= 26 else int(np.ceil(n / 26))
    ax.set_xticks(range(0, n, step))
    ax.set_xticklabels(labels[::step], rotation=90)
    ax.set_yticks(range(0, n, step))
    ax.set_yticklabels(labels[::step])
    if n <= 14:
        finite = corr[np.isfinite(corr)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if corr[i, j] > middle else "white",
                )
    ax.set_title(f"{measure} between hidden states (N = {num_items} {unit})")
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    with atomic_output_file(path, "wb") as f:
        fig.savefig(f, format=suffix, dpi=120)
    plt.close(fig)
