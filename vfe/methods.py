r"""Numerical methods for the steps of a derivation that are not closed forms.

A :class:`vfe.derivation.Step` computes its value with a JAX function of the inputs. For
the kinds of check other than identities (:data:`vfe.derivation.KINDS`), that function is
a numerical method, and the step states the method's accuracy as its ``tol``:

* **variational** — :class:`Minimisation`: minimise an objective over a parametrised
  family with optax (L-BFGS) from several random starts; :meth:`Minimisation.minimum` is
  the best value found, :meth:`Minimisation.argmin` the point where it was found. A claimed
  minimum is then checked twice: against the objective at the claimed minimiser (to
  rounding), and against the optimiser (to its tolerance); a claimed minimum that is too
  high is undercut by some start, one that is too low is never reached.
* **derivative** — :func:`grad` / :func:`hessian` (autodiff with respect to one named
  input) and :func:`finite_difference` (central differences with Richardson
  extrapolation, float64; relative accuracy about 1e-9 on smooth functions of moderate
  curvature).
* **distributional** — :func:`empirical_cdf`, :func:`cdf` and :func:`dkw_tolerance`: the
  empirical distribution function of ``n`` samples is within ``ε`` of the true one except
  with probability ``2 exp(-2nε²)`` (Dvoretzky–Kiefer–Wolfowitz, Massart's constant), for
  any fixed ordering of a finite outcome space. A step comparing the two with
  ``tol=dkw_tolerance(n)`` fails a correct sampler with probability at most
  :data:`FALSE_ALARM` per example. Keys are fixed, so a run is reproducible.
* **limit** — see :func:`vfe.derivation.geometric` and the ``"->"`` relation.

References:
  J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., ch. 7 (L-BFGS) and 8
  (finite differences). P. Massart, "The tight constant in the Dvoretzky–Kiefer–Wolfowitz
  inequality", *Ann. Probab.* 18(3), 1990.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "FALSE_ALARM",
    "Minimisation",
    "cdf",
    "dkw_tolerance",
    "empirical_cdf",
    "finite_difference",
    "grad",
    "hessian",
]

FALSE_ALARM: float = 1e-9
"""Default probability that a distributional step fails a correct sampler, per example:
at most 1e-6 for a run of up to 1000 examples (union bound)."""


# ----------------------------------------------------------------------------- variational


@dataclasses.dataclass(frozen=True)
class Minimisation:
    r"""Minimises ``objective(params, **inputs)`` with optax L-BFGS from random starts.

    Attributes:
        objective: scalar JAX function of the parameters (a pytree) and the inputs.
        init: ``init(key, **inputs) -> params``: a random start.
        point: ``point(params, **inputs)``: what :meth:`argmin` returns (e.g.
            ``softmax(params)`` for a softmax-parametrised distribution); the
            parameters themselves when None.
        starts: number of random starts (the best is kept).
        iterations: L-BFGS iterations per start (a fixed number, so it jits).
        seed: seed of the starts' keys (fixed: a check is reproducible).

    Example:
        >>> import jax.numpy as jnp
        >>> m = Minimisation(lambda x, c: jnp.sum((x - c) ** 2),
        ...                  init=lambda key, c: jax.random.normal(key, c.shape))
        >>> float(m.minimum(c=jnp.array([1.0, 2.0]))) < 1e-12
        True
    """

    objective: Callable[..., jax.Array]
    init: Callable[..., Any]
    point: Callable[..., Any] | None = None
    starts: int = 8
    iterations: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        """Validates the counts."""
        for name in ("starts", "iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Minimisation: {name} must be a positive int, got {value!r}")

    def minimum(self, **inputs: Any) -> jax.Array:
        """The smallest objective value reached over all starts."""
        values, _ = self._run(inputs)
        return jnp.min(values)

    def argmin(self, **inputs: Any) -> Any:
        """``point`` of the parameters of the best start."""
        values, params = self._run(inputs)
        best = jax.tree.map(lambda leaf: leaf[jnp.argmin(values)], params)
        return best if self.point is None else self.point(best, **inputs)

    def _run(self, inputs: dict[str, Any]) -> tuple[jax.Array, Any]:
        """Final (value, params) of every start, stacked on a leading axis.

        The starts run one after another (``lax.map``), not batched by ``vmap``: under
        ``vmap`` the line search's ``while_loop`` runs until every start's search ends, and a
        start that has converged to rounding (gradient ~1e-17) can keep it from ending.
        """
        keys = jax.random.split(jax.random.key(self.seed), self.starts)
        fun = lambda params: self.objective(params, **inputs)  # noqa: E731
        return jax.lax.map(lambda key: _lbfgs(fun, self.init(key, **inputs), self.iterations), keys)


def _lbfgs(fun: Callable[[Any], jax.Array], params: Any, iterations: int) -> tuple[jax.Array, Any]:
    """At most ``iterations`` steps of optax L-BFGS (zoom line search) from ``params``.

    A step is skipped once the gradient vanishes to rounding (or the value is not finite):
    L-BFGS's curvature pairs degenerate there, and its line search need not terminate.
    """
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def update(params, state, value, g):
        updates, state = solver.update(g, state, params, value=value, grad=g, value_fn=fun)
        return optax.apply_updates(params, updates), state

    def step(carry, _):
        params, state = carry
        value, g = value_and_grad(params, state=state)
        size = jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(g)))
        done = ~jnp.isfinite(value) | ~jnp.isfinite(size) | (size <= 1e-13 * (1 + jnp.abs(value)))
        return jax.lax.cond(done, lambda *a: (a[0], a[1]), update, params, state, value, g), None

    (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), length=iterations)
    return fun(params), params


# ----------------------------------------------------------------------------- derivative


def grad(f: Callable[..., jax.Array], wrt: str) -> Callable[..., jax.Array]:
    """``jax.grad`` of the scalar ``f(**inputs)`` with respect to the input named ``wrt``."""
    def derivative(**inputs: Any) -> jax.Array:
        return jax.grad(lambda x: f(**{**inputs, wrt: x}))(inputs[wrt])
    return derivative


def hessian(f: Callable[..., jax.Array], wrt: str) -> Callable[..., jax.Array]:
    """``jax.hessian`` of the scalar ``f(**inputs)`` with respect to the input named ``wrt``."""
    def derivative(**inputs: Any) -> jax.Array:
        return jax.hessian(lambda x: f(**{**inputs, wrt: x}))(inputs[wrt])
    return derivative


def finite_difference(
    f: Callable[..., jax.Array], wrt: str, *, order: int = 1, step: float = 1e-3
) -> Callable[..., jax.Array]:
    r"""Central finite differences of the scalar ``f(**inputs)`` in the input named ``wrt``.

    With :math:`D(h) = \big(f(x + h e_i) - f(x - h e_i)\big)/2h` (first order) or
    :math:`D(h) = \big(f(x + h e_i + h e_j) - f(x + h e_i - h e_j) - f(x - h e_i + h e_j)
    + f(x - h e_i - h e_j)\big)/4h^2` (second order), whose errors are even in ``h``, the
    result is the Richardson extrapolation :math:`\big(4D(h/2) - D(h)\big)/3`, with
    truncation error :math:`O(h^4)`. Each coordinate's
    step is ``step · max(1, |x_i|)``. Evaluate in float64: the rounding error is about
    ``eps / h`` (first order) or ``eps / h²`` (second order) relative to ``|f|``.

    Args:
        f: scalar function of keyword inputs.
        wrt: name of the (scalar or array) input to differentiate in.
        order: 1 (gradient, shape of ``wrt``) or 2 (Hessian, ``wrt.shape * 2``).
        step: relative step ``h``.

    Returns:
        A function of the inputs, like ``f``.
    """
    if order not in (1, 2):
        raise ValueError(f"finite_difference: order must be 1 or 2, got {order!r}")

    def derivative(**inputs: Any) -> jax.Array:
        x = jnp.asarray(inputs[wrt])
        flat = x.reshape(-1)
        h = step * jnp.maximum(1.0, jnp.abs(flat))
        basis = jnp.eye(flat.size, dtype=flat.dtype)
        at = lambda v: f(**{**inputs, wrt: v.reshape(x.shape)})  # noqa: E731

        def first(scale):
            def one(e, hi):
                d = scale * hi * e
                return (at(flat + d) - at(flat - d)) / (2 * scale * hi)
            return jax.vmap(one)(basis, h)

        def second(scale):
            def one(ei, hi, ej, hj):
                di, dj = scale * hi * ei, scale * hj * ej
                return (at(flat + di + dj) - at(flat + di - dj) - at(flat - di + dj) + at(flat - di - dj)) / (
                    4 * scale**2 * hi * hj)
            row = lambda ei, hi: jax.vmap(lambda ej, hj: one(ei, hi, ej, hj))(basis, h)  # noqa: E731
            return jax.vmap(row)(basis, h)

        d = first if order == 1 else second
        extrapolated = (4 * d(0.5) - d(1.0)) / 3
        return extrapolated.reshape(x.shape * order)

    return derivative


# ----------------------------------------------------------------------------- distributional


def dkw_tolerance(n: int, false_alarm: float = FALSE_ALARM) -> float:
    r"""The ``ε`` with :math:`2e^{-2n\varepsilon^2} = \alpha`: :math:`\sqrt{\log(2/\alpha)/(2n)}`.

    Args:
        n: number of independent samples.
        false_alarm: :math:`\alpha`, the probability that the empirical CDF of a
            correct sampler strays further than ``ε`` anywhere.

    Returns:
        ``ε``; for ``n = 10**6`` and ``α = 1e-9``, about 0.0033.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"dkw_tolerance: n must be a positive int, got {n!r}")
    if not 0 < false_alarm < 1:
        raise ValueError(f"dkw_tolerance: false_alarm must be in (0, 1), got {false_alarm!r}")
    return math.sqrt(math.log(2 / false_alarm) / (2 * n))


def empirical_cdf(samples: jax.Array, num_outcomes: int) -> jax.Array:
    """Fraction of ``samples`` (integers in ``[0, num_outcomes)``) that are ``<= k``, for each ``k``."""
    counts = jnp.bincount(jnp.ravel(samples), length=num_outcomes)
    return jnp.cumsum(counts) / samples.size


def cdf(probs: jax.Array) -> jax.Array:
    """Cumulative sums of a probability vector (of its flattening, in C order)."""
    return jnp.cumsum(jnp.ravel(probs))
