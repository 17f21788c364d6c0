"""Correlation measures between the hidden states of an encoder.

An encoder with L layers has hidden states h_0 .. h_L. Each state is given as an N x D_i matrix (one row per
utterance after pooling, or one row per frame); row n of every state must come from the same input.
:func:`correlation_matrix` returns the (L+1) x (L+1) matrix C with C[i][j] = similarity(h_i, h_j), float64,
symmetric, with 1 on the diagonal.

Measures (``MEASURES``):

``dc``
    Distance correlation of L2-row-normalized states, as in CoMFLP. For one batch of n rows, let a_kl be the
    Euclidean distance between rows k and l of the (normalized) state X and A its double-centred version
    A_kl = a_kl - mean_k a - mean_l a + mean a. With B likewise for Y,

        dc(X, Y) = <A, B> / sqrt(<A, A> <B, B>)        (<A, B> = sum_kl A_kl B_kl)

    i.e. dCov^2(X, Y) / sqrt(dVar^2(X) dVar^2(Y)), the squared distance correlation of Szekely et al., which
    is the value the CoMFLP reference reports. It lies in [0, 1]. Rows are split into consecutive batches of
    ``batch_size`` rows (default 32) and the matrices of the batches are averaged. Only full batches are used:
    the last N mod batch_size rows are left out, because the statistic's bias depends on the batch size and
    mixing sizes would make batches incomparable. When N <= batch_size, or ``batch_size=0``, all rows form a
    single batch. All pairs of states are computed at once as the Gram matrix of the flattened
    double-centred distance matrices.
``svcca``
    SVCCA (Raghu et al. 2017). Each column-centred state is reduced to its top singular directions that
    explain a fraction ``variance_threshold`` (default 0.99) of its variance; the similarity is the mean of
    the canonical correlations between the two reduced states (the singular values of U_X^T U_Y, where U are
    the orthonormal bases of the kept directions; min(m_X, m_Y) of them). Use more rows than kept
    directions, otherwise any two subspaces look perfectly correlated.
``cka``
    Linear CKA (Kornblith et al. 2019): <K_X, K_Y> / sqrt(<K_X, K_X> <K_Y, K_Y>) with K = X_c X_c^T of the
    column-centred state, i.e. ||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F). Invariant to isotropic
    scaling and orthogonal transforms.
``cosine``
    Mean over rows n of cos(x_n, y_n). Needs equal widths. 1 - cosine of adjacent states is ShortGPT's block
    influence.
``angular``
    Mean over rows of 1 - arccos(cos(x_n, y_n)) / pi, the angular similarity; 1 - angular is the angular
    distance used by Gromov et al. (2024). Needs equal widths.

Degenerate input has a defined, finite result. A state whose rows are all equal (up to 1e-12 relative;
for ``dc`` after the row normalization, i.e. all rows point the same way) has zero variance: its
correlation with every other state is 0 under ``dc``, ``cka`` and ``svcca``, and 1 with itself. Under
``cosine`` and ``angular`` an all-zero row has no direction and counts as cos = 0 against anything.
"""

import logging
import math
from typing import Dict, List, Sequence

import numpy as np

from comflp_espnet.measure_names import MEASURES  # noqa: F401  (re-exported)

# Options each measure accepts, with their defaults.
MEASURE_OPTIONS: Dict[str, Dict[str, object]] = {
    "dc": {"batch_size": 32},
    "svcca": {"variance_threshold": 0.99},
    "cka": {},
    "cosine": {},
    "angular": {},
}

# Largest number of float64 values held at once when accumulating Gram matrices of N x N kernels.
_CHUNK_VALUES = 1 << 22
# Rows equal up to this relative difference make a zero-variance state.
_ZERO_VARIANCE_RTOL = 1e-12


def correlation_matrix(states, measure: str = "dc", **options) -> np.ndarray:
    """Similarity matrix between hidden states.

    Args:
        states: sequence of L+1 arrays (numpy arrays or torch tensors), state i of shape N x D_i, same N.
        measure: one of ``MEASURES``.
        **options: options of the measure (see ``MEASURE_OPTIONS``); ``None`` means the default.

    Returns:
        (L+1) x (L+1) float64 array, symmetric, 1 on the diagonal.
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose one of {', '.join(MEASURES)}")
    accepted = MEASURE_OPTIONS[measure]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = ", ".join(accepted) if accepted else "none"
        raise TypeError(f"measure {measure!r} does not take option(s) {', '.join(unknown)}; its options: {known}")
    kwargs = dict(accepted)
    kwargs.update({key: value for key, value in options.items() if value is not None})
    mats = _as_matrices(states)
    corr = _MEASURE_FUNCTIONS[measure](mats, **kwargs)
    corr = (corr + corr.T) / 2.0  # exact symmetry despite BLAS rounding
    np.fill_diagonal(corr, 1.0)
    return corr


def _as_matrices(states) -> List[np.ndarray]:
    mats = []
    for index, state in enumerate(states):
        if hasattr(state, "detach"):  # torch tensor, without importing torch
            state = state.detach().cpu().numpy()
        mat = np.asarray(state, dtype=np.float64)
        if mat.ndim != 2:
            raise ValueError(
                f"state {index} has shape {mat.shape}; every state must be a 2-D array (rows x features)"
            )
        if mat.shape[1] < 1:
            raise ValueError(f"state {index} has no features (shape {mat.shape})")
        if not np.all(np.isfinite(mat)):
            raise ValueError(f"state {index} contains NaN or infinite values")
        mats.append(mat)
    if len(mats) < 2:
        raise ValueError(f"need at least 2 states (h_0 .. h_L), got {len(mats)}")
    rows = {mat.shape[0] for mat in mats}
    if len(rows) != 1:
        detail = ", ".join(f"state {i}: {mat.shape[0]}" for i, mat in enumerate(mats))
        raise ValueError(f"all states must have the same number of rows N; got {detail}")
    if mats[0].shape[0] < 2:
        raise ValueError(f"need at least 2 rows per state (N >= 2), got N = {mats[0].shape[0]}")
    return mats


def _centre_columns(batches: np.ndarray) -> np.ndarray:
    """Column-centre each batch (..., n, D); batches whose rows are all equal (zero variance) become 0."""
    flat = batches.reshape(batches.shape[:-2] + (-1,))
    spread = np.abs((batches - batches[..., :1, :]).reshape(flat.shape)).max(axis=-1)
    scale = np.maximum(np.abs(flat).max(axis=-1), np.finfo(np.float64).tiny)
    centred = batches - batches.mean(axis=-2, keepdims=True)
    centred[spread <= _ZERO_VARIANCE_RTOL * scale] = 0.0
    return centred


def l2_normalize_rows(mat: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm; all-zero rows stay zero."""
    norms = np.linalg.norm(mat, axis=-1, keepdims=True)
    return mat / np.where(norms > 0.0, norms, 1.0)


def _gram_to_correlation(gram: np.ndarray) -> np.ndarray:
    """Cosine normalization of Gram matrices (..., S, S); states with zero norm get 0 off the diagonal."""
    norms = np.sqrt(np.clip(np.diagonal(gram, axis1=-2, axis2=-1), 0.0, None))
    live = norms > 0.0
    scale = np.where(live, norms, 1.0)
    corr = gram / (scale[..., :, None] * scale[..., None, :])
    corr = np.where(live[..., :, None] & live[..., None, :], corr, 0.0)
    return np.clip(corr, -1.0, 1.0)


def _row_spans(num_rows: int, chunk: int):
    return [(start, min(start + chunk, num_rows)) for start in range(0, num_rows, chunk)]


def _centred_kernel_gram(points: Sequence[np.ndarray], kernel: str) -> np.ndarray:
    """Gram matrices <K_i, K_j> of the double-centred n x n kernels of all states at once, per batch.

    ``points[s]`` holds state s as column-centred batches, shape (num_batches, n, D_s). ``kernel`` is
    "distance" (Euclidean distances between rows) or "linear" (inner products). Returns
    (num_batches, S, S). Kernels are built in blocks of rows so that memory stays bounded; the Gram matrix
    is the sum over blocks of (flattened blocks) @ (flattened blocks)^T, batched over num_batches.
    """
    num_states = len(points)
    num_batches, n = points[0].shape[:2]
    sq_norms = [np.einsum("bij,bij->bi", p, p) for p in points]

    def kernel_rows(s: int, start: int, stop: int) -> np.ndarray:
        inner = np.matmul(points[s][:, start:stop], points[s].transpose(0, 2, 1))
        if kernel == "linear":
            return inner
        sq = sq_norms[s][:, start:stop, None] + sq_norms[s][:, None, :] - 2.0 * inner
        local = np.arange(stop - start)
        sq[:, local, local + start] = 0.0  # exact zero self-distance (the expansion leaves rounding noise)
        return np.sqrt(np.clip(sq, 0.0, None))

    chunk = max(1, min(n, _CHUNK_VALUES // (num_states * num_batches * n)))
    spans = _row_spans(n, chunk)
    if len(spans) == 1:
        cached = [kernel_rows(s, 0, n) for s in range(num_states)]
        row_means = [k.mean(axis=2) for k in cached]
    else:
        cached = None
        row_means = [np.concatenate([kernel_rows(s, a, b).mean(axis=2) for a, b in spans], axis=1)
                     for s in range(num_states)]
    grand_means = [m.mean(axis=1) for m in row_means]

    gram = np.zeros((num_batches, num_states, num_states))
    for a, b in spans:
        block = np.empty((num_batches, num_states, (b - a) * n))
        for s in range(num_states):
            rows = cached[s] if cached is not None else kernel_rows(s, a, b)
            # symmetric kernel: column means equal row means
            centred = (rows - row_means[s][:, a:b, None] - row_means[s][:, None, :]
                       + grand_means[s][:, None, None])
            block[:, s] = centred.reshape(num_batches, -1)
        gram += np.matmul(block, block.transpose(0, 2, 1))
    return gram


def _dc(mats: List[np.ndarray], batch_size=32) -> np.ndarray:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 0:
        raise ValueError(f"batch_size must be an integer >= 0 (0 = all rows), got {batch_size!r}")
    n = mats[0].shape[0]
    if batch_size == 0 or batch_size >= n:
        batch_size = n
    elif n % batch_size:
        logging.info(f"dc: using {n // batch_size} batches of {batch_size} rows; the last {n % batch_size} rows "
                     f"are left out")
    used = n - n % batch_size
    points = [_centre_columns(l2_normalize_rows(m[:used]).reshape(used // batch_size, batch_size, -1))
              for m in mats]
    return _gram_to_correlation(_centred_kernel_gram(points, "distance")).mean(axis=0)


def _cka(mats: List[np.ndarray]) -> np.ndarray:
    return _gram_to_correlation(_centred_kernel_gram([_centre_columns(m[None]) for m in mats], "linear"))[0]


def _svcca(mats: List[np.ndarray], variance_threshold=0.99) -> np.ndarray:
    if not 0.0 < float(variance_threshold) <= 1.0:
        raise ValueError(f"variance_threshold must be in (0, 1], got {variance_threshold!r}")
    n = mats[0].shape[0]
    bases = []
    for mat in mats:
        centred = _centre_columns(mat[None])[0]
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        energy = s ** 2
        if energy.sum() <= 0.0:
            bases.append(np.zeros((n, 0)))
            continue
        fraction = np.cumsum(energy) / energy.sum()
        keep = int(np.searchsorted(fraction, float(variance_threshold) - 1e-12)) + 1
        keep = min(keep, int(np.count_nonzero(s > s[0] * 1e-12)))
        bases.append(u[:, :keep])
    widest = max(b.shape[1] for b in bases)
    padded = np.zeros((len(bases), n, max(widest, 1)))
    for i, basis in enumerate(bases):
        padded[i, :, : basis.shape[1]] = basis
    dims = np.array([b.shape[1] for b in bases])
    corr = np.zeros((len(bases), len(bases)))
    for i, basis in enumerate(bases):
        if dims[i] == 0:
            continue
        # singular values of U_i^T U_j are the canonical correlations; zero padding adds zeros at the end
        cross = np.einsum("nk,snm->skm", basis, padded[i:])
        values = np.clip(np.linalg.svd(cross, compute_uv=False), 0.0, 1.0)
        used = np.minimum(dims[i], dims[i:])
        mask = np.arange(values.shape[1])[None, :] < used[:, None]
        means = (values * mask).sum(axis=1) / np.maximum(used, 1)
        corr[i, i:] = corr[i:, i] = np.where(used > 0, means, 0.0)
    return corr


def _row_cosines(mats: List[np.ndarray]) -> np.ndarray:
    """N x S x S array of cos(x_n, y_n) for every pair of states."""
    widths = {m.shape[1] for m in mats}
    if len(widths) != 1:
        detail = ", ".join(f"state {i}: {m.shape[1]}" for i, m in enumerate(mats))
        raise ValueError(f"cosine and angular need states of equal width D; got {detail}")
    units = np.stack([l2_normalize_rows(m) for m in mats], axis=1)  # N x S x D
    return np.clip(np.matmul(units, units.transpose(0, 2, 1)), -1.0, 1.0)


def _cosine(mats: List[np.ndarray]) -> np.ndarray:
    return _row_cosines(mats).mean(axis=0)


def _angular(mats: List[np.ndarray]) -> np.ndarray:
    return (1.0 - np.arccos(_row_cosines(mats)) / math.pi).mean(axis=0)


_MEASURE_FUNCTIONS = {"dc": _dc, "svcca": _svcca, "cka": _cka, "cosine": _cosine, "angular": _angular}
