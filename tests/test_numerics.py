"""vfe._numerics: mul_no_nan, xlogy and kl_term against the oracle, and their derivative rules at
the edges (w = 0 with x = ±inf/NaN, p = 0). Tolerance: ``K · eps(dtype)``, ``K = 64``, relative."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracle as O
import strategies as S
from vfe import _numerics as nm




@pytest.mark.parametrize("dtype", S.FLOATS)
def test_mul_no_nan_and_xlogy_edges(dtype):
    w = jnp.asarray([0.0, 0.0, 0.0, 2.0], dtype)
    x = jnp.asarray([np.inf, -np.inf, np.nan, 3.0], dtype)
    assert np.array_equal(np.asarray(nm.mul_no_nan(w, x)), [0, 0, 0, 6])
    gw, gx = jax.grad(lambda a, b: jnp.sum(nm.mul_no_nan(a, b)), argnums=(0, 1))(w, x)
    assert np.all(np.isfinite(gw)) and np.array_equal(np.asarray(gx), [0, 0, 0, 2])
    p = jnp.asarray([0.0, 0.5, 1.0], dtype)
    out = nm.xlogy(p, p)
    assert float(out[0]) == 0.0 and float(out[2]) == 0.0
    g = jax.grad(lambda a: jnp.sum(nm.xlogy(a, a)))(p)
    assert float(g[0]) == -float(jnp.finfo(dtype).max)  # log 0 + 0 clamped
    assert float(nm.xlogy(jnp.asarray(1.0, dtype), jnp.asarray(0.0, dtype))) == -np.inf
    jf = jax.jacfwd(lambda a: nm.xlogy(a, a))(p)
    assert not np.isnan(np.asarray(jf)).any()


@pytest.mark.parametrize("dtype", S.FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_kl_term_matches_oracle(dtype, data):
    p, q = (S.cast(x, dtype) for x in (data.draw(S.probs(5)), data.draw(S.probs(5))))
    # d = log p - log q, from the oracle (rounded once): kl_term's contract is an accurate d
    d = np.array([[np.inf if b == 0 else (-np.inf if a == 0 else float(O.MP.log(O.mpf(a)) - O.MP.log(O.mpf(b))))
                   for a, b in zip(r1, r2)] for r1, r2 in zip(p, q)])
    got = np.asarray(nm.kl_term(jnp.asarray(p), jnp.asarray(q), jnp.asarray(S.cast(d, dtype))))
    exact = np.array([[O.kl_generalised([a], [b]) for a, b in zip(r1, r2)] for r1, r2 in zip(p, q)])
    # d is rounded once to dtype: each term is off by a relative few eps (the series / factor-10 path)
    O.assert_close(got, exact, O.rtol(dtype) * 16 * exact, "kl_term")
    assert np.all(got >= 0)


def test_compute_dtype_and_upcast():
    assert nm.compute_dtype(jnp.bfloat16) == jnp.float32
    assert nm.compute_dtype(jnp.float16) == jnp.float32
    assert nm.compute_dtype(jnp.float64) == jnp.float64
    assert nm.upcast(jnp.ones(2, jnp.bfloat16)).dtype == jnp.float32
    big = np.asarray(nm.finite_or_max(jnp.asarray([np.inf, -np.inf, np.nan], jnp.float32)))
    assert np.array_equal(big, [np.finfo(np.float32).max, -np.finfo(np.float32).max, 0.0])
