"""vfe.thermodynamics against the 50-digit oracle over T ∈ [1e-30, 1e30] (log-uniform), β = 0,
-inf logits / +inf energies, logits of 1e4 and ties; the T → 0 limit under jit versus the naive
peer; derivatives at the edges; jit/vmap/axis; low-precision inputs.

Tolerances (stated once): ``oracle.rtol(dtype, n) = K · n · eps(dtype)``, ``K = 64``, times the scale
of the terms given at each test (probabilities: 1; log-probabilities: ``|log p| + 1 + log n``;
log Z and free energies: the magnitude of their terms, ``|β max z| + 1 + log n`` etc.).
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

FLOATS = S.FLOATS
W = S.ROW_WEIGHTS
N = S.DERIV_SIZE




def _top(z):
    return np.max(np.where(np.isfinite(z), np.abs(z), 0.0), axis=-1)


def _row(x):
    return np.asarray(x, np.float64)[:, None]


# ============================================================================ against the oracle


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_tempered_softmax_and_log_softmax_match_oracle(dtype, data):
    z = S.cast(data.draw(S.logits()), dtype)
    t = S.cast(data.draw(S.temperatures()), dtype)
    n = z.shape[-1]
    p = vfe.tempered_softmax(z, t)
    lp = vfe.tempered_log_softmax(z, t)
    assert p.dtype == dtype and lp.dtype == dtype
    exact_p = O.rowwise(O.tempered_softmax, z, extra=(t,))
    exact_lp = O.rowwise(O.tempered_log_softmax, z, extra=(t,))
    O.assert_close(p, exact_p, O.rtol(dtype, n), "tempered_softmax")  # scale 1
    O.assert_close(lp, exact_lp, O.rtol(dtype, n) * (np.abs(O.finite_part(exact_lp)) + 1 + np.log(n)), "tempered_log_softmax")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_boltzmann_and_log_partition_match_oracle(dtype, data):
    e = S.cast(data.draw(S.energies()), dtype)
    b = S.cast(data.draw(S.betas()), dtype)
    n = e.shape[-1]
    p, logz = vfe.boltzmann(e, b), vfe.log_partition(e, b)
    assert p.dtype == dtype and logz.dtype == dtype
    O.assert_close(p, O.rowwise(O.boltzmann, e, extra=(b,)), O.rtol(dtype, n), "boltzmann")
    scale = np.abs(b.astype(np.float64)) * _top(e) + 1 + np.log(n)  # |β min E| + log n
    O.assert_close(logz, O.rowwise(O.log_partition, e, extra=(b,)), O.rtol(dtype, n) * scale, "log_partition")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_helmholtz_free_energy_matches_oracle(dtype, data):
    e = S.cast(data.draw(S.energies()), dtype)
    t = S.cast(data.draw(S.temperatures()), dtype)
    n = e.shape[-1]
    f = vfe.helmholtz_free_energy(e, t)
    assert f.dtype == dtype
    scale = _top(e) + t.astype(np.float64) * (1 + np.log(n))  # |min E| + T log n
    O.assert_close(f, O.rowwise(O.helmholtz, e, extra=(t,)), O.rtol(dtype, n) * scale, "helmholtz")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_gibbs_free_energy_matches_oracle(dtype, data):
    n = data.draw(S.sizes())
    q = S.cast(data.draw(S.probs(n)), dtype)
    e = data.draw(S.energies(n))
    e = S.cast(np.where(q == 0, e, O.finite_part(e)), dtype)  # +inf energies only where q = 0
    t = S.cast(data.draw(S.temperatures()), dtype)
    g = vfe.gibbs_free_energy(q, e, t)
    assert g.dtype == dtype
    qq = q.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = np.sum(np.where(qq > 0, qq * (1 + np.abs(np.log(qq))), 0), -1)
        scale = np.sum(np.where(qq > 0, qq * np.abs(O.finite_part(e)), 0), -1) + t.astype(np.float64) * ent
    O.assert_close(g, O.rowwise(O.gibbs, q, e, extra=(t,)), O.rtol(dtype, n) * scale, "gibbs")


# ============================================================================ T → 0, large logits


def _zero_temperature_cases(dtype):
    """Logits near 1e4 with ties at the max (gaps ≥ 1), temperatures 1e-8 ... the dtype's edge."""
    z = np.array([[1e4, 1e4 - 1, 1e4, 1e4 - 3, 1e4 - 7],
                  [9999.0, 1e4, 9998.0, -np.inf, 1e4],
                  [1e4, 1e4, 1e4, 1e4, 1e4],
                  [-1e4, -1e4 - 2, -np.inf, -1e4, -1e4 - 1]], dtype=np.float64)
    tiny = {np.float32: 1e-36, np.float64: 1e-305}[dtype]  # z/T overflows for the naive form
    ts = np.array([1e-8, 1e-20, 1e-30, tiny])
    return z.astype(dtype), ts.astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_zero_temperature_limit_is_exact_under_jit_and_naive_form_fails(dtype):
    z, ts = _zero_temperature_cases(dtype)
    e = -z
    soft = jax.jit(vfe.tempered_softmax)
    helm = jax.jit(vfe.helmholtz_free_energy)
    naive_soft = jax.jit(lambda z, t: jax.nn.softmax(z / t[:, None], axis=-1))
    naive_helm = jax.jit(lambda e, t: -t * jax.nn.logsumexp(-e / t[:, None], axis=-1))
    naive_failed = False
    for t in ts:
        tt = np.full((z.shape[0],), t, dtype)
        p = np.asarray(soft(z, tt), np.float64)
        limit = np.stack([O.zero_temperature_softmax(r) for r in z])
        assert np.all(np.isfinite(p))
        ties = limit > 0
        assert np.all(p[~ties] == 0), p
        for r in range(z.shape[0]):  # the tied entries share the mass exactly equally
            assert np.all(p[r][ties[r]] == p[r][ties[r]][0]), p[r]
        O.assert_close(p, limit, 4 * float(np.finfo(dtype).eps) * limit, f"softmax T={t}")
        f = np.asarray(helm(e, tt), np.float64)
        k = ties.sum(-1)
        expected = np.array([float(O.mpf(np.min(r)) - O.mpf(t) * O.MP.log(kk)) for r, kk in zip(e, k)])
        O.assert_close(f, expected, O.rtol(dtype, 5) * np.abs(expected), f"helmholtz T={t}")
        ns, nh = np.asarray(naive_soft(z, tt), np.float64), np.asarray(naive_helm(e, tt), np.float64)
        naive_failed |= (not np.all(np.isfinite(ns))) or not np.all(np.isfinite(nh)) \
            or np.any(np.abs(ns - limit) > 0.25) or np.any(np.abs(nh - expected) > 1e-3 * np.abs(expected))
    assert naive_failed, "the naive softmax(z/T) / -T lse(-E/T) was expected to overflow at T near the dtype's edge"


@pytest.mark.parametrize("dtype", FLOATS)
def test_infinite_temperature_and_zero_beta_give_uniform_over_allowed(dtype):
    z = np.array([[1e4, -1e4, 3.0, -np.inf, 0.5]] * S.BATCH, dtype)
    allowed = np.isfinite(z).astype(np.float64)
    uniform = allowed / allowed.sum(-1, keepdims=True)
    p = vfe.tempered_softmax(z, np.full(S.BATCH, 1e30, dtype))
    # at T = 1e30 the logits' spread 2e4 moves p by a relative 2e-26: uniform to rounding
    O.assert_close(p, uniform, O.rtol(dtype, 5) * uniform, "T = 1e30")
    pb = vfe.boltzmann(-z, np.zeros(S.BATCH, dtype))
    O.assert_close(pb, uniform, O.rtol(dtype, 5) * uniform, "β = 0")
    O.assert_close(vfe.log_partition(-z, np.zeros(S.BATCH, dtype)), np.full(S.BATCH, np.log(4.0)),
                   O.rtol(dtype, 5) * np.log(4.0), "log Z at β = 0")


# ============================================================================ derivatives

# (function, number of float arguments, argnums differentiated, draw(data, dtype, edge))


def _draw(name, data, dtype, edge):
    c = lambda x: S.cast(x, dtype)  # noqa: E731
    if edge:
        lg, en, ts, bs = S.logits(N), S.energies(N), S.temperatures(), S.betas()
        pr = S.probs(N)
    else:
        lg, en = S.logits(N, masks=False, scales=(1.0, 3.0)), S.energies(N, masks=False, scales=(1.0, 3.0))
        ts, bs, pr = S.temperatures(0.5, 2.0), S.betas(0.5, 2.0, zero=False), S.probs(N, zeros=False, min_log=-6.0)
    if name in ("tempered_softmax", "tempered_log_softmax"):
        return c(data.draw(lg)), c(data.draw(ts))
    if name in ("boltzmann", "log_partition"):
        return c(data.draw(en)), c(data.draw(bs))
    if name == "helmholtz_free_energy":
        return c(data.draw(en)), c(data.draw(ts))
    if name == "gibbs_free_energy":
        q = data.draw(pr)
        e = data.draw(en)
        return c(q), c(np.where(q == 0, e, O.finite_part(e))), c(data.draw(ts))
    raise KeyError(name)


FUNCS = {
    "tempered_softmax": (vfe.tempered_softmax, (0, 1)),
    "tempered_log_softmax": (vfe.tempered_log_softmax, (0, 1)),
    "boltzmann": (vfe.boltzmann, (0, 1)),
    "log_partition": (vfe.log_partition, (0, 1)),
    "helmholtz_free_energy": (vfe.helmholtz_free_energy, (0, 1)),
    "gibbs_free_energy": (vfe.gibbs_free_energy, (0, 1, 2)),
}


def _weighted(f):
    def g(*a):
        out = f(*a)
        w = jnp.asarray(W, out.dtype)
        return jnp.sum(w.reshape((-1,) + (1,) * (out.ndim - 1)) * out)
    return g


GRADS = {k: jax.jit(jax.grad(_weighted(f), argnums=nums)) for k, (f, nums) in FUNCS.items()}
JACS = {k: jax.jit(jax.jacfwd(f, argnums=nums)) for k, (f, nums) in FUNCS.items()}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_derivatives_are_finite_at_the_edges(name, dtype, data):
    """No NaN in grad/jacfwd anywhere (T ∈ [1e-30, 1e30], β = 0, masks, 1e4 logits); finite
    wherever the value is finite, except tempered_log_softmax whose derivative at an entry of
    underflowed probability may be ±inf as T → 0 (documented: that is its value)."""
    args = _draw(name, data, dtype, edge=True)
    f, _ = FUNCS[name]
    value = f(*args)
    allow_inf = name == "tempered_log_softmax"
    for g in GRADS[name](*args):
        O.assert_derivative_finite(value, g, f"grad {name}", allow_inf)
    for j in JACS[name](*args):
        O.assert_derivative_finite(value, j, f"jacfwd {name}", allow_inf)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["tempered_softmax", "tempered_log_softmax", "boltzmann", "log_partition",
                                  "helmholtz_free_energy"])
def test_derivatives_are_nan_free_with_energies_at_plus_and_minus_finfo_max(name, dtype):
    """Rows holding both ``finfo.max`` and ``-finfo.max`` (the shift ``z - max z`` overflows to
    ``-inf`` on a class that is not masked): values as the limits say, and gradients in both
    arguments (reverse mode, whose transposed tangent multiplied ``-inf`` by a zero cotangent) and
    jacfwd free of NaN."""
    big = np.finfo(dtype).max
    f, _ = FUNCS[name]
    for rows in ([[-big, big, 1.0], [big, big, 0.0]], [[-big, -big, 0.0], [big, 1.0, -big]]):
        x, scale = np.array(rows, dtype), np.array([1.0, 0.5], dtype)
        value = f(x, scale)
        assert not np.isnan(np.asarray(value)).any(), value
        for g in GRADS[name](x, scale):
            O.assert_derivative_finite(value, g, f"grad {name}", allow_inf=name == "tempered_log_softmax")
        for j in JACS[name](x, scale):
            O.assert_derivative_finite(value, j, f"jacfwd {name}", allow_inf=name == "tempered_log_softmax")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_derivatives_match_oracle_at_interior_points(dtype, data):
    """∂F/∂T = -H(p), ∂F/∂E = p, ∂log Z/∂β = -<E>, ∂log Z/∂E = -βp, ∂p/∂z = p(δ - p)/T,
    ∂p/∂T = -p(z - <z>)/T², ∂G/∂q = E + T(log q + 1), ∂G/∂T = Σ q log q. Scale: the largest
    derivative entry plus 1 (interior points: logits ≤ 3, T, β ∈ [0.5, 2])."""
    tol = lambda exact: O.rtol(dtype, N) * (1 + np.max(np.abs(exact)))  # noqa: E731
    z, t = _draw("tempered_softmax", data, dtype, edge=False)
    jz, jt = JACS["tempered_softmax"](z, t)
    for r in range(S.BATCH):
        ez, et = O.tempered_softmax_jacobians(z[r], t[r])
        O.assert_close(np.asarray(jz)[r, :, r, :], ez, tol(ez), "∂p/∂z")
        O.assert_close(np.asarray(jt)[r, :, r], et, tol(et), "∂p/∂T")
    e, b = _draw("log_partition", data, dtype, edge=False)
    ge, gb = GRADS["log_partition"](e, b)
    de = [O.d_log_partition(e[r], b[r]) for r in range(S.BATCH)]
    ex_e, ex_b = np.stack([d[0] for d in de]) * W[:, None], np.array([d[1] for d in de]) * W
    O.assert_close(ge, ex_e, tol(ex_e), "∂logZ/∂E")
    O.assert_close(gb, ex_b, tol(ex_b), "∂logZ/∂β = -<E>")
    e, t = _draw("helmholtz_free_energy", data, dtype, edge=False)
    ge, gt = GRADS["helmholtz_free_energy"](e, t)
    dh = [O.d_helmholtz(e[r], t[r]) for r in range(S.BATCH)]
    ex_e, ex_t = np.stack([d[0] for d in dh]) * W[:, None], np.array([d[1] for d in dh]) * W
    O.assert_close(ge, ex_e, tol(ex_e), "∂F/∂E = p")
    O.assert_close(gt, ex_t, tol(ex_t), "∂F/∂T = -H")
    q, e, t = _draw("gibbs_free_energy", data, dtype, edge=False)
    gq, ge, gt = GRADS["gibbs_free_energy"](q, e, t)
    dg = [O.d_gibbs(q[r], e[r], t[r]) for r in range(S.BATCH)]
    for got, k in ((gq, 0), (ge, 1)):
        ex = np.stack([d[k] for d in dg]) * W[:, None]
        O.assert_close(got, ex, tol(ex), f"∂G/∂arg{k}")
    ex_t = np.array([d[2] for d in dg]) * W
    O.assert_close(gt, ex_t, tol(ex_t), "∂G/∂T")


@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(max_examples=S.examples(3))
@given(data=st.data())
def test_check_grads_float64_interior(name, data):
    """Finite differences (check_grads defaults for float64; step 1e-6 keeps q > 0), fwd and rev."""
    args = _draw(name, data, np.float64, edge=False)
    check_grads(FUNCS[name][0], args, order=1, modes=("fwd", "rev"), eps=1e-6)


@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_masked_entries_equal_entries_clipped_to_1e30(data):
    """-inf logits / +inf energies behave as ∓1e30 (float64) wherever exp(-1e30/T) underflows
    (T ≤ 1e10, β ≥ 1e-10): same value and gradient."""
    z = data.draw(S.logits(N))
    t = data.draw(S.temperatures(1e-30, 1e10))
    b = data.draw(S.betas(1e-10, 1e30, zero=False))
    zc = np.maximum(z, -1e30)
    for name, masked, clipped in [
        ("tempered_softmax", (z, t), (zc, t)),
        ("boltzmann", (-z, b), (-zc, b)),
        ("log_partition", (-z, b), (-zc, b)),
        ("helmholtz_free_energy", (-z, t), (-zc, t)),
    ]:
        f, _ = FUNCS[name]
        vm, vc = np.asarray(f(*masked)), np.asarray(f(*clipped))
        O.assert_close(vm, vc, O.rtol(np.float64, N) * (1 + np.abs(vc)), f"value {name}")
        for gm, gc in zip(GRADS[name](*masked), GRADS[name](*clipped)):
            O.assert_close(gm, gc, O.rtol(np.float64, N) * (1 + np.max(np.abs(gc))), f"grad {name}")


# ============================================================================ transformations


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(max_examples=S.examples(3))
@given(data=st.data())
def test_jit_vmap_axis_and_shift(name, dtype, data):
    """jit ≡ eager, vmap ≡ batched, axis=k ≡ moveaxis, and (logit/energy functions) a shift of
    the row by c leaves distributions unchanged and moves log Z by -βc, F by c."""
    f, _ = FUNCS[name]
    x = data.draw(S.logits(5, batch=6)).reshape(2, 3, 5)
    scal = data.draw(S.temperatures(1e-3, 1e3, batch=6)).reshape(2, 3)
    args = [S.cast(x, dtype), S.cast(scal, dtype)]
    if name == "gibbs_free_energy":
        q = data.draw(S.probs(5, batch=6)).reshape(2, 3, 5)
        args = [S.cast(q, dtype), S.cast(np.where(q == 0, -x, -O.finite_part(x)), dtype), args[1]]
    elif name in ("boltzmann", "log_partition", "helmholtz_free_energy"):
        args[0] = -args[0]
    ref = np.asarray(f(*args))
    mag = 1 + np.max(np.where(np.isfinite(x), np.abs(x), 0)) * (1 / scal.min() if name != "helmholtz_free_energy" else 1)
    mag = min(mag, 1e3 * (1 + np.max(np.abs(O.finite_part(x)))))
    tol = O.rtol(dtype, 5) * (1 + np.abs(O.finite_part(ref))) * mag
    O.assert_close(jax.jit(f)(*args), ref, tol, f"jit {name}")
    with jax.disable_jit():
        O.assert_close(f(*args), ref, tol, f"eager {name}")
    O.assert_close(jax.vmap(f)(*args), ref, tol, f"vmap {name}")
    for axis in (0, 1, -1):
        moved = [np.moveaxis(a, -1, axis) if a.ndim == 3 else a for a in args]
        out = np.asarray(f(*moved, axis=axis))
        if out.ndim == 3:
            out = np.moveaxis(out, axis, -1)
        O.assert_close(out, ref, tol, f"axis={axis} {name}")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data(), shift=st.integers(-80_000, 80_000))
def test_shift_invariance(dtype, data, shift):
    """Logits and c on a 1/8 grid (|z + c| < 2^17): z + c is exact in float32."""
    z = S.cast(np.round(8 * data.draw(S.logits(N))) / 8, dtype)
    c = shift / 8
    zc = S.cast(z.astype(np.float64) + c, dtype)
    t = S.cast(data.draw(S.temperatures(1e-3, 1e3)), dtype)
    mag = 1 + np.max(np.abs(O.finite_part(zc))) + np.max(np.abs(O.finite_part(z)))
    p0, p1 = vfe.tempered_softmax(z, t), vfe.tempered_softmax(zc, t)
    # s = (z - max z)/T is exact here, so the distributions agree to rounding
    O.assert_close(p1, p0, 2 * O.rtol(dtype, N), "shift tempered_softmax")
    f0, f1 = np.asarray(vfe.helmholtz_free_energy(-z, t), np.float64), np.asarray(vfe.helmholtz_free_energy(-zc, t))
    O.assert_close(f1, f0 - c, 2 * O.rtol(dtype, N) * (mag + t.astype(np.float64) * np.log(N)), "shift helmholtz")


# ============================================================================ low precision


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", sorted(FUNCS))
def test_low_precision_inputs(name, low):
    z = np.array([[3.0, -np.inf, 0.5, 2.0, 3.0], [-1.0, 0.0, 1.0, 2.0, 30.0]])
    q = np.array([[0.5, 0.0, 0.125, 0.125, 0.25], [0.25, 0.25, 0.25, 0.125, 0.125]])
    t = np.array([0.5, 2.0])
    if name == "gibbs_free_energy":
        args = [q, np.where(q == 0, -z, -O.finite_part(z)), t]
    elif name in ("boltzmann", "log_partition", "helmholtz_free_energy"):
        args = [-z, t]
    else:
        args = [z, t]
    f, _ = FUNCS[name]
    got = f(*[jnp.asarray(a, low) for a in args])
    ref = np.asarray(f(*[np.asarray(jnp.asarray(a, low), np.float32) for a in args]))
    distribution = name in ("tempered_softmax", "tempered_log_softmax", "boltzmann")
    assert got.dtype == (low if distribution else jnp.float32), got.dtype
    # a distribution is rounded to the input dtype at the end: tolerance eps(low) there
    eps = float(jnp.finfo(low).eps) if distribution else O.rtol(np.float32, 5)
    O.assert_close(np.asarray(got, np.float64), ref, eps * (1 + np.abs(O.finite_part(ref))), f"{low.__name__} {name}")


@pytest.mark.parametrize("axis", [-1, 0])
def test_temperature_broadcasts_as_a_scalar_or_over_the_batch(axis):
    """A Python float, a 0-d array and a batch-shaped array of temperatures give the values of the
    row-by-row formulas, on a 3-D input and along either axis (a scalar T once crashed Gibbs)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 2, 3))
    q = rng.dirichlet(np.ones(3), size=(4, 2))
    if axis == 0:
        z, q = np.moveaxis(z, -1, 0), np.moveaxis(q, -1, 0)
    batch = (4, 2)  # the shape without the distribution axis, for either axis
    last = lambda x: np.moveaxis(x, axis, -1)  # noqa: E731
    t_batch = np.array([0.5, 2.0])  # broadcasts over the last batch dimension
    for t in (2.0, np.float64(2.0), jnp.asarray(2.0), t_batch):
        tt = np.broadcast_to(np.asarray(t), batch)[..., None]
        zl, ql = last(z), last(q)
        p = np.exp(zl / tt) / np.sum(np.exp(zl / tt), -1, keepdims=True)
        f = -tt[..., 0] * np.log(np.sum(np.exp(-(-zl) / tt), -1))
        g = np.sum(ql * -zl, -1) + tt[..., 0] * np.sum(ql * np.log(ql), -1)
        tol = O.rtol(np.float64, 3)
        O.assert_close(last(np.asarray(vfe.tempered_softmax(z, t, axis=axis))), p, tol, "tempered_softmax")
        O.assert_close(vfe.helmholtz_free_energy(-z, t, axis=axis), f, tol * 10, "helmholtz_free_energy")
        O.assert_close(vfe.gibbs_free_energy(q, -z, t, axis=axis), g, tol * 10, "gibbs_free_energy")


# ============================================================================ thermodynamic derivatives
# mean_energy, energy_variance, thermodynamic_entropy, heat_capacity: 50-digit oracle, edges,
# derivatives (analytic custom rules) against the oracle's analytic derivatives and finite
# differences, low precision, argument errors.


def _moments_oracle(energies, temperature):
    """``(<E>, Var E, S, C)`` of the Boltzmann law in 50 digits (``C = Var_p(E/T)``)."""
    z = [-x for x in O._vec(energies)]
    top, s, lse, lp = O._tempered_log(z, temperature, "T")
    p = [O.MP.exp(x) for x in lp]
    live = [(pi, si) for pi, si in zip(p, s) if pi != 0]
    t = O.mpf(temperature)
    g = [-si * t for _, si in live]  # E - E_min
    mean_g = O.MP.fsum(pi * gi for (pi, _), gi in zip(live, g))
    var = O.MP.fsum(pi * (gi - mean_g) ** 2 for (pi, _), gi in zip(live, g))
    mean_s = O.MP.fsum(pi * si for pi, si in live)
    ent = lse - mean_s
    cap = O.MP.fsum(pi * (si - mean_s) ** 2 for pi, si in live)
    return float(-top + mean_g), float(var), float(ent), float(cap)


MOMENTS = {
    "mean_energy": (vfe.thermodynamics.mean_energy, 0),
    "energy_variance": (vfe.thermodynamics.energy_variance, 1),
    "thermodynamic_entropy": (vfe.thermodynamics.thermodynamic_entropy, 2),
    "heat_capacity": (vfe.thermodynamics.heat_capacity, 3),
}


def _moment_scale(name, e, t):
    """Scale of the terms: |E| for <E>; (E range)² for Var; 1 + log n + <s> spread for S and C."""
    fin = O.finite_part(e).astype(np.float64)
    spread = np.max(fin, -1) - np.min(np.where(np.isfinite(e), fin, np.inf), -1)
    if name == "mean_energy":
        return 1 + _top(e)
    if name == "energy_variance":
        return 1 + spread ** 2
    return 1 + np.log(e.shape[-1]) ** 2


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(MOMENTS))
@settings(max_examples=S.examples(12))
@given(data=st.data())
def test_thermodynamic_derivatives_match_oracle(name, dtype, data):
    """T ∈ [1e-30, 1e30], +inf energies, 1e4 energies and ties; the result in float32/float64.
    Mean energy and variance are sums over gaps E - E_min ≤ 2e4 (scale |E|, range²); entropy and
    heat capacity depend only on the dimensionless gaps (scale 1 + log² n, as s - <s> is bounded by
    the log-probabilities of the states that carry mass)."""
    e = S.cast(data.draw(S.energies()), dtype)
    t = S.cast(data.draw(S.temperatures()), dtype)
    f, k = MOMENTS[name]
    got = f(e, t)
    assert got.dtype == dtype and got.shape == e.shape[:-1]
    exact = np.array([_moments_oracle(e[r], t[r])[k] for r in range(e.shape[0])])
    n = e.shape[-1]
    O.assert_close(got, exact, O.rtol(dtype, n) * _moment_scale(name, e, t), name)


def test_thermodynamic_derivatives_limits_are_exact():
    """T = 1e-30: ground state(s), ties split (S = log k, Var = C = 0); T = 1e30: uniform over
    allowed states (S = log n_allowed, <E> = their mean, Var = their variance, C ≈ 0)."""
    e = np.array([[2.0, 1.0, 1.0, np.inf, 5.0], [-1e4, 3.0, 1e4, -1e4, np.inf]])
    allowed = [np.array([2.0, 1.0, 1.0, 5.0]), np.array([-1e4, 3.0, 1e4, -1e4])]
    for dtype in FLOATS:
        ed = e.astype(dtype)
        cold = np.full(2, 1e-30, dtype)
        np.testing.assert_array_equal(vfe.thermodynamics.mean_energy(ed, cold), [1.0, -1e4])
        np.testing.assert_array_equal(vfe.thermodynamics.energy_variance(ed, cold), [0.0, 0.0])
        np.testing.assert_array_equal(vfe.thermodynamics.heat_capacity(ed, cold), [0.0, 0.0])
        O.assert_close(vfe.thermodynamics.thermodynamic_entropy(ed, cold), [np.log(2)] * 2, O.rtol(dtype, 5), "S cold")
        hot = np.full(2, 1e30, dtype)
        O.assert_close(vfe.thermodynamics.mean_energy(ed, hot), [a.mean() for a in allowed],
                       O.rtol(dtype, 5) * 1e4, "<E> hot")
        O.assert_close(vfe.thermodynamics.energy_variance(ed, hot), [a.var() for a in allowed],
                       O.rtol(dtype, 5) * 1e8, "Var hot")
        O.assert_close(vfe.thermodynamics.thermodynamic_entropy(ed, hot), [np.log(4)] * 2, O.rtol(dtype, 5), "S hot")
        assert np.all(np.asarray(vfe.thermodynamics.heat_capacity(ed, hot)) <= 1e-50)


def _moment_args(data, edge):
    if edge:
        e, t = data.draw(S.energies(N)), data.draw(S.temperatures())
    else:
        e, t = data.draw(S.energies(N, masks=False, scales=(1.0, 3.0))), data.draw(S.temperatures(0.5, 2.0))
    return e, t


MOMENT_GRADS = {k: jax.jit(jax.grad(_weighted(f), argnums=(0, 1))) for k, (f, _) in MOMENTS.items()}
MOMENT_JACS = {k: jax.jit(jax.jacfwd(f, argnums=(0, 1))) for k, (f, _) in MOMENTS.items()}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(MOMENTS))
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_thermodynamic_derivatives_have_finite_gradients_at_the_edges(name, dtype, data):
    """grad and jacfwd in (E, T): no NaN, finite, 0 at +inf energies (T ∈ [1e-30, 1e30])."""
    e, t = (S.cast(x, dtype) for x in _moment_args(data, edge=True))
    f, _ = MOMENTS[name]
    value = f(e, t)
    ge, gt = MOMENT_GRADS[name](e, t)
    for d in (ge, gt, *MOMENT_JACS[name](e, t)):
        O.assert_derivative_finite(value, d, name)
    assert np.all(np.asarray(ge)[np.isinf(e)] == 0)


@pytest.mark.parametrize("name", sorted(MOMENTS))
@settings(max_examples=S.examples(4))
@given(data=st.data())
def test_thermodynamic_derivatives_custom_rules_match_finite_differences(name, data):
    """The analytic JVP rules against central differences (check_grads, float64, fwd and rev)."""
    e, t = _moment_args(data, edge=False)
    check_grads(MOMENTS[name][0], (e, t), order=1, modes=("fwd", "rev"), eps=1e-6)


@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_thermodynamic_derivatives_satisfy_the_thermodynamic_identities(data):
    """∂<E>/∂T = C, ∂S/∂T = C/T, ∂F/∂T = -S, Var = C T², S = (<E> - F)/T, <E> = -∂log Z/∂β,
    and S = vfe.entropy(vfe.boltzmann(E, 1/T)) (interior points, float64)."""
    e, t = _moment_args(data, edge=False)
    th = vfe.thermodynamics
    u, v, s, c = (f(e, t) for f, _ in MOMENTS.values())
    tol = O.rtol(np.float64, N) * 10
    O.assert_close(jax.vmap(jax.grad(th.mean_energy, 1))(e, t), c, tol, "d<E>/dT = C")
    O.assert_close(jax.vmap(jax.grad(th.thermodynamic_entropy, 1))(e, t), c / t, tol, "dS/dT = C/T")
    O.assert_close(jax.vmap(jax.grad(vfe.helmholtz_free_energy, 1))(e, t), -s, tol, "dF/dT = -S")
    O.assert_close(v, c * t ** 2, tol * (1 + np.asarray(v)), "Var = C T²")
    f = vfe.helmholtz_free_energy(e, t)
    O.assert_close(s, (u - f) / t, tol * (1 + np.abs(u) + np.abs(f)) / t, "S = (<E> - F)/T")
    O.assert_close(-jax.vmap(jax.grad(vfe.log_partition, 1))(e, 1 / t), u, tol, "<E> = -dlogZ/dβ")
    O.assert_close(vfe.entropy(vfe.boltzmann(e, 1 / t)), s, tol, "S = H(boltzmann)")


@settings(max_examples=S.examples(6))
@given(data=st.data())
def test_thermodynamic_derivatives_masked_equal_clipped_to_1e30(data):
    """+inf energies behave as 1e30 (T ≤ 1e10): same value and gradient."""
    e = data.draw(S.energies(N))
    t = data.draw(S.temperatures(1e-30, 1e10))
    ec = np.minimum(e, 1e30)
    for name, (f, _) in MOMENTS.items():
        vm, vc = np.asarray(f(e, t)), np.asarray(f(ec, t))
        O.assert_close(vm, vc, O.rtol(np.float64, N) * (1 + np.abs(vc)), f"value {name}")
        for gm, gc in zip(MOMENT_GRADS[name](e, t), MOMENT_GRADS[name](ec, t)):
            O.assert_close(gm, gc, O.rtol(np.float64, N) * (1 + np.max(np.abs(gc))), f"grad {name}")


@pytest.mark.parametrize("name", sorted(MOMENTS))
def test_thermodynamic_derivatives_axis_batch_jit_and_low_precision(name):
    f, _ = MOMENTS[name]
    rng = np.random.default_rng(1)
    e = rng.normal(size=(4, 2, 3))
    e[0, 0, 1] = np.inf
    t = np.array([0.5, 2.0])
    ref = np.stack([np.stack([f(e[i, j], t[j]) for j in range(2)]) for i in range(4)])
    O.assert_close(f(e, t), ref, O.rtol(np.float64, 3), f"batched {name}")
    O.assert_close(jax.jit(f)(e, t), ref, O.rtol(np.float64, 3), f"jit {name}")
    O.assert_close(f(np.moveaxis(e, -1, 0), t, axis=0), ref, O.rtol(np.float64, 3), f"axis=0 {name}")
    O.assert_close(f(e, 2.0), np.asarray(f(e, np.full((4, 2), 2.0))), 0.0, f"scalar T {name}")
    for low in (jnp.bfloat16, jnp.float16):
        el = jnp.asarray(e, low)
        got = f(el, jnp.asarray(t, low))
        assert got.dtype == jnp.float32
        want = f(np.asarray(el, np.float32), np.asarray(jnp.asarray(t, low), np.float32))
        O.assert_close(got, want, O.rtol(np.float32, 3) * (1 + np.abs(np.asarray(want))), f"{low.__name__} {name}")


@pytest.mark.parametrize("name", sorted(MOMENTS))
def test_thermodynamic_derivatives_reject_bad_arguments(name):
    f, _ = MOMENTS[name]
    e = np.zeros((2, 3))
    with pytest.raises(ValueError, match="temperature"):
        f(e, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        f(e, -1.0)
    with pytest.raises(ValueError, match="temperature"):
        f(e, float("inf"))
    with pytest.raises(ValueError, match="NaN"):
        f(e, float("nan"))
    with pytest.raises(TypeError, match="energies"):
        f(np.zeros((2, 3), np.int32), 1.0)
    with pytest.raises(ValueError, match="axis"):
        f(e, 1.0, axis=2)
    with pytest.raises(ValueError, match="broadcast"):
        f(e, np.ones(3))
    with pytest.raises(TypeError, match="bool"):
        f(e, True)
