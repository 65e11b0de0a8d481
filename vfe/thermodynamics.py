r"""Tempered softmax, the Boltzmann distribution, partition functions and free energies.

A language model's sampling distribution at temperature ``T`` is the Boltzmann distribution
of the energies ``E = -z`` (``z`` the logits) at inverse temperature ``β = 1/T`` (claim C1):

.. math::
    \mathrm{softmax}(z/T)_i = \frac{e^{z_i/T}}{\sum_j e^{z_j/T}} = \frac{e^{-\beta E_i}}{Z(\beta)},
    \qquad Z(\beta) = \sum_j e^{-\beta E_j}.

Every function reduces over (or normalises along) one axis and is batched over the others.
Temperatures / inverse temperatures are scalars or arrays broadcastable to the batch shape
(the input's shape without ``axis``).

Edge cases, handled exactly (values and forward/reverse derivatives, float32 and float64):

* ``T → 0`` (down to 1e-30 and below): one-hot on the argmax, with **ties sharing the mass
  equally**; the free energy tends to ``min E``. No overflow: the maximum logit is subtracted
  before dividing by ``T``.
* ``T → ∞`` (up to 1e30) or ``β = 0``: uniform over the unmasked entries.
* ``-inf`` logits (``+inf`` energies) are forbidden states: probability exactly 0 and zero
  derivative, at every temperature including ``β = 0``.
* logits/energies of magnitude 1e4 and beyond (any finite value of the dtype).
* bfloat16/float16 inputs are computed in float32; distributions are returned in the input's
  dtype, scalars (log Z, free energies) in ``promote_types(dtype, float32)``.

A row whose entries are all masked, ``+inf`` logits, ``T ≤ 0``, ``β < 0`` or NaN are outside
the domain: Python-number temperatures are rejected with a ``ValueError`` before any work;
array values are not inspected under ``jit`` (they give NaN) — see :mod:`vfe.validate`.

References:
  E. T. Jaynes, "Information theory and statistical mechanics", Phys. Rev. 106 (1957);
  G. Hinton, O. Vinyals, J. Dean, "Distilling the knowledge in a neural network" (2015), §2.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from vfe import _checks
from vfe._numerics import finite_or_max, mul_no_nan, upcast, xlogy

__all__ = [
    "boltzmann",
    "energy_variance",
    "gibbs_free_energy",
    "heat_capacity",
    "helmholtz_free_energy",
    "log_partition",
    "mean_energy",
    "tempered_log_softmax",
    "tempered_softmax",
    "thermodynamic_entropy",
]

TEMPERATURE = "temperature"
BETA = "beta"


# ----------------------------------------------------------------------------- the kernel
# All kernels work on the last axis; ``scale`` has shape (*batch, 1) and is a temperature T
# (s = (z - max z) / T) or an inverse temperature beta (s = beta (z - max z)).


def _pieces(z, scale, kind):
    masked = jnp.isneginf(z)
    top = jnp.max(z, axis=-1, keepdims=True)
    centred = jnp.where(masked, 0.0, z - top)
    s = centred / scale if kind == TEMPERATURE else centred * scale
    s = jnp.where(masked, -jnp.inf, s)
    lse_s = jnp.log(jnp.sum(jnp.exp(s), axis=-1, keepdims=True))
    log_p = s - lse_s
    return masked, top, centred, s, lse_s, log_p, jnp.exp(log_p)


def _expect(p, x):
    """``Σ_i p_i x_i`` along the last axis, with ``p_i = 0`` terms exactly 0."""
    return jnp.sum(jnp.where(p == 0, 0.0, p * jnp.where(p == 0, 0.0, x)), axis=-1, keepdims=True)


def _s_dot(z_dot, scale_dot, masked, centred, s, scale, kind):
    """Tangent of ``s``; the shift ``max z`` is left out (every normalised quantity ignores it)."""
    if kind == TEMPERATURE:
        # ds/dT = -s/T; it overflows only where p underflows to 0, so clamp it to stay finite
        ds = z_dot / scale - finite_or_max(jnp.where(masked, 0.0, s) / scale) * scale_dot
    else:
        # z - max z is -inf, by overflow, only where p underflows to 0 (a row spanning more than
        # finfo.max); clamped so that the transposed tangent does not multiply -inf by a zero cotangent
        ds = z_dot * scale + finite_or_max(centred) * scale_dot
    return jnp.where(masked, 0.0, ds)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _log_probs_and_probs(z, scale, kind):
    """``(log p, p)`` of the tempered / Boltzmann distribution."""
    return _pieces(z, scale, kind)[5:]


@_log_probs_and_probs.defjvp
def _log_probs_and_probs_jvp(kind, primals, tangents):
    (z, scale), (z_dot, scale_dot) = primals, tangents
    masked, _, centred, s, _, log_p, p = _pieces(z, scale, kind)
    ds = _s_dot(z_dot, scale_dot, masked, centred, s, scale, kind)
    log_p_dot = jnp.where(masked, 0.0, ds - _expect(p, ds))
    p_dot = jnp.where(p == 0, 0.0, p * jnp.where(p == 0, 0.0, log_p_dot))
    return (log_p, p), (log_p_dot, p_dot)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _scaled_lse(z, scale, kind):
    """``T·lse(z/T) = max z + T·lse(s)`` (temperature) or ``lse(βz) = β max z + lse(s)`` (beta)."""
    _, top, _, _, lse_s, _, _ = _pieces(z, scale, kind)
    out = top + scale * lse_s if kind == TEMPERATURE else scale * top + lse_s
    return out[..., 0]


@_scaled_lse.defjvp
def _scaled_lse_jvp(kind, primals, tangents):
    (z, scale), (z_dot, scale_dot) = primals, tangents
    masked, top, centred, s, lse_s, _, p = _pieces(z, scale, kind)
    mean_z_dot = _expect(p, jnp.where(masked, 0.0, z_dot))
    if kind == TEMPERATURE:
        # d/dT [T lse(z/T)] = lse(s) - E_p[s] = H(p)
        out = top + scale * lse_s
        dot = mean_z_dot + scale_dot * (lse_s - _expect(p, s))
    else:
        # d/dbeta lse(beta z) = E_p[z] = max z + E_p[z - max z]
        out = scale * top + lse_s
        dot = scale * mean_z_dot + scale_dot * (top + _expect(p, centred))
    return out[..., 0], dot[..., 0]


# ----------------------------------------------------------------------------- plumbing


def _prepare(func, name, x, scale_name, scale, axis, *, allow_zero=False):
    x = _checks.floating(func, name, x)
    axis = _checks.class_axis(func, name, x, axis)
    scale = _checks.positive_scale(func, scale_name, scale, _checks.batch_shape(x.shape, axis),
                                   allow_zero=allow_zero)
    return x, scale, axis


def _last(x, scale, axis, negate=False):
    z = jnp.moveaxis(upcast(x), axis, -1)
    z = -z if negate else z
    return z, jnp.asarray(scale, z.dtype)[..., None]


@functools.partial(jax.jit, static_argnames=("axis", "kind", "negate", "log"))
def _distribution(x, scale, axis, kind, negate, log):
    z, scale = _last(x, scale, axis, negate)
    out = _log_probs_and_probs(z, scale, kind)[0 if log else 1]
    return jnp.moveaxis(out, -1, axis).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("axis", "kind"))
def _scaled_lse_jit(x, scale, axis, kind):
    z, scale = _last(x, scale, axis, negate=True)
    return _scaled_lse(z, scale, kind)


# ----------------------------------------------------------------------------- public API


def tempered_softmax(logits: Float[Array, "*batch n"], temperature, *, axis: int = -1
                     ) -> Float[Array, "*batch n"]:
    r"""Softmax at temperature ``T``: the sampling distribution of a language model.

    .. math:: \mathrm{softmax}(z/T)_i = \frac{e^{(z_i - \max z)/T}}{\sum_j e^{(z_j - \max z)/T}}

    Limits (exact, see module notes): ``T → 0`` uniform over the argmax set, ``T → ∞``
    uniform over unmasked entries. Claims C1–C3.

    Args:
      logits: shape ``(*batch, n)``, ``-inf`` for masked entries.
      temperature: ``T > 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the axis holding the distribution.

    Returns:
      probabilities, same shape and dtype as ``logits``.
    """
    x, t, axis = _prepare("tempered_softmax", "logits", logits, "temperature", temperature, axis)
    return _distribution(x, t, axis=axis, kind=TEMPERATURE, negate=False, log=False)


def tempered_log_softmax(logits: Float[Array, "*batch n"], temperature, *, axis: int = -1
                         ) -> Float[Array, "*batch n"]:
    r"""Log-probabilities of :func:`tempered_softmax`: :math:`(z - \max z)/T - \operatorname{lse}((z - \max z)/T)`.

    Masked entries are ``-inf`` with zero derivative. The derivative of an entry whose
    probability underflows to 0 can overflow to ``±inf`` as ``T → 0``: that is its value.
    """
    x, t, axis = _prepare("tempered_log_softmax", "logits", logits, "temperature", temperature, axis)
    return _distribution(x, t, axis=axis, kind=TEMPERATURE, negate=False, log=True)


def boltzmann(energies: Float[Array, "*batch n"], beta, *, axis: int = -1) -> Float[Array, "*batch n"]:
    r"""The Boltzmann (Gibbs) distribution of ``energies`` at inverse temperature ``β ≥ 0``.

    .. math:: p_i = \frac{e^{-\beta E_i}}{Z(\beta)}, \qquad Z(\beta) = \sum_j e^{-\beta E_j}

    ``+inf`` energies are forbidden states (probability 0, also at ``β = 0``). ``β = 0`` gives
    the uniform distribution over allowed states. Claims C1, B6.

    Args:
      energies: shape ``(*batch, n)``.
      beta: ``β ≥ 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the axis holding the states.

    Returns:
      probabilities, same shape and dtype as ``energies``.
    """
    x, b, axis = _prepare("boltzmann", "energies", energies, "beta", beta, axis, allow_zero=True)
    return _distribution(x, b, axis=axis, kind=BETA, negate=True, log=False)


def log_partition(energies: Float[Array, "*batch n"], beta, *, axis: int = -1) -> Float[Array, "*batch"]:
    r"""Log of the partition function :math:`\log Z(\beta) = \log\sum_i e^{-\beta E_i}`.

    Computed as :math:`-\beta \min E + \log\sum_i e^{-\beta(E_i - \min E)}`. Derivatives:
    :math:`\partial_\beta \log Z = -\langle E\rangle`, :math:`\partial_{E_i}\log Z = -\beta p_i`
    (claim C6). With ``β = 1`` and ``E = -\log p(x, θ)`` this is the log-evidence (claim B6).

    Args:
      energies: shape ``(*batch, n)``; ``+inf`` for forbidden states.
      beta: ``β ≥ 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the axis holding the states.

    Returns:
      ``log Z`` of shape ``(*batch,)``.
    """
    x, b, axis = _prepare("log_partition", "energies", energies, "beta", beta, axis, allow_zero=True)
    return _scaled_lse_jit(x, b, axis=axis, kind=BETA)


def helmholtz_free_energy(energies: Float[Array, "*batch n"], temperature, *, axis: int = -1
                          ) -> Float[Array, "*batch"]:
    r"""Helmholtz free energy :math:`F = -T\log Z = \langle E\rangle - T S` at temperature ``T``.

    Computed as :math:`\min E - T\log\sum_i e^{-(E_i-\min E)/T}`, so it tends to ``min E``
    exactly as ``T → 0`` (no ``0·∞``) for energies of any magnitude. Derivatives:
    :math:`\partial F/\partial T = -S` (the Boltzmann entropy), :math:`\partial F/\partial E_i = p_i`
    (claims C5, C6).

    Args:
      energies: shape ``(*batch, n)``; ``+inf`` for forbidden states.
      temperature: ``T > 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the axis holding the states.

    Returns:
      ``F`` of shape ``(*batch,)``.
    """
    x, t, axis = _prepare("helmholtz_free_energy", "energies", energies, "temperature", temperature, axis)
    return -_scaled_lse_jit(x, t, axis=axis, kind=TEMPERATURE)


def gibbs_free_energy(probs: Float[Array, "*batch n"], energies: Float[Array, "*batch n"], temperature, *,
                      axis: int = -1) -> Float[Array, "*batch"]:
    r"""Gibbs (variational) free energy of a distribution ``q`` over states.

    .. math:: G_T(q) = \mathbb{E}_q[E] - T\,H(q) = \sum_i q_i E_i + T \sum_i q_i\log q_i

    Its minimum over ``q`` is :func:`helmholtz_free_energy`, attained at the Boltzmann
    distribution (claim C5). States with ``q_i = 0`` contribute 0 even if ``E_i = +inf``.

    Args:
      probs: ``q``, shape ``(*batch, n)``.
      energies: same shape.
      temperature: ``T > 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the axis holding the states.

    Returns:
      ``G_T(q)`` of shape ``(*batch,)``.
    """
    func = "gibbs_free_energy"
    x, t, axis = _prepare(func, "energies", energies, "temperature", temperature, axis)
    q = _checks.floating(func, "probs", probs)
    _checks.same_shape(func, ("probs", "energies"), q, x)
    return _gibbs(q, x, t, axis=axis)


@jax.custom_jvp
def _gibbs_terms(q, energies, temperature):
    """``q E + T q log q`` elementwise (``0`` where ``q = 0``)."""
    return mul_no_nan(q, energies) + temperature * xlogy(q, q)


@_gibbs_terms.defjvp
def _gibbs_terms_jvp(primals, tangents):
    (q, e, t), (q_dot, e_dot, t_dot) = primals, tangents
    safe_q = jnp.where(q == 0, jnp.ones_like(q), q)
    # d/dq = E + T (log q + 1): at q = 0 it is -inf (+inf for a forbidden state, E = +inf),
    # clamped to ±finfo.max *after* the factor T
    at_zero = jnp.where(jnp.isposinf(e), jnp.inf, -jnp.inf)
    d_dq = finite_or_max(jnp.where(q == 0, at_zero, e + t * (jnp.log(safe_q) + 1.0)))
    dot = q_dot * d_dq + jnp.where(q == 0, 0.0, q * jnp.where(q == 0, 0.0, e_dot)) + t_dot * xlogy(q, q)
    return _gibbs_terms(q, e, t), dot


@functools.partial(jax.jit, static_argnames=("axis",))
def _gibbs(q, energies, temperature, axis):
    e, t = _last(energies, temperature, axis)
    q = jnp.moveaxis(upcast(q), axis, -1)
    return jnp.sum(_gibbs_terms(q, e, jnp.broadcast_to(t, q.shape)), axis=-1)


# ----------------------------------------------------------------------------- thermodynamic derivatives
# One kernel for the four moments of the Boltzmann law at temperature T, on the last axis, with
# z = -E (logits), s = (z - max z)/T, p = softmax(s), g = E - min E = -(z - max z) >= 0:
#   <E> = min E + <g>,   Var(E) = <(g - <g>)^2>,   S = lse(s) - <s>,   C = Var(E)/T^2 = <(s - <s>)^2>.
# Every term with p_i = 0 is exactly 0 (masked states, and states whose weight underflows as
# T -> 0, where s_i and g_i/T may be -inf or overflow). C is computed as the variance of s, never
# as Var(E)/T^2 (whose T^2 underflows in float32 at T = 1e-30). The derivatives are given
# analytically: for any f, d<f> = <df> + <(f - <f>) ds>, with ds the (clamped) tangent of s.

_MOMENTS = ("mean_energy", "energy_variance", "entropy", "heat_capacity")


def _moment_pieces(z, temperature):
    masked, top, centred, s, lse_s, _, p = _pieces(z, temperature, TEMPERATURE)
    g = -centred  # 0 at masked entries
    mean_g = _expect(p, g)
    dg = jnp.where(p == 0, 0.0, g - mean_g)
    mean_s = _expect(p, s)
    sigma = jnp.where(p == 0, 0.0, s - mean_s)  # s - <s> = -(g - <g>)/T where p > 0
    return masked, top, centred, s, p, mean_g, dg, lse_s, mean_s, sigma


@jax.custom_jvp
def _moments(z, temperature):
    """``(<E>, Var E, S, C)`` of the Boltzmann law of ``E = -z`` at ``T``, each of shape ``(*batch,)``."""
    _, top, _, _, p, mean_g, dg, lse_s, mean_s, sigma = _moment_pieces(z, temperature)
    mean_e = -top + mean_g
    var_e = _expect(p, dg * dg)
    entropy = lse_s - mean_s
    capacity = _expect(p, sigma * sigma)
    return tuple(x[..., 0] for x in (mean_e, var_e, entropy, capacity))


@_moments.defjvp
def _moments_jvp(primals, tangents):
    (z, t), (z_dot, t_dot) = primals, tangents
    masked, _, centred, s, p, _, dg, _, _, sigma = _moment_pieces(z, t)
    out = _moments(z, t)
    var_e, capacity = out[1][..., None], out[3][..., None]
    ds = _s_dot(z_dot, t_dot, masked, centred, s, t, TEMPERATURE)
    z_dot = jnp.where(masked, 0.0, z_dot)
    # <E> = -<z>:            d<E>  = -<dz> + <(g - <g>) ds>
    # Var E = <(g-<g>)^2>:   dVar  = -2<(g - <g>) dz> + <((g - <g>)^2 - Var) ds>
    # S = lse(s) - <s>:      dS    = -<(s - <s>) ds>
    # C = <(s-<s>)^2>:       dC    = <(2(s - <s>) + (s - <s>)^2 - C) ds>
    dots = (-_expect(p, z_dot) + _expect(p, dg * ds),
            -2.0 * _expect(p, dg * z_dot) + _expect(p, (dg * dg - var_e) * ds),
            -_expect(p, sigma * ds),
            _expect(p, (2.0 * sigma + sigma * sigma - capacity) * ds))
    return out, tuple(d[..., 0] for d in dots)


@functools.partial(jax.jit, static_argnames=("axis", "which"))
def _moment_jit(x, temperature, axis, which):
    z, t = _last(x, temperature, axis, negate=True)
    return _moments(z, t)[_MOMENTS.index(which)]


def _moment(func, which, energies, temperature, axis):
    x, t, axis = _prepare(func, "energies", energies, "temperature", temperature, axis)
    return _moment_jit(x, t, axis=axis, which=which)


_MOMENT_NOTES = r"""
    Edge cases (values and forward/reverse derivatives finite and NaN-free): ``+inf`` energies
    are forbidden states (probability 0, zero derivative); ``T → 0`` (down to 1e-30 and below)
    gives the ground states, ties sharing the mass; ``T → ∞`` (up to 1e30) the uniform law over
    allowed states; energies of any finite magnitude (the minimum energy is subtracted first).
    bfloat16/float16 inputs are computed in float32; the result has dtype
    ``promote_types(dtype, float32)``.

    Args:
      energies: shape ``(*batch, n)`` (``n`` along ``axis``); ``+inf`` for forbidden states.
      temperature: ``T > 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the axis holding the states.
"""


def _with_notes(func):
    """Inserts :data:`_MOMENT_NOTES` (edge cases and Args) before the docstring's Returns section."""
    head, sep, tail = func.__doc__.partition("\n    Returns:")
    func.__doc__ = head.rstrip() + "\n" + _MOMENT_NOTES + sep + tail
    return func


@_with_notes
def mean_energy(energies: Float[Array, "*batch n"], temperature, *, axis: int = -1) -> Float[Array, "*batch"]:
    r"""Mean energy (internal energy) of the Boltzmann distribution at temperature ``T``.

    .. math::
        \langle E\rangle_T = \sum_i p_i E_i = -\frac{\partial\log Z}{\partial\beta}
        = E_{\min} + \sum_i p_i (E_i - E_{\min}), \qquad p = \mathrm{boltzmann}(E, 1/T)

    Limits: ``T → 0`` gives :math:`E_{\min}`, ``T → ∞`` the plain mean of the allowed energies.
    Derivatives: :math:`\partial\langle E\rangle/\partial T = \mathrm{Var}(E)/T^2` (the heat
    capacity), :math:`\partial\langle E\rangle/\partial E_j = p_j\big(1 - (E_j - \langle E\rangle)/T\big)`.
    Claims C5, C6.

    Returns:
      :math:`\langle E\rangle_T`, shape ``(*batch,)``.

    References: Jaynes (1957); L. D. Landau and E. M. Lifshitz, *Statistical Physics*, Part 1, §31.
    """
    return _moment("mean_energy", "mean_energy", energies, temperature, axis)


@_with_notes
def energy_variance(energies: Float[Array, "*batch n"], temperature, *, axis: int = -1) -> Float[Array, "*batch"]:
    r"""Variance of the energy under the Boltzmann distribution at temperature ``T``.

    .. math::
        \mathrm{Var}_T(E) = \sum_i p_i \big(E_i - \langle E\rangle_T\big)^2
        = \frac{\partial^2\log Z}{\partial\beta^2} \ge 0

    Computed from the energy gaps :math:`E_i - E_{\min}` (no ``⟨E²⟩ - ⟨E⟩²`` cancellation).
    Limits: ``0`` as ``T → 0`` (ties have equal energies), the plain variance of the allowed
    energies as ``T → ∞``. Derivative: :math:`\partial\,\mathrm{Var}/\partial T = \kappa_3/T^2`
    (the third central moment). Claim C6.

    Returns:
      :math:`\mathrm{Var}_T(E) \ge 0`, shape ``(*batch,)``.

    References: Landau and Lifshitz, *Statistical Physics*, Part 1, §112 (energy fluctuations).
    """
    return _moment("energy_variance", "energy_variance", energies, temperature, axis)


@_with_notes
def thermodynamic_entropy(energies: Float[Array, "*batch n"], temperature, *, axis: int = -1
                          ) -> Float[Array, "*batch"]:
    r"""Entropy of the Boltzmann distribution at temperature ``T`` (in nats, ``k_B = 1``).

    .. math::
        S(T) = -\sum_i p_i\log p_i = \log Z + \frac{\langle E\rangle}{T}
        = -\frac{\partial F}{\partial T} = \frac{\langle E\rangle - F}{T}

    The same value as ``vfe.entropy(vfe.boltzmann(energies, 1/T))``, computed from the
    log-probabilities as :math:`\operatorname{lse}(s) - \langle s\rangle`,
    :math:`s = -(E - E_{\min})/T` (a sum of two non-negative terms, accurate also where
    :math:`p_i` underflows and at ``T = 1e-30``, where ``1/T`` overflows float32). Limits:
    ``log k`` as ``T → 0`` (``k`` tied ground states), ``log n_{allowed}`` as ``T → ∞``.
    Derivative: :math:`\partial S/\partial T = C/T = \mathrm{Var}(E)/T^3 \ge 0`. Claims C4, C6.

    Returns:
      :math:`S(T) \ge 0`, shape ``(*batch,)``.

    References: Jaynes (1957), eq. (3-5); Cover & Thomas, *Elements of Information Theory*, §2.1.
    """
    return _moment("thermodynamic_entropy", "entropy", energies, temperature, axis)


@_with_notes
def heat_capacity(energies: Float[Array, "*batch n"], temperature, *, axis: int = -1) -> Float[Array, "*batch"]:
    r"""Heat capacity of the Boltzmann distribution at temperature ``T`` (``k_B = 1``).

    .. math::
        C(T) = \frac{\partial\langle E\rangle}{\partial T} = T\frac{\partial S}{\partial T}
        = \frac{\mathrm{Var}_T(E)}{T^2} = \mathrm{Var}_p\!\Big(\frac{E}{T}\Big)

    Computed as the variance of :math:`s = -(E - E_{\min})/T` under :math:`p` (never as
    ``Var/T²``: ``T²`` underflows float32 at ``T = 1e-30``): a function of the dimensionless
    gaps :math:`(E_i - E_{\min})/T` alone. It tends to 0 at both ends: ``T → 0`` (the gaps
    freeze out) and ``T → ∞`` (like :math:`\mathrm{Var}_{\mathrm{uniform}}(E)/T^2`). Claim C6.

    Returns:
      :math:`C(T) \ge 0`, shape ``(*batch,)``.

    References: Landau and Lifshitz, *Statistical Physics*, Part 1, §§ 16, 112.
    """
    return _moment("heat_capacity", "heat_capacity", energies, temperature, axis)
