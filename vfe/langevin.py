r"""Unadjusted Langevin dynamics (ULA) and its exact behaviour on a Gaussian target (claim E3).

The unadjusted Langevin algorithm draws approximately from a density :math:`p` by iterating

.. math:: x_{k+1} = x_k + \eta\,\nabla\log p(x_k) + \sqrt{2\eta}\,\xi_k,
          \qquad \xi_k \sim \mathcal N(0, I)\ \text{i.i.d.},

the Euler–Maruyama discretisation, with step ``η``, of the Langevin diffusion
:math:`dX = \nabla\log p(X)\,dt + \sqrt2\,dW`, whose stationary law is :math:`p`. The
discretisation is not corrected by a Metropolis step, so the chain's stationary law is
*not* :math:`p`: on a Gaussian target :math:`\mathcal N(\mu, \sigma^2)` the update is the
AR(1) recursion :math:`x' - \mu = (1 - \eta/\sigma^2)(x - \mu) + \sqrt{2\eta}\,\xi`, whose
stationary law is the Gaussian

.. math:: \mathcal N\!\Big(\mu,\ \frac{\sigma^2}{1 - \eta/(2\sigma^2)}\Big)
          = \mathcal N\!\Big(\mu,\ \sigma^2 + \frac{\eta}{2} + O(\eta^2)\Big),
          \qquad 0 < \eta < 2\sigma^2 ,

(fixed point of the variance recursion :math:`v' = (1 - \eta/\sigma^2)^2 v + 2\eta`): the mean
is exact, the variance is biased upwards by :math:`\eta/2` to first order.

**Step-size conventions.** Roberts & Tweedie (1996) and Song & Ermon (2019) write the same
update as :math:`x' = x + \tfrac{\varepsilon}{2}\nabla\log p(x) + \sqrt{\varepsilon}\,\xi`, i.e.
``ε = 2η``; in that convention the stationary variance reads
:math:`\sigma^2/(1 - \varepsilon/(4\sigma^2))`, the form quoted in ``CLAIMS.md`` (E3). Every
function here takes the step ``η`` of the first display; pass ``ε/2`` for a step ``ε`` of
theirs.

Conventions: Python or NumPy step sizes must be finite and ``> 0`` (``ValueError`` naming the
argument); JAX array values are not inspected. bfloat16/float16 states are computed in float32,
and results have dtype ``promote_types(dtype, float32)``. Every function is elementwise over
the coordinates of the state, so a batch of independent chains is just a leading axis.

References:
  G. O. Roberts and R. L. Tweedie, "Exponential convergence of Langevin distributions and their
  discrete approximations", *Bernoulli* 2(4), 1996 (ULA; its bias on Gaussians);
  Y. Song and S. Ermon, "Generative modeling by estimating gradients of the data distribution",
  NeurIPS 2019, §2.2 (Langevin dynamics with step ε);
  A. S. Dalalyan, "Theoretical guarantees for approximate sampling from smooth and log-concave
  densities", *JRSS B* 79(3), 2017.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from vfe import _checks
from vfe._numerics import result_compute_dtype as _dtype

__all__ = [
    "gaussian_score",
    "langevin_update",
    "ula_chain",
    "ula_gaussian_marginal",
    "ula_stationary_variance",
    "ula_step",
]

ScoreFn = Callable[..., Array]


# ----------------------------------------------------------------------------- argument checks


def _array(func: str, name: str, value, *, positive: bool = False) -> jax.Array:
    """A floating JAX array; ``positive``: Python/NumPy values finite and > 0."""
    return _checks.parameter(func, name, value, positive=positive, finite=positive)


_broadcast = _checks.broadcast_shape


def _into(func: str, name: str, a: jax.Array, shape: tuple[int, ...], what: str) -> None:
    """``ValueError`` unless ``a`` broadcasts to ``shape`` without changing it."""
    try:
        ok = np.broadcast_shapes(a.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{func}: argument `{name}` of shape {a.shape} does not broadcast to {what} {shape}")


def _key(func: str, key) -> jax.Array:
    """A single PRNG key (typed, shape ``()``, or a raw ``uint32`` key)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{func}: argument `key` must be a single key (shape ()), got shape {key.shape}")
        return key
    if dtype == np.uint32 and np.ndim(key) == 1:
        return jnp.asarray(key)
    raise TypeError(f"{func}: argument `key` must be a PRNG key (jax.random.key(seed) or "
                    f"jax.random.PRNGKey(seed)), got {type(key).__name__}")


def _steps(func: str, name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{func}: argument `{name}` must be a Python int, got {value!r}")
    if value < 0:
        raise ValueError(f"{func}: argument `{name}` must be ≥ 0, got {value}")
    return int(value)


def _score_shape(func: str, score_fn, x: jax.Array, score_args: tuple) -> None:
    """Traces ``score_fn(x, *score_args)`` (shapes only); it must return an array of ``x``'s shape."""
    if not callable(score_fn):
        raise TypeError(f"{func}: argument `score_fn` must be callable, got {type(score_fn).__name__}")
    if not isinstance(score_args, tuple):
        raise TypeError(f"{func}: argument `score_args` must be a tuple, got {type(score_args).__name__}")
    out = jax.eval_shape(score_fn, x, *score_args)
    if getattr(out, "shape", None) != x.shape:
        raise ValueError(f"{func}: `score_fn(x, *score_args)` must return an array of the state's shape "
                         f"{x.shape}, got {getattr(out, 'shape', type(out).__name__)}")


# ----------------------------------------------------------------------------- the update


def gaussian_score(x: Float[Array, "*shape"], mean: Float[Array, "*shape"], std: Float[Array, "*shape"]
                   ) -> Float[Array, "*shape"]:
    r"""Score :math:`\nabla_x\log\mathcal N(x;\mu,\sigma^2) = -(x - \mu)/\sigma^2`, elementwise.

    A module-level function, so it can be passed as ``score_fn`` to :func:`ula_chain` (with
    ``score_args=(mean, std)``) without recompiling per call.

    Args:
      x: points; broadcasts with ``mean`` and ``std``.
      mean: ``μ``.
      std: ``σ > 0`` (a standard deviation).

    Returns:
      the score, of the broadcast shape, dtype at least float32.
    """
    x, mean, std = (jnp.asarray(a) for a in (x, mean, std))
    dtype = _dtype(x, mean, std)
    x, mean, std = x.astype(dtype), mean.astype(dtype), std.astype(dtype)
    return -(x - mean) / (std * std)


def langevin_update(x: Float[Array, "*shape"], score: Float[Array, "*shape"], step_size,
                    noise: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""The Langevin update with given noise: :math:`x + \eta\,s + \sqrt{2\eta}\,\xi`.

    The deterministic core of :func:`ula_step`, for checks that need the update as a function
    of the noise (e.g. its derivatives: :math:`\partial x'/\partial x = 1 + \eta\,\partial s/\partial x`,
    :math:`\partial x'/\partial\xi = \sqrt{2\eta}`).

    Args:
      x: the state, any shape.
      score: :math:`s = \nabla\log p(x)`, same shape as ``x``.
      step_size: ``η > 0``; scalar or broadcastable to ``x``.
      noise: :math:`\xi`, same shape as ``x`` (standard normal for ULA).

    Returns:
      the next state, of ``x``'s shape, dtype at least float32.
    """
    func = "langevin_update"
    x = _checks.floating(func, "x", x)
    score = _checks.floating(func, "score", score)
    noise = _checks.floating(func, "noise", noise)
    _checks.same_shape(func, ("x", "score"), x, score)
    _checks.same_shape(func, ("x", "noise"), x, noise)
    eta = _array(func, "step_size", step_size, positive=True)
    _into(func, "step_size", eta, x.shape, "the state's shape")
    return _update(x, score, eta, noise)


@jax.jit
def _update(x, score, eta, noise):
    dtype = _dtype(x, score, eta, noise)
    eta = eta.astype(dtype)
    return x.astype(dtype) + eta * score.astype(dtype) + jnp.sqrt(2.0 * eta) * noise.astype(dtype)


def ula_step(key: PRNGKeyArray, x: Float[Array, "*shape"], score_fn: ScoreFn, step_size, *,
             score_args: tuple = ()) -> Float[Array, "*shape"]:
    r"""One ULA step :math:`x' = x + \eta\,\nabla\log p(x) + \sqrt{2\eta}\,\xi`, :math:`\xi \sim \mathcal N(0, I)`.

    Args:
      key: a PRNG key; every coordinate (and every chain of a batch) gets independent noise.
      x: the state, any shape (leading axes are independent chains if ``score_fn`` acts on
        the last axes only).
      score_fn: ``score_fn(x, *score_args) -> ∇ log p(x)``, an array of ``x``'s shape. Use a
        module-level function (e.g. :func:`gaussian_score`) and pass parameters through
        ``score_args``: ``score_fn`` is a static argument of ``jit``, so a fresh ``lambda``
        per call recompiles.
      step_size: ``η > 0``, scalar or broadcastable to ``x``.
      score_args: extra (traced) arguments of ``score_fn``.

    Returns:
      the next state, of ``x``'s shape, dtype at least float32.
    """
    func = "ula_step"
    key = _key(func, key)
    x = _checks.floating(func, "x", x)
    eta = _array(func, "step_size", step_size, positive=True)
    _into(func, "step_size", eta, x.shape, "the state's shape")
    _score_shape(func, score_fn, x, score_args)
    return _step(key, x, score_fn, eta, score_args)


@functools.partial(jax.jit, static_argnames=("score_fn",))
def _step(key, x, score_fn, eta, score_args):
    dtype = _dtype(x, eta)
    x, eta = x.astype(dtype), eta.astype(dtype)
    noise = jax.random.normal(key, x.shape, dtype)
    return x + eta * score_fn(x, *score_args).astype(dtype) + jnp.sqrt(2.0 * eta) * noise


def ula_chain(key: PRNGKeyArray, x0: Float[Array, "*shape"], score_fn: ScoreFn, step_size, num_steps: int, *,
              score_args: tuple = (), trajectory: bool = False) -> Array:
    r"""``num_steps`` ULA steps from ``x0`` by ``lax.scan``, one fresh key per step.

    .. math:: x_{k+1} = x_k + \eta\,\nabla\log p(x_k) + \sqrt{2\eta}\,\xi_k,\qquad k = 0, \dots, n-1

    The keys are ``jax.random.split(key, num_steps)``; step ``k`` draws the noise of every
    coordinate of the state at once, so a leading axis of ``x0`` is a batch of independent
    chains (for a ``score_fn`` that treats rows separately). For fast compilation in tests,
    use a ``jax.random.key(seed, impl="rbg")`` key.

    Args:
      key: a PRNG key.
      x0: the initial states, any shape, e.g. ``(chains, dim)``.
      score_fn: ``score_fn(x, *score_args) -> ∇ log p(x)`` of ``x``'s shape; a function with a
        stable identity (static argument of ``jit``), see :func:`ula_step`.
      step_size: ``η > 0``, scalar or broadcastable to ``x0``.
      num_steps: number of steps ``n ≥ 0`` (a Python int).
      score_args: extra (traced) arguments of ``score_fn``.
      trajectory: return every state ``x_1 … x_n`` (leading axis of length ``n``) instead of
        the last one.

    Returns:
      ``x_n`` of ``x0``'s shape (``x0`` itself, in the compute dtype, when ``n = 0``), or the
      trajectory of shape ``(n, *x0.shape)``.
    """
    func = "ula_chain"
    key = _key(func, key)
    x0 = _checks.floating(func, "x0", x0)
    eta = _array(func, "step_size", step_size, positive=True)
    _into(func, "step_size", eta, x0.shape, "the state's shape")
    n = _steps(func, "num_steps", num_steps)
    if not isinstance(trajectory, (bool, np.bool_)):
        raise TypeError(f"{func}: argument `trajectory` must be a bool, got {trajectory!r}")
    _score_shape(func, score_fn, x0, score_args)
    return _chain(key, x0, score_fn, eta, score_args, num_steps=n, trajectory=bool(trajectory))


@functools.partial(jax.jit, static_argnames=("score_fn", "num_steps", "trajectory"))
def _chain(key, x0, score_fn, eta, score_args, num_steps, trajectory):
    dtype = _dtype(x0, eta)
    x0, eta = x0.astype(dtype), eta.astype(dtype)
    scale = jnp.sqrt(2.0 * eta)

    def body(x, k):
        x = x + eta * score_fn(x, *score_args).astype(dtype) + scale * jax.random.normal(k, x.shape, dtype)
        return x, (x if trajectory else None)

    last, states = jax.lax.scan(body, x0, jax.random.split(key, num_steps))
    return states if trajectory else last


# ----------------------------------------------------------------------------- Gaussian target: exact laws


def ula_stationary_variance(std: Float[Array, "*shape"], step_size) -> Float[Array, "*shape"]:
    r"""Stationary variance of ULA with step ``η`` on :math:`\mathcal N(\mu, \sigma^2)` (per coordinate).

    .. math:: v_\infty = \frac{2\eta}{1 - (1 - \eta/\sigma^2)^2} = \frac{\sigma^2}{1 - \eta/(2\sigma^2)}
              = \sigma^2 + \frac{\eta}{2} + O(\eta^2),

    the fixed point of :math:`v' = (1 - \eta/\sigma^2)^2 v + 2\eta`. It exists for
    :math:`0 < \eta < 2\sigma^2` (contraction factor :math:`|1 - \eta/\sigma^2| < 1`); for
    :math:`\eta \ge 2\sigma^2` the chain diverges and the result is ``+inf``. The stationary
    mean is :math:`\mu` exactly, and the stationary law is Gaussian. In Song & Ermon's
    convention (step ``ε = 2η``, see the module docstring) this is
    :math:`\sigma^2/(1 - \varepsilon/(4\sigma^2))`.

    Args:
      std: ``σ > 0`` of the target; broadcasts with ``step_size``.
      step_size: ``η > 0`` (a Python/NumPy value must be ``> 0``; ``η = 0`` in a JAX array gives
        ``σ²``, the limit).

    Returns:
      :math:`v_\infty` (a variance), of the broadcast shape; ``+inf`` where ``η ≥ 2σ²``.
    """
    func = "ula_stationary_variance"
    s = _array(func, "std", std, positive=True)
    eta = _array(func, "step_size", step_size, positive=True)
    _broadcast(func, ("std", "step_size"), (s, eta))
    return _stationary_variance(s, eta)


@jax.jit
def _stationary_variance(std, eta):
    dtype = _dtype(std, eta)
    var = jnp.square(std.astype(dtype))
    eta = eta.astype(dtype)
    denom = 1.0 - eta / (2.0 * var)
    stable = denom > 0
    return jnp.where(stable, var / jnp.where(stable, denom, 1.0), jnp.inf)


def ula_gaussian_marginal(mean0: Float[Array, "*shape"], var0: Float[Array, "*shape"], mean: Float[Array, "*shape"],
                          std: Float[Array, "*shape"], step_size, num_steps) -> tuple[Array, Array]:
    r"""Exact law of ULA on :math:`\mathcal N(\mu, \sigma^2)` after ``n`` steps from :math:`\mathcal N(m_0, v_0)`.

    With :math:`a = 1 - \eta/\sigma^2` (the AR(1) coefficient) the law stays Gaussian, with

    .. math:: m_n = \mu + a^n (m_0 - \mu),\qquad
              v_n = a^{2n} v_0 + 2\eta\,\frac{1 - a^{2n}}{1 - a^2}
                  = v_\infty + a^{2n}(v_0 - v_\infty),

    (:math:`2\eta n` at :math:`a^2 = 1`). The distance to the stationary law decays like
    :math:`|a|^n`. Valid for every ``η > 0``: for ``η > 2σ²`` it grows without bound.

    Args:
      mean0: :math:`m_0`, the initial mean (a point start has ``var0 = 0``).
      var0: :math:`v_0 \ge 0`, the initial variance.
      mean: ``μ`` of the target.
      std: ``σ > 0`` of the target.
      step_size: ``η > 0``.
      num_steps: ``n ≥ 0``: a Python int or an integer array (a floating array must hold whole
        numbers: ``aⁿ`` of a negative ``a`` is NaN otherwise); all arguments broadcast together.

    Returns:
      ``(m_n, v_n)``, each of the broadcast shape.
    """
    func = "ula_gaussian_marginal"
    names = ("mean0", "var0", "mean", "std", "step_size", "num_steps")
    if isinstance(num_steps, (numbers.Integral, np.integer)) and not isinstance(num_steps, (bool, np.bool_)):
        n = jnp.asarray(float(_steps(func, "num_steps", num_steps)))
    else:
        n = jnp.asarray(num_steps)
        if not (jnp.issubdtype(n.dtype, jnp.integer) or jnp.issubdtype(n.dtype, jnp.floating)):
            raise TypeError(f"{func}: argument `num_steps` must be an int or a numeric array, got {n.dtype}")
    args = (_array(func, "mean0", mean0), _array(func, "var0", var0), _array(func, "mean", mean),
            _array(func, "std", std, positive=True), _array(func, "step_size", step_size, positive=True), n)
    _broadcast(func, names, args)
    return _marginal(*args)


@jax.jit
def _marginal(mean0, var0, mean, std, eta, n):
    dtype = _dtype(mean0, var0, mean, std, eta)
    mean0, var0, mean, std, eta = (a.astype(dtype) for a in (mean0, var0, mean, std, eta))
    n = n.astype(dtype)
    h = eta / jnp.square(std)
    a = 1.0 - h
    a2n = jnp.power(jnp.square(a), n)  # 0^0 = 1: n = 0 leaves the start unchanged
    one_minus_a2 = h * (2.0 - h)  # 1 - a², without cancellation at small h
    unit = one_minus_a2 == 0
    # (1 - a^{2n}) / (1 - a²): -expm1(n log a²) keeps digits at small h; n at a² = 1
    log_a2 = jnp.log(jnp.where(a == 0, 1.0, jnp.square(a)))
    numer = jnp.where(a == 0, 1.0, -jnp.expm1(n * log_a2))
    numer = jnp.where(n == 0, 0.0, numer)
    ratio = jnp.where(unit, n, numer / jnp.where(unit, 1.0, one_minus_a2))
    mean_n = mean + jnp.power(a, n) * (mean0 - mean)
    return mean_n, a2n * var0 + 2.0 * eta * ratio
