r"""Expectation–maximisation on a 1-D Gaussian mixture: learning versus inference (claim B8).

Model: ``K`` components with weights ``π``, means ``μ_k`` and standard deviations ``σ_k``; a
latent ``z_i ∈ {1..K}`` per observation, :math:`p(z_i = k) = \pi_k`,
:math:`x_i \mid z_i = k \sim \mathcal N(\mu_k, \sigma_k^2)`. With a belief ``q(z_i)`` over the
latents and a point mass on the parameters ``θ = (π, μ, σ)`` (flat prior), the variational
free energy is

.. math::
    F(q, \theta) = \sum_i \Big(\mathbb E_{q}[\log q(z_i)] - \mathbb E_{q}[\log p(x_i, z_i\mid\theta)]\Big)
                 = -\log p(x\mid\theta) + \sum_i \mathrm{KL}\big(q(z_i)\,\|\,p(z_i\mid x_i,\theta)\big).

EM is coordinate descent on ``F``: the E-step (*inference*) sets ``q`` to the exact posterior,
where ``F = -log p(x|θ)``; the M-step (*learning*) minimises ``F`` over ``θ`` in closed form. So
``F`` never increases, ``F ≥ -log p(x|θ)`` at every step, and the log-likelihood never
decreases (:func:`em` returns the whole trajectory to check this).

Shapes: data ``x`` of shape ``(*batch, n)`` (observations on the last axis), parameters of
shape ``(*batch, K)`` (components on the last axis; the batch shapes broadcast),
responsibilities of shape ``(*batch, n, K)``. Conventions as in :mod:`vfe.information`: a zero
responsibility contributes ``0 · log 0 = 0`` (also where ``π_k = 0``); bfloat16/float16 are
computed in float32; results have dtype ``promote_types(result_type(inputs), float32)``.

References:
  A. P. Dempster, N. M. Laird, D. B. Rubin, "Maximum likelihood from incomplete data via the
  EM algorithm", JRSS B 39 (1977); R. M. Neal and G. E. Hinton, "A view of the EM algorithm
  that justifies incremental, sparse, and other variants" (1998); Bishop (2006), §9.2–9.4.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from vfe import _checks
from vfe._numerics import result_compute_dtype as _dtype
from vfe.gaussian import _log_density_kernel, _log_mixture, _weighted_rms
from vfe.thermodynamics import gibbs_free_energy

__all__ = [
    "EMTrace",
    "MixtureParams",
    "em",
    "m_step",
    "mixture_free_energy",
    "mixture_log_likelihood",
    "responsibilities",
]


class MixtureParams(NamedTuple):
    """Parameters of a 1-D Gaussian mixture, each of shape ``(*batch, K)``."""

    weights: Float[Array, "*batch k"]  # π_k ≥ 0, summing to 1
    means: Float[Array, "*batch k"]  # μ_k
    stds: Float[Array, "*batch k"]  # σ_k > 0


class EMTrace(NamedTuple):
    """The trajectory of :func:`em` over ``T = num_steps`` steps (E-step then M-step each).

    ``params``: θ_1 … θ_T, the parameters after each M-step (leading axis ``T``).
    ``free_energy``: shape ``(2T, *batch)``, ``F`` after each half-step in order: after E-step
    1, after M-step 1, after E-step 2, …
    ``log_likelihood``: shape ``(2T, *batch)``, ``log p(x|θ)`` of the parameters in force at
    the same half-steps: θ_0 (the initial ones), θ_1, θ_1, θ_2, θ_2, …
    """

    params: MixtureParams
    free_energy: Float[Array, "half_steps ..."]
    log_likelihood: Float[Array, "half_steps ..."]


# ----------------------------------------------------------------------------- argument checks


def _data(func: str, x) -> jax.Array:
    x = _checks.floating(func, "x", x)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{func}: argument `x` must hold at least one observation on its last axis, "
                         f"got shape {x.shape}")
    return x


def _params(func: str, params, name: str = "params") -> MixtureParams:
    if not isinstance(params, tuple) or len(params) != 3:
        raise TypeError(f"{func}: argument `{name}` must be a MixtureParams(weights, means, stds), "
                        f"got {type(params).__name__}")
    fields = MixtureParams._fields
    arrs = [_checks.floating(func, f"{name}.{f}", a) for f, a in zip(fields, params)]
    for f, a in zip(fields[1:], arrs[1:]):
        _checks.same_shape(func, (f"{name}.weights", f"{name}.{f}"), arrs[0], a)
    if arrs[0].ndim == 0:
        raise ValueError(f"{func}: argument `{name}` must have the components on a last axis, got scalars")
    _checks.class_axis(func, f"{name}.weights", arrs[0], -1)  # at least one component
    return MixtureParams(*arrs)


def _batch(func: str, x: jax.Array, params: MixtureParams, name: str = "params") -> tuple[int, ...]:
    try:
        return np.broadcast_shapes(x.shape[:-1], params.weights.shape[:-1])
    except ValueError:
        raise ValueError(f"{func}: the batch shapes of `x` {x.shape[:-1]} and `{name}` "
                         f"{params.weights.shape[:-1]} do not broadcast") from None


def _resp(func: str, resp, x: jax.Array, k: int | None = None) -> jax.Array:
    resp = _checks.floating(func, "resp", resp)
    if resp.ndim < 2 or resp.shape[-2] != x.shape[-1] or (k is not None and resp.shape[-1] != k):
        want = f"(*batch, {x.shape[-1]}, {'K' if k is None else k})"
        raise ValueError(f"{func}: argument `resp` must have shape {want} (n from `x`), got {resp.shape}")
    try:
        np.broadcast_shapes(resp.shape[:-2], x.shape[:-1])
    except ValueError:
        raise ValueError(f"{func}: the batch shape of `resp` {resp.shape[:-2]} does not broadcast against "
                         f"that of `x` {x.shape[:-1]}") from None
    return resp


# ----------------------------------------------------------------------------- kernels


def _log_joint_and_posterior(x, params):
    """``(log p(x_i, z_i = k | θ), q = p(z_i = k | x_i, θ), log p(x_i | θ))``, shapes
    ``(*b, n, K)``, ``(*b, n, K)`` and ``(*b, n)``; ``log p(x, z) = -inf`` where ``π_k = 0``."""
    w, mu, sd = (a[..., None, :] for a in params)
    log_dens = _log_density_kernel(x[..., None], mu, sd)
    w = jnp.broadcast_to(w, log_dens.shape)
    log_lik, terms, total = _log_mixture(log_dens, w)
    safe_w = jnp.where(w > 0, w, 1.0)  # ∂ log π_k = 0 at π_k = 0: those terms carry q = 0
    log_joint = jnp.where(w > 0, jnp.log(safe_w) + log_dens, -jnp.inf)
    return log_joint, terms / total, log_lik


def _cast_all(x, params):
    dtype = _dtype(x, *params)
    return x.astype(dtype), MixtureParams(*(a.astype(dtype) for a in params))


def _free_energy_kernel(resp, log_joint):
    # Σ_i Σ_k q (log q - log p(x_i, z_i = k)): the Gibbs free energy of E = -log p(x, z) at T = 1
    return jnp.sum(gibbs_free_energy(resp, -log_joint, 1.0), axis=-1)


def _m_step_kernel(x, resp, min_std):
    counts = jnp.sum(resp, axis=-2)  # N_k, (*b, K)
    occupied = counts > 0
    safe = jnp.where(occupied, counts, 1.0)
    xs = x[..., :, None]
    n = x.shape[-1]
    data_mean = jnp.sum(x, axis=-1, keepdims=True) / n
    data_std = _weighted_rms(jnp.full_like(x, 1.0 / n), x - data_mean)[..., None]
    means = jnp.where(occupied, jnp.sum(resp * xs, axis=-2) / safe, data_mean)
    # σ_k = sqrt(Σ_i (q_ik/N_k)(x_i - μ_k)²), components on the last axis for _weighted_rms
    share = jnp.swapaxes(resp / safe[..., None, :], -1, -2)
    devs = jnp.swapaxes(xs - means[..., None, :], -1, -2)
    stds = jnp.where(occupied, _weighted_rms(share, devs), data_std)
    # an occupied component keeps a normal weight: N_k/n can underflow (N_k ~ tiny) while its
    # responsibilities are positive, which would make F(q, θ) infinite; the change is below tiny
    weights = counts / jnp.sum(counts, axis=-1, keepdims=True)
    weights = jnp.where(occupied, jnp.maximum(weights, jnp.finfo(weights.dtype).tiny), 0.0)
    return MixtureParams(weights, means, jnp.maximum(stds, min_std))


# ----------------------------------------------------------------------------- public API


def responsibilities(x: Float[Array, "*batch n"], params: MixtureParams) -> Float[Array, "*batch n k"]:
    r"""E-step: the exact posterior over the component of each observation.

    .. math:: q(z_i = k) = p(z_i = k\mid x_i,\theta)
              = \frac{\pi_k\,\mathcal N(x_i;\mu_k,\sigma_k^2)}{\sum_j \pi_j\,\mathcal N(x_i;\mu_j,\sigma_j^2)}

    Computed in log space (the log-sum-exp of
    :func:`vfe.gaussian.gaussian_mixture_log_density`), so points far from every component
    still get a distribution; ``π_k = 0`` gives ``q(z_i = k) = 0`` exactly. It minimises
    :func:`mixture_free_energy` over ``q`` for fixed ``θ`` (claims B3, B4).

    Args:
      x: observations, shape ``(*batch, n)``.
      params: :class:`MixtureParams`, each of shape ``(*batch, K)``.

    Returns:
      ``q``, shape ``(*batch, n, K)``, rows summing to one.
    """
    x = _data("responsibilities", x)
    params = _params("responsibilities", params)
    _batch("responsibilities", x, params)
    return _responsibilities(x, params)


@jax.jit
def _responsibilities(x, params):
    return _log_joint_and_posterior(*_cast_all(x, params))[1]


def m_step(x: Float[Array, "*batch n"], resp: Float[Array, "*batch n k"], *, min_std=0.0) -> MixtureParams:
    r"""M-step: the parameters maximising the expected complete log-likelihood.

    .. math::
        N_k = \sum_i q_{ik},\quad \pi_k = \frac{N_k}{\sum_j N_j},\quad
        \mu_k = \frac1{N_k}\sum_i q_{ik}x_i,\quad
        \sigma_k = \max\Big(\sqrt{\tfrac1{N_k}\textstyle\sum_i q_{ik}(x_i-\mu_k)^2},\ \sigma_{\min}\Big)

    i.e. :math:`\arg\max_\theta \sum_i \mathbb E_q[\log p(x_i, z_i\mid\theta)]`
    (:math:`= \arg\min_\theta F(q,\theta)`). The variance is taken about the new ``μ_k`` (two
    passes) and ``σ_k`` formed as a scaled root-mean-square (no under- or overflow of the
    squares). ``σ_min = min_std`` guards against a collapsing component (a component that owns
    a single point has ``σ_k → 0`` and an unbounded likelihood); the clamped σ is the
    maximiser over ``σ_k ≥ σ_min`` (the objective is unimodal in ``σ_k``), so EM still never
    increases ``F``. A component with ``N_k = 0`` gets ``π_k = 0`` and — any value being
    optimal — the data's mean and standard deviation; one with ``N_k > 0`` gets
    ``π_k ≥ finfo(dtype).tiny`` (``N_k/n`` rounded up where it would underflow, so that ``F``
    stays finite).

    Args:
      x: observations, shape ``(*batch, n)``, ``n ≥ 1``.
      resp: ``q(z_i = k)``, shape ``(*batch, n, K)``.
      min_std: ``σ_min ≥ 0``, scalar or broadcastable to ``(*batch, K)``.

    Returns:
      :class:`MixtureParams`, each of shape ``(*batch, K)``.
    """
    x = _data("m_step", x)
    resp = _resp("m_step", resp, x)
    batch = np.broadcast_shapes(resp.shape[:-2], x.shape[:-1]) + resp.shape[-1:]
    min_std = _checks.positive_scale("m_step", "min_std", min_std, batch, allow_zero=True)
    return _m_step(x, resp, min_std)


@jax.jit
def _m_step(x, resp, min_std):
    dtype = _dtype(x, resp)
    return _m_step_kernel(x.astype(dtype), resp.astype(dtype), min_std.astype(dtype))


def mixture_free_energy(x: Float[Array, "*batch n"], resp: Float[Array, "*batch n k"], params: MixtureParams
                        ) -> Float[Array, "*batch"]:
    r"""The variational free energy of a belief ``q`` over the latents, for parameters ``θ``.

    .. math::
        F(q,\theta) = \sum_i\sum_k q_{ik}\big[\log q_{ik} - \log\pi_k - \log\mathcal N(x_i;\mu_k,\sigma_k^2)\big]
                    \;\ge\; -\log p(x\mid\theta)

    with equality iff ``q`` is :func:`responsibilities` (claims B2–B4); ``q_{ik} = 0`` terms are
    0 (also where ``π_k = 0``), ``q_{ik} > 0`` where ``π_k = 0`` gives ``+inf``. It is the
    Gibbs free energy (:func:`vfe.thermodynamics.gibbs_free_energy`) at ``T = 1`` of the
    energies ``-log p(x_i, z_i | θ)``, summed over ``i`` (claim B6).

    Args:
      x: observations, shape ``(*batch, n)``.
      resp: ``q(z_i = k)``, shape ``(*batch, n, K)``, rows summing to one (not checked).
      params: :class:`MixtureParams`, each of shape ``(*batch, K)``.

    Returns:
      ``F`` in nats, shape ``(*batch,)``. Gradients are finite wherever ``F`` is (the
      derivative with respect to ``q_{ik} = 0`` is ``-finfo.max``).
    """
    func = "mixture_free_energy"
    x = _data(func, x)
    params = _params(func, params)
    _batch(func, x, params)
    resp = _resp(func, resp, x, params.weights.shape[-1])
    return _mixture_free_energy(x, resp, params)


@jax.jit
def _mixture_free_energy(x, resp, params):
    x, params = _cast_all(x, params)
    log_joint = _log_joint_and_posterior(x, params)[0]
    resp = resp.astype(_dtype(resp, log_joint))
    shape = jnp.broadcast_shapes(resp.shape, log_joint.shape)
    return _free_energy_kernel(jnp.broadcast_to(resp, shape), jnp.broadcast_to(log_joint, shape))


def mixture_log_likelihood(x: Float[Array, "*batch n"], params: MixtureParams) -> Float[Array, "*batch"]:
    r"""Log-likelihood of the data under the mixture (the negative surprise, ``-min_q F``).

    .. math:: \log p(x\mid\theta) = \sum_i \log\sum_k \pi_k\,\mathcal N(x_i;\mu_k,\sigma_k^2)

    Each inner sum is a log-sum-exp, as in :func:`vfe.gaussian.gaussian_mixture_log_density`.

    Args:
      x: observations, shape ``(*batch, n)``.
      params: :class:`MixtureParams`, each of shape ``(*batch, K)``.

    Returns:
      ``log p(x|θ)`` in nats, shape ``(*batch,)``.
    """
    x = _data("mixture_log_likelihood", x)
    params = _params("mixture_log_likelihood", params)
    _batch("mixture_log_likelihood", x, params)
    return _mixture_log_likelihood(x, params)


@jax.jit
def _mixture_log_likelihood(x, params):
    return jnp.sum(_log_joint_and_posterior(*_cast_all(x, params))[2], axis=-1)


def em(x: Float[Array, "*batch n"], init_params: MixtureParams, num_steps: int, *, min_std=0.0) -> EMTrace:
    r"""Run ``num_steps`` EM steps (E-step, then M-step) from ``init_params``, recording ``F``.

    Step ``t``: :math:`q_t = p(z\mid x,\theta_{t-1})` (:func:`responsibilities`), then
    :math:`\theta_t = \arg\max_\theta \mathbb E_{q_t}[\log p(x,z\mid\theta)]` (:func:`m_step`).
    The free energy after each half-step satisfies (claim B8)

    .. math::
        F(q_t,\theta_{t-1}) = -\log p(x\mid\theta_{t-1}) \;\ge\; F(q_t,\theta_t)
        \;\ge\; -\log p(x\mid\theta_t) = F(q_{t+1},\theta_t),

    so the recorded ``F`` never increases, never falls below ``-log p(x|θ)``, and the
    log-likelihood never decreases. The loop is a ``lax.scan`` (one compilation per shape,
    dtype and ``num_steps``); each step evaluates the component log-densities once.

    Args:
      x: observations, shape ``(*batch, n)``, ``n ≥ 1``.
      init_params: :class:`MixtureParams` θ_0, each of shape ``(*batch, K)`` (broadcast to the
        common batch shape of ``x`` and the parameters). Use distinct means: components that
        start identical stay identical.
      num_steps: number of EM steps ``T ≥ 1``.
      min_std: ``σ_min ≥ 0`` for the M-step (see :func:`m_step`).

    Returns:
      :class:`EMTrace`: ``params`` (θ_1..θ_T), ``free_energy`` and ``log_likelihood``
      (``2T`` half-steps each).
    """
    func = "em"
    x = _data(func, x)
    init_params = _params(func, init_params, "init_params")
    batch = _batch(func, x, init_params, "init_params") + init_params.weights.shape[-1:]
    if isinstance(num_steps, (bool, np.bool_)) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"{func}: argument `num_steps` must be a positive int, got {num_steps!r}")
    min_std = _checks.positive_scale(func, "min_std", min_std, batch, allow_zero=True)
    return _em(x, init_params, min_std, num_steps=int(num_steps))


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _em(x, params, min_std, num_steps):
    x, params = _cast_all(x, params)
    shape = jnp.broadcast_shapes(x.shape[:-1], params.weights.shape[:-1]) + params.weights.shape[-1:]
    x = jnp.broadcast_to(x, shape[:-1] + x.shape[-1:])
    params = MixtureParams(*(jnp.broadcast_to(a, shape) for a in params))
    min_std = jnp.broadcast_to(min_std.astype(x.dtype), shape)

    def step(carry, _):
        _, (log_joint, resp, log_lik) = carry
        f_e = _free_energy_kernel(resp, log_joint)
        new = _m_step_kernel(x, resp, min_std)
        new_pieces = _log_joint_and_posterior(x, new)
        f_m = _free_energy_kernel(resp, new_pieces[0])
        ll_old, ll_new = jnp.sum(log_lik, axis=-1), jnp.sum(new_pieces[2], axis=-1)
        return (new, new_pieces), (new, jnp.stack([f_e, f_m]), jnp.stack([ll_old, ll_new]))

    init = (params, _log_joint_and_posterior(x, params))
    _, (trajectory, free, loglik) = jax.lax.scan(step, init, None, length=num_steps)
    flat = (2 * num_steps,) + shape[:-1]
    return EMTrace(trajectory, free.reshape(flat), loglik.reshape(flat))
