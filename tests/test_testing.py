"""Tests of the public Hypothesis strategies in :mod:`vfe.testing`."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from strategies import examples
from vfe import testing as vt

FAST = settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIND = settings(max_examples=2000, deadline=None, database=None)
DTYPES = (np.float64, np.float32)
SIZES = (2, 3, 5, 8, 16, 64)
BUCKETS = ((), (4,), (2, 3))


def eps(dtype) -> float:
    return float(np.finfo(dtype).eps)


def assert_probability_rows(p: np.ndarray, dtype) -> None:
    """Non-negative rows whose exact sum is within n·eps of 1 (2n·eps summed in dtype)."""
    assert isinstance(p, np.ndarray) and p.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    n = p.shape[-1]
    rows = p.reshape(-1, n)
    for row in rows:
        assert abs(math.fsum(row.astype(np.float64)) - 1.0) <= n * eps(dtype)
    assert np.all(np.abs(np.sum(p, axis=-1) - 1) <= 2 * n * eps(dtype))


def assert_in_buckets(x: np.ndarray, sizes, buckets) -> None:
    assert x.shape[-1] in sizes
    assert x.shape[:-1] in buckets


# --------------------------------------------------------------------------- probability_vectors


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", vt.PROBABILITY_KINDS)
@FAST
@given(data=st.data())
def test_probability_vectors_invariants(kind, dtype, data):
    p = data.draw(vt.probability_vectors(kind=kind, batch_shape=BUCKETS, dtype=dtype))
    assert_in_buckets(p, SIZES, BUCKETS)
    assert_probability_rows(p, dtype)
    n = p.shape[-1]
    if kind == "dirichlet":
        assert np.all(p > 0)
    if kind == "sparse":
        assert np.all(np.any(p == 0, axis=-1)) and np.all(np.any(p > 0, axis=-1))
    if kind == "one_hot_like":
        assert np.all(np.max(p, axis=-1) >= 0.9 - eps(dtype))
    if kind == "uniform_like":
        assert np.all(p > 0)
        assert np.all(np.abs(p * n - 1) <= 0.25)


def test_probability_vectors_reach_the_extremes():
    one_hot = vt.probability_vectors(kind="one_hot_like")
    exact = find(one_hot, lambda p: np.count_nonzero(p) == 1, settings=FIND)
    assert np.max(exact) == 1.0
    tiny = find(one_hot, lambda p: 0 < np.min(p) < 1e-250, settings=FIND)
    assert np.max(tiny) == 1.0  # 1 - ε rounds to 1
    dirichlet = vt.probability_vectors(kind="dirichlet")
    spread = find(dirichlet, lambda p: np.min(p) < 1e-100, settings=FIND)
    assert np.all(spread > 0)
    near_uniform = find(
        vt.probability_vectors(kind="uniform_like"),
        lambda p: 0 < np.max(np.abs(p * p.size - 1)) < 1e-10,
        settings=FIND,
    )
    assert near_uniform.size >= 2


def test_probability_vectors_shrink_to_the_simplest_example():
    # First size, first kind ("uniform_like"), δ = 0: exactly uniform on two points.
    p = find(vt.probability_vectors(), lambda p: True, settings=FIND)
    np.testing.assert_array_equal(p, np.array([0.5, 0.5]))


# --------------------------------------------------------------------------- logits


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [True, False])
@FAST
@given(data=st.data())
def test_logits_invariants(masked, dtype, data):
    x = data.draw(vt.logits(masked=masked, batch_shape=BUCKETS, dtype=dtype))
    assert x.dtype == np.dtype(dtype)
    assert_in_buckets(x, SIZES, BUCKETS)
    assert not np.any(np.isnan(x)) and not np.any(x == np.inf)
    finite = np.isfinite(x)
    assert np.all(np.any(finite, axis=-1)), "a row is fully masked"
    assert np.all(np.abs(x[finite]) <= 1e4)
    if not masked:
        assert np.all(finite)


@FAST
@given(vt.logits(min_value=-3.5, max_value=0.1, dtype=np.float32, sizes=(3, 7)))
def test_logits_respect_custom_bounds_after_rounding(x):
    finite = x[np.isfinite(x)]
    assert np.all(finite >= -3.5) and np.all(finite <= 0.1)
    assert x.shape[-1] in (3, 7)


def test_logits_reach_the_hard_cases():
    s = vt.logits()
    find(s, lambda x: np.any(np.isneginf(x)), settings=FIND)
    find(s, lambda x: np.sum(np.isfinite(x)) == 1 and x.size > 1, settings=FIND)
    find(s, lambda x: np.max(np.abs(x[np.isfinite(x)])) >= 0.999e4, settings=FIND)
    find(s, lambda x: 0 < np.min(np.abs(x[np.isfinite(x)])) < 1e-3, settings=FIND)
    find(s, lambda x: np.unique(x).size < x.size and x.size >= 5, settings=FIND)  # ties
    # values spread over many decades within one row
    find(
        s,
        lambda x: np.ptp(np.log10(np.abs(x[np.isfinite(x) & (x != 0)]) + 1e-300)) > 6,
        settings=FIND,
    )


# --------------------------------------------------------------------------- distribution_pairs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("support", vt.SUPPORTS)
@FAST
@given(data=st.data())
def test_distribution_pairs_invariants(support, dtype, data):
    p, q = data.draw(vt.distribution_pairs(support=support, batch_shape=BUCKETS, dtype=dtype))
    assert p.shape == q.shape
    assert_in_buckets(p, SIZES, BUCKETS)
    assert_probability_rows(p, dtype)
    assert_probability_rows(q, dtype)
    if support == "shared":
        assert np.all(p > 0) and np.all(q > 0)
    if support == "nested":
        assert np.all((p == 0) | (q > 0)), "supp(p) is not inside supp(q)"
        assert np.all(np.any(p == 0, axis=-1))
    if support == "near":
        assert np.array_equal(p == 0, q == 0)
        pos = p > 0
        rel = np.abs(q[pos].astype(np.float64) / p[pos].astype(np.float64) - 1)
        assert np.all(rel <= 1e-3 + 4 * eps(dtype))


def test_partial_pairs_can_have_q_zero_where_p_positive():
    s = vt.distribution_pairs(support="partial")
    p, q = find(s, lambda pq: np.any((pq[1] == 0) & (pq[0] > 0)), settings=FIND)
    assert np.any((q == 0) & (p > 0))


def test_near_pairs_span_the_perturbation_decades():
    s = vt.distribution_pairs(support="near")

    def rel(pq):
        p, q = pq
        return np.max(np.abs(q[p > 0] / p[p > 0] - 1))

    find(s, lambda pq: rel(pq) < 1e-7, settings=FIND)
    find(s, lambda pq: rel(pq) > 1e-4, settings=FIND)


# --------------------------------------------------------------------------- temperatures


@FAST
@given(vt.temperatures())
def test_temperatures_within_bounds(t):
    assert type(t) is float
    assert 1e-30 <= t <= 1e30


@FAST
@given(vt.temperatures(min_value=0.5, max_value=4.0))
def test_temperatures_custom_bounds(t):
    assert 0.5 <= t <= 4.0


def test_temperatures_span_the_decades():
    s = vt.temperatures()
    assert find(s, lambda t: True, settings=FIND) == 1.0
    assert find(s, lambda t: t < 1e-20, settings=FIND) < 1e-20
    assert find(s, lambda t: t > 1e20, settings=FIND) > 1e20
    find(s, lambda t: t == 1e-30, settings=FIND)
    find(s, lambda t: t == 1e30, settings=FIND)
    find(s, lambda t: 1e-3 < t < 1e3 and t != 1.0, settings=FIND)


# --------------------------------------------------------------------------- joint tables


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", vt.JOINT_KINDS)
@FAST
@given(data=st.data())
def test_joint_tables_invariants(kind, dtype, data):
    table = data.draw(vt.joint_tables(kind=kind, dtype=dtype))
    assert table.dtype == np.dtype(dtype) and table.ndim == 2
    n_x, n_t = table.shape
    assert n_x in (2, 3, 5, 8) and n_t in (2, 3, 5, 8, 16)
    assert np.all(np.isfinite(table)) and np.all(table >= 0)
    assert abs(math.fsum(table.astype(np.float64).ravel()) - 1) <= table.size * eps(dtype)
    assert np.all(np.max(table, axis=1) >= np.finfo(dtype).tiny), "a row has zero marginal"
    if kind == "positive":
        assert np.all(table > 0)
    if kind == "sparse":
        assert np.all(np.any(table == 0, axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["any", "sparse", "one_hot_like"])
@FAST
@given(data=st.data())
def test_log_joint_rows_invariants(kind, dtype, data):
    lj = data.draw(vt.log_joint_rows(kind=kind, batch_shape=BUCKETS, dtype=dtype))
    assert lj.dtype == np.dtype(dtype)
    assert_in_buckets(lj, SIZES, BUCKETS)
    assert not np.any(np.isnan(lj)) and np.all(lj <= 0)
    assert np.all(np.any(np.isfinite(lj), axis=-1))
    mass = np.sum(np.exp(lj.astype(np.float64)), axis=-1)
    assert np.all(mass <= 1 + 2 * lj.shape[-1] * eps(dtype))
    if kind == "sparse":
        assert np.all(np.any(np.isneginf(lj), axis=-1))


def test_log_joint_rows_reach_the_hard_cases():
    s = vt.log_joint_rows()
    find(s, lambda lj: np.any(np.isneginf(lj)), settings=FIND)
    find(s, lambda lj: np.max(lj) < -1e3, settings=FIND)  # tiny evidence
    normalised = find(s, lambda lj: True, settings=FIND)  # log p(x) = 0
    assert abs(math.fsum(np.exp(normalised)) - 1) <= normalised.size * eps(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("support", ["covered", "any"])
@FAST
@given(data=st.data())
def test_belief_and_log_joint_invariants(support, dtype, data):
    q, lj = data.draw(
        vt.belief_and_log_joint(support=support, batch_shape=BUCKETS, dtype=dtype)
    )
    assert q.shape == lj.shape
    assert_in_buckets(q, SIZES, BUCKETS)
    assert_probability_rows(q, dtype)
    assert np.all(lj <= 0) and np.all(np.any(np.isfinite(lj), axis=-1))
    if support == "covered":
        assert np.all(q[np.isneginf(lj)] == 0)


def test_belief_and_log_joint_reach_the_hard_cases():
    s = vt.belief_and_log_joint(support="any")
    find(s, lambda ql: np.any((ql[0] > 0) & np.isneginf(ql[1])), settings=FIND)  # F = +inf
    find(s, lambda ql: np.any(ql[0] == 0) and np.all(np.isfinite(ql[1])), settings=FIND)
    # The simplest example is the equality case q = posterior, log p(x) = 0.
    q, lj = find(vt.belief_and_log_joint(), lambda ql: True, settings=FIND)
    np.testing.assert_allclose(np.log(q), lj, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "build",
    [
        lambda: vt.probability_vectors(kind="gaussian"),
        lambda: vt.probability_vectors(sizes=()),
        lambda: vt.probability_vectors(sizes=(2, 0)),
        lambda: vt.probability_vectors(sizes=(2.5,)),
        lambda: vt.probability_vectors(sizes=5),
        lambda: vt.probability_vectors(kind="sparse", sizes=(1, 2)),
        lambda: vt.probability_vectors(batch_shape=((), 4)),
        lambda: vt.probability_vectors(batch_shape=(0,)),
        lambda: vt.probability_vectors(dtype=np.int32),
        lambda: vt.probability_vectors(dtype="not a dtype"),
        lambda: vt.logits(min_value=1.0, max_value=-1.0),
        lambda: vt.logits(min_value=-np.inf),
        lambda: vt.logits(max_value=1e39, dtype=np.float32),
        lambda: vt.logits(masked="yes"),
        lambda: vt.distribution_pairs(support="disjoint"),
        lambda: vt.distribution_pairs(support="nested", sizes=(1, 2)),
        lambda: vt.temperatures(min_value=0.0),
        lambda: vt.temperatures(min_value=10.0, max_value=1.0),
        lambda: vt.temperatures(max_value=np.inf),
        lambda: vt.joint_tables(kind="dense"),
        lambda: vt.joint_tables(n_x_sizes=()),
        lambda: vt.log_joint_rows(min_log_evidence=1.0),
        lambda: vt.belief_and_log_joint(support="partial"),
        lambda: vt.belief_and_log_joint(kind="gaussian"),
    ],
)
def test_invalid_arguments_raise_when_the_strategy_is_built(build):
    with pytest.raises(InvalidArgument):
        build()


# --------------------------------------------------------------------------- compile buckets


def test_jitted_function_compiles_once_per_bucket_at_most():
    sizes, buckets = (2, 3, 5), ((), (4,))
    traces = []

    @jax.jit
    def total(p):
        traces.append(p.shape)  # runs only while tracing
        return jnp.sum(p, axis=-1)

    seen = []

    @settings(max_examples=50, deadline=None, database=None)
    @given(vt.probability_vectors(sizes=sizes, batch_shape=buckets))
    def run(p):
        seen.append(p.shape)
        total(p).block_until_ready()

    run()
    assert len(seen) >= 50
    assert len(traces) == len(set(traces)) <= len(sizes) * len(buckets)
