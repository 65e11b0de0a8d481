r"""Variational free energy of a belief over a latent variable θ, and its special cases.

For an observation ``x`` and a generative model ``p(x, θ) = p(x|θ) p(θ)`` (claim B1), the
variational free energy of a belief ``q(θ)`` is (claim B2)

.. math::
    F(q) = \mathbb{E}_q[\log q(\theta)] - \mathbb{E}_q[\log p(x,\theta)]
         = \mathrm{KL}(q\,\|\,p(\theta|x)) - \log p(x) \;\ge\; -\log p(x),

with equality iff ``q`` is the posterior (B3, B4). ``-F`` is the ELBO. A point mass on
``θ̂`` has ``F = -log p(x, θ̂)``, minimised by the MAP estimate — the MLE only under a flat
prior (B5, corrected). For a discrete θ, functions take the vector ``log p(x, θ)`` over the
support of θ along ``axis`` (``-inf`` for impossible values) and are batched over the other
axes (e.g. several observations). Conventions as in :mod:`vfe.information`: ``q(θ) = 0``
contributes 0; ``q(θ) > 0`` where ``p(x, θ) = 0`` gives ``+inf``.

References:
  M. J. Beal, *Variational Algorithms for Approximate Bayesian Inference* (2003), ch. 2;
  D. M. Blei, A. Kucukelbir, J. D. McAuliffe, "Variational inference: a review for
  statisticians", JASA 112 (2017).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from vfe import _checks
from vfe._numerics import mul_no_nan, upcast
from vfe.thermodynamics import boltzmann, log_partition, tempered_log_softmax

__all__ = [
    "free_energy",
    "elbo",
    "log_evidence",
    "posterior",
    "log_posterior",
    "point_mass_free_energy",
    "map_estimate",
    "mle_estimate",
    "gaussian_entropy",
    "gaussian_free_energy",
]


def _pair(func, log_q, log_joint, axis):
    log_q = _checks.floating(func, "log_q", log_q)
    log_joint = _checks.floating(func, "log_joint", log_joint)
    _checks.same_shape(func, ("log_q", "log_joint"), log_q, log_joint)
    return log_q, log_joint, _checks.class_axis(func, "log_q", log_q, axis)


def free_energy(log_q: Float[Array, "*batch n"], log_joint: Float[Array, "*batch n"], *, axis: int = -1
                ) -> Float[Array, "*batch"]:
    r"""Variational free energy of a discrete belief ``q(θ)`` for the joint ``p(x, θ)``.

    .. math:: F(q) = \sum_\theta q(\theta)\,\big[\log q(\theta) - \log p(x,\theta)\big]

    Args:
      log_q: ``log q(θ)``, shape ``(*batch, n)`` (``-inf`` where ``q = 0``); ``q`` should sum
        to one (not checked; see :mod:`vfe.validate`).
      log_joint: ``log p(x, θ)`` for the observed ``x``, same shape (``-inf`` where impossible).
      axis: the axis holding θ.

    Returns:
      ``F(q)`` in nats, shape ``(*batch,)``. Gradients: ``∂F/∂\log q(θ) = q(θ)(\log q(θ) -
      \log p(x,θ) + 1)``, ``∂F/∂\log p(x,θ) = -q(θ)``; finite wherever ``F`` is.
    """
    log_q, log_joint, axis = _pair("free_energy", log_q, log_joint, axis)
    return _free_energy(log_q, log_joint, axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _free_energy(log_q, log_joint, axis):
    log_q, log_joint = upcast(log_q), upcast(log_joint)
    return jnp.sum(mul_no_nan(jnp.exp(log_q), log_q - log_joint), axis=axis)


def elbo(log_q: Float[Array, "*batch n"], log_joint: Float[Array, "*batch n"], *, axis: int = -1
         ) -> Float[Array, "*batch"]:
    r"""Evidence lower bound :math:`\mathrm{ELBO}(q) = -F(q) \le \log p(x)` (claim B3)."""
    log_q, log_joint, axis = _pair("elbo", log_q, log_joint, axis)
    return -_free_energy(log_q, log_joint, axis=axis)


def log_evidence(log_joint: Float[Array, "*batch n"], *, axis: int = -1) -> Float[Array, "*batch"]:
    r"""Log marginal likelihood :math:`\log p(x) = \log\sum_\theta p(x,\theta)`.

    It is the log-partition function of the energies :math:`E(\theta) = -\log p(x,\theta)` at
    ``β = 1`` (claim B6), and equals :math:`-\min_q F(q)` (B4).
    """
    log_joint = _checks.floating("log_evidence", "log_joint", log_joint)
    _checks.class_axis("log_evidence", "log_joint", log_joint, axis)
    return log_partition(-log_joint, 1.0, axis=axis)


def posterior(log_joint: Float[Array, "*batch n"], *, axis: int = -1) -> Float[Array, "*batch n"]:
    r"""Exact posterior :math:`p(\theta|x) = p(x,\theta) / p(x)` (Bayes' rule, claim B1).

    The Boltzmann distribution of :math:`E = -\log p(x,\theta)` at ``β = 1``; impossible θ
    (``-inf``) get probability 0.
    """
    log_joint = _checks.floating("posterior", "log_joint", log_joint)
    _checks.class_axis("posterior", "log_joint", log_joint, axis)
    return boltzmann(-log_joint, 1.0, axis=axis)


def log_posterior(log_joint: Float[Array, "*batch n"], *, axis: int = -1) -> Float[Array, "*batch n"]:
    r""":math:`\log p(\theta|x) = \log p(x,\theta) - \log p(x)`, ``-inf`` for impossible θ."""
    log_joint = _checks.floating("log_posterior", "log_joint", log_joint)
    _checks.class_axis("log_posterior", "log_joint", log_joint, axis)
    return tempered_log_softmax(log_joint, 1.0, axis=axis)


def point_mass_free_energy(log_joint: Float[Array, "*batch n"], theta_hat: Int[Array, "*batch"], *,
                           axis: int = -1) -> Float[Array, "*batch"]:
    r"""Free energy of the point-mass belief :math:`q = \delta_{\hat\theta}` (claim B5).

    .. math:: F(\delta_{\hat\theta}) = \underbrace{\log 1}_{-H(\delta) = 0} - \log p(x, \hat\theta)
              = -\log p(x,\hat\theta)

    Args:
      log_joint: ``log p(x, θ)``, shape ``(*batch, n)``.
      theta_hat: the index of ``θ̂`` along ``axis``, shape ``(*batch,)``.
      axis: the axis holding θ.
    """
    func = "point_mass_free_energy"
    log_joint = _checks.floating(func, "log_joint", log_joint)
    axis = _checks.class_axis(func, "log_joint", log_joint, axis)
    theta_hat = _checks.integer(func, "theta_hat", theta_hat)
    expected = _checks.batch_shape(log_joint.shape, axis)
    if theta_hat.shape != expected:
        raise ValueError(f"{func}: argument `theta_hat` must have shape {expected}, got {theta_hat.shape}")
    return _point_mass(log_joint, theta_hat, axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _point_mass(log_joint, theta_hat, axis):
    picked = jnp.take_along_axis(upcast(log_joint), jnp.expand_dims(theta_hat, axis), axis=axis)
    return -jnp.squeeze(picked, axis)


def map_estimate(log_joint: Float[Array, "*batch n"], *, axis: int = -1) -> Int[Array, "*batch"]:
    r"""Maximum a posteriori index :math:`\arg\max_\theta \log p(x,\theta) = \arg\min_\theta F(\delta_\theta)`.

    Ties resolve to the smallest index.
    """
    log_joint = _checks.floating("map_estimate", "log_joint", log_joint)
    return jnp.argmax(log_joint, axis=_checks.class_axis("map_estimate", "log_joint", log_joint, axis))


def mle_estimate(log_likelihood: Float[Array, "*batch n"], *, axis: int = -1) -> Int[Array, "*batch"]:
    r"""Maximum-likelihood index :math:`\arg\max_\theta \log p(x|\theta)`.

    Equal to :func:`map_estimate` of ``log p(x|θ) + log p(θ)`` when the prior is flat; not in
    general (claim B5). Ties resolve to the smallest index.
    """
    log_likelihood = _checks.floating("mle_estimate", "log_likelihood", log_likelihood)
    return jnp.argmax(log_likelihood, axis=_checks.class_axis("mle_estimate", "log_likelihood", log_likelihood, axis))


# ----------------------------------------------------------------------------- continuous θ


def gaussian_entropy(std: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""Differential entropy of :math:`\mathcal N(\mu, \sigma^2)`: :math:`\tfrac12\log(2\pi e\sigma^2)`.

    Tends to ``-inf`` as ``σ → 0``: a Dirac point mass has no density, so ``F(δ)`` is not
    defined for continuous θ and ``F(N(θ̂, σ²)) → +∞`` (claim B5).
    """
    std = upcast(_checks.parameter("gaussian_entropy", "std", std, non_negative=True))
    return 0.5 * math.log(2 * math.pi * math.e) + jnp.log(std)


@functools.lru_cache(maxsize=None)
def _hermite_rule(num_points: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_points)
    return nodes, weights / math.sqrt(2 * math.pi)


def gaussian_free_energy(log_joint_fn: Callable[[Array], Array], mean: Float[Array, ""], std: Float[Array, ""],
                         *, num_points: int = 64) -> Float[Array, ""]:
    r"""Free energy of a Gaussian belief :math:`q = \mathcal N(\mu, \sigma^2)` over a scalar θ.

    .. math::
        F(q) = -\mathbb{E}_{q}[\log p(x,\theta)] - H(q)
             \approx -\sum_k w_k \log p(x, \mu + \sigma t_k) - \tfrac12\log(2\pi e\sigma^2)

    with the ``num_points``-node Gauss–Hermite rule (exact when ``log p(x, θ)`` is a
    polynomial of degree ``< 2·num_points`` in θ, e.g. any Gaussian model).

    Args:
      log_joint_fn: ``θ ↦ log p(x, θ)`` for the observed ``x``, vectorised over θ.
      mean: ``μ``.
      std: ``σ > 0``.
      num_points: quadrature nodes.

    Returns:
      ``F(q)``, a scalar.
    """
    if not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"gaussian_free_energy: argument `num_points` must be a positive int, got {num_points!r}")
    mean = upcast(_checks.floating("gaussian_free_energy", "mean", mean))
    std = upcast(_checks.parameter("gaussian_free_energy", "std", std, non_negative=True))
    nodes, weights = _hermite_rule(num_points)
    theta = mean + std * jnp.asarray(nodes, mean.dtype)
    expected = jnp.sum(jnp.asarray(weights, mean.dtype) * log_joint_fn(theta))
    return -expected - gaussian_entropy(std)
