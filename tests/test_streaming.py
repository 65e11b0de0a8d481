"""vfe.streaming against the 50-digit oracle and against vfe.information / vfe.thermodynamics, for
every implementation (several vocabulary blocks, whole rows, the one-pass variadic reduction),
its derivatives, its edge cases, its low-precision accuracy and its memory on XLA:CPU.

Tolerances are those of tests/test_information.py and tests/test_thermodynamics.py (``oracle.rtol``
times the scale of the terms, stated next to each test): the streamed functions are held to the
same accuracy as the reference implementations.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import oracle as O
import pytest
import strategies as S
from hypothesis import given, settings
from hypothesis import strategies as st

import vfe
from vfe import streaming as ST
from vfe.streaming import Rows

FLOATS = S.FLOATS
W = S.ROW_WEIGHTS
BLOCKS = {2: 1, 5: 5, 16: 4, 6: 3}  # blocked rows: several blocks where n allows (5 is prime: one block)
ONEPASS = ("logsumexp", "nll", "entropy")
NAMES = ("logsumexp", "nll", "entropy", "soft_ce", "kl", "kl_direct", "log_partition", "helmholtz")
KL = ("kl", "kl_direct")  # the two formulas of kl_divergence_from_logits


def _impls(name):
    return ("blocked", "fused", "onepass") if name in ONEPASS else ("blocked", "fused")


VARIANTS = [(name, impl) for name in NAMES for impl in _impls(name)]
# "fused" is "blocked" without the blocks and barriers: float64 suffices for it (it shares every formula)
TYPED_VARIANTS = [(name, impl, dtype) for name, impl in VARIANTS for dtype in FLOATS
                  if impl != "fused" or dtype == np.float64]


def _rows(impl, n):
    return Rows(impl, BLOCKS.get(n, n) if impl == "blocked" else n)


# The custom-VJP kernels on the last axis, called with an explicit Rows (small blocks), so that
# the multi-block paths are exercised on the small shapes the oracle can afford.
KERNELS = {
    "logsumexp": lambda rows, z: ST._lse(z, rows),
    "nll": lambda rows, z, y: ST._nll(z, y, rows),
    "entropy": lambda rows, z: ST._entropy_vjp(z, rows),
    "soft_ce": lambda rows, p, z: ST._soft_ce_vjp(p, z, rows),
    "kl": lambda rows, a, b: ST._kl_vjp(a, b, rows, "accurate"),
    "kl_direct": lambda rows, a, b: ST._kl_vjp(a, b, rows, "direct"),
    "log_partition": lambda rows, e, b: ST._thermo_vjp(e, b, rows, ST.BETA),
    "helmholtz": lambda rows, e, t: ST._thermo_vjp(e, t, rows, ST.TEMPERATURE),
}
DIFF = {"logsumexp": (1,), "nll": (1,), "entropy": (1,), "soft_ce": (1, 2), "kl": (1, 2), "kl_direct": (1, 2),
        "log_partition": (1, 2), "helmholtz": (1, 2)}
VALUE = {k: jax.jit(f, static_argnums=0) for k, f in KERNELS.items()}
GRAD = {k: jax.jit(jax.grad(lambda rows, *a, f=f: jnp.sum(jnp.asarray(W, jnp.result_type(a[0], jnp.float32))
                                                          * f(rows, *a)), argnums=DIFF[k]), static_argnums=0)
        for k, f in KERNELS.items()}
PUBLIC = {
    "logsumexp": ST.logsumexp, "nll": ST.cross_entropy_with_integer_labels, "entropy": ST.entropy_from_logits,
    "soft_ce": ST.cross_entropy_from_logits, "kl": ST.kl_divergence_from_logits,
    "kl_direct": functools.partial(ST.kl_divergence_from_logits, formula="direct"),
    "log_partition": ST.log_partition, "helmholtz": ST.helmholtz_free_energy,
}


def public_args(z, labels, p, other, scale, energies=None):
    """Each PUBLIC function's arguments: logits ``z`` (and ``labels``, target probabilities ``p``, the
    KL's second logits ``other``); log Z and F take ``energies`` (default ``z``) and ``scale``."""
    e = z if energies is None else energies
    return {"logsumexp": (z,), "nll": (z, labels), "entropy": (z,), "soft_ce": (p, z), "kl": (z, other),
            "kl_direct": (z, other), "log_partition": (e, scale), "helmholtz": (e, scale)}


REFERENCE = {
    "logsumexp": lambda z: jax.nn.logsumexp(z, axis=-1), "nll": vfe.cross_entropy_with_integer_labels,
    "entropy": vfe.entropy_from_logits, "soft_ce": vfe.cross_entropy_from_logits,
    "kl": vfe.kl_divergence_from_logits, "kl_direct": vfe.kl_divergence_from_logits, "log_partition": vfe.log_partition,
    "helmholtz": vfe.helmholtz_free_energy,
}


def _abs_finite(x):
    return np.abs(O.finite_part(np.asarray(x, np.float64)))


def _magnitude(*xs):
    """Largest finite |entry| per row."""
    return np.max(np.stack([np.max(_abs_finite(x), axis=-1) for x in xs]), axis=0)


def _spread(*xs):
    """Largest span ``max - min`` of a row's finite entries: what ``log softmax`` rounds in proportion to,
    unlike ``_magnitude`` it does not grow with an offset added to the whole row."""
    def span(x):
        x = np.asarray(x, np.float64)
        finite = np.isfinite(x)
        return np.max(np.where(finite, x, -np.inf), -1) - np.min(np.where(finite, x, np.inf), -1)
    return np.max(np.stack([span(x) for x in xs]), axis=0)


KL_OFFSETS = (0.0, 5.0, -1e3, 1e4)  # added to a whole row of logits: softmax does not change
# the oracle's own floor for KL: it resolves log p - log q to 100 digits, and KL ≈ Σ p d²/2 (e.g.
# 4e-202 for two uniform rows that differ by an offset, where KL is 0)
ORACLE_KL_FLOOR = 1e-190


def _draw(name, data, dtype, n, *, edge=True, batch=S.BATCH):
    """Arguments of ``name`` (float64 values cast to ``dtype``): masks, ties, logits up to 1e4,
    β = 0 and T ∈ [1e-30, 1e30] when ``edge``; interior points otherwise."""
    c = lambda x: S.cast(x, dtype)
    if edge:
        lg, pr = S.logits(n, batch=batch), S.probs(n, batch=batch)
        ts, bs = S.temperatures(batch=batch), S.betas(batch=batch)
    else:
        lg, pr = S.logits(n, masks=False, scales=(1.0, 3.0), batch=batch), S.probs(n, zeros=False, min_log=-6.0,
                                                                                     batch=batch)
        ts, bs = S.temperatures(0.5, 2.0, batch=batch), S.betas(0.5, 2.0, zero=False, batch=batch)
    if name in ("logsumexp", "entropy"):
        return (c(data.draw(lg)),)
    if name == "nll":
        return c(data.draw(lg)), data.draw(S.labels(n, batch=batch))
    if name == "soft_ce":
        return c(data.draw(pr)), c(data.draw(lg))
    if name in KL:  # each tensor offset: the error must not grow with the offsets (_oracle_and_scale)
        offsets = st.sampled_from(KL_OFFSETS) if edge else st.just(0.0)
        return c(data.draw(lg) + data.draw(offsets)), c(data.draw(lg) + data.draw(offsets))
    if name == "log_partition":
        return c(-data.draw(lg)), c(data.draw(bs))
    if name == "helmholtz":
        return c(-data.draw(lg)), c(data.draw(ts))
    raise KeyError(name)


def _takes_direct_sum(a, b, dtype):
    """Rows on which the accurate KL form falls back to the direct sum (its documented rule): some
    ``x_i = a_i - b_i - (lse a - lse b)`` near or past the overflow of ``n e^x`` (the sums carry the
    factor ``s_b ≤ n``) — a class that only ``b`` masks, or one both mask when ``lse b - lse a`` is
    that large."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ref = (O.rowwise(O.log_evidence, a) - O.rowwise(O.log_evidence, b))[:, None]
    ma, mb = np.isneginf(a64), np.isneginf(b64)
    with np.errstate(invalid="ignore"):
        x = np.where(ma & mb, -ref, np.where(ma, -np.inf, np.where(mb, np.inf, (a64 - b64) - ref)))
    return np.any(x > np.log(np.finfo(dtype).max) - 5 - np.log(a64.shape[-1]), axis=-1)


def _oracle_and_scale(name, args, dtype):
    """The 50-digit value of each row and the scale its rounding is measured against."""
    n = args[0].shape[-1]
    if name == "logsumexp":
        (z,) = args
        exact = O.rowwise(O.log_evidence, z)
        return exact, 1 + _magnitude(z) + np.log(n)
    if name == "nll":
        z, y = args
        exact = np.array([O.nll(z[i], y[i]) for i in range(z.shape[0])])
        return exact, 1 + np.abs(O.finite_part(exact)) + np.log(n) + _magnitude(z)
    if name == "entropy":
        (z,) = args
        lp = O.rowwise(O.log_softmax, z)
        p, alp = np.exp(lp), np.abs(np.where(np.isfinite(lp), lp, 0))
        return O.rowwise(O.entropy_from_logits, z), np.sum(p * (1 + alp) * (1 + alp + np.log(n)), -1)
    if name == "soft_ce":
        p, z = args
        lq = O.rowwise(O.log_softmax, z)
        pp = p.astype(np.float64)
        scale = np.sum(np.where(pp > 0, pp * (1 + np.abs(np.where(np.isfinite(lq), lq, 0)) + np.log(n)), 0), -1)
        return O.rowwise(O.cross_entropy_from_logits, p, z), scale
    if name in KL:
        a, b = args
        exact = O.rowwise(O.kl_from_logits, a, b)
        p, q = np.exp(O.rowwise(O.log_softmax, a)), np.exp(O.rowwise(O.log_softmax, b))
        # the naive formula's scale: log softmax rounds in proportion to the span of each row's
        # logits, not to their offset (nor to the offset between a and b: _draw adds both)
        m = 1 + 2 * _spread(a, b) + np.log(n)
        # the accurate form rounds in proportion to how far p is from q; the definition (the
        # direct formula) rounds the log-normalisers whatever p and q, like the naive formula
        # (p and q carry the rounding of the log-normalisers as a relative error: m·|KL|)
        far = np.where(_takes_direct_sum(a, b, dtype), 1.0, np.sum(np.abs(p - q), -1)) if name == "kl" else 1.0
        return exact, (np.where(np.isfinite(exact), np.abs(exact), 0) + far) * m + ORACLE_KL_FLOOR / O.rtol(dtype, n)
    if name == "log_partition":
        e, b = args
        exact = O.rowwise(O.log_partition, e, extra=(b,))
        return exact, np.abs(b.astype(np.float64)) * _magnitude(e) + 1 + np.log(n)
    if name == "helmholtz":
        e, t = args
        exact = O.rowwise(O.helmholtz, e, extra=(t,))
        return exact, _magnitude(e) + t.astype(np.float64) * (1 + np.log(n))
    raise KeyError(name)


def check_against_oracle(fn, name, args, dtype, what):
    """``fn(*args)`` has the promoted dtype and matches the oracle to ``rtol(dtype, n)·scale``."""
    got = fn(*args)
    assert got.dtype == jnp.promote_types(dtype, jnp.float32), got.dtype
    exact, scale = _oracle_and_scale(name, args, dtype)
    O.assert_close(got, exact, O.rtol(dtype, args[0].shape[-1]) * scale, what)
    if name in KL:
        assert np.all(np.asarray(got) >= 0)


# ============================================================================ values


@pytest.mark.parametrize("name,impl,dtype", TYPED_VARIANTS, ids=str)
@settings(max_examples=S.examples(4))
@given(data=st.data())
def test_every_implementation_matches_the_oracle(name, impl, dtype, data):
    """Rows of 16 classes: four blocks of 4 for "blocked" (whole rows of every size are covered
    by the public functions' test below)."""
    n = 16
    args = _draw(name, data, dtype, n)
    rows = _rows(impl, n)
    check_against_oracle(lambda *a: VALUE[name](rows, *a), name, args, dtype, f"{name} {rows}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=S.examples(4))
@given(data=st.data())
def test_public_functions_match_the_oracle_and_the_reference_implementation(name, dtype, data):
    """The public functions (backend-default implementation, rows of 5) agree with the oracle, and with
    vfe.information / vfe.thermodynamics on the same inputs (masks, ties, 1e4 logits, β = 0, T → 0/∞)."""
    n = 5
    args = _draw(name, data, dtype, n)
    check_against_oracle(PUBLIC[name], name, args, dtype, name)
    _, scale = _oracle_and_scale(name, args, dtype)
    ours, ref = np.asarray(PUBLIC[name](*args), np.float64), np.asarray(REFERENCE[name](*args), np.float64)
    O.assert_close(ours, ref, 2 * O.rtol(dtype, n) * scale, f"{name} vs reference")


KL_RTOL = {np.float32: 1e-3, np.float64: 1e-10}  # the claim of vfe.kl_divergence_from_logits, relative to KL


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("impl", ["blocked", "fused"])
@settings(max_examples=S.examples(10))
@given(pair=S.close_pair(16), offsets=st.tuples(*[st.sampled_from(KL_OFFSETS)] * 2))
def test_kl_is_accurate_and_non_negative_for_close_distributions(impl, dtype, pair, offsets):
    """p ≈ q (relative 1e-6): relative error below 1e-3 (float32) / 1e-10 (float64) of KL itself,
    as for vfe.kl_divergence_from_logits, where Σ p log(p/q) is mostly rounding noise — also with
    the logits of each offset (then ``a_i - b_i`` rounds by up to ``eps·|offset|``, which this form
    carries exactly: without that, an offset of 5 in float32 gave an error as large as KL, 1e4 one
    1e5 times KL)."""
    a, b = (S.cast(np.log(x) + shift, dtype) for x, shift in zip(pair, offsets))
    got = np.asarray(VALUE["kl"](_rows(impl, 16), a, b), np.float64)
    exact = O.rowwise(O.kl_from_logits, a, b)
    assert np.all(got >= 0), got
    O.assert_close(got, exact, KL_RTOL[dtype] * exact + ORACLE_KL_FLOOR, f"KL, p ≈ q, offsets {offsets}, {impl}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["kl", "kl_direct", "vfe.information"])
@settings(max_examples=S.examples(6))
@given(data=st.data(), offsets=st.tuples(st.sampled_from(KL_OFFSETS[1:]), st.sampled_from(KL_OFFSETS)))
def test_kl_error_is_no_worse_than_the_naive_formulas_with_offset_logits(name, dtype, data, offsets):
    """The issue's accuracy bar, literally: logits of a few units (``b`` near ``a``) plus an offset per
    tensor (softmax unchanged); the error against the oracle is at most 4 times that of
    ``Σ softmax(a)(log_softmax(a) - log_softmax(b))`` in the same dtype, plus ``16·eps·(1 + KL)`` (so
    that a lucky naive row does not decide). Rounding ``a - b`` or ``lse a - lse b`` at the offset's
    scale did not pass: with an offset of 1e4 in float32 the direct formula erred by 2e-4 (KL 0.1),
    the accurate one and vfe.information by 1e-5 to 7e-5, the naive formula by 1e-7."""
    lg = S.logits(16, masks=False, ties=False, scales=(1.0, 3.0))
    base, noise = data.draw(lg), data.draw(lg)
    a, b = S.cast(base + offsets[0], dtype), S.cast(base + 0.3 * noise + offsets[1], dtype)
    fn = vfe.kl_divergence_from_logits if name == "vfe.information" else PUBLIC[name]
    exact = O.rowwise(O.kl_from_logits, a, b)
    log_p, log_q = jax.nn.log_softmax(jnp.asarray(a)), jax.nn.log_softmax(jnp.asarray(b))
    naive = np.asarray(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1), np.float64)
    got = np.asarray(fn(a, b), np.float64)
    tol = 4 * np.abs(naive - exact) + 16 * np.finfo(dtype).eps * (1 + exact)
    O.assert_close(got, exact, tol, f"{name}, offsets {offsets}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("impl", ["blocked", "fused"])
@settings(max_examples=S.examples(4))
@given(mass=st.sampled_from([0.3, 0.5, 0.9, 1 - 1e-6]), pair=S.close_pair(8, rel=1e-3))
def test_kl_when_p_masks_most_of_q(impl, dtype, mass, pair):
    """``a`` masks one class holding ``q``-mass ``M`` and is close to ``b`` elsewhere, ``KL ≈ -log(1 - M)``:
    the accurate form's sum ``S`` then holds ``M`` (``ψ(-∞) = 1``) and terms ``p_i(x_i - 1) + (1 - M)q_i``
    with ``x ≈ -log(1 - M)``, all ``≥ 0``: it matches the oracle up to ``M = 1 - 1e-6``."""
    p, q = pair
    with np.errstate(divide="ignore"):
        b = np.log(np.concatenate([np.full((q.shape[0], 1), mass), (1 - mass) * q], axis=-1))
        a = np.log(np.concatenate([np.zeros((p.shape[0], 1)), p], axis=-1))
    a, b = S.cast(a, dtype), S.cast(b, dtype)
    check_against_oracle(lambda *x: VALUE["kl"](_rows(impl, 9), *x), "kl", (a, b), dtype, f"KL, M = {mass}")


# ============================================================================ derivatives

N = 6  # derivative tests: one bucket, blocks of 3


def _row_grads(name, args):
    """The oracle's derivatives of ``Σ_rows W_r f(row)`` with respect to the differentiated arguments."""
    a = [np.asarray(x, np.float64) for x in args]
    rows = range(S.BATCH)
    w = W[:, None]
    if name == "logsumexp":
        return (w * np.exp(O.rowwise(O.log_softmax, a[0])),)
    if name == "nll":
        return (w * (np.exp(O.rowwise(O.log_softmax, a[0])) - np.eye(N)[np.asarray(args[1])]),)
    if name == "entropy":
        return (w * O.rowwise(O.d_entropy_from_logits, a[0]),)
    if name == "soft_ce":
        lq = O.rowwise(O.log_softmax, a[1])
        return w * -lq, w * (a[0].sum(-1, keepdims=True) * np.exp(lq) - a[0])
    if name in KL:
        d = [O.d_kl_from_logits(a[0][i], a[1][i]) for i in rows]
        return w * np.stack([x[0] for x in d]), w * np.stack([x[1] for x in d])
    if name == "log_partition":
        d = [O.d_log_partition(a[0][i], a[1][i]) for i in rows]
        return w * np.stack([x[0] for x in d]), W * np.array([x[1] for x in d])
    if name == "helmholtz":
        d = [O.d_helmholtz(a[0][i], a[1][i]) for i in rows]
        return w * np.stack([x[0] for x in d]), W * np.array([x[1] for x in d])
    raise KeyError(name)


@pytest.mark.parametrize("name,impl,dtype", TYPED_VARIANTS, ids=str)
@settings(max_examples=S.examples(2))
@given(data=st.data())
def test_gradients_match_the_oracle_at_interior_points(name, impl, dtype, data):
    """∂lse/∂z = p, ∂NLL/∂z = p - onehot, ∂H/∂z = -p(log p + H), ∂CE/∂p = -log q, ∂CE/∂z = Pq - p,
    ∂KL/∂a = p(d - KL), ∂KL/∂b = q - p, ∂log Z/∂E = -βp, ∂log Z/∂β = -<E>, ∂F/∂E = p, ∂F/∂T = -H.
    Scale: 1 + the largest derivative (interior points: logits ≤ 3, T, β ∈ [0.5, 2])."""
    args = _draw(name, data, dtype, N, edge=False)
    grads = GRAD[name](_rows(impl, N), *args)
    exact = _row_grads(name, args)
    big = max(np.max(np.abs(x)) for x in exact)
    for g, e, arg in zip(grads, exact, (args[i - 1] for i in DIFF[name])):
        assert g.dtype == arg.dtype
        O.assert_close(g, e, O.rtol(dtype, N) * (1 + big), f"d {name} {impl}")


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=S.examples(1))
@given(data=st.data())
def test_second_derivatives_by_reverse_over_reverse_match_the_reference(name, data):
    """Hessian-vector products (a jax.grad of a jax.grad, the second-order mode a custom_vjp allows)
    through the streamed kernels, blocked rows of several blocks, equal those of the reference
    implementations' plain autodiff: the backward rules are differentiable, the residuals'
    dependence on the inputs included. float64, interior points; scale: 1 + the largest entry."""
    args = tuple(jnp.asarray(a) for a in _draw(name, data, np.float64, 16, edge=False))
    rows, weights, rng = _rows("blocked", 16), jnp.asarray(W), np.random.default_rng(11)
    for i in (k - 1 for k in DIFF[name]):
        def with_arg(f, x):
            return jnp.sum(weights * f(*args[:i], x, *args[i + 1:]))

        v = jnp.asarray(rng.standard_normal(args[i].shape))
        got, want = (jax.grad(lambda x, f=f: jnp.vdot(jax.grad(lambda y: with_arg(f, y))(x), v))(args[i])
                     for f in (functools.partial(KERNELS[name], rows), REFERENCE[name]))
        O.assert_close(got, want, O.rtol(np.float64, 16) * (1 + np.max(np.abs(np.asarray(want)))), f"{name} arg {i}")


@pytest.mark.parametrize("name,impl", [v for v in VARIANTS if v[1] != "fused"])
@settings(max_examples=S.examples(6))
@given(data=st.data())
def test_gradients_are_finite_at_the_edges(name, impl, data):
    """No NaN in any gradient (masks, ties, logits of 1e4, β = 0, T ∈ [1e-30, 1e30]); finite
    wherever the value is finite (float32, where overflow would show first)."""
    args = _draw(name, data, np.float32, N)
    rows = _rows(impl, N)
    value = VALUE[name](rows, *args)
    for g in GRAD[name](rows, *args):
        O.assert_derivative_finite(value, g, f"grad {name} {impl}")


@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_masked_logits_equal_logits_clipped_to_minus_1e30(data):
    """A -inf logit is the limit of a very negative one: same value and gradient at -1e30 (float64),
    to the rounding scale of each quantity (that of the oracle tests; with the gradients, 1 + the
    largest logit magnitude times 1 + the largest derivative): the masked and the clipped rows take
    different arithmetic, each rounding at about ε·|logits| for logits of 1e4."""
    z = data.draw(S.logits(N))
    b = np.where(np.isneginf(z), -np.inf, data.draw(S.logits(N, masks=False)))  # KL finite
    p = np.where(np.isneginf(z), 0.0, data.draw(S.probs(N, zeros=False)))
    p /= p.sum(-1, keepdims=True)
    y = np.argmax(z, axis=-1).astype(np.int32)
    clip = lambda x: np.maximum(x, -1e30)
    cases = {
        "logsumexp": ((z,), (clip(z),), (0,)), "entropy": ((z,), (clip(z),), (0,)), "nll": ((z, y), (clip(z), y), (0,)),
        "soft_ce": ((p, z), (p, clip(z)), (1,)), "kl": ((z, b), (clip(z), clip(b)), (0, 1)),
        "kl_direct": ((z, b), (clip(z), clip(b)), (0, 1)),
    }
    for name, (masked, clipped, which) in cases.items():
        for impl in (i for i in _impls(name) if i != "fused"):
            rows = _rows(impl, N)
            vm, vc = np.asarray(VALUE[name](rows, *masked)), np.asarray(VALUE[name](rows, *clipped))
            scale = _oracle_and_scale(name, masked, np.float64)[1]
            O.assert_close(vm, vc, O.rtol(np.float64, N) * scale, f"value {name} {impl}")
            gms, gcs = GRAD[name](rows, *masked), GRAD[name](rows, *clipped)
            magnitude = 1 + np.max(_magnitude(*(masked[i] for i in which)))
            for i in which:
                O.assert_close(gms[i], gcs[i], O.rtol(np.float64, N) * magnitude * (1 + np.max(np.abs(gcs[i]))),
                               f"grad {name}")


@settings(max_examples=S.examples(4))
@given(data=st.data())
def test_soft_label_cross_entropy_is_linear_in_signed_weights(data):
    """``Σ_i w_i(-log q_i)`` for weights of either sign (e.g. advantages): negating the weights negates
    the value, masks included (a masked class with weight 0 adds 0, with weight ≠ 0 adds ``±∞``)."""
    z = data.draw(S.logits(N))
    w = data.draw(S.probs(N, zeros=True))
    for impl in _impls("soft_ce"):
        rows = _rows(impl, N)
        plus, minus = (np.asarray(VALUE["soft_ce"](rows, sign * w, z)) for sign in (1.0, -1.0))
        assert np.array_equal(minus, -plus), (impl, plus, minus)


def test_a_fully_masked_row_gives_nan_except_logsumexp_and_kl_to_it():
    """NaN where the distribution itself is undefined; ``-inf`` for log Z; ``KL(p‖q) = +inf`` for a fully
    masked ``q`` (``b`` masks every class that ``a`` allows), as vfe.kl_divergence_from_logits, with a
    zero gradient."""
    z = jnp.full((1, 4), -jnp.inf)
    w = jnp.array([[0.0, 1.0, 2.0, 3.0]])
    assert float(ST.logsumexp(z)[0]) == -np.inf
    for f in (ST.entropy_from_logits, lambda z: ST.cross_entropy_with_integer_labels(z, jnp.zeros(1, jnp.int32)),
              lambda z: ST.cross_entropy_from_logits(jax.nn.softmax(w), z),
              *(lambda z, f=f: ST.kl_divergence_from_logits(z, w, formula=f) for f in ST.KL_FORMULAS)):
        assert np.isnan(np.asarray(f(z))).all()
    for formula in ST.KL_FORMULAS:
        kl = lambda w, z: ST.kl_divergence_from_logits(w, z, formula=formula)
        assert float(kl(w, z)[0]) == np.inf == float(vfe.kl_divergence_from_logits(w, z)[0])
        assert all(np.array_equal(g, np.zeros_like(g)) for g in jax.grad(lambda w, z: kl(w, z).sum(), (0, 1))(w, z))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("formula", ST.KL_FORMULAS)
def test_kl_is_infinite_where_q_masks_a_class_whose_p_underflows(formula, dtype):
    """``b`` masks a class that ``a`` allows: ``KL = +inf`` even where that class's ``p_i`` rounds to 0
    (``a_i`` 1e4 below the others), and with huge logits (1e30, span below finfo.max/2, for the
    dtypes that hold them); a class both mask contributes nothing."""
    big = 1e30 if np.finfo(dtype).max > 1e31 else 1e4
    a = np.array([[0.0, -1e4, 1.0, -np.inf], [big, 0.0, -big, -np.inf], [0.0, 1.0, 2.0, -np.inf]], dtype)
    b = np.array([[0.0, -np.inf, 1.0, -np.inf], [big, -np.inf, 0.0, -np.inf], [0.5, 1.0, 2.0, -np.inf]], dtype)
    kl = np.asarray(ST.kl_divergence_from_logits(a, b, formula=formula), np.float64)
    assert kl[0] == np.inf and kl[1] == np.inf and np.isfinite(kl[2]) and kl[2] > 0, kl


def test_reverse_mode_only():
    """custom_vjp: forward-mode differentiation is not defined (documented)."""
    with pytest.raises(TypeError):
        jax.jvp(ST.logsumexp, (jnp.ones(3),), (jnp.ones(3),))


# ============================================================================ transformations


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=S.examples(1))
@given(data=st.data())
def test_jit_vmap_axis_and_batch_shapes(name, data):
    """vmap over rows ≡ the batched call, axis=1 ≡ moveaxis, (2, 3, n) batches (the public functions
    are jitted already)."""
    f = PUBLIC[name]
    args = [np.asarray(a).reshape((2, 3) + np.shape(a)[1:]) for a in _draw(name, data, np.float64, 5, batch=6)]
    ref = np.asarray(f(*args))
    tol = O.rtol(np.float64, 5) * (1 + np.abs(O.finite_part(ref)) + _magnitude(*[a for a in args if a.ndim == 3]))
    O.assert_close(jax.vmap(f)(*args), ref, tol, f"vmap {name}")
    moved = [np.moveaxis(a, -1, 1) if a.ndim == 3 else a for a in args]
    O.assert_close(f(*moved, axis=1), ref, tol, f"axis=1 {name}")


# ============================================================================ low precision


def _naive(name, args):
    """The formula written with jax.nn / optax in the inputs' own dtype (the peer the accuracy rule
    compares against)."""
    if name == "logsumexp":
        return jax.nn.logsumexp(args[0], axis=-1)
    if name == "nll":
        return optax.softmax_cross_entropy_with_integer_labels(*args)
    if name == "entropy":
        return -jnp.sum(jax.nn.softmax(args[0]) * jax.nn.log_softmax(args[0]), axis=-1)
    if name == "soft_ce":
        return optax.softmax_cross_entropy(args[1], args[0])
    if name in KL:
        return jnp.sum(jax.nn.softmax(args[0]) * (jax.nn.log_softmax(args[0]) - jax.nn.log_softmax(args[1])), axis=-1)
    if name in ("log_partition", "helmholtz"):
        e, k = args[0], args[1].astype(args[0].dtype)[:, None]
        return jax.nn.logsumexp(-k * e, -1) if name == "log_partition" else -k[:, 0] * jax.nn.logsumexp(-e / k, -1)
    raise KeyError(name)


LOW = [(name, jnp.bfloat16) for name in NAMES] + [(name, jnp.float16) for name in ("logsumexp", "nll", *KL)]


@pytest.mark.parametrize("name,low", LOW, ids=lambda x: getattr(x, "__name__", x))
def test_low_precision_accumulates_in_float32_and_beats_the_naive_formula(name, low):
    """bfloat16/float16 inputs: float32 result, and an error against
    the float64 truth (the reference formula on the upcast inputs) no worse than the naive formula's
    in the same dtype (Cut Cross-Entropy's rule), over 8 rows of 1024 classes."""
    rng = np.random.default_rng(0)
    n, rows = 1024, 8
    z = (3 * rng.standard_normal((rows, n))).astype(low)
    b = (z.astype(np.float32) + rng.standard_normal((rows, n))).astype(low)
    p = rng.dirichlet(np.ones(n), rows).astype(low)
    y = rng.integers(0, n, rows).astype(np.int32)
    scale = np.full(rows, 0.7, np.float32)  # a temperature / β (vfe's checks take float32 scales)
    args = public_args(z, y, p, b, scale)[name]
    got = PUBLIC[name](*args)
    assert got.dtype == jnp.float32
    up = [np.asarray(a, np.float64) if jnp.issubdtype(np.asarray(a).dtype, jnp.floating) else a for a in args]
    truth = np.asarray(REFERENCE[name](*up), np.float64)
    ours = np.max(np.abs(np.asarray(got, np.float64) - truth))
    naive = np.max(np.abs(np.asarray(_naive(name, args), np.float64) - truth))
    assert ours <= naive, (name, ours, naive)


@pytest.mark.parametrize("name", NAMES)
def test_float16_rows_are_reduced_in_chunks_to_the_same_values(name, monkeypatch):
    """float16 inputs under blocked rows are reduced a chunk of rows at a time (XLA:CPU's fused
    reductions take no float16; see the temporaries test): with chunks of 3 rows over 8 (the last
    starting early, overlapping the one before) values and gradients equal those of the same inputs
    upcast to float32, which take the unchunked path — to a few float32 ulps for values (4 blocks of
    4 per row, masked classes included) and one float16 ulp for gradients."""
    rng = np.random.default_rng(16)
    z = (3 * rng.standard_normal((2, 4, 16))).astype(np.float16)
    z[0, 1, :3] = -np.inf
    other = (z.astype(np.float32) + rng.standard_normal(z.shape)).astype(np.float16)
    other[0, 1, :3] = -np.inf  # b masks where a does: KL finite
    p = rng.dirichlet(np.ones(16), (2, 4)).astype(np.float16)
    p[0, 1, :3] = 0
    y = rng.integers(3, 16, (2, 4)).astype(np.int32)
    scale = np.array([[0.5, 1.0, 2.0, 0.0 if name == "log_partition" else 3.0]] * 2, np.float32)
    args = public_args(z, y, p, other, scale, energies=-z)[name]
    rows = Rows("blocked", 4)
    f = functools.partial(KERNELS[name], rows)
    diff = tuple(i for i in DIFF[name] if np.asarray(args[i - 1]).dtype == np.float16)
    grad = jax.grad(lambda *a: jnp.sum(f(*a)), tuple(i - 1 for i in diff))
    up = tuple(np.asarray(a, np.float32) if np.asarray(a).dtype == np.float16 else a for a in args)
    want, want_grad = np.asarray(f(*up)), grad(*up)
    # float16 is traced here first (no other test reduces float16 rows): the patched chunk applies
    monkeypatch.setattr(ST, "_CHUNK", 3 * 16)
    got, got_grad = np.asarray(f(*args)), grad(*args)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=8 * np.finfo(np.float32).eps, atol=8 * np.finfo(np.float32).eps)
    for g, w in zip(got_grad, want_grad):
        assert g.dtype == jnp.float16
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(jnp.asarray(w).astype(jnp.float16), np.float32),
                                   rtol=2.0**-10, atol=2.0**-24)


@pytest.mark.parametrize("name", ["nll", *KL])
def test_low_precision_gradients_have_the_input_dtype(name):
    z = jnp.asarray(np.linspace(-3, 3, 2 * 64).reshape(2, 64), jnp.bfloat16)
    args = (z, jnp.array([1, 7], jnp.int32)) if name == "nll" else (z, z[::-1])
    grads = jax.grad(lambda *a: jnp.sum(PUBLIC[name](*a)), argnums=0)(*args)
    assert grads.dtype == jnp.bfloat16 and np.isfinite(np.asarray(grads, np.float32)).all()


# ============================================================================ large vocabularies


def test_block_lengths():
    """Rows up to BLOCK are reduced whole; longer ones in the largest dividing block of at least
    1024 classes, or whole when there is none (a prime)."""
    assert ST.block_length(32000) == 32000 and ST.block_length(ST.BLOCK) == ST.BLOCK
    assert ST.block_length(128256) == 32064 and ST.block_length(65536) == 32768
    assert ST.block_length(50257) == 1733 and ST.block_length(151936) == 18992
    assert ST.block_length(32771) == 32771


def test_column_lengths():
    """The columns of Stream.sum(columns=True): the divisor in [512, 2048] nearest 1024 by ratio,
    none for rows shorter than 4096 or without such a divisor."""
    assert ST.column_length(32000) == 1000 and ST.column_length(128256) == 1002
    assert ST.column_length(4096) == 1024 and ST.column_length(4095) is None
    assert ST.column_length(50257) == 1733 and ST.column_length(151936) == 1187
    assert ST.column_length(32771) is None and ST.column_length(2048) is None


@pytest.mark.parametrize("dtype", FLOATS)
def test_column_sums_equal_the_row_sums(dtype):
    """Σ e^x over the [n / b, b] column view (b = 1000) equals the float64 sum of the same inputs
    within ``(n / b + b) ε`` relative, the worst case of summing positive terms in that order
    (masked entries, a batch of rank 2, bfloat16 arrays upcast), as the row sum does; each entry
    counted once (one column dropped or doubled is a relative error of about 1/b = 1e-3, and the
    last entry dominates one row)."""
    rng = np.random.default_rng(11)
    n = 32000
    z = (3 * rng.standard_normal((2, 3, n))).astype(dtype)
    z[0, 1, ::7] = -np.inf
    z[1, 2, -1] = 20.0
    rows = ST.rows_for(n, "blocked")
    for x, columns_only in ((z, False), (jnp.asarray(z, jnp.bfloat16), True)):
        truth = np.sum(np.exp(np.asarray(x, np.float64)), -1, keepdims=True)
        for columns in (True,) if columns_only else (True, False):
            got = jax.jit(lambda z: ST.Stream((z,), rows).sum(jnp.exp, columns=columns))(jnp.asarray(x))
            assert got.dtype == np.promote_types(x.dtype, np.float32)
            tol = (n // 1000 + 1000) * float(jnp.finfo(got.dtype).eps) * truth
            O.assert_close(np.asarray(got, np.float64), truth, tol, f"{x.dtype}, columns={columns}")


# exp_sum's cases by dtype: a row's guess far below its maximum (the rescaled sum overflows), logits
# below the window (all near `low`: their exponentials are flushed to zero on XLA:CPU), a logit past
# the overflow of Σ e^x with the guess inside the window, and logits above the window
EXP_SUM_CASES = {np.float32: dict(far=60.0, low=-100.0, over=100.0, high=200.0),
                 np.float64: dict(far=600.0, low=-740.0, over=800.0, high=1000.0)}


@pytest.mark.parametrize("dtype", FLOATS)
def test_exp_sum_unshifted_where_it_is_exact_and_shifted_elsewhere(dtype):
    """exp_sum's shift ``c`` (the guess, 0 where the rescaled sum overflows, the row maximum after an
    overflow) and ``c + log s`` against the float64 log-sum-exp of the same inputs, for each case of
    its docstring, four blocks of 4 classes; the guess is column 0, an entry of the row. Each case
    again with the rows padded by masked classes to 4096 (the column view of the unshifted sum)."""
    rng = np.random.default_rng(7)
    k = EXP_SUM_CASES[dtype]
    run = jax.jit(lambda z: ST.exp_sum(ST.Stream((z,), Rows("blocked", 4)), z[:, :1]))
    run_long = jax.jit(lambda z: ST.exp_sum(ST.Stream((z,), ST.rows_for(4096, "blocked")), z[:, :1]))

    def check(z, expected_c):
        z = np.asarray(z, dtype)
        z64 = z.astype(np.float64)
        m = z64.max(-1)
        truth = m + np.log(np.sum(np.exp(z64 - m[:, None]), -1))
        padded = np.pad(z, ((0, 0), (0, 4096 - z.shape[1])), constant_values=-np.inf)
        for f, x in ((run, z), (run_long, padded)):
            c, s = (np.asarray(v, np.float64)[:, 0] for v in f(jnp.asarray(x)))
            np.testing.assert_array_equal(c, expected_c)
            O.assert_close(c + np.log(s), truth, 4 * O.rtol(dtype, 16) * (1 + np.abs(truth)), "c + log s")

    z = 3 * rng.standard_normal((3, 16))
    z[1, 0], z[1, 5] = -k["far"], k["far"]  # in the window, but σ / e^{guess} overflows: c = 0
    z[2, 3] = -np.inf
    check(z, np.array([z[0, 0], 0.0, z[2, 0]], dtype))
    for case in ("low", "high"):  # untried: shifted by the guess
        z = 3 * rng.standard_normal((2, 16))
        z[1] = k[case] + rng.standard_normal(16)
        check(z, np.asarray(z, dtype)[:, 0])
    z = 3 * rng.standard_normal((2, 16))  # tried, σ infinite; then the guess overflows too: the maxima
    z[1, 0], z[1, 9] = 0.0, k["over"]
    check(z, np.asarray(z, dtype).max(-1))


def test_confident_labels_keep_their_small_loss_accurate_and_non_negative():
    """Labels whose logit (about 25) exceeds every other by 5-20: NLL = log Σ e^{z_i - z_y}, a sum
    ≥ 1, whatever the path taken (here the unshifted sum rescaled by e^{z_y}) is non-negative and
    within a few ε of the float64 truth, as the label-shifted sum of the "fused" rows is; the
    difference ``log Σ e^{z_i} - z_y`` is not (it rounds at the scale of 25)."""
    rng = np.random.default_rng(3)
    n, rows = 64, 512
    z = 2 * rng.standard_normal((rows, n))
    y = rng.integers(0, n, rows).astype(np.int32)
    z[np.arange(rows), y] = 25.0 + rng.uniform(0.0, 2.0, rows)
    z[np.arange(rows), (y + 1) % n] = z[np.arange(rows), y] - rng.uniform(5.0, 20.0, rows)
    z = z.astype(np.float32)
    z64 = z.astype(np.float64)
    truth = np.log(np.sum(np.exp(z64 - z64[np.arange(rows), y][:, None]), -1))
    eps = np.finfo(np.float32).eps
    for impl in ("blocked", "fused"):
        got = np.asarray(VALUE["nll"](_rows(impl, n), jnp.asarray(z), jnp.asarray(y)), np.float64)
        assert np.all(got >= 0), impl
        O.assert_close(got, truth, 2 * eps * (1 + truth), impl)


@pytest.mark.parametrize("n", [5, 32000, 40000])
def test_no_rows(n):
    """A batch of zero rows gives empty values and gradients, whatever the row view (32000: columns;
    40000: blocks and columns)."""
    z = jnp.zeros((0, n))
    args = public_args(z, jnp.zeros(0, jnp.int32), z, z, jnp.ones(0))
    for name, f in PUBLIC.items():
        assert f(*args[name]).shape == (0,), name
        assert jax.grad(lambda z, *rest: f(z, *rest).sum())(*args[name]).shape == (0, n), name


def test_large_vocabularies_through_the_public_api():
    """Rows longer than BLOCK are reduced in blocks (40000 = 2 × 20000); every function still
    equals the float64 reference on the same float32 inputs, to the rounding of its own float32
    formula (a different order of summation: factor 2)."""
    n = 40000
    assert ST.block_length(n) == 20000
    rng = np.random.default_rng(n)
    z = (4 * rng.standard_normal((2, n))).astype(np.float32)
    b = (z + rng.standard_normal((2, n))).astype(np.float32)
    z[0, :7] = -np.inf
    b[0, :7] = -np.inf
    p = rng.dirichlet(np.ones(n), 2).astype(np.float32)
    p[0, :7] = 0
    y = np.array([9, n - 1], np.int32)
    t = np.array([0.5, 2.0], np.float32)
    for name, args in public_args(z, y, p, b, t, energies=-z).items():
        got = np.asarray(PUBLIC[name](*args), np.float64)
        truth = np.asarray(REFERENCE[name](*[np.asarray(a, np.float64) if a.dtype.kind == "f" else a for a in args]))
        naive = np.asarray(REFERENCE[name](*args) if name != "logsumexp" else _naive(name, args), np.float64)
        eps_floor = 4 * np.finfo(np.float32).eps * (1 + np.abs(truth))
        assert np.all(np.abs(got - truth) <= np.maximum(2 * np.abs(naive - truth), eps_floor)), (name, got, truth, naive)


# ============================================================================ memory on XLA:CPU


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", NAMES)
def test_blocked_reductions_materialise_no_vocabulary_sized_temporary(name, dtype):
    """Forward and forward+gradient programs of the CPU default keep their temporaries below an
    eighth of the logits (XLA's compiled memory analysis): the logits are read by fused reductions,
    never copied into [N, V] intermediates. XLA:CPU's reductions are YNNPACK fusions, which stop
    growing at 100 instructions and compute the rest of a long summand into a temporary; at these
    shapes (not at [8, 65536] float32, which this test used before) that showed as 0.5-12× the
    logits in the accurate KL's ``S`` pass, and the bfloat16 entropy's gradient shared a broadcast
    constant with its forward pass (2×); float16 was converted whole (2-6×). [1024, 128256] is also
    reduced in blocks."""
    if jax.default_backend() != "cpu":
        pytest.skip("an XLA:CPU property")
    for n, v in ((4096, 32000), (1024, 128256)):
        z = jax.ShapeDtypeStruct((n, v), dtype)
        y = jax.ShapeDtypeStruct((n,), jnp.int32)
        t = jax.ShapeDtypeStruct((n,), dtype)
        args = public_args(z, y, z, z, t)[name]
        f = PUBLIC[name]
        grad = jax.grad(lambda *a: jnp.sum(f(*a)).astype(jnp.float32))
        for program in (f, grad):
            temp = jax.jit(program).lower(*args).compile().memory_analysis().temp_size_in_bytes
            assert temp < n * v * jnp.dtype(dtype).itemsize / 8, (name, (n, v), program, temp)


# ============================================================================ argument checks


def test_arguments_are_checked_before_any_work():
    z = jnp.zeros((2, 5))
    with pytest.raises(TypeError, match="floating"):
        ST.logsumexp(jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match="implementation"):
        ST.entropy_from_logits(z, implementation="fast")
    with pytest.raises(ValueError, match="onepass"):
        ST.kl_divergence_from_logits(z, z, implementation="onepass")
    with pytest.raises(ValueError, match="`formula` must be one of"):
        ST.kl_divergence_from_logits(z, z, formula="textbook")
    with pytest.raises(ValueError, match="same shape"):
        ST.cross_entropy_from_logits(z, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="labels"):
        ST.cross_entropy_with_integer_labels(z, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="temperature"):
        ST.helmholtz_free_energy(z, 0.0)
    with pytest.raises(ValueError, match="axis"):
        ST.logsumexp(z, axis=2)


# ============================================================================ the tests can fail


def _wrong_blocked_lse(z):
    """Blocks of 4, each with its own maximum, combined *without* rescaling by e^{m_b - m}."""
    zb = z.reshape(*z.shape[:-1], -1, 4)
    m_b = jnp.max(zb, axis=-1)
    s_b = jnp.sum(jnp.exp(zb - m_b[..., None]), axis=-1)
    return jnp.max(m_b, axis=-1) + jnp.log(jnp.sum(s_b, axis=-1))


def test_a_planted_wrong_blocked_reduction_is_rejected():
    """The oracle check used above rejects a blocked log-sum-exp that forgets to rescale (on rows
    whose blocks have different maxima; it passes the correct blocked reduction on the same rows)."""
    z = np.array([[0.0, -1.0, -2.0, -3.0, 5.0, 4.0, 3.0, 2.0, -9.0, -8.0, -7.0, -6.0, 1.0, 1.5, 0.5, 0.25]] * 2)
    check_against_oracle(lambda z: VALUE["logsumexp"](Rows("blocked", 4), z), "logsumexp", (z,), np.float64, "right")
    with pytest.raises(AssertionError):
        check_against_oracle(_wrong_blocked_lse, "logsumexp", (z,), np.float64, "planted")


@pytest.mark.parametrize("plant", ["no escape pass", "normaliser sign flipped"])
def test_a_planted_wrong_direct_kl_is_rejected(plant, monkeypatch):
    """The oracle check of the direct KL formula rejects it without its escape pass (b masks a class
    that a allows: KL = +inf, not a finite sum) and with q's log-normaliser added instead of subtracted;
    the unplanted formula passes on the same rows."""
    a = np.array([[0.5, -1.0, 2.0, 0.0, 1.0, -0.5], [1.0, 2.0, 3.0, -1.0, 0.0, 0.5]])
    b = np.array([[0.0, 1.0, -np.inf, 0.5, 0.0, 1.5], [0.0, 0.5, 1.0, 2.0, -1.0, 0.0]])
    direct = lambda a, b: ST._kl_vjp(a, b, Rows("blocked", 3), "direct")
    check_against_oracle(jax.jit(direct), "kl_direct", (a, b), np.float64, "right")
    if plant == "no escape pass":
        monkeypatch.setattr(ST, "_kl_escapes", lambda d, r: jnp.zeros_like(d))
    else:
        term = ST._kl_direct_term
        monkeypatch.setattr(ST, "_kl_direct_term",
                            lambda a, b, ma, log_sa, mb, log_sb: term(a, b, ma, log_sa, mb, -log_sb))
    jax.clear_caches()  # custom_vjp caches the traced rule: retrace with the plant, and drop it after
    try:
        with pytest.raises(AssertionError):
            check_against_oracle(jax.jit(direct), "kl_direct", (a, b), np.float64, plant)
    finally:
        monkeypatch.undo()
        jax.clear_caches()
