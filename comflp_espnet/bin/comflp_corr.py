#!/usr/bin/env python3
"""Correlation matrix between the encoder hidden states h_0..h_L.

    python -m comflp_espnet.bin.comflp_corr --states_scp states/output.1/states.scp \
        [--states_scp states/output.2/states.scp ...] --measure dc \
        --output corr/dc.npy [--heatmap corr/dc.png] [--batch_size 32]

Reads the states written by comflp_dump (several job scps or their
concatenation), computes the (L+1) x (L+1) matrix with
``comflp_espnet.measures.correlation_matrix`` and saves it as ``.npy``, and
optionally as a heatmap image.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from comflp_espnet.atomic import atomic_output_file

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


def save_heatmap(corr: np.ndarray, path: str, measure: str, num_items: int, unit: str) -> None:
    """Save the matrix as an annotated heatmap image (format from the suffix)."""
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


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Correlation matrix between encoder hidden states",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--states_scp", action="append", required=True, help="states.scp (repeatable)"
    )
    parser.add_argument("--measure", default="dc", help="dc, svcca, cka, cosine, angular")
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="Rows per block for measures that take batch_size (dc); 0: all rows; ignored by others",
    )
    parser.add_argument("--output", required=True, help="Output .npy")
    parser.add_argument("--heatmap", default=None, help="Optional heatmap image (.png)")
    parser.add_argument(
        "--log_level",
        default="INFO",
        choices=("ERROR", "WARNING", "INFO", "DEBUG"),
        help="The verbose level of logging",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)

    from comflp_espnet.measures import MEASURES, correlation_matrix
    from comflp_espnet.state_archive import load_states

    if args.measure not in MEASURES:
        parser.error(f"--measure must be one of {', '.join(MEASURES)}, got {args.measure!r}")
    if args.batch_size is not None and args.batch_size < 0:
        parser.error("--batch_size must be >= 0 (0: all rows in one block)")
    try:
        states = load_states(args.states_scp)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"comflp_corr: error: {e}")
    num_items = states[0].shape[0]
    logging.info(
        f"Read {len(states)} states of {num_items} rows x {states[0].shape[1]} dims "
        f"from {len(args.states_scp)} scp file(s)"
    )
    options = {}
    if args.batch_size is not None:
        from comflp_espnet import measures

        accepted = getattr(measures, "MEASURE_OPTIONS", {}).get(args.measure, {"batch_size": None})
        if "batch_size" in accepted:
            options["batch_size"] = args.batch_size
        else:
            logging.info(f"--batch_size does not apply to {args.measure}; ignored")
    try:
        corr = correlation_matrix(states, measure=args.measure, **options)
    except (ValueError, TypeError) as e:
        sys.exit(f"comflp_corr: error: {e}")
    corr = np.asarray(corr, dtype=np.float64)

    with atomic_output_file(args.output, "wb") as f:
        np.save(f, corr)
    logging.info(f"Wrote {corr.shape[0]}x{corr.shape[1]} {args.measure} matrix to {args.output}")
    if args.heatmap:
        from comflp_espnet.state_archive import read_info

        info = read_info(Path(args.states_scp[0]).parent) or {}
        unit = "frames" if info.get("pooling") == "frame" else "utterances"
        save_heatmap(corr, args.heatmap, args.measure, num_items, unit)
        logging.info(f"Wrote heatmap to {args.heatmap}")


if __name__ == "__main__":
    main()
