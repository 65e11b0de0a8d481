"""vfe.information against the 50-digit oracle, its accuracy claim for p ≈ q, its derivatives
at the edges (zeros, -inf masks, logits of 1e4) and its behaviour under jit/vmap/axis/shift.

Tolerances (stated once): an error is measured against the *scale of the terms* of each
quantity (given next to each test), and must be at most ``oracle.rtol(dtype, n) = K · n · eps(dtype)``
times that scale, with ``K = 64``: float64 ≈ 1.4e-14·n, float32 ≈ 7.6e-6·n. The accuracy claim
of KL for close distributions is tested against the claim's own numbers, relative to the
divergence itself: ``KL_RTOL``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import oracle as O
import strategies as S
import vfe

KL_RTOL = {np.float32: 1e-3, np.float64: 1e-10}  # the documented claim, relative to KL itself
FLOATS = S.FLOATS
W = S.ROW_WEIGHTS



def _abslog(x):
    with np.errstate(divide="ignore"):
        return np.where(x > 0, np.abs(np.log(np.where(x > 0, x, 1.0))), 0.0)


def _logit_magnitude(*zs):
    """Largest finite |logit| per row: a rounding of ``z_i - z_j`` is relative to it."""
    m = np.zeros(zs[0].shape[0])
    for z in zs:
        z = np.asarray(z, np.float64)
        m = np.maximum(m, np.max(np.where(np.isfinite(z), np.abs(z), 0.0), axis=-1))
    return m


def _j(x):
    return jnp.asarray(x)


# ============================================================================ against the oracle


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_entropy_matches_oracle(dtype, data):
    p = S.cast(data.draw(S.probs()), dtype)
    got = vfe.entropy(_j(p))
    assert got.dtype == dtype and got.shape == (S.BATCH,)
    pp = p.astype(np.float64)
    scale = np.sum(pp * (1 + _abslog(pp)), axis=-1)  # Σ p (1 + |log p|)
    O.assert_close(got, O.rowwise(O.entropy, p), O.rtol(dtype, p.shape[-1]) * scale, "entropy")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_cross_entropy_matches_oracle(dtype, data):
    n = data.draw(S.sizes())
    p = S.cast(data.draw(S.probs(n)), dtype)
    q = S.cast(data.draw(S.probs(n)), dtype)
    got = vfe.cross_entropy(_j(p), _j(q))
    assert got.dtype == dtype
    pp, qq = p.astype(np.float64), q.astype(np.float64)
    scale = np.sum(pp * (1 + _abslog(qq)), axis=-1)  # Σ p (1 + |log q|)
    O.assert_close(got, O.rowwise(O.cross_entropy, p, q), O.rtol(dtype, n) * scale, "cross_entropy")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_kl_divergence_matches_generalised_oracle(dtype, data):
    """Every term of the generalised KL is ≥ 0 and computed to a few ulps, so the error is
    relative to the divergence itself (zeros in p and q included; +inf where q = 0 < p)."""
    n = data.draw(S.sizes())
    p = S.cast(data.draw(S.probs(n)), dtype)
    q = data.draw(st.one_of(S.probs(n), st.just(None)))
    q = p.copy() if q is None else S.cast(q, dtype)
    got = vfe.kl_divergence(_j(p), _j(q))
    assert got.dtype == dtype
    exact = O.rowwise(O.kl_generalised, p, q)
    assert np.all(np.asarray(got) >= 0)
    O.assert_close(got, exact, O.rtol(dtype, n) * exact, "kl_divergence")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_entropy_from_logits_matches_oracle(dtype, data):
    z = S.cast(data.draw(S.logits()), dtype)
    n = z.shape[-1]
    got = vfe.entropy_from_logits(_j(z))
    assert got.dtype == dtype
    lp = O.rowwise(O.log_softmax, z)
    p = np.exp(lp)
    # log p_i carries an error eps·(|log p_i| + log n); each term's slope is (1 + |log p_i|)
    scale = np.sum(p * (1 + np.abs(np.where(p > 0, lp, 0))) * (1 + np.abs(np.where(p > 0, lp, 0)) + np.log(n)), -1)
    O.assert_close(got, O.rowwise(O.entropy_from_logits, z), O.rtol(dtype, n) * scale, "entropy_from_logits")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_cross_entropy_from_logits_matches_oracle(dtype, data):
    n = data.draw(S.sizes())
    p = S.cast(data.draw(S.probs(n)), dtype)
    z = S.cast(data.draw(S.logits(n)), dtype)
    got = vfe.cross_entropy_from_logits(_j(p), _j(z))
    assert got.dtype == dtype
    lq = O.rowwise(O.log_softmax, z)
    pp = p.astype(np.float64)
    scale = np.sum(np.where(pp > 0, pp * (1 + np.abs(np.where(np.isfinite(lq), lq, 0)) + np.log(n)), 0.0), -1)
    O.assert_close(got, O.rowwise(O.cross_entropy_from_logits, p, z), O.rtol(dtype, n) * scale,
                   "cross_entropy_from_logits")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_cross_entropy_with_integer_labels_matches_oracle(dtype, data):
    n = data.draw(S.sizes())
    z = S.cast(data.draw(S.logits(n)), dtype)
    y = data.draw(S.labels(n))
    got = vfe.cross_entropy_with_integer_labels(_j(z), _j(y))
    assert got.dtype == dtype
    exact = np.array([O.nll(z[i], y[i]) for i in range(S.BATCH)])
    O.assert_close(got, exact, O.rtol(dtype, n) * (1 + np.abs(exact) + np.log(n)), "nll")


def _kl_logits_scale(a, b, exact):
    """KL's slope in d_i is p_i - q_i; d_i is rounded relative to the logits' magnitude, and so are
    p and q themselves (``e^{a - lse(a)}`` carries the absolute rounding of ``lse(a)`` as a relative
    error), which scales every term of KL: ``m·(|KL| + Σ|p - q|)``."""
    p, q = np.exp(O.rowwise(O.log_softmax, a)), np.exp(O.rowwise(O.log_softmax, b))
    m = 1 + 4 * _logit_magnitude(a, b) + np.log(a.shape[-1])
    # + 1e-90: the 100-digit oracle's own resolution (its d is a rounding residue ~1e-100 when the
    # two rows differ by a constant, giving KL ~1e-200 where the truth is 0)
    return (np.where(np.isfinite(exact), np.abs(exact), 0) + np.sum(np.abs(p - q), -1)) * m + 1e-90


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_kl_divergence_from_logits_matches_oracle(dtype, data):
    n = data.draw(S.sizes())
    a = S.cast(data.draw(S.logits(n)), dtype)
    b = S.cast(data.draw(S.logits(n)), dtype)
    got = vfe.kl_divergence_from_logits(_j(a), _j(b))
    assert got.dtype == dtype
    exact = O.rowwise(O.kl_from_logits, a, b)
    assert np.all(np.asarray(got) >= 0)
    # + tiny: a KL below the dtype's normal range (e.g. e^-156 in float32) is not representable
    tol = O.rtol(dtype, n) * _kl_logits_scale(a, b, exact) + float(np.finfo(dtype).tiny)
    O.assert_close(got, exact, tol, "kl_divergence_from_logits")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(x=S.logits(scales=(1.0, 30.0), masks=False))
def test_units_and_perplexity_match_oracle(dtype, x):
    x = S.cast(np.abs(x), dtype)
    n = x.shape[-1]
    ln2 = float(O.MP.log(2))
    exact_bits = np.array([[float(O.mpf(v) / O.MP.log(2)) for v in r] for r in x])
    exact_nats = np.array([[float(O.mpf(v) * O.MP.log(2)) for v in r] for r in x])
    exact_ppl = np.array([[float(O.MP.exp(O.mpf(v))) for v in r] for r in x])
    r = O.rtol(dtype, 1)
    tiny = float(np.finfo(dtype).tiny)  # below it results are subnormal: absolute error only
    O.assert_close(vfe.nats_to_bits(_j(x)), exact_bits, r * np.abs(exact_bits) + tiny, "nats_to_bits")
    O.assert_close(vfe.bits_to_nats(_j(x)), exact_nats, r * np.abs(exact_nats) + tiny, "bits_to_nats")
    # exp amplifies the input's rounding by |x|: relative error eps·(1 + |x|)
    O.assert_close(vfe.perplexity(_j(x)), exact_ppl, r * (1 + x.astype(np.float64)) * exact_ppl, "perplexity")
    assert vfe.perplexity(_j(x)).dtype == dtype and ln2 > 0 and n > 0
    assert float(vfe.perplexity(jnp.asarray(np.inf, dtype))) == np.inf


def test_cross_entropy_equals_entropy_plus_kl():
    """Claim A1 on a concrete pair (with a zero in p): H(p, q) = H(p) + KL(p‖q)."""
    p = np.array([0.5, 0.0, 0.25, 0.25])
    q = np.array([0.1, 0.2, 0.3, 0.4])
    lhs = float(vfe.cross_entropy(p, q))
    rhs = float(vfe.entropy(p) + vfe.kl_divergence(p, q))
    assert abs(lhs - rhs) <= O.rtol(np.float64, 4) * (abs(lhs) + 1)


# ============================================================================ accuracy claim, p ≈ q


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(pair=S.close_pair())
def test_kl_divergence_accurate_and_non_negative_for_close_distributions(dtype, pair):
    p, q = (S.cast(x, dtype) for x in pair)
    got = np.asarray(vfe.kl_divergence(_j(p), _j(q)), np.float64)
    exact = O.rowwise(O.kl_generalised, p, q)  # on the exact cast inputs
    assert np.all(got >= 0), got
    O.assert_close(got, exact, KL_RTOL[dtype] * exact, "kl_divergence, p ≈ q")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(pair=S.close_pair())
def test_kl_divergence_from_logits_accurate_and_non_negative_for_close_distributions(dtype, pair):
    a, b = (S.cast(np.log(x), dtype) for x in pair)
    got = np.asarray(vfe.kl_divergence_from_logits(_j(a), _j(b)), np.float64)
    exact = O.rowwise(O.kl_from_logits, a, b)
    assert np.all(got >= 0), got
    O.assert_close(got, exact, KL_RTOL[dtype] * exact, "kl_divergence_from_logits, p ≈ q")


def test_naive_kl_goes_negative_in_float32_where_vfe_does_not():
    """The problem the design solves: Σ p log(p/q) in float32 for p ≈ q (relative 1e-6) is the
    small difference of rounded terms and comes out negative; vfe's stays ≥ 0 and accurate."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(16), size=64)
    q = p * (1 + 1e-6 * rng.uniform(-1, 1, size=p.shape))
    q /= q.sum(-1, keepdims=True)
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    naive = np.asarray(jnp.sum(p32 * jnp.log(p32 / q32), axis=-1))
    assert naive.dtype == np.float32 and np.any(naive < 0), naive
    ours = np.asarray(vfe.kl_divergence(p32, q32), np.float64)
    exact = O.rowwise(O.kl_generalised, p32, q32)
    assert np.all(ours >= 0)
    O.assert_close(ours, exact, KL_RTOL[np.float32] * exact, "kl_divergence float32")
    naive_err = np.max(np.abs(naive - exact) / exact)
    assert naive_err > KL_RTOL[np.float32]  # the naive form misses the claim that vfe meets


# ============================================================================ derivatives

N = S.DERIV_SIZE


def _draw_args(name, data, dtype, edge):
    """Arguments of case ``name``: edge cases (zeros, masks, 1e4 logits, ties) or interior points."""
    if edge:
        pr, lg = S.probs(N), S.logits(N)
    else:
        pr, lg = S.probs(N, zeros=False, min_log=-8.0), S.logits(N, masks=False, scales=(1.0, 5.0))
    c = lambda x: S.cast(x, dtype)  # noqa: E731
    if name in ("entropy",):
        return (c(data.draw(pr)),)
    if name in ("cross_entropy", "kl_divergence"):
        return c(data.draw(pr)), c(data.draw(pr))
    if name == "entropy_from_logits":
        return (c(data.draw(lg)),)
    if name == "cross_entropy_from_logits":
        return c(data.draw(pr)), c(data.draw(lg))
    if name == "nll":
        return c(data.draw(lg)), data.draw(S.labels(N))
    if name == "kl_divergence_from_logits":
        return c(data.draw(lg)), c(data.draw(lg))
    raise KeyError(name)


FUNCS = {
    "entropy": (vfe.entropy, (0,)),
    "cross_entropy": (vfe.cross_entropy, (0, 1)),
    "kl_divergence": (vfe.kl_divergence, (0, 1)),
    "entropy_from_logits": (vfe.entropy_from_logits, (0,)),
    "cross_entropy_from_logits": (vfe.cross_entropy_from_logits, (0, 1)),
    "nll": (vfe.cross_entropy_with_integer_labels, (0,)),
    "kl_divergence_from_logits": (vfe.kl_divergence_from_logits, (0, 1)),
}
GRADS = {k: jax.jit(jax.grad(lambda *a, f=f: jnp.sum(W * f(*a)), argnums=nums)) for k, (f, nums) in FUNCS.items()}
JACS = {k: jax.jit(jax.jacfwd(f, argnums=nums)) for k, (f, nums) in FUNCS.items()}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_derivatives_are_finite_at_the_edges(name, dtype, data):
    args = _draw_args(name, data, dtype, edge=True)
    f, nums = FUNCS[name]
    value = f(*args)
    for g in GRADS[name](*args):
        O.assert_derivative_finite(value, g, f"grad {name}")
    for jac in JACS[name](*args):
        O.assert_derivative_finite(value, jac, f"jacfwd {name}")


def _row_grads(name, args):
    """The oracle's analytic derivative for every row, stacked to the input's shape."""
    rows = range(S.BATCH)
    a = [np.asarray(x, np.float64) for x in args]
    if name == "entropy":
        return (-(np.log(a[0]) + 1),)
    if name == "cross_entropy":
        return -np.log(a[1]), -a[0] / a[1]
    if name == "kl_divergence":
        d = [O.d_kl_generalised(a[0][i], a[1][i]) for i in rows]
        return np.stack([x[0] for x in d]), np.stack([x[1] for x in d])
    if name == "entropy_from_logits":
        return (O.rowwise(O.d_entropy_from_logits, a[0]),)
    if name == "cross_entropy_from_logits":
        lq = O.rowwise(O.log_softmax, a[1])
        return -lq, a[0].sum(-1, keepdims=True) * np.exp(lq) - a[0]
    if name == "nll":
        return (np.exp(O.rowwise(O.log_softmax, a[0])) - np.eye(N)[np.asarray(args[1])],)
    if name == "kl_divergence_from_logits":
        d = [O.d_kl_from_logits(a[0][i], a[1][i]) for i in rows]
        return np.stack([x[0] for x in d]), np.stack([x[1] for x in d])
    raise KeyError(name)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_derivatives_match_oracle_at_interior_points(name, dtype, data):
    """∂H/∂p = -(log p + 1), ∂H/∂z = -p(log p + H), ∂KL/∂a = p(d - KL), ∂KL/∂b = q - p, ...

    Interior points (no zeros, no masks, logits ≤ 5) keep the derivatives O(1)·(1 + |log p|),
    so the scale is 1 + max|log p|."""
    args = _draw_args(name, data, dtype, edge=False)
    grads = GRADS[name](*args)
    exact = _row_grads(name, args)
    big = max(np.max(np.abs(x)) for x in exact)
    for g, e in zip(grads, exact):
        O.assert_close(g, W[:, None] * e, O.rtol(dtype, N) * (1 + big), f"d {name}")


@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(max_examples=S.examples(3))
@given(data=st.data())
def test_check_grads_float64_interior(name, data):
    """Finite differences (jax.test_util.check_grads defaults for float64), fwd and rev."""
    args = _draw_args(name, data, np.float64, edge=False)
    f, nums = FUNCS[name]
    if name == "nll":
        check_grads(lambda z: f(z, args[1]), args[:1], order=1, modes=("fwd", "rev"))
    else:
        # Step 1e-7: the central difference's truncation error relative to the slope is about
        # (step / p_min)^2 / 3 ≈ 1e-6 for the smallest interior probability p_min ≈ e^-8 / n,
        # below check_grads' float64 tolerance 2e-5 (a step of 1e-6 gave 1e-4 on such draws).
        check_grads(f, args, order=1, modes=("fwd", "rev"), eps=1e-7)


@settings(max_examples=S.examples(20))
@given(data=st.data())
def test_masked_logits_equal_logits_clipped_to_minus_1e30(data):
    """A -inf logit is the limit of a very negative one: same value and gradient at -1e30 (float64)."""
    z = data.draw(S.logits(N, scales=(1.0, 30.0, 1e4)))
    b = data.draw(S.logits(N, masks=False))
    b = np.where(np.isneginf(z), -np.inf, b)  # KL finite: b masked wherever a is
    p = np.where(np.isneginf(z), 0.0, data.draw(S.probs(N, zeros=False)))
    p /= p.sum(-1, keepdims=True)
    clip = lambda x: np.maximum(x, -1e30)  # noqa: E731
    y = np.argmax(z, axis=-1).astype(np.int32)
    cases = {
        "entropy_from_logits": ((z,), (clip(z),), (0,)),
        # ∂/∂p at a masked logit is -log q = +inf (reported as finfo.max): compare ∂/∂logits only
        "cross_entropy_from_logits": ((p, z), (p, clip(z)), (1,)),
        "nll": ((z, y), (clip(z), y), (0,)),
        "kl_divergence_from_logits": ((z, b), (clip(z), clip(b)), (0, 1)),
    }
    # both sides round the differences of logits to eps * (their magnitude), as in the oracle tests;
    # so do the gradients built from them (p (log p - log q - KL) with logits of 1e4: 8e-14 was seen)
    m = 1 + 4 * _logit_magnitude(z, b)
    for name, (masked, clipped, which) in cases.items():
        f, _ = FUNCS[name]
        vm, vc = np.asarray(f(*masked)), np.asarray(f(*clipped))
        O.assert_close(vm, vc, O.rtol(np.float64, N) * (1 + np.abs(vc)) * m, f"value {name}")
        gms, gcs = GRADS[name](*masked), GRADS[name](*clipped)
        for gm, gc in (x for i, x in enumerate(zip(gms, gcs)) if i in which):
            O.assert_close(gm, gc, O.rtol(np.float64, N) * (1 + np.max(np.abs(gc))) * m[:, None], f"grad {name}")


# ============================================================================ transformations


def _draw_for_transform(name, data, dtype, shape):
    if name in ("entropy", "cross_entropy", "kl_divergence"):
        arrs = [data.draw(S.probs(shape[-1], batch=int(np.prod(shape[:-1])))).reshape(shape)
                for _ in range(1 if name == "entropy" else 2)]
    elif name == "cross_entropy_from_logits":
        arrs = [data.draw(S.probs(shape[-1], batch=int(np.prod(shape[:-1])))).reshape(shape),
                data.draw(S.logits(shape[-1], batch=int(np.prod(shape[:-1])))).reshape(shape)]
    else:
        k = 1 if name == "entropy_from_logits" else 2
        arrs = [data.draw(S.logits(shape[-1], batch=int(np.prod(shape[:-1])))).reshape(shape) for _ in range(k)]
    return [S.cast(a, dtype) for a in arrs]


REDUCERS = [k for k in FUNCS if k != "nll"]


def _scale_tol(dtype, out, n, mag=1.0):
    return O.rtol(dtype, n) * (1 + np.abs(np.where(np.isfinite(out), out, 0))) * mag


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", REDUCERS)
@settings(max_examples=S.examples(4))
@given(data=st.data())
def test_jit_vmap_and_axis_transformations(name, dtype, data):
    """jit ≡ eager (disable_jit), vmap over rows ≡ the batched call, axis=k ≡ moveaxis to -1."""
    f, _ = FUNCS[name]
    shape = (2, 3, 5)
    args = _draw_for_transform(name, data, dtype, shape)
    ref = np.asarray(f(*args))
    # logits of 1e4 make every result's absolute error relative to 1e4
    mag = 1 + _logit_magnitude(*[a.reshape(-1, 5) for a in args]).max()
    tol = _scale_tol(dtype, ref, 5, mag)
    O.assert_close(jax.jit(f)(*args), ref, tol, f"jit {name}")
    with jax.disable_jit():
        O.assert_close(f(*args), ref, tol, f"eager {name}")
    O.assert_close(jax.vmap(f)(*args), ref, tol, f"vmap {name}")
    for axis in (0, 1, -1):
        moved = [np.moveaxis(a, -1, axis) for a in args]
        O.assert_close(f(*moved, axis=axis), ref, tol, f"axis={axis} {name}")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_nll_transformations(dtype, data):
    z = S.cast(data.draw(S.logits(5, batch=6)).reshape(2, 3, 5), dtype)
    y = np.asarray(data.draw(S.labels(5, batch=6))).reshape(2, 3)
    f = vfe.cross_entropy_with_integer_labels
    ref = np.asarray(f(z, y))
    tol = _scale_tol(dtype, ref, 5, 1 + _logit_magnitude(z.reshape(-1, 5)).max())
    O.assert_close(jax.jit(f)(z, y), ref, tol, "jit nll")
    O.assert_close(jax.vmap(f)(z, y), ref, tol, "vmap nll")
    for axis in (0, 1, -1):
        O.assert_close(f(np.moveaxis(z, -1, axis), y, axis=axis), ref, tol, f"axis={axis} nll")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data(), shift=st.integers(-80_000, 80_000))
def test_logits_functions_are_shift_invariant(dtype, data, shift):
    """Adding c to a row of logits changes nothing. Logits and c lie on a 1/8 grid with
    |z + c| < 2^17, so z + c is exact in float32 and both calls see the same distribution."""
    n = data.draw(S.sizes())
    z = np.round(8 * data.draw(S.logits(n))) / 8
    b = np.round(8 * data.draw(S.logits(n))) / 8
    p = data.draw(S.probs(n))
    y = data.draw(S.labels(n))
    c = shift / 8
    z, b, zc, bc, p = (S.cast(x, dtype) for x in (z, b, z + c, b - c, p))
    mag = 1 + _logit_magnitude(zc, bc, z, b)
    for name, args, shifted in [
        ("entropy_from_logits", (z,), (zc,)),
        ("cross_entropy_from_logits", (p, z), (p, zc)),
        ("nll", (z, y), (zc, y)),
        ("kl_divergence_from_logits", (z, b), (zc, bc)),
    ]:
        f, _ = FUNCS[name]
        v0, v1 = np.asarray(f(*args)), np.asarray(f(*shifted))
        O.assert_close(v1, v0, 2 * _scale_tol(dtype, v0, n, mag), f"shift {name}")


# ============================================================================ low precision


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(max_examples=S.examples(4))
@given(data=st.data())
def test_low_precision_inputs_reduce_in_float32(name, low, data):
    """bfloat16/float16 inputs are accepted and give the float32 result of the upcast inputs."""
    n = S.DERIV_SIZE
    if name == "nll":
        args = [np.asarray(data.draw(S.logits(n, scales=(1.0, 30.0)))).astype(low), data.draw(S.labels(n))]
    else:
        args = [a.astype(low) for a in _draw_for_transform(name, data, np.float64, (S.BATCH, n))]
    f, _ = FUNCS[name]
    got = f(*[jnp.asarray(a) for a in args])
    up = [a if np.asarray(a).dtype.kind in "iu" else np.asarray(a, np.float32) for a in args]
    ref = np.asarray(f(*up))
    assert got.dtype == jnp.float32, got.dtype
    mag = 1 + _logit_magnitude(*[a for a in up if a.dtype.kind == "f"])[:, None].max()
    O.assert_close(got, ref, _scale_tol(np.float32, ref, n, mag), f"{low.__name__} {name}")


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
def test_low_precision_units(low):
    x = jnp.asarray([0.5, 2.0, 3.0], low)
    for f in (vfe.perplexity, vfe.nats_to_bits, vfe.bits_to_nats):
        got = f(x)
        assert got.dtype == jnp.float32
        ref = np.asarray(f(np.asarray(x, np.float32)))
        O.assert_close(got, ref, O.rtol(np.float32, 1) * np.abs(ref), f.__name__)


def test_float64_kl_terms_are_accurate_where_xla_log1p_is_not():
    """XLA:CPU's float64 log1p is up to ~128 ulps off on [-0.5, -0.3]; KL terms with q/p in that
    range (and around it) must still be accurate to a few ulps (checked against mpmath)."""
    p = np.full(2001, 0.37)
    q = p * np.linspace(0.4, 1.6, p.size)
    got = np.asarray(vfe.kl_divergence(_j(p[:, None]), _j(q[:, None])), np.float64)
    exact = O.rowwise(O.kl_generalised, p[:, None], q[:, None])
    O.assert_close(got, exact, 4e-15 * exact, "kl_divergence, q/p in [0.4, 1.6]")
