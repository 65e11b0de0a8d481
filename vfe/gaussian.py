r"""Closed forms for univariate Gaussians: log-density, KL, cross-entropy, the conjugate normal
model, Gaussian mixtures and moment matching.

Every function is elementwise over broadcast arguments (the usual NumPy broadcasting), except
where an ``axis`` holds observations or mixture components. For a Gaussian with a diagonal
covariance, sum the elementwise result over the dimension axis: log-densities, KL divergences
and cross-entropies of independent coordinates add.

Conventions (the same for every function here):

* ``std`` arguments are standard deviations ``σ > 0``. A Python or NumPy value ``≤ 0``, NaN
  or ``±inf`` is rejected with a ``ValueError`` naming the argument; JAX array values, and the
  values of other arguments, are not inspected (a non-positive ``σ`` gives NaN or ``±inf``).
* Python numbers are weakly typed: they do not promote a float32 array to float64.
  bfloat16/float16 inputs are computed in float32; results have dtype
  ``promote_types(result_type(inputs), float32)``.
* Integer-dtype arrays are rejected (``TypeError`` naming the argument): cast them first.
* Quantities are in nats.

The entropy ``½ log(2πeσ²)`` is :func:`vfe.variational.gaussian_entropy`.

References:
  C. M. Bishop, *Pattern Recognition and Machine Learning* (2006), §2.3 (the Gaussian, §2.3.6
  Bayesian inference for the mean), §9.2 (mixtures of Gaussians);
  K. P. Murphy, *Conjugate Bayesian analysis of the Gaussian distribution* (2007), §2.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from vfe import _checks
from vfe._numerics import result_compute_dtype as _dtype
from vfe._numerics import kl_term

__all__ = [
    "gaussian_cross_entropy",
    "gaussian_kl",
    "gaussian_log_density",
    "gaussian_mixture_log_density",
    "moment_match",
    "normal_log_evidence",
    "normal_posterior",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- argument checks


def _param(func: str, name: str, value, *, positive: bool = False) -> jax.Array:
    """A floating JAX array; ``positive`` (a standard deviation): Python/NumPy values finite and > 0."""
    return _checks.parameter(func, name, value, positive=positive, finite=positive)


_broadcast = _checks.broadcast_shape


def _against_batch(func: str, name: str, a: jax.Array, batch: tuple[int, ...], what: str) -> None:
    """``ValueError`` unless ``a`` broadcasts to ``batch`` without adding dimensions."""
    try:
        ok = np.broadcast_shapes(a.shape, batch) == batch
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{func}: argument `{name}` of shape {a.shape} does not broadcast to the batch "
                         f"shape {batch} ({what})")


def _cast(dtype, *arrays):
    return tuple(jnp.asarray(a).astype(dtype) for a in arrays)


# ----------------------------------------------------------------------------- single Gaussians


def gaussian_log_density(x: Float[Array, "*shape"], mean: Float[Array, "*shape"], std: Float[Array, "*shape"]
                         ) -> Float[Array, "*shape"]:
    r"""Log-density of :math:`\mathcal N(\mu, \sigma^2)` at ``x``.

    .. math:: \log\mathcal N(x;\mu,\sigma^2) = -\tfrac12 z^2 - \log\sigma - \tfrac12\log 2\pi,
              \qquad z = \frac{x-\mu}{\sigma}

    Args:
      x: points; any shape broadcasting with ``mean`` and ``std``.
      mean: ``μ``.
      std: ``σ > 0``.

    Returns:
      the log-density, of the broadcast shape. Gradients: ``∂/∂x = -z/σ``, ``∂/∂μ = z/σ``,
      ``∂/∂σ = (z² - 1)/σ``.
    """
    func = "gaussian_log_density"
    names = ("x", "mean", "std")
    args = (_param(func, "x", x), _param(func, "mean", mean), _param(func, "std", std, positive=True))
    _broadcast(func, names, args)
    return _log_density(*args)


@jax.jit
def _log_density(x, mean, std):
    x, mean, std = _cast(_dtype(x, mean, std), x, mean, std)
    return _log_density_kernel(x, mean, std)


def _log_density_kernel(x, mean, std):
    z = (x - mean) / std
    return -0.5 * z * z - jnp.log(std) - _HALF_LOG_2PI


def gaussian_kl(mean_p: Float[Array, "*shape"], std_p: Float[Array, "*shape"],
                mean_q: Float[Array, "*shape"], std_q: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""``KL(N_p‖N_q)`` between two univariate Gaussians, never negative, accurate when they are close.

    .. math::
        \mathrm{KL}(\mathcal N_p\|\mathcal N_q)
          = \log\frac{\sigma_q}{\sigma_p} + \frac{\sigma_p^2 + (\mu_p-\mu_q)^2}{2\sigma_q^2} - \frac12
          = \tfrac12\big[\psi(d) + \delta^2\big],

    with :math:`d = 2\log(\sigma_q/\sigma_p)`, :math:`\psi(d) = e^{-d} - 1 + d \ge 0` and
    :math:`\delta = (\mu_p-\mu_q)/\sigma_q`. ``d`` is computed as ``2 log1p((σ_q - σ_p)/σ_p)``
    when ``|σ_q - σ_p| ≤ σ_p/4`` (the difference is then exact; XLA's float64 ``log1p`` loses up
    to ~100 ulps below ``-0.3``, so the range stops short of that), as ``2 log(σ_q/σ_p)``
    otherwise (``|d| > 0.44``: the log's absolute error of an ulp is relative), and ψ by
    :func:`vfe._numerics.kl_term` (its Taylor series for ``|d| ≤ 1/2``). Both terms are ``≥ 0``
    and carry a relative error of a few ulps, so the result is ``≥ 0`` and accurate *relative
    to the divergence itself*, also for Gaussians that agree to six digits in float32, where
    the textbook form cancels to noise or a negative number. ``KL = 0`` exactly for equal
    arguments.

    Args:
      mean_p: ``μ_p``; the four arguments broadcast together.
      std_p: ``σ_p > 0``.
      mean_q: ``μ_q``.
      std_q: ``σ_q > 0``.

    Returns:
      ``KL(N_p‖N_q)`` in nats, of the broadcast shape (``+inf`` where it overflows). For
      diagonal Gaussians, sum it over the dimension axis.

    References: Bishop (2006), exercise 1.30 (KL of two Gaussians); claim A6.
    """
    func = "gaussian_kl"
    names = ("mean_p", "std_p", "mean_q", "std_q")
    args = (_param(func, "mean_p", mean_p), _param(func, "std_p", std_p, positive=True),
            _param(func, "mean_q", mean_q), _param(func, "std_q", std_q, positive=True))
    _broadcast(func, names, args)
    return _kl(*args)


@jax.jit
def _kl(mean_p, std_p, mean_q, std_q):
    mean_p, std_p, mean_q, std_q = _cast(_dtype(mean_p, std_p, mean_q, std_q), mean_p, std_p, mean_q, std_q)
    delta = (mean_p - mean_q) / std_q
    # d = 2 log(σ_q/σ_p): through log1p of the relative gap (exact numerator) for |gap| ≤ 1/4,
    # where XLA's log1p is accurate to an ulp (in float64 it is off by up to ~100 ulps below -0.3);
    # through the log of the rounded ratio beyond (|d| > 0.44: an absolute error of ~eps is
    # relative); as a difference of logs where the ratio over- or underflows
    gap = (std_q - std_p) / std_p
    close = jnp.abs(gap) <= 0.25
    ratio = std_q / std_p
    in_range = (ratio >= jnp.finfo(ratio.dtype).tiny) & (ratio <= jnp.finfo(ratio.dtype).max)
    far = jnp.where(in_range, jnp.log(jnp.where(in_range, ratio, 1.0)), jnp.log(std_q) - jnp.log(std_p))
    d = 2.0 * jnp.where(close, jnp.log1p(jnp.where(close, gap, 0.0)), far)
    ratio_sq = jnp.square(std_p / std_q)  # e^{-d}
    return 0.5 * (kl_term(jnp.ones_like(d), ratio_sq, d) + delta * delta)


def gaussian_cross_entropy(mean_p: Float[Array, "*shape"], std_p: Float[Array, "*shape"],
                           mean_q: Float[Array, "*shape"], std_q: Float[Array, "*shape"]
                           ) -> Float[Array, "*shape"]:
    r"""Cross-entropy ``H(N_p, N_q) = -E_{N_p}[log N_q]`` of two univariate Gaussians.

    .. math::
        H(\mathcal N_p, \mathcal N_q) = \tfrac12\log(2\pi\sigma_q^2)
            + \frac{\sigma_p^2 + (\mu_p-\mu_q)^2}{2\sigma_q^2}
          = H(\mathcal N_p) + \mathrm{KL}(\mathcal N_p\|\mathcal N_q)

    Args:
      mean_p: ``μ_p`` (the distribution the expectation is under); all four broadcast together.
      std_p: ``σ_p > 0``.
      mean_q: ``μ_q`` (the model).
      std_q: ``σ_q > 0``.

    Returns:
      ``H(N_p, N_q)`` in nats, of the broadcast shape (negative when ``σ_q`` is small).

    References: Bishop (2006), §1.6; claim A1 for densities.
    """
    func = "gaussian_cross_entropy"
    names = ("mean_p", "std_p", "mean_q", "std_q")
    args = (_param(func, "mean_p", mean_p), _param(func, "std_p", std_p, positive=True),
            _param(func, "mean_q", mean_q), _param(func, "std_q", std_q, positive=True))
    _broadcast(func, names, args)
    return _cross_entropy(*args)


@jax.jit
def _cross_entropy(mean_p, std_p, mean_q, std_q):
    mean_p, std_p, mean_q, std_q = _cast(_dtype(mean_p, std_p, mean_q, std_q), mean_p, std_p, mean_q, std_q)
    delta = (mean_p - mean_q) / std_q
    return _HALF_LOG_2PI + jnp.log(std_q) + 0.5 * (jnp.square(std_p / std_q) + delta * delta)


# ----------------------------------------------------------------------------- conjugate normal model


def _conjugate_args(func, x, prior_mean, prior_std, noise_std, axis):
    x = _checks.floating(func, "x", x)
    axis = _checks.axis(func, axis, x.ndim)
    batch = _checks.batch_shape(x.shape, axis)
    args = (_param(func, "prior_mean", prior_mean), _param(func, "prior_std", prior_std, positive=True),
            _param(func, "noise_std", noise_std, positive=True))
    for name, a in zip(("prior_mean", "prior_std", "noise_std"), args):
        _against_batch(func, name, a, batch, f"`x`'s shape without axis {axis}")
    return x, args, axis


def _sufficient(x, prior_mean, prior_std, noise_std, axis):
    """``(x, μ0, τ, s, n, Σx, h)`` in the compute dtype, observations on the last axis;
    ``h = sqrt(s² + nτ²)`` without overflow (``hypot``)."""
    dtype = _dtype(x, prior_mean, prior_std, noise_std)
    x = jnp.moveaxis(x.astype(dtype), axis, -1)
    mu0, tau, s = _cast(dtype, prior_mean, prior_std, noise_std)
    n = x.shape[-1]
    h = jnp.hypot(s, tau * math.sqrt(n))
    return x, mu0, tau, s, n, jnp.sum(x, axis=-1), h


def normal_posterior(x: Float[Array, "*batch n"], prior_mean, prior_std, noise_std, *, axis: int = -1
                     ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    r"""Posterior of the mean in the conjugate normal model: ``θ | x ~ N(μ_n, σ_n²)``.

    Model: :math:`\theta\sim\mathcal N(\mu_0,\tau^2)`, :math:`x_i\mid\theta\sim\mathcal N(\theta, s^2)`
    independently for ``i = 1..n``. Then

    .. math::
        \frac1{\sigma_n^2} = \frac1{\tau^2} + \frac n{s^2},\qquad
        \mu_n = \sigma_n^2\Big(\frac{\mu_0}{\tau^2} + \frac{\sum_i x_i}{s^2}\Big)
              = \frac{s^2}{h^2}\,\mu_0 + \frac{\tau^2}{h^2}\sum_i x_i,\qquad
        \sigma_n = \tau\,\frac{s}{h},

    with :math:`h = \sqrt{s^2 + n\tau^2}` (computed with ``hypot``: no overflow or underflow of
    the squares, and both weights lie in ``[0, 1]``). ``n = 0`` gives the prior exactly.

    Args:
      x: observations, shape ``(*batch, n)`` (``n`` along ``axis``).
      prior_mean: ``μ_0``, scalar or broadcastable to ``(*batch,)``.
      prior_std: ``τ > 0``, same.
      noise_std: ``s > 0``, same.
      axis: the axis holding the observations.

    Returns:
      ``(μ_n, σ_n)``, each of shape ``(*batch,)``.

    References: Bishop (2006), eqs. (2.141)–(2.142); Murphy (2007), §2.
    """
    x, args, axis = _conjugate_args("normal_posterior", x, prior_mean, prior_std, noise_std, axis)
    return _posterior(x, *args, axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _posterior(x, prior_mean, prior_std, noise_std, axis):
    x, mu0, tau, s, n, total, h = _sufficient(x, prior_mean, prior_std, noise_std, axis)
    shape = x.shape[:-1]
    mean = jnp.square(s / h) * mu0 + jnp.square(tau / h) * total
    # τs/h with the larger of s and √n τ divided by h (a ratio in [1/√2, 1]): no underflow
    std = jnp.where(s >= tau * math.sqrt(n), tau * (s / h), s * (tau / h))
    return jnp.broadcast_to(mean, shape), jnp.broadcast_to(std, shape)


def normal_log_evidence(x: Float[Array, "*batch n"], prior_mean, prior_std, noise_std, *, axis: int = -1
                        ) -> Float[Array, "*batch"]:
    r"""Exact log marginal likelihood :math:`\log p(x_1, \dots, x_n)` of the conjugate normal model.

    Marginally :math:`x \sim \mathcal N(\mu_0\mathbf 1,\; s^2 I + \tau^2\mathbf 1\mathbf 1^\top)`;
    the covariance has eigenvalue :math:`h^2 = s^2 + n\tau^2` along :math:`\mathbf 1` and
    :math:`s^2` on its orthogonal complement, so with :math:`\bar x = \frac1n\sum_i x_i`

    .. math::
        \log p(x) = -\frac n2\log 2\pi - (n-1)\log s - \log h
                    - \frac12\Big[\sum_i\Big(\frac{x_i-\bar x}{s}\Big)^2
                    + \Big(\frac{\sqrt n(\bar x-\mu_0)}{h}\Big)^2\Big].

    The residuals are taken about :math:`\bar x` (two passes), so the within-sample term
    has no cancellation and an error in :math:`\bar x` enters only to second order;
    ``h`` comes from ``hypot``. ``n = 0`` gives ``0`` (the empty observation has probability 1).
    Equal to :math:`\log p(x|\theta) + \log p(\theta) - \log p(\theta|x)` for every θ (the
    evidence of claim B6 for a continuous latent; see :func:`normal_posterior`).

    Args:
      x: observations, shape ``(*batch, n)``.
      prior_mean: ``μ_0``, scalar or broadcastable to ``(*batch,)``.
      prior_std: ``τ > 0``, same.
      noise_std: ``s > 0``, same.
      axis: the axis holding the observations.

    Returns:
      ``log p(x)`` in nats, shape ``(*batch,)``.

    References: Bishop (2006), eq. (2.115) (the marginal of a linear-Gaussian model);
    Murphy (2007), §2 (the same evidence in terms of the posterior).
    """
    x, args, axis = _conjugate_args("normal_log_evidence", x, prior_mean, prior_std, noise_std, axis)
    return _log_evidence(x, *args, axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _log_evidence(x, prior_mean, prior_std, noise_std, axis):
    x, mu0, _, s, n, total, h = _sufficient(x, prior_mean, prior_std, noise_std, axis)
    mean = total / max(n, 1)
    within = jnp.sum(jnp.square((x - mean[..., None]) / s[..., None]), axis=-1)
    between = jnp.square(math.sqrt(n) * (mean - mu0) / h)
    out = -n * _HALF_LOG_2PI - (n - 1) * jnp.log(s) - jnp.log(h) - 0.5 * (within + between)
    return jnp.broadcast_to(out, x.shape[:-1])


# ----------------------------------------------------------------------------- mixtures


def _mixture_args(func, weights, means, stds, axis):
    weights = _checks.floating(func, "weights", weights)
    means = _checks.floating(func, "means", means)
    stds = _param(func, "stds", stds, positive=True)
    _checks.same_shape(func, ("weights", "means"), weights, means)
    _checks.same_shape(func, ("weights", "stds"), weights, stds)
    return weights, means, stds, _checks.class_axis(func, "weights", weights, axis)


def _weighted_rms(weights, devs):
    r"""``sqrt(Σ w d²)`` over the last axis, as ``m·sqrt(Σ w (d/m)²)`` with ``m = max_{w>0} |d|``.

    The scaling keeps the squares from underflowing (deviations of 1e-168 in float64, 1e-20
    in float32) or overflowing; ``m`` is a constant for differentiation (the value does not
    depend on it). ``0`` when every weighted deviation is 0.
    """
    top = jnp.max(jnp.where(weights > 0, jnp.abs(devs), 0.0), axis=-1, keepdims=True)
    top = jax.lax.stop_gradient(jnp.where(top > 0, top, 1.0))
    mean_sq = jnp.sum(weights * jnp.square(devs / top), axis=-1)
    root = jnp.sqrt(jnp.where(mean_sq > 0, mean_sq, 1.0))  # no infinite slope at 0
    return jnp.where(mean_sq > 0, root, 0.0) * top[..., 0]


def _log_mixture(log_dens, weights):
    r"""``(log Σ_k w_k e^{l_k}, terms, total)`` over the last axis, with derivatives finite at ``w_k = 0``.

    ``terms_k = w_k e^{l_k - m}`` and ``total = Σ terms``, ``m = max_{w_k > 0}(log w_k + l_k)``
    (a constant for differentiation). Writing the weight as a factor rather than as ``log w``
    keeps ``∂/∂w_k = e^{l_k}/p`` finite at ``w_k = 0``: a zero weight gives a term of exactly 0
    (its ``e^{l_k - m}`` is capped at ``finfo.max/e``, which only matters for that derivative).
    For ``w_k > 0`` (normal numbers), ``l_k - m ≤ -log w_k < log finfo.max``: no overflow.
    The largest term is 1, so ``total ≥ 1`` unless every weight is 0 (then ``-inf``).
    """
    valid = weights > 0
    safe_w = jnp.where(valid, weights, 1.0)
    top = jnp.max(jnp.where(valid, jnp.log(safe_w) + log_dens, -jnp.inf), axis=-1, keepdims=True)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    cap = math.log(float(jnp.finfo(log_dens.dtype).max)) - 1.0
    terms = weights * jnp.exp(jnp.minimum(log_dens - top, cap))
    total = jnp.sum(terms, axis=-1, keepdims=True)
    return jnp.squeeze(top + jnp.log(total), -1), terms, total


def gaussian_mixture_log_density(x: Float[Array, "*batch"], weights: Float[Array, "*batch k"],
                                 means: Float[Array, "*batch k"], stds: Float[Array, "*batch k"], *,
                                 axis: int = -1) -> Float[Array, "*batch"]:
    r"""Log-density of a mixture of univariate Gaussians.

    .. math:: \log p(x) = \log\sum_k \pi_k\,\mathcal N(x;\mu_k,\sigma_k^2)
              = m + \log\sum_k \pi_k\, e^{\log\mathcal N(x;\mu_k,\sigma_k^2) - m}

    with :math:`m = \max_{\pi_k>0}(\log\pi_k + \log\mathcal N_k)` (log-sum-exp: exact for
    points far out in the tails, where every component density underflows). Components with
    ``π_k = 0`` contribute nothing; the derivative with respect to such a weight is still
    the finite :math:`\mathcal N_k(x)/p(x)`. Weights should sum to one along ``axis`` (not
    checked); otherwise this is :math:`\log\sum_k\pi_k\mathcal N_k` of the given ones. Used for
    the bimodal target of claim A6 (forward versus reverse KL).

    Args:
      x: points, shape broadcasting with ``(*batch,)`` (the parameters' shape without ``axis``).
      weights: mixture weights ``π_k ≥ 0``, shape ``(*batch, k)`` (``k`` along ``axis``).
      means: ``μ_k``, same shape as ``weights``.
      stds: ``σ_k > 0``, same shape as ``weights``.
      axis: the axis of the parameters holding the components.

    Returns:
      ``log p(x)`` of shape ``broadcast(x.shape, (*batch,))``.

    References: Bishop (2006), eq. (9.7).
    """
    func = "gaussian_mixture_log_density"
    weights, means, stds, axis = _mixture_args(func, weights, means, stds, axis)
    x = _param(func, "x", x)
    batch = _checks.batch_shape(weights.shape, axis)
    try:
        np.broadcast_shapes(x.shape, batch)
    except ValueError:
        raise ValueError(f"{func}: argument `x` of shape {x.shape} does not broadcast against {batch}, the shape "
                         f"of `weights` without axis {axis}") from None
    return _mixture_log_density(x, weights, means, stds, axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _mixture_log_density(x, weights, means, stds, axis):
    dtype = _dtype(x, weights, means, stds)
    w, mu, sd = (jnp.moveaxis(jnp.asarray(a).astype(dtype), axis, -1) for a in (weights, means, stds))
    log_dens = _log_density_kernel(x.astype(dtype)[..., None], mu, sd)
    return _log_mixture(log_dens, jnp.broadcast_to(w, log_dens.shape))[0]


def moment_match(weights: Float[Array, "*batch k"], means: Float[Array, "*batch k"],
                 stds: Float[Array, "*batch k"], *, axis: int = -1
                 ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    r"""The Gaussian with the mean and variance of a 1-D Gaussian mixture: the forward-KL optimum.

    .. math::
        \mu = \sum_k \pi_k\mu_k,\qquad
        \sigma^2 = \sum_k \pi_k\big(\sigma_k^2 + (\mu_k - \mu)^2\big),

    with the weights normalised (divided by :math:`\sum_k\pi_k`). Among all Gaussians
    ``q``, this one minimises the forward (mass-covering) divergence ``KL(p‖q)`` from the
    mixture ``p`` — claim A6; the reverse ``KL(q‖p)`` instead locks onto one mode. The
    variance is taken about ``μ`` (no cancellation of :math:`E[x^2] - μ^2`), and ``σ`` is
    formed as a scaled root-mean-square (no under- or overflow of the squares).

    Args:
      weights: ``π_k ≥ 0``, shape ``(*batch, k)`` (``k`` along ``axis``), not all zero.
      means: ``μ_k``, same shape.
      stds: ``σ_k > 0``, same shape.
      axis: the axis holding the components.

    Returns:
      ``(μ, σ)``, each of shape ``(*batch,)``.

    References: Bishop (2006), §10.7 (moment matching minimises KL(p‖q) in an exponential family).
    """
    weights, means, stds, axis = _mixture_args("moment_match", weights, means, stds, axis)
    return _moment_match(weights, means, stds, axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _moment_match(weights, means, stds, axis):
    dtype = _dtype(weights, means, stds)
    w, mu, sd = (jnp.moveaxis(jnp.asarray(a).astype(dtype), axis, -1) for a in (weights, means, stds))
    w = w / jnp.sum(w, axis=-1, keepdims=True)
    mean = jnp.sum(w * mu, axis=-1)
    # σ² = Σ_k w_k σ_k² + Σ_k w_k (μ_k - μ)²: one weighted root-mean-square over both deviations
    devs = jnp.concatenate([jnp.broadcast_to(sd, w.shape), mu - mean[..., None]], axis=-1)
    return mean, _weighted_rms(jnp.concatenate([w, w], axis=-1), devs)
