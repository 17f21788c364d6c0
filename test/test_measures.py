"""Correlation measures: agreement with straightforward implementations, symmetry, invariances, bad input."""

import math
import subprocess
import sys

import numpy as np
import pytest

from comflp_espnet import measures
from comflp_espnet.measures import MEASURES, correlation_matrix


def chain_states(num_states=5, rows=70, dim=16, noise=0.3, seed=0):
    """States that drift away from the first one, like the hidden states of an encoder."""
    rng = np.random.default_rng(seed)
    state = rng.normal(size=(rows, dim))
    states = [state]
    for _ in range(num_states - 1):
        state = state + noise * rng.normal(size=(rows, dim))
        states.append(state)
    return states


def reference_dc(x, y):
    """Squared distance correlation of row-normalized x and y, written out directly."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    a = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    b = np.sqrt(((y[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    a = a - a.mean(0, keepdims=True) - a.mean(1, keepdims=True) + a.mean()
    b = b - b.mean(0, keepdims=True) - b.mean(1, keepdims=True) + b.mean()
    return (a * b).mean() / math.sqrt((a * a).mean() * (b * b).mean())


def reference_dc_matrix(states, batch_size):
    n = states[0].shape[0]
    if batch_size == 0 or batch_size >= n:
        spans = [(0, n)]
    else:
        spans = [(s, s + batch_size) for s in range(0, n - n % batch_size, batch_size)]
    size = len(states)
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            out[i, j] = np.mean([reference_dc(states[i][a:b], states[j][a:b]) for a, b in spans])
    return out


@pytest.mark.parametrize("batch_size", [32, 16, 0, 100])
def test_dc_matches_pairwise_reference(batch_size):
    states = chain_states(rows=70)
    expected = reference_dc_matrix(states, batch_size)
    np.testing.assert_allclose(correlation_matrix(states, "dc", batch_size=batch_size), expected, atol=1e-12)


def test_dc_default_batch_size_is_32_and_drops_partial_batch():
    states = chain_states(rows=70)
    np.testing.assert_allclose(correlation_matrix(states), reference_dc_matrix(states, 32), atol=1e-12)
    # the last 70 % 32 = 6 rows do not count
    altered = [s.copy() for s in states]
    for s in altered:
        s[64:] = np.random.default_rng(5).normal(size=s[64:].shape)
    np.testing.assert_allclose(correlation_matrix(altered), correlation_matrix(states), atol=1e-12)


def test_kernel_gram_in_row_blocks_matches_single_block(monkeypatch):
    states = chain_states(rows=40, dim=8)
    whole = {m: correlation_matrix(states, m) for m in ("cka",)}
    whole["dc"] = correlation_matrix(states, "dc", batch_size=0)
    monkeypatch.setattr(measures, "_CHUNK_VALUES", 300)  # forces blocks of a few rows
    np.testing.assert_allclose(correlation_matrix(states, "dc", batch_size=0), whole["dc"], atol=1e-12)
    np.testing.assert_allclose(correlation_matrix(states, "cka"), whole["cka"], atol=1e-12)


def test_cka_matches_feature_space_formula():
    states = chain_states(dim=12)
    centred = [s - s.mean(0) for s in states]
    expected = np.array([
        [np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)) for y in centred]
        for x in centred
    ])
    np.testing.assert_allclose(correlation_matrix(states, "cka"), expected, atol=1e-12)


def test_svcca_with_all_directions_is_mean_canonical_correlation():
    states = chain_states(rows=80, dim=6)

    def cca(x, y):
        qx, _ = np.linalg.qr(x - x.mean(0))
        qy, _ = np.linalg.qr(y - y.mean(0))
        return np.linalg.svd(qx.T @ qy, compute_uv=False).mean()

    expected = np.array([[cca(x, y) for y in states] for x in states])
    np.testing.assert_allclose(correlation_matrix(states, "svcca", variance_threshold=1.0), expected, atol=1e-10)


def test_svcca_threshold_drops_weak_directions():
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(200, 2))
    x = np.hstack([signal * 10.0, rng.normal(size=(200, 3)) * 0.01])
    y = np.hstack([signal @ rng.normal(size=(2, 2)) * 10.0, rng.normal(size=(200, 3)) * 0.01])
    # 99% of the variance lies in the shared 2-D signal, whose canonical correlations are 1
    assert correlation_matrix([x, y], "svcca")[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert correlation_matrix([x, y], "svcca", variance_threshold=1.0)[0, 1] < 0.7


def test_cosine_and_angular_match_row_loops():
    states = chain_states(dim=10)
    cos = np.array([[np.mean([x[n] @ y[n] / (np.linalg.norm(x[n]) * np.linalg.norm(y[n]))
                              for n in range(len(x))]) for y in states] for x in states])
    ang = np.array([[np.mean([1 - math.acos(np.clip(x[n] @ y[n] / (np.linalg.norm(x[n]) * np.linalg.norm(y[n])),
                                                    -1, 1)) / math.pi for n in range(len(x))])
                     for y in states] for x in states])
    np.testing.assert_allclose(correlation_matrix(states, "cosine"), cos, atol=1e-12)
    np.testing.assert_allclose(correlation_matrix(states, "angular"), ang, atol=1e-7)


@pytest.mark.parametrize("measure", MEASURES)
def test_symmetric_unit_diagonal_and_bounded(measure):
    corr = correlation_matrix(chain_states(num_states=6), measure)
    assert corr.dtype == np.float64 and corr.shape == (6, 6)
    np.testing.assert_array_equal(corr, corr.T)
    np.testing.assert_array_equal(np.diag(corr), 1.0)
    lower = -1.0 if measure == "cosine" else 0.0
    assert np.all(corr >= lower) and np.all(corr <= 1.0)
    # states drift away: the first state is more similar to the second than to the last
    assert corr[0, 1] > corr[0, 5]


@pytest.mark.parametrize("measure", MEASURES)
def test_identical_states_correlate_fully(measure):
    state = chain_states(num_states=1)[0]
    np.testing.assert_allclose(correlation_matrix([state, state.copy(), state], measure), 1.0, atol=1e-9)


def test_dc_invariant_to_per_state_and_per_row_scaling():
    states = chain_states()
    rng = np.random.default_rng(1)
    scaled = [s * factor for s, factor in zip(states, [3.0, -0.5, 1e-3, 7.0, 100.0])]
    scaled[2] = scaled[2] * rng.uniform(0.1, 10.0, size=(scaled[2].shape[0], 1))  # rows are normalized
    np.testing.assert_allclose(correlation_matrix(scaled, "dc"), correlation_matrix(states, "dc"), atol=1e-10)


def random_rotation(dim, rng):
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("measure", ["cka", "svcca"])
def test_cka_and_svcca_invariant_to_scaling_and_rotation(measure):
    states = chain_states(rows=90, dim=8)
    rng = np.random.default_rng(2)
    moved = [s @ random_rotation(8, rng) * factor + 5.0 for s, factor in zip(states, [2.0, 0.1, -3.0, 10.0, 1.0])]
    np.testing.assert_allclose(correlation_matrix(moved, measure), correlation_matrix(states, measure), atol=1e-9)


@pytest.mark.parametrize("measure", ["cosine", "angular"])
def test_cosine_and_angular_invariant_to_positive_scaling(measure):
    states = chain_states()
    scaled = [s * factor for s, factor in zip(states, [2.0, 0.1, 3.0, 10.0, 1e4])]
    np.testing.assert_allclose(correlation_matrix(scaled, measure), correlation_matrix(states, measure), atol=1e-12)
    assert not np.allclose(correlation_matrix([states[0], -states[1]], measure),
                           correlation_matrix(states[:2], measure))


@pytest.mark.parametrize("measure", ["dc", "cka", "svcca"])
def test_zero_variance_state_is_uncorrelated(measure):
    states = chain_states(num_states=3)
    constant = np.tile(np.arange(1.0, 17.0), (70, 1)) * 0.1
    corr = correlation_matrix(states[:2] + [constant] + states[2:], measure)
    assert np.all(np.isfinite(corr))
    np.testing.assert_array_equal(corr[2], [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(corr[:, 2], [0.0, 0.0, 1.0, 0.0])


def test_dc_of_state_with_rows_in_one_direction_is_zero_variance():
    states = chain_states(num_states=2)
    same_direction = np.outer(np.linspace(1.0, 5.0, 70), np.ones(16))  # rows differ only in length
    corr = correlation_matrix(states + [same_direction], "dc")
    np.testing.assert_array_equal(corr[2], [0.0, 0.0, 1.0])


def test_zero_rows_count_as_orthogonal_for_cosine():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert correlation_matrix([x, y], "cosine")[0, 1] == pytest.approx(0.5)
    assert correlation_matrix([x, y], "angular")[0, 1] == pytest.approx(0.75)


def test_torch_tensors_give_the_same_matrix():
    torch = pytest.importorskip("torch")
    states = chain_states()
    tensors = [torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in states]
    for measure in MEASURES:
        np.testing.assert_allclose(correlation_matrix(tensors, measure), correlation_matrix(states, measure),
                                   atol=1e-12)


def test_bad_input_errors():
    states = chain_states(num_states=3)
    with pytest.raises(ValueError, match="same number of rows"):
        correlation_matrix([states[0], states[1][:50]])
    with pytest.raises(ValueError, match="N >= 2"):
        correlation_matrix([s[:1] for s in states])
    with pytest.raises(ValueError, match="2-D"):
        correlation_matrix([states[0], states[1].ravel()])
    with pytest.raises(ValueError, match="dc, svcca, cka, cosine, angular"):
        correlation_matrix(states, "pearson")
    with pytest.raises(ValueError, match="at least 2 states"):
        correlation_matrix(states[:1])
    with pytest.raises(ValueError, match="NaN"):
        correlation_matrix([states[0], np.full_like(states[1], np.nan)])
    with pytest.raises(ValueError, match="equal width"):
        correlation_matrix([states[0], states[1][:, :5]], "cosine")
    with pytest.raises(ValueError, match="batch_size"):
        correlation_matrix(states, "dc", batch_size=-1)
    with pytest.raises(ValueError, match="variance_threshold"):
        correlation_matrix(states, "svcca", variance_threshold=1.5)
    with pytest.raises(TypeError, match="batch_size"):
        correlation_matrix(states, "cka", batch_size=32)
    # options set to None fall back to the default
    np.testing.assert_array_equal(correlation_matrix(states, "dc", batch_size=None), correlation_matrix(states))


def test_states_of_different_widths_work_for_dc_cka_svcca():
    states = chain_states(num_states=2, dim=16)
    rng = np.random.default_rng(4)
    wider = states[1] @ rng.normal(size=(16, 24))
    for measure in ("dc", "cka", "svcca"):
        corr = correlation_matrix([states[0], wider], measure)
        assert 0.0 < corr[0, 1] <= 1.0


def test_stage_tool_checks_measure_names_without_numpy():
    # Every call of the stage tool checks --comflp_measure; numpy's import would be a quarter of it.
    code = (
        "import sys\n"
        "import comflp_espnet.bin.comflp_stage, comflp_espnet.stages\n"
        "from comflp_espnet.measure_names import MEASURES\n"
        "print('numpy' in sys.modules, ' '.join(MEASURES))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", *MEASURES]
