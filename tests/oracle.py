"""50-digit mpmath reference implementations of every quantity vfe computes.

Each function takes one distribution as a 1-D sequence of floats (the *exact* values of the
arrays handed to vfe: cast to the tested dtype first, then read here as binary floats, so the
oracle answers the question vfe was asked, not a nearby one) and returns Python floats or
float64 NumPy arrays, rounded once from 50 significant digits. :func:`rowwise` maps a 1-D
oracle over the last axis of a batch.

Conventions match the library's documentation: ``0 log 0 = 0``; ``-inf`` logits and ``+inf``
energies are forbidden states with probability exactly 0; shifting by the maximum logit /
minimum energy is an exact identity (done here too, so that ``T = 1e-30`` and energies of
``1e4`` need ``exp`` of about ``-1e34``, which mpmath represents exactly enough).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

MP = mpmath.MPContext()
MP.dps = 50
INF = MP.inf


def mpf(x) -> mpmath.mpf:
    """The exact value of the binary float ``x`` (any NumPy float dtype) as a 50-digit number."""
    return MP.mpf(float(x))


def _vec(xs) -> list:
    return [mpf(x) for x in np.asarray(xs, dtype=np.float64).ravel()]


def _out(xs) -> np.ndarray:
    return np.array([float(x) for x in xs], dtype=np.float64)


def _xlogy(x, y):
    """``x log y`` with ``0 log y = 0``."""
    if x == 0:
        return MP.mpf(0)
    return x * MP.log(y)


def _lse(xs):
    """``log Σ exp(x)`` with ``-inf`` entries excluded (``-inf`` if all are)."""
    finite = [x for x in xs if x != -INF]
    if not finite:
        return -INF
    top = max(finite)
    return top + MP.log(MP.fsum(MP.exp(x - top) for x in finite))


# ----------------------------------------------------------------------------- information


def _log_softmax(z):
    lse = _lse(z)
    return [-INF if x == -INF else x - lse for x in z]


def entropy(p) -> float:
    """``H(p) = -Σ p log p`` (``0 log 0 = 0``); the formula's value also for unnormalised ``p``."""
    return float(-MP.fsum(_xlogy(x, x) for x in _vec(p)))


def cross_entropy(p, q) -> float:
    """``H(p, q) = -Σ p log q``; ``+inf`` if some ``q_i = 0 < p_i``."""
    return float(-MP.fsum(_xlogy(a, b) for a, b in zip(_vec(p), _vec(q))))


def kl(p, q) -> float:
    """``Σ p log(p/q)`` (the textbook form; can be negative for unnormalised vectors)."""
    terms = []
    for a, b in zip(_vec(p), _vec(q)):
        if a == 0:
            continue
        terms.append(INF if b == 0 else a * MP.log(a / b))
    return float(MP.fsum(terms))


def _kl_generalised(p, q):
    terms = []
    for a, b in zip(p, q):
        if a == 0:
            terms.append(b)
        elif b == 0:
            terms.append(INF)
        else:
            terms.append(a * MP.log(a / b) - a + b)
    return MP.fsum(terms)


def kl_generalised(p, q) -> float:
    """``Σ p log(p/q) - p + q``: what ``vfe.kl_divergence`` computes (= KL on the simplex)."""
    return float(_kl_generalised(_vec(p), _vec(q)))


def log_softmax(z) -> np.ndarray:
    """``z - log Σ exp z``, ``-inf`` at masked entries."""
    return _out(_log_softmax(_vec(z)))


def softmax(z) -> np.ndarray:
    return _out(MP.exp(x) for x in _log_softmax(_vec(z)))


def entropy_from_logits(z) -> float:
    lp = _log_softmax(_vec(z))
    return float(-MP.fsum(MP.exp(x) * x for x in lp if x != -INF))


def cross_entropy_from_logits(p, z) -> float:
    """``-Σ p_i log softmax(z)_i``; ``+inf`` if a masked logit carries target mass."""
    lq = _log_softmax(_vec(z))
    return float(-MP.fsum(0 if a == 0 else a * b for a, b in zip(_vec(p), lq)))


def nll(z, label: int) -> float:
    """``-log softmax(z)_label``."""
    return float(-_log_softmax(_vec(z))[int(label)])


def kl_from_logits(a, b) -> float:
    """``KL(softmax(a) ‖ softmax(b))``."""
    with MP.workdps(2 * MP.dps):  # d = x - y can be a rounding residue: resolve it far below float64
        return _kl_from_logits(a, b)


def _kl_from_logits(a, b) -> float:
    lp, lq = _log_softmax(_vec(a)), _log_softmax(_vec(b))
    terms = []
    for x, y in zip(lp, lq):
        if x == -INF:  # p = 0: the term p d - p + q is q
            terms.append(MP.exp(y))
            continue
        # p (d - 1 + e^{-d}) with d = x - y: each term >= 0, so 50-digit rounding of d (e.g. for
        # b = a + c) cannot make the sum negative; the sum of the -p + q parts is exactly 0.
        terms.append(INF if y == -INF else MP.exp(x) * (MP.expm1(y - x) + (x - y)))
    return float(max(MP.fsum(terms), 0))


# ----------------------------------------------------------------------------- thermodynamics


def _tempered_log(z, scale, kind):
    """log-probabilities of ``exp(s)/Σ exp(s)``, ``s = (z - max z)/T`` or ``β (z - max z)``."""
    top = max(x for x in z if x != -INF)
    scale = mpf(scale)
    s = [-INF if x == -INF else ((x - top) / scale if kind == "T" else (x - top) * scale) for x in z]
    lse = _lse(s)
    return top, s, lse, [-INF if x == -INF else x - lse for x in s]


def tempered_log_softmax(z, temperature) -> np.ndarray:
    return _out(_tempered_log(_vec(z), temperature, "T")[3])


def tempered_softmax(z, temperature) -> np.ndarray:
    return _out(MP.exp(x) for x in _tempered_log(_vec(z), temperature, "T")[3])


def zero_temperature_softmax(z) -> np.ndarray:
    """The exact ``T → 0`` limit: uniform on the argmax set (ties share the mass equally)."""
    z = np.asarray(z, dtype=np.float64)
    top = z == np.max(z)
    return top / np.sum(top)


def boltzmann(energies, beta) -> np.ndarray:
    """``exp(-β E)/Z``; ``+inf`` energies have probability 0, also at ``β = 0``."""
    z = [-x for x in _vec(energies)]
    return _out(MP.exp(x) for x in _tempered_log(z, beta, "beta")[3])


def log_partition(energies, beta) -> float:
    """``log Σ exp(-β E)`` = ``-β min E + log Σ exp(-β (E - min E))``."""
    z = [-x for x in _vec(energies)]
    top, _, lse, _ = _tempered_log(z, beta, "beta")
    return float(mpf(beta) * top + lse)


def helmholtz(energies, temperature) -> float:
    """``-T log Σ exp(-E/T)`` = ``min E - T log Σ exp(-(E - min E)/T)``."""
    z = [-x for x in _vec(energies)]
    top, _, lse, _ = _tempered_log(z, temperature, "T")
    return float(-(top + mpf(temperature) * lse))


def gibbs(q, energies, temperature) -> float:
    """``Σ q E + T Σ q log q`` (``q_i = 0`` terms are 0 even where ``E_i = +inf``)."""
    q, e = _vec(q), _vec(energies)
    mean = MP.fsum(a * b for a, b in zip(q, e) if a != 0)
    return float(mean + mpf(temperature) * MP.fsum(_xlogy(a, a) for a in q))


# ----------------------------------------------------------------------------- variational


def free_energy(log_q, log_joint) -> float:
    """``Σ q (log q - log p(x, θ))`` with ``q = exp(log_q)``; ``q = 0`` terms are 0."""
    terms = []
    for lq, lj in zip(_vec(log_q), _vec(log_joint)):
        if lq == -INF:
            continue
        terms.append(INF if lj == -INF else MP.exp(lq) * (lq - lj))
    return float(MP.fsum(terms))


def log_evidence(log_joint) -> float:
    return float(_lse(_vec(log_joint)))


def posterior(log_joint) -> np.ndarray:
    return softmax(log_joint)


def log_posterior(log_joint) -> np.ndarray:
    return log_softmax(log_joint)


def gaussian_entropy(std) -> float:
    return float(MP.mpf(1) / 2 * MP.log(2 * MP.pi * MP.e * mpf(std) ** 2))


# ----------------------------------------------------------------------------- derivatives
# Analytic derivatives, evaluated in 50 digits at the exact inputs.


def d_entropy_from_logits(z) -> np.ndarray:
    """``∂H/∂z_i = -p_i (log p_i + H)`` (0 at masked entries)."""
    lp = _log_softmax(_vec(z))
    h = -MP.fsum(MP.exp(x) * x for x in lp if x != -INF)
    return _out(0 if x == -INF else -MP.exp(x) * (x + h) for x in lp)


def d_kl_from_logits(a, b) -> tuple[np.ndarray, np.ndarray]:
    """``(∂KL/∂a, ∂KL/∂b) = (p (d - KL), q - p)``, ``d = log p - log q`` (finite-KL inputs)."""
    lp, lq = _log_softmax(_vec(a)), _log_softmax(_vec(b))
    d = [None if x == -INF else x - y for x, y in zip(lp, lq)]
    k = MP.fsum(MP.exp(x) * di for x, di in zip(lp, d) if di is not None)
    da = [0 if di is None else MP.exp(x) * (di - k) for x, di in zip(lp, d)]
    db = [MP.exp(y) - MP.exp(x) for x, y in zip(lp, lq)]
    return _out(da), _out(db)


def d_kl_generalised(p, q) -> tuple[np.ndarray, np.ndarray]:
    """``(∂/∂p, ∂/∂q) = (log(p/q), 1 - p/q)`` for ``p, q > 0``."""
    p, q = _vec(p), _vec(q)
    return _out(MP.log(a / b) for a, b in zip(p, q)), _out(1 - a / b for a, b in zip(p, q))


def tempered_softmax_jacobians(z, temperature) -> tuple[np.ndarray, np.ndarray]:
    """``∂p_i/∂z_j = p_i (δ_ij - p_j)/T`` and ``∂p_i/∂T = -p_i (z_i - ⟨z⟩)/T²`` (finite z)."""
    zs = _vec(z)
    t = mpf(temperature)
    _, _, _, lp = _tempered_log(zs, temperature, "T")
    p = [MP.exp(x) for x in lp]
    mean = MP.fsum(a * b for a, b in zip(p, zs) if a != 0)
    jz = [[p[i] * ((1 if i == j else 0) - p[j]) / t for j in range(len(p))] for i in range(len(p))]
    jt = [0 if p[i] == 0 else -p[i] * (zs[i] - mean) / t ** 2 for i in range(len(p))]
    return np.array([_out(r) for r in jz]), _out(jt)


def d_log_partition(energies, beta) -> tuple[np.ndarray, float]:
    """``(∂ log Z/∂E, ∂ log Z/∂β) = (-β p, -⟨E⟩)``."""
    e = _vec(energies)
    z = [-x for x in e]
    _, _, _, lp = _tempered_log(z, beta, "beta")
    p = [MP.exp(x) for x in lp]
    mean = MP.fsum(a * b for a, b in zip(p, e) if a != 0)
    return _out(-mpf(beta) * a for a in p), float(-mean)


def d_helmholtz(energies, temperature) -> tuple[np.ndarray, float]:
    """``(∂F/∂E, ∂F/∂T) = (p, -H(p))`` with ``p`` the Boltzmann distribution at ``T``."""
    z = [-x for x in _vec(energies)]
    _, _, _, lp = _tempered_log(z, temperature, "T")
    h = -MP.fsum(MP.exp(x) * x for x in lp if x != -INF)
    return _out(MP.exp(x) for x in lp), float(-h)


def d_gibbs(q, energies, temperature) -> tuple[np.ndarray, np.ndarray, float]:
    """``(∂G/∂q, ∂G/∂E, ∂G/∂T) = (E + T(log q + 1), q, Σ q log q)`` for ``q > 0``."""
    q, e, t = _vec(q), _vec(energies), mpf(temperature)
    return (_out(b + t * (MP.log(a) + 1) for a, b in zip(q, e)), _out(q),
            float(MP.fsum(_xlogy(a, a) for a in q)))


def d_free_energy(log_q, log_joint) -> tuple[np.ndarray, np.ndarray]:
    """``(∂F/∂log q, ∂F/∂log p(x,θ)) = (q (log q - log p + 1), -q)`` where ``q > 0``."""
    lq, lj = _vec(log_q), _vec(log_joint)
    dq = [0 if a == -INF else MP.exp(a) * (a - b + 1) for a, b in zip(lq, lj)]
    return _out(dq), _out(-MP.exp(a) for a in lq)


# ----------------------------------------------------------------------------- batching


def rowwise(fn, *arrays, extra=()):
    """Apply a 1-D oracle to every row (last axis) of 2-D arrays; ``extra[k][i]`` is passed per row."""
    arrays = [np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
              for a in arrays]
    rows = arrays[0].shape[0]
    out = [fn(*(a[i] for a in arrays), *(np.asarray(e).ravel()[i] if np.ndim(e) else e for e in extra))
           for i in range(rows)]
    return np.array(out, dtype=np.float64)


# Tolerance model of the test suite (stated once): rounding in a sum of n terms of a dtype
# stays below K·n·eps relative to the scale of the terms (each test states its scale).
K = 64


def rtol(dtype, n: int = 1) -> float:
    """``K · n · eps(dtype)``."""
    return K * n * float(np.finfo(dtype).eps)


def finite_part(x):
    """``x`` with non-finite entries replaced by 0 (for building scales)."""
    return np.where(np.isfinite(x), x, 0.0)


def assert_close(got, exact, tol, what=""):
    """``|got - exact| ≤ tol`` elementwise; infinities must match exactly; NaN never passes."""
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), exact.shape)
    assert got.shape == exact.shape, (what, got.shape, exact.shape)
    assert not np.isnan(got).any(), f"{what}: NaN in result {got} (exact {exact})"
    inf = np.isinf(exact)
    assert np.array_equal(got[inf], exact[inf]), f"{what}: got {got}, exact {exact} (infinite entries differ)"
    fin = ~inf
    err = np.abs(got[fin] - exact[fin])
    assert np.all(np.isfinite(got[fin])) and np.all(err <= tol[fin]), (
        f"{what}: |got - exact| = {err} exceeds tol {tol[fin]}\n got   = {got}\n exact = {exact}")


def log_n(n: int) -> float:
    return math.log(n)


def assert_derivative_finite(value, deriv, what="", allow_inf=False):
    """A derivative of a batched ``(B,)`` value w.r.t. a ``(B, ...)`` input (or a Jacobian
    ``(B, B, ...)``) has no NaN anywhere, and is finite in every row whose value is finite."""
    value = np.asarray(value, dtype=np.float64)
    deriv = np.asarray(deriv, dtype=np.float64)
    assert not np.isnan(deriv).any(), f"{what}: NaN in derivative {deriv} (value {value})"
    if allow_inf:
        return
    rows = value.reshape(value.shape[0], -1)
    finite_rows = np.isfinite(rows).all(axis=-1)
    d = deriv.reshape(deriv.shape[0], -1)
    assert np.isfinite(d[finite_rows]).all(), f"{what}: non-finite derivative {deriv} where value {value} is finite"
