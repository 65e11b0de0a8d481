r"""Neural scaling laws: Kaplan et al.'s power laws and Chinchilla's compute-optimal allocation (claim E4).

**Kaplan et al. (2020).** The test loss (nats per token) of a Transformer language model
trained to convergence, as a function of its non-embedding parameter count ``N`` (data not
limiting), or of the dataset size ``D`` in tokens (model large enough), follows a power law

.. math:: L(N) = (N_c/N)^{\alpha_N},\qquad L(D) = (D_c/D)^{\alpha_D},

a straight line of slope :math:`-\alpha` in log-log coordinates:
:math:`\log L = \alpha(\log N_c - \log N)`. Their fitted constants (their eqs. 1.1–1.2, Table 5)
are :data:`KAPLAN`: :math:`\alpha_N = 0.076`, :math:`N_c = 8.8\times10^{13}`,
:math:`\alpha_D = 0.095`, :math:`D_c = 5.4\times10^{13}`.

**Hoffmann et al. (2022), "Chinchilla", Approach 3.** A parametric fit of the final loss

.. math:: L(N, D) = E + \frac{A}{N^\alpha} + \frac{B}{D^\beta},

with training compute :math:`C \approx 6ND` FLOPs, has for each budget ``C`` the minimiser
(their eq. 4, Appendix D.2)

.. math:: N_{opt}(C) = G\Big(\frac{C}{6}\Big)^{a},\quad D_{opt}(C) = G^{-1}\Big(\frac{C}{6}\Big)^{b},\quad
          G = \Big(\frac{\alpha A}{\beta B}\Big)^{\frac{1}{\alpha+\beta}},\quad
          a = \frac{\beta}{\alpha+\beta},\ b = \frac{\alpha}{\alpha+\beta},\ a + b = 1.

Their fitted constants are :data:`CHINCHILLA` (:math:`E = 1.69`, :math:`A = 406.4`,
:math:`B = 410.7`, :math:`\alpha = 0.34`, :math:`\beta = 0.28`), the values printed in the paper's
body. Those are rounded: they give :math:`a = 0.4516`, :math:`b = 0.5484`, while the paper's
Table 2 reports :math:`a = 0.46`, :math:`b = 0.54` for Approach 3; Besiroglu et al. (2024) show that
this rounding visibly biases predictions made from the printed constants.

**Numerics.** Every power is computed as ``exp(α·(log x_c − log x))`` in at least float32, so
``N ~ 1e12``, ``D ~ 1e13`` and ``C ~ 1e25`` never overflow. Inputs ``N, D, C`` must be
positive (``0`` gives an infinite loss; Python/NumPy values ``≤ 0`` are rejected).
bfloat16/float16 inputs are computed in float32 (float16 itself cannot hold ``N > 65504``).

References:
  J. Kaplan et al., "Scaling laws for neural language models", arXiv:2001.08361 (2020), §1.2, Table 5.
  J. Hoffmann et al., "Training compute-optimal large language models", arXiv:2203.15556 (2022),
  §3.3, eq. (4), Table 2, Appendix D.2.
  T. Besiroglu et al., "Chinchilla scaling: a replication attempt", arXiv:2404.10102 (2024).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from vfe import _checks
from vfe._numerics import result_compute_dtype as _dtype

__all__ = [
    "CHINCHILLA",
    "KAPLAN",
    "ChinchillaConstants",
    "KaplanConstants",
    "PowerLawFit",
    "chinchilla_loss",
    "compute_optimal",
    "compute_optimal_exponents",
    "fit_power_law",
    "kaplan_loss_d",
    "kaplan_loss_n",
    "power_law",
    "training_flops",
]


class KaplanConstants(NamedTuple):
    """Constants of Kaplan et al.'s power laws ``L(N) = (N_c/N)^α_N`` and ``L(D) = (D_c/D)^α_D``."""

    alpha_n: float
    n_c: float
    alpha_d: float
    d_c: float


KAPLAN = KaplanConstants(alpha_n=0.076, n_c=8.8e13, alpha_d=0.095, d_c=5.4e13)
"""Kaplan et al. (2020), eqs. (1.1)–(1.2): ``N`` in non-embedding parameters, ``D`` in tokens, loss in nats."""


class ChinchillaConstants(NamedTuple):
    """Constants of ``L(N, D) = E + A/N^α + B/D^β`` (a pytree: fields may be arrays)."""

    e: float
    a: float
    b: float
    alpha: float
    beta: float


CHINCHILLA = ChinchillaConstants(e=1.69, a=406.4, b=410.7, alpha=0.34, beta=0.28)
"""Hoffmann et al. (2022), Approach 3, as printed in §3.3 (rounded; see the module docstring)."""


class PowerLawFit(NamedTuple):
    """A fitted power law ``L = (x_c/x)^α``: the exponent and ``log x_c`` (``x_c`` may overflow)."""

    alpha: Array
    log_x_c: Array

    @property
    def x_c(self) -> Array:
        """``x_c = exp(log x_c)`` (``inf`` if it overflows the dtype)."""
        return jnp.exp(self.log_x_c)


# ----------------------------------------------------------------------------- argument checks


def _arg(func: str, name: str, value, *, positive: bool = False) -> jax.Array:
    """A floating JAX array (integer arrays, e.g. counts, cast to float); ``positive``: > 0."""
    return _checks.parameter(func, name, value, positive=positive, integers=True)


_broadcast = _checks.broadcast_shape


def _constants(func: str, constants, cls) -> tuple[jax.Array, ...]:
    if not isinstance(constants, cls):
        raise TypeError(f"{func}: argument `constants` must be a {cls.__name__}, got {type(constants).__name__}")
    return tuple(_arg(func, f"constants.{f}", v, positive=f != "e") for f, v in zip(cls._fields, constants))


def _cast(dtype, *arrays):
    return tuple(a.astype(dtype) for a in arrays)


# ----------------------------------------------------------------------------- Kaplan


def power_law(x: Float[Array, "*shape"], x_c: Float[Array, "*shape"], alpha: Float[Array, "*shape"]
              ) -> Float[Array, "*shape"]:
    r"""The power law :math:`(x_c/x)^\alpha = \exp\big(\alpha(\log x_c - \log x)\big)`.

    Args:
      x: the scale (parameters, tokens, FLOPs), ``> 0``; all three arguments broadcast.
      x_c: the scale at which the law equals 1, ``> 0``.
      alpha: the exponent.

    Returns:
      the value, of the broadcast shape; computed in log space (no overflow of ``x_c/x``).
    """
    func = "power_law"
    args = (_arg(func, "x", x, positive=True), _arg(func, "x_c", x_c, positive=True), _arg(func, "alpha", alpha))
    _broadcast(func, ("x", "x_c", "alpha"), args)
    return _power_law(*args)


@jax.jit
def _power_law(x, x_c, alpha):
    x, x_c, alpha = _cast(_dtype(x, x_c, alpha), x, x_c, alpha)
    return jnp.exp(alpha * (jnp.log(x_c) - jnp.log(x)))


def kaplan_loss_n(n: Float[Array, "*shape"], *, alpha_n=KAPLAN.alpha_n, n_c=KAPLAN.n_c) -> Float[Array, "*shape"]:
    r"""Kaplan et al.'s :math:`L(N) = (N_c/N)^{\alpha_N}` (nats/token; ``N`` non-embedding parameters).

    With the defaults (:data:`KAPLAN`), :math:`L(10^9) = (8.8\times10^4)^{0.076} \approx 2.375`.

    Args:
      n: ``N > 0``, any shape.
      alpha_n: :math:`\alpha_N` (default 0.076).
      n_c: :math:`N_c` (default 8.8e13).

    Returns:
      the loss, of the broadcast shape.
    """
    func = "kaplan_loss_n"
    args = (_arg(func, "n", n, positive=True), _arg(func, "n_c", n_c, positive=True), _arg(func, "alpha_n", alpha_n))
    _broadcast(func, ("n", "n_c", "alpha_n"), args)
    return _power_law(*args)


def kaplan_loss_d(d: Float[Array, "*shape"], *, alpha_d=KAPLAN.alpha_d, d_c=KAPLAN.d_c) -> Float[Array, "*shape"]:
    r"""Kaplan et al.'s :math:`L(D) = (D_c/D)^{\alpha_D}` (nats/token; ``D`` tokens).

    Args:
      d: ``D > 0``, any shape.
      alpha_d: :math:`\alpha_D` (default 0.095).
      d_c: :math:`D_c` (default 5.4e13).

    Returns:
      the loss, of the broadcast shape.
    """
    func = "kaplan_loss_d"
    args = (_arg(func, "d", d, positive=True), _arg(func, "d_c", d_c, positive=True), _arg(func, "alpha_d", alpha_d))
    _broadcast(func, ("d", "d_c", "alpha_d"), args)
    return _power_law(*args)


# ----------------------------------------------------------------------------- Chinchilla


def training_flops(n: Float[Array, "*shape"], d: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""Training compute :math:`C \approx 6ND` FLOPs (forward and backward pass, Kaplan et al. §2.1)."""
    func = "training_flops"
    args = (_arg(func, "n", n, positive=True), _arg(func, "d", d, positive=True))
    _broadcast(func, ("n", "d"), args)
    return _flops(*args)


@jax.jit
def _flops(n, d):
    n, d = _cast(_dtype(n, d), n, d)
    return 6.0 * n * d


def chinchilla_loss(n: Float[Array, "*shape"], d: Float[Array, "*shape"], *,
                    constants: ChinchillaConstants = CHINCHILLA) -> Float[Array, "*shape"]:
    r"""Chinchilla's parametric loss :math:`L(N, D) = E + A/N^\alpha + B/D^\beta` (nats/token).

    Args:
      n: parameters ``N > 0``; broadcasts with ``d`` and the constants.
      d: training tokens ``D > 0``.
      constants: a :class:`ChinchillaConstants` (fields may be arrays, e.g. to vary them);
        default :data:`CHINCHILLA`.

    Returns:
      the loss, of the broadcast shape; ``A/N^α`` is computed as ``A·exp(−α log N)``.
    """
    func = "chinchilla_loss"
    const = _constants(func, constants, ChinchillaConstants)
    args = (_arg(func, "n", n, positive=True), _arg(func, "d", d, positive=True)) + const
    _broadcast(func, ("n", "d") + tuple(f"constants.{f}" for f in ChinchillaConstants._fields), args)
    return _chinchilla(*args)


@jax.jit
def _chinchilla(n, d, e, a, b, alpha, beta):
    n, d, e, a, b, alpha, beta = _cast(_dtype(n, d, e, a, b, alpha, beta), n, d, e, a, b, alpha, beta)
    return e + a * jnp.exp(-alpha * jnp.log(n)) + b * jnp.exp(-beta * jnp.log(d))


def compute_optimal_exponents(constants: ChinchillaConstants = CHINCHILLA) -> tuple[Array, Array]:
    r"""The exponents of :math:`N_{opt} \propto C^a`, :math:`D_{opt} \propto C^b`: :math:`a = \beta/(\alpha+\beta)`, :math:`b = \alpha/(\alpha+\beta)`.

    ``a + b = 1`` because :math:`N_{opt}D_{opt} = C/6`. With :data:`CHINCHILLA`:
    ``a = 0.4516``, ``b = 0.5484`` (the paper's Table 2 prints 0.46 and 0.54 for Approach 3).

    Returns:
      ``(a, b)``, of the broadcast shape of ``constants.alpha`` and ``constants.beta``.
    """
    func = "compute_optimal_exponents"
    const = _constants(func, constants, ChinchillaConstants)
    _broadcast(func, tuple(f"constants.{f}" for f in ChinchillaConstants._fields), const)
    return _exponents(const[3], const[4])


@jax.jit
def _exponents(alpha, beta):
    alpha, beta = _cast(_dtype(alpha, beta), alpha, beta)
    return beta / (alpha + beta), alpha / (alpha + beta)


def compute_optimal(c: Float[Array, "*shape"], *, constants: ChinchillaConstants = CHINCHILLA
                    ) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
    r"""Compute-optimal parameters and tokens for a budget of ``C`` FLOPs (closed form, Chinchilla eq. 4).

    Minimising :math:`L(N, C/(6N))` over :math:`N` (set the derivative
    :math:`-\alpha A N^{-\alpha-1} + \beta B D^{-\beta} / N = 0` with :math:`D = C/(6N)`):

    .. math:: N_{opt} = G\,(C/6)^{\beta/(\alpha+\beta)},\quad D_{opt} = G^{-1}(C/6)^{\alpha/(\alpha+\beta)},
              \quad G = \Big(\frac{\alpha A}{\beta B}\Big)^{1/(\alpha+\beta)}.

    Computed in log space. With :data:`CHINCHILLA` and Gopher's budget ``C = 5.76e23``:
    ``N_opt ≈ 3.22e10`` parameters, ``D_opt ≈ 2.98e12`` tokens. (Hoffmann et al. quote about 40B
    parameters for Approach 3 at that budget; the printed constants are rounded, see the module
    docstring.)

    Args:
      c: the budget ``C > 0`` in FLOPs, any shape.
      constants: :class:`ChinchillaConstants` (``E`` plays no role).

    Returns:
      ``(N_opt, D_opt)``, each of the broadcast shape, with ``6 N_opt D_opt = C``.
    """
    func = "compute_optimal"
    const = _constants(func, constants, ChinchillaConstants)
    c = _arg(func, "c", c, positive=True)
    _broadcast(func, ("c",) + tuple(f"constants.{f}" for f in ChinchillaConstants._fields), (c,) + const)
    return _compute_optimal(c, *const[1:])


@jax.jit
def _compute_optimal(c, a, b, alpha, beta):
    c, a, b, alpha, beta = _cast(_dtype(c, a, b, alpha, beta), c, a, b, alpha, beta)
    total = alpha + beta
    log_g = (jnp.log(alpha * a) - jnp.log(beta * b)) / total
    log_half = jnp.log(c) - jnp.log(6.0)
    return jnp.exp(log_g + beta / total * log_half), jnp.exp(-log_g + alpha / total * log_half)


# ----------------------------------------------------------------------------- fitting


def fit_power_law(x: Float[Array, "*batch n"], loss: Float[Array, "*batch n"], *, axis: int = -1,
                  where=None) -> PowerLawFit:
    r"""Least-squares fit of :math:`L = (x_c/x)^\alpha` in log-log coordinates (closed form).

    Ordinary least squares of :math:`y = \log L` on :math:`u = \log x`: slope
    :math:`s = \mathrm{cov}(u, y)/\mathrm{var}(u)`, intercept :math:`i = \bar y - s\bar u`;
    then :math:`\alpha = -s` and :math:`\log x_c = i/\alpha`. Exact points of a power law are
    recovered to rounding. A law with an irreducible term (:math:`E + (x_c/x)^\alpha`) is not a
    line in log-log: subtract ``E`` first.

    Args:
      x: scales ``> 0``; the points lie along ``axis``.
      loss: losses ``> 0``, same shape as ``x``.
      axis: the axis of the points (default ``-1``); other axes are independent fits.
      where: optional boolean mask of the points to use (broadcast to ``x``'s shape); at least
        two distinct ``x`` must be used per fit.

    Returns:
      :class:`PowerLawFit` ``(alpha, log_x_c)``, each of the batch shape. ``log_x_c`` is NaN or
      infinite when ``alpha = 0`` (a flat law has no ``x_c``), NaN when all ``x`` are equal.
    """
    func = "fit_power_law"
    x = _checks.floating(func, "x", x)
    loss = _checks.floating(func, "loss", loss)
    _checks.same_shape(func, ("x", "loss"), x, loss)
    ax = _checks.axis(func, axis, x.ndim)
    where = _checks.mask(func, where, x.shape, "`x`")
    return _fit(x, loss, where, axis=ax)


@functools.partial(jax.jit, static_argnames=("axis",))
def _fit(x, loss, where, axis):
    mask = jnp.ones(x.shape, dtype=bool) if where is None else jnp.broadcast_to(where, x.shape)
    x, loss, mask = (jnp.moveaxis(a, axis, -1) for a in (x, loss, mask))
    dtype = _dtype(x, loss)
    w = mask.astype(dtype)
    u = jnp.log(jnp.where(mask, x.astype(dtype), 1.0))
    y = jnp.log(jnp.where(mask, loss.astype(dtype), 1.0))
    count = jnp.sum(w, axis=-1, keepdims=True)
    u_bar = jnp.sum(w * u, axis=-1, keepdims=True) / count
    y_bar = jnp.sum(w * y, axis=-1, keepdims=True) / count
    du, dy = w * (u - u_bar), w * (y - y_bar)
    slope = jnp.sum(du * dy, axis=-1) / jnp.sum(du * du, axis=-1)
    intercept = y_bar[..., 0] - slope * u_bar[..., 0]
    alpha = -slope
    return PowerLawFit(alpha, intercept / alpha)
