"""Bootstrap confidence intervals for corpus-level error rates.

An error rate (CER/WER) is sum(errors) / sum(reference length) over a test set; its sampling
noise comes from which utterances the set happens to contain.  Resampling utterances with
replacement (Bisani & Ney 2004, "Bootstrap estimates for confidence intervals in ASR performance
evaluation") gives an interval for one system and, resampling the same utterances for two
systems, an interval for their difference that accounts for the utterances they share.

Pure numpy: errors and lengths are per-utterance counts in the same order for every system.
"""
import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate (in percent) with its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Error rate of A minus that of B (percent points) over the same utterances."""

    difference: float
    low: float
    high: float
    # Fraction of resamples in which A's error rate is lower than B's, ties counted half: two
    # systems with the same errors on every utterance get 0.5, not 0.
    prob_a_better: float


def _check(errors: np.ndarray, lengths: np.ndarray, name: str) -> None:
    if errors.ndim != 1 or errors.shape != lengths.shape:
        raise ValueError(f"{name}: errors {errors.shape} and lengths {lengths.shape} must be equal 1-d shapes")
    if errors.size == 0:
        raise ValueError(f"{name}: no utterances")
    if (errors < 0).any() or (lengths < 0).any():
        raise ValueError(f"{name}: counts must be non-negative")
    if lengths.sum() <= 0:
        raise ValueError(f"{name}: the references are empty")


def _resample_indices(num_utts: int, num_samples: int, seed: int) -> np.ndarray:
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_utts, size=(num_samples, num_utts))


def _rates(errors: np.ndarray, lengths: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # A resample that drew only empty references has rate 0 rather than a division by zero.
    return 100.0 * errors[idx].sum(axis=1) / np.maximum(lengths[idx].sum(axis=1), 1)


def _tails(confidence: float):
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    return 100.0 * alpha, 100.0 * (1.0 - alpha)


def error_rate_interval(
    errors: Sequence[float],
    lengths: Sequence[float],
    num_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of the error rate sum(errors)/sum(lengths), in percent."""
    e = np.asarray(errors, dtype=np.float64)
    n = np.asarray(lengths, dtype=np.float64)
    _check(e, n, "error_rate_interval")
    lo, hi = _tails(confidence)
    rates = _rates(e, n, _resample_indices(e.size, num_samples, seed))
    return Interval(
        estimate=100.0 * e.sum() / n.sum(),
        low=float(np.percentile(rates, lo)),
        high=float(np.percentile(rates, hi)),
    )


def paired_difference(
    errors_a: Sequence[float],
    errors_b: Sequence[float],
    lengths: Sequence[float],
    num_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Paired bootstrap of rate(A) - rate(B), both scored against the same references."""
    a = np.asarray(errors_a, dtype=np.float64)
    b = np.asarray(errors_b, dtype=np.float64)
    n = np.asarray(lengths, dtype=np.float64)
    _check(a, n, "paired_difference (A)")
    _check(b, n, "paired_difference (B)")
    lo, hi = _tails(confidence)
    idx = _resample_indices(n.size, num_samples, seed)
    diff = _rates(a, n, idx) - _rates(b, n, idx)
    return PairedComparison(
        difference=100.0 * (a.sum() - b.sum()) / n.sum(),
        low=float(np.percentile(diff, lo)),
        high=float(np.percentile(diff, hi)),
        prob_a_better=float(np.mean(diff < 0) + 0.5 * np.mean(diff == 0)),
    )
