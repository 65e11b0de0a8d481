r"""In-context learning two ways: as one gradient-descent step (claim E6) and as Bayesian
inference over a latent intent (claim E7).

**E6 — linear self-attention is a gradient-descent step** (von Oswald et al. 2022). Tokens
:math:`e_i = (x_i, y_i) \in \mathbb R^{d + d_y}` hold the ``N`` examples of a regression task;
a query token is :math:`e_q = (x_q, -W_0 x_q)`. One linear self-attention layer (no softmax, one
head) updates a token :math:`e_j` by

.. math::
    e_j \leftarrow e_j + P \sum_{i=1}^{N} (W_V e_i)\,(W_K e_i)^\top (W_Q e_j),

a plain sum over the context tokens (no ``1/N`` inside the layer: the construction puts
:math:`\eta/N` into ``P``). With the weights of :func:`gd_weights` (Proposition 1 of the paper)

.. math::
    W_K = W_Q = \begin{pmatrix} I_d & 0\\ 0 & 0\end{pmatrix},\quad
    W_V = \begin{pmatrix} 0 & 0\\ W_0 & -I_{d_y}\end{pmatrix},\quad
    P = \frac{\eta}{N} I_{d+d_y},

the update is :math:`y_j \leftarrow y_j - \Delta W x_j` with
:math:`\Delta W = -\eta\nabla L(W_0) = \frac{\eta}{N}\sum_i (y_i - W_0 x_i)x_i^\top`, the step of
gradient descent on :math:`L(W) = \frac{1}{2N}\sum_i \lVert W x_i - y_i\rVert^2`. The query's
``y``-entry becomes :math:`-(W_0 + \Delta W)x_q`: minus the prediction of the model after one
step (:func:`lsa_prediction` vs :func:`gd_prediction`).

**E7 — in-context learning as Bayesian inference** (Xie et al. 2021; Jiang 2023). ``K`` intents
``θ`` with prior ``π`` (``log_prior``, shape ``(K,)``) emit messages from a finite set of ``M``
(``log_emissions``, shape ``(K, M)``, row ``θ`` is :math:`\log p_\theta`). After ``k`` i.i.d.
messages with counts :math:`n_x` (:func:`message_counts`) the posterior is

.. math::
    p(\theta\mid x_{1:k}) \propto \pi_\theta \prod_t p_\theta(x_t)
      = \pi_\theta \exp\Big(\sum_x n_x \log p_\theta(x)\Big),

and the expected log posterior odds of the true intent :math:`\theta^*` against ``θ`` grow
linearly, :math:`\log\frac{\pi_{\theta^*}}{\pi_\theta} + k\,\mathrm{KL}(p_{\theta^*}\|p_\theta)`
(:func:`expected_log_posterior_odds`). A language is *unambiguous* when every message that can
occur has exactly one intent able to emit it (:func:`is_unambiguous`), and *ε-ambiguous* when
every such message leaves at least :math:`1-\varepsilon` posterior mass on its most likely intent
(:func:`ambiguity` is the least such ε); the Bayes guess then errs with probability at most ε
(:func:`bayes_error`).

Conventions: ``0 · log 0 = 0`` (a message never observed costs nothing, even if an intent cannot
emit it); an observation that no intent with positive prior can emit has no posterior, and gets
the zero vector (log posterior ``-inf`` everywhere), never NaN. bfloat16/float16 inputs are
computed in float32; results have dtype ``promote_types(result_type(inputs), float32)``.

References:
  J. von Oswald, E. Niklasson, E. Randazzo, J. Sacramento, A. Mordvintsev, A. Zhmoginov,
  M. Vladymyrov, *Transformers learn in-context by gradient descent*, ICML 2023
  (arXiv:2212.07677), Proposition 1;
  S. M. Xie, A. Raghunathan, P. Liang, T. Ma, *An explanation of in-context learning as implicit
  Bayesian inference*, ICLR 2022 (arXiv:2111.02080);
  H. Jiang, *A latent space theory for emergent abilities in large language models*,
  arXiv:2304.09960 (2023): unambiguous and ε-ambiguous languages.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from vfe import _checks
from vfe._numerics import result_compute_dtype as _dtype
from vfe._numerics import mul_no_nan
from vfe.information import kl_divergence_from_logits

__all__ = [
    "LSAWeights",
    "ambiguity",
    "bayes_error",
    "bayes_guess",
    "expected_log_posterior_odds",
    "gd_prediction",
    "gd_step",
    "gd_weights",
    "intent_log_joint",
    "intent_log_posterior",
    "intent_posterior",
    "is_unambiguous",
    "least_squares_loss",
    "linear_self_attention",
    "log_posterior_odds",
    "lsa_prediction",
    "message_ambiguity",
    "message_counts",
    "sequence_log_emissions",
]

LogPrior = Float[Array, "*batch intents"]
"""``log π``: one log prior probability per intent (``-inf`` for an impossible intent)."""
LogEmissions = Float[Array, "*batch intents messages"]
"""``log p_θ(x)``: one row of log-probabilities over the messages per intent."""
Counts = Float[Array, "*batch messages"]
"""How often each message was observed (real values ``≥ 0`` allowed)."""

MAX_SEQUENCES: int = 1 << 22
"""Largest table :func:`sequence_log_emissions` builds (``M**k`` columns)."""


# ----------------------------------------------------------------------------- argument checks


def _rank(func: str, name: str, a: jax.Array, ndim: int, what: str) -> None:
    if a.ndim < ndim:
        raise ValueError(f"{func}: argument `{name}` must have at least {ndim} dimensions ({what}), "
                         f"got shape {a.shape}")


def _same(func: str, what: str, named: dict[str, int]) -> None:
    """``ValueError`` unless all the named sizes agree."""
    if len(set(named.values())) > 1:
        listed = ", ".join(f"`{k}`: {v}" for k, v in named.items())
        raise ValueError(f"{func}: {what} must agree, got {listed}")


def _batch(func: str, names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """The broadcast of batch shapes; ``ValueError`` naming the argument that does not fit."""
    out: tuple[int, ...] = ()
    for i, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        try:
            out = np.broadcast_shapes(out, shape)
        except ValueError:
            before = ", ".join(f"`{n}`" for n in names[:i])
            raise ValueError(f"{func}: the batch shape {shape} of `{name}` does not broadcast against the "
                             f"batch shape {out} of {before}") from None
    return out


def _mask(func: str, where, shape: tuple[int, ...]) -> jax.Array | None:
    """``where`` as a boolean array of exactly ``shape`` (or None)."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"{func}: argument `where` must be a boolean array, got {where.dtype}")
    if where.shape != shape:
        raise ValueError(f"{func}: argument `where` must have shape {shape} (one flag per example), "
                         f"got {where.shape}")
    return where


def _positive_int(func: str, name: str, value, *, allow_zero: bool = False) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{func}: argument `{name}` must be an int, got {value!r}")
    if value < (0 if allow_zero else 1):
        raise ValueError(f"{func}: argument `{name}` must be {'≥ 0' if allow_zero else '≥ 1'}, got {value}")
    return int(value)


# ============================================================================= E6: LSA = GD


class LSAWeights(NamedTuple):
    """The weights of one linear self-attention head.

    Attributes:
      w_k: keys ``k_i = W_K e_i``, shape ``(*, D_k, D)``.
      w_q: queries ``q_j = W_Q e_j``, shape ``(*, D_k, D)``.
      w_v: values ``v_i = W_V e_i``, shape ``(*, D_v, D)``.
      proj: the projection ``P`` back to the token space, shape ``(*, D, D_v)``.
    """

    w_k: jax.Array
    w_q: jax.Array
    w_v: jax.Array
    proj: jax.Array


def linear_self_attention(context: Float[Array, "*batch n dim"], queries: Float[Array, "*batch m dim"],
                          w_k: Float[Array, "*w key dim"], w_q: Float[Array, "*w key dim"],
                          w_v: Float[Array, "*w value dim"], proj: Float[Array, "*w dim value"], *,
                          where: Bool[Array, "*batch n"] | None = None) -> Float[Array, "*batch m dim"]:
    r"""One linear self-attention head (no softmax) with a residual connection.

    .. math::
        e_j \leftarrow e_j + P \sum_{i=1}^{N} (W_V e_i)\,(W_K e_i)^\top (W_Q e_j)
          = e_j + P\,W_V\Big(\sum_i e_i e_i^\top\Big) W_K^\top W_Q\, e_j

    for every query token :math:`e_j`, the sum running over the context tokens (those with
    ``where`` true). The sum is not divided by ``N``: a normalisation belongs in ``proj``
    (:func:`gd_weights` puts :math:`\eta/N` there). Self-attention of the context on itself is
    ``linear_self_attention(context, context, ...)``.

    Args:
      context: the tokens attended to, shape ``(*batch, N, D)``.
      queries: the tokens updated, shape ``(*batch, M, D)``.
      w_k, w_q: key and query weights, shape ``(*w, D_k, D)``.
      w_v: value weights, shape ``(*w, D_v, D)``.
      proj: projection, shape ``(*w, D, D_v)``.
      where: optional mask ``(*batch, N)``: context tokens that count (padding is ``False``).

    Returns:
      the updated query tokens, shape of the broadcast ``(*batch, M, D)``.
    """
    func = "linear_self_attention"
    context = _checks.floating(func, "context", context)
    queries = _checks.floating(func, "queries", queries)
    w_k, w_q = _checks.floating(func, "w_k", w_k), _checks.floating(func, "w_q", w_q)
    w_v, proj = _checks.floating(func, "w_v", w_v), _checks.floating(func, "proj", proj)
    for name, a in (("context", context), ("queries", queries), ("w_k", w_k), ("w_q", w_q), ("w_v", w_v),
                    ("proj", proj)):
        _rank(func, name, a, 2, "a matrix, with optional leading batch axes")
    _same(func, "the token dimension D", {"context": context.shape[-1], "queries": queries.shape[-1],
                                          "w_k": w_k.shape[-1], "w_q": w_q.shape[-1], "w_v": w_v.shape[-1],
                                          "proj (rows)": proj.shape[-2]})
    _same(func, "the key dimension D_k", {"w_k": w_k.shape[-2], "w_q": w_q.shape[-2]})
    _same(func, "the value dimension D_v", {"w_v": w_v.shape[-2], "proj (columns)": proj.shape[-1]})
    _batch(func, ("context", "queries", "w_k", "w_q", "w_v", "proj"),
           (context.shape[:-2], queries.shape[:-2], w_k.shape[:-2], w_q.shape[:-2], w_v.shape[:-2], proj.shape[:-2]))
    where = _mask(func, where, context.shape[:-1])
    return _lsa(context, queries, w_k, w_q, w_v, proj, where)


@jax.jit
def _lsa(context, queries, w_k, w_q, w_v, proj, where):
    dtype = _dtype(context, queries, w_k, w_q, w_v, proj)
    context, queries, w_k, w_q, w_v, proj = (a.astype(dtype) for a in (context, queries, w_k, w_q, w_v, proj))
    if where is not None:                                            # padding may hold anything, even inf
        context = jnp.where(where[..., None], context, 0.0)
    keys = context @ jnp.swapaxes(w_k, -1, -2)                       # (*, N, D_k)
    values = context @ jnp.swapaxes(w_v, -1, -2)                     # (*, N, D_v)
    memory = jnp.swapaxes(keys, -1, -2) @ values                     # Σ_i k_i v_iᵀ, (*, D_k, D_v)
    q = queries @ jnp.swapaxes(w_q, -1, -2)                          # (*, M, D_k)
    return queries + (q @ memory) @ jnp.swapaxes(proj, -1, -2)


def gd_weights(dim_x: int, dim_y: int, learning_rate, n_context, *, w0: Float[Array, "dim_y dim_x"] | None = None,
               dtype=None) -> LSAWeights:
    r"""The weights of Proposition 1 (von Oswald et al.): one LSA layer = one GD step (claim E6).

    .. math::
        W_K = W_Q = \begin{pmatrix} I_{d} & 0\\ 0 & 0\end{pmatrix},\quad
        W_V = \begin{pmatrix} 0 & 0\\ W_0 & -I_{d_y}\end{pmatrix},\quad
        P = \frac{\eta}{N} I_{d+d_y}

    (all ``(d + d_y) × (d + d_y)``). With these, :func:`linear_self_attention` maps a token
    ``(x, y)`` to ``(x, y - ΔW x)`` with ``ΔW = -η ∇L(W_0)`` (:func:`gd_step`).

    Args:
      dim_x: ``d``, the input dimension.
      dim_y: ``d_y``, the output dimension.
      learning_rate: ``η > 0`` (a number, checked, or an array).
      n_context: ``N``, the number of context examples (an int ``≥ 1``, or an array, e.g. the
        number of unmasked tokens, read as ``max(N, 1)``).
      w0: the initial model :math:`W_0`, shape ``(d_y, d)``; zeros when None.
      dtype: dtype of the weights; by default that of ``w0``/``learning_rate``, at least float32.

    Returns:
      :class:`LSAWeights`.
    """
    func = "gd_weights"
    dim_x, dim_y = _positive_int(func, "dim_x", dim_x), _positive_int(func, "dim_y", dim_y)
    eta = _checks.positive_scale(func, "learning_rate", learning_rate, ())
    if isinstance(n_context, (numbers.Number, np.number)) and not isinstance(n_context, (bool, np.bool_)):
        n = _positive_int(func, "n_context", n_context)
    else:
        n = jnp.asarray(n_context)
        if n.shape != ():
            raise ValueError(f"{func}: argument `n_context` must be a scalar, got shape {n.shape}")
    arrays = [eta] if hasattr(learning_rate, "dtype") else []
    if w0 is not None:
        w0 = _checks.floating(func, "w0", w0)
        if w0.shape != (dim_y, dim_x):
            raise ValueError(f"{func}: argument `w0` must have shape (dim_y, dim_x) = {(dim_y, dim_x)}, got {w0.shape}")
        arrays.append(w0)
    if dtype is None:
        dtype = _dtype(*arrays) if arrays else jnp.dtype(jnp.float32)
    return _gd_weights(dim_x, dim_y, eta, n, w0, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def _gd_weights(dim_x, dim_y, eta, n, w0, dtype):
    dim = dim_x + dim_y
    select_x = jnp.zeros((dim, dim), dtype).at[:dim_x, :dim_x].set(jnp.eye(dim_x, dtype=dtype))
    w0 = jnp.zeros((dim_y, dim_x), dtype) if w0 is None else w0.astype(dtype)
    w_v = jnp.zeros((dim, dim), dtype).at[dim_x:, :dim_x].set(w0).at[dim_x:, dim_x:].set(-jnp.eye(dim_y, dtype=dtype))
    n = jnp.maximum(jnp.asarray(n, dtype), 1.0)
    proj = (jnp.asarray(eta, dtype) / n) * jnp.eye(dim, dtype=dtype)
    return LSAWeights(select_x, select_x, w_v, proj)


def _regression_args(func, x, y, where):
    x = _checks.floating(func, "x", x)
    y = _checks.floating(func, "y", y)
    _rank(func, "x", x, 2, "(N, d): one input per row")
    _rank(func, "y", y, 2, "(N, d_y): one target per row")
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"{func}: arguments `x` and `y` must have the same leading shape (*batch, N), "
                         f"got {x.shape} and {y.shape}")
    return x, y, _mask(func, where, x.shape[:-1])


def least_squares_loss(w: Float[Array, "*batch dim_y dim_x"], x: Float[Array, "*batch n dim_x"],
                       y: Float[Array, "*batch n dim_y"], *, where: Bool[Array, "*batch n"] | None = None
                       ) -> Float[Array, "*batch"]:
    r"""The in-context regression loss :math:`L(W) = \frac{1}{2N}\sum_{i=1}^N \lVert W x_i - y_i\rVert^2`.

    Args:
      w: the linear model, shape ``(*batch, d_y, d)``.
      x: inputs, shape ``(*batch, N, d)``.
      y: targets, shape ``(*batch, N, d_y)``.
      where: optional ``(*batch, N)`` mask of the examples that count; ``N`` is their number
        (``max(N, 1)``: an empty context has loss 0).

    Returns:
      the loss, shape ``(*batch,)``.
    """
    func = "least_squares_loss"
    x, y, where = _regression_args(func, x, y, where)
    w = _checks.floating(func, "w", w)
    _rank(func, "w", w, 2, "(d_y, d)")
    if w.shape[-2:] != (y.shape[-1], x.shape[-1]):
        raise ValueError(f"{func}: argument `w` must end in (d_y, d) = {(y.shape[-1], x.shape[-1])}, got {w.shape}")
    _batch(func, ("w", "x"), (w.shape[:-2], x.shape[:-2]))
    return _loss(w, x, y, where)


def _count(where, x):
    if where is None:
        return jnp.asarray(x.shape[-2], x.dtype)
    return jnp.maximum(jnp.sum(where, axis=-1).astype(x.dtype), 1.0)


@jax.jit
def _loss(w, x, y, where):
    dtype = _dtype(w, x, y)
    w, x, y = w.astype(dtype), x.astype(dtype), y.astype(dtype)
    if where is not None:                                            # padding may hold anything, even inf
        x, y = jnp.where(where[..., None], x, 0.0), jnp.where(where[..., None], y, 0.0)
    residual = x @ jnp.swapaxes(w, -1, -2) - y                       # (*, N, d_y)
    sq = jnp.sum(residual**2, axis=-1)
    return jnp.sum(sq, axis=-1) / (2.0 * _count(where, x))


def gd_step(w0: Float[Array, "*batch dim_y dim_x"], x: Float[Array, "*batch n dim_x"],
            y: Float[Array, "*batch n dim_y"], learning_rate, *, where: Bool[Array, "*batch n"] | None = None
            ) -> Float[Array, "*batch dim_y dim_x"]:
    r"""One step of gradient descent on :func:`least_squares_loss`.

    .. math::
        W_1 = W_0 - \eta\nabla L(W_0) = W_0 + \frac{\eta}{N}\sum_{i=1}^N (y_i - W_0 x_i)\,x_i^\top

    Args:
      w0: the initial model, shape ``(*batch, d_y, d)`` (e.g. zeros).
      x, y, where: the context, as in :func:`least_squares_loss`.
      learning_rate: ``η > 0``; a number (checked) or an array broadcasting to ``(*batch,)``.

    Returns:
      :math:`W_1`, shape of the broadcast ``(*batch, d_y, d)``.
    """
    func = "gd_step"
    x, y, where = _regression_args(func, x, y, where)
    w0 = _checks.floating(func, "w0", w0)
    _rank(func, "w0", w0, 2, "(d_y, d)")
    if w0.shape[-2:] != (y.shape[-1], x.shape[-1]):
        raise ValueError(f"{func}: argument `w0` must end in (d_y, d) = {(y.shape[-1], x.shape[-1])}, got {w0.shape}")
    batch = _batch(func, ("w0", "x"), (w0.shape[:-2], x.shape[:-2]))
    eta = _checks.positive_scale(func, "learning_rate", learning_rate, batch)
    return _gd_step(w0, x, y, eta, where)


@jax.jit
def _gd_step(w0, x, y, eta, where):
    dtype = _dtype(w0, x, y, eta)
    w0, x, y, eta = w0.astype(dtype), x.astype(dtype), y.astype(dtype), eta.astype(dtype)
    if where is not None:                                            # padding may hold anything, even inf
        x, y = jnp.where(where[..., None], x, 0.0), jnp.where(where[..., None], y, 0.0)
    residual = y - x @ jnp.swapaxes(w0, -1, -2)                      # (*, N, d_y)
    delta = jnp.swapaxes(residual, -1, -2) @ x                       # Σ_i (y_i - W0 x_i) x_iᵀ
    scale = eta / _count(where, x)
    return w0 + scale[..., None, None] * delta


def _prediction_args(func, x, y, x_query, w0, where):
    x, y, where = _regression_args(func, x, y, where)
    x_query = _checks.floating(func, "x_query", x_query)
    _rank(func, "x_query", x_query, 2, "(M, d): one query input per row")
    if x_query.shape[-1] != x.shape[-1]:
        raise ValueError(f"{func}: arguments `x` and `x_query` must have the same input dimension, "
                         f"got {x.shape[-1]} and {x_query.shape[-1]}")
    batch = _batch(func, ("x", "x_query"), (x.shape[:-2], x_query.shape[:-2]))
    if w0 is None:
        w0 = jnp.zeros((y.shape[-1], x.shape[-1]), _dtype(x, y))
    w0 = _checks.floating(func, "w0", w0)
    if w0.ndim < 2 or w0.shape[-2:] != (y.shape[-1], x.shape[-1]):
        raise ValueError(f"{func}: argument `w0` must end in (d_y, d) = {(y.shape[-1], x.shape[-1])}, got {w0.shape}")
    batch = _batch(func, ("x", "x_query", "w0"), (x.shape[:-2], x_query.shape[:-2], w0.shape[:-2]))
    return x, y, x_query, w0, where, batch


def gd_prediction(x: Float[Array, "*batch n dim_x"], y: Float[Array, "*batch n dim_y"],
                  x_query: Float[Array, "*batch m dim_x"], learning_rate, *,
                  w0: Float[Array, "*batch dim_y dim_x"] | None = None,
                  where: Bool[Array, "*batch n"] | None = None) -> Float[Array, "*batch m dim_y"]:
    r"""The prediction :math:`\hat y_q = W_1 x_q` of the model after one GD step (:func:`gd_step`).

    With :math:`W_0 = 0` this is :math:`\frac{\eta}{N}\sum_i y_i\, x_i^\top x_q`.

    Args:
      x, y, where: the context (see :func:`least_squares_loss`).
      x_query: query inputs, shape ``(*batch, M, d)``.
      learning_rate: ``η > 0``.
      w0: initial model ``(*batch, d_y, d)``; zeros when None.

    Returns:
      predictions, shape ``(*batch, M, d_y)``.
    """
    func = "gd_prediction"
    x, y, x_query, w0, where, batch = _prediction_args(func, x, y, x_query, w0, where)
    eta = _checks.positive_scale(func, "learning_rate", learning_rate, batch)
    w1 = _gd_step(w0, x, y, eta, where)
    return _apply(w1, x_query)


@jax.jit
def _apply(w, x_query):
    dtype = _dtype(w, x_query)
    return x_query.astype(dtype) @ jnp.swapaxes(w.astype(dtype), -1, -2)


def lsa_prediction(x: Float[Array, "*batch n dim_x"], y: Float[Array, "*batch n dim_y"],
                   x_query: Float[Array, "*batch m dim_x"], learning_rate, *,
                   w0: Float[Array, "dim_y dim_x"] | None = None,
                   where: Bool[Array, "*batch n"] | None = None) -> Float[Array, "*batch m dim_y"]:
    r"""The prediction read off one LSA layer with the weights of :func:`gd_weights` (claim E6).

    .. math::
        \hat y_q = -\big[\mathrm{LSA}(e_q)\big]_y,\qquad e_i = (x_i, y_i),\quad e_q = (x_q, -W_0x_q)

    Builds the context tokens ``(x_i, y_i)`` and the query tokens ``(x_q, -W_0 x_q)``, applies
    :func:`linear_self_attention` with :func:`gd_weights` (``N`` = the number of unmasked
    examples), and returns minus the ``y``-entry of the updated query tokens. Proposition 1 of
    von Oswald et al.: this equals :func:`gd_prediction` exactly.

    Args:
      x, y, x_query, learning_rate, where: as in :func:`gd_prediction`.
      w0: initial model, shape ``(d_y, d)`` (shared by the batch); zeros when None.

    Returns:
      predictions, shape ``(*batch, M, d_y)``.
    """
    func = "lsa_prediction"
    x, y, x_query, w0_, where, batch = _prediction_args(func, x, y, x_query, w0, where)
    if w0_.ndim != 2:
        raise ValueError(f"{func}: argument `w0` must have shape (d_y, d) (one initial model), got {w0_.shape}")
    eta = _checks.positive_scale(func, "learning_rate", learning_rate, batch)
    return _lsa_prediction(x, y, x_query, eta, w0_, where)


@jax.jit
def _lsa_prediction(x, y, x_query, eta, w0, where):
    dtype = _dtype(x, y, x_query, eta, w0)
    x, y, x_query, eta, w0 = (a.astype(dtype) for a in (x, y, x_query, eta, w0))
    dim_x, dim_y = x.shape[-1], y.shape[-1]
    context = jnp.concatenate([x, y], axis=-1)
    queries = jnp.concatenate([x_query, -(x_query @ w0.T)], axis=-1)
    n = _count(where, x)                                              # (*batch,)
    w = _gd_weights(dim_x, dim_y, 1.0, 1, w0, dtype)                  # P = I; η/N applied per batch below
    scale = jnp.broadcast_to(eta / n, jnp.broadcast_shapes(jnp.shape(eta), n.shape))
    proj = scale[..., None, None] * w.proj
    out = _lsa(context, queries, w.w_k, w.w_q, w.w_v, proj, where)
    return -out[..., dim_x:]


# ============================================================================= E7: latent intents


def _intent_tables(func: str, log_prior, log_emissions):
    log_prior = _checks.floating(func, "log_prior", log_prior)
    log_emissions = _checks.floating(func, "log_emissions", log_emissions)
    _rank(func, "log_prior", log_prior, 1, "(K,): one log prior probability per intent")
    _rank(func, "log_emissions", log_emissions, 2, "(K, M): one row log p_θ(x) per intent")
    _same(func, "the number of intents K", {"log_prior": log_prior.shape[-1],
                                            "log_emissions (rows)": log_emissions.shape[-2]})
    _checks.class_axis(func, "log_prior", log_prior, -1)  # K ≥ 1 intents
    _checks.class_axis(func, "log_emissions", log_emissions, -1)  # M ≥ 1 messages
    batch = _batch(func, ("log_prior", "log_emissions"), (log_prior.shape[:-1], log_emissions.shape[:-2]))
    return log_prior, log_emissions, batch


def _with_counts(func, log_prior, log_emissions, counts):
    log_prior, log_emissions, batch = _intent_tables(func, log_prior, log_emissions)
    counts = _checks.floating(func, "counts", counts)
    _rank(func, "counts", counts, 1, "(M,): how often each message was observed")
    _same(func, "the number of messages M", {"counts": counts.shape[-1],
                                             "log_emissions (columns)": log_emissions.shape[-1]})
    batch = _batch(func, ("log_prior", "log_emissions", "counts"), (batch, batch, counts.shape[:-1]))
    return log_prior, log_emissions, counts, batch


def message_counts(messages: Int[Array, "*batch length"], num_messages: int, *,
                   where: Bool[Array, "*batch length"] | None = None, dtype=jnp.float32
                   ) -> Counts:
    r"""How often each of the ``M`` messages occurs in a sequence: :math:`n_x = \sum_t \mathbb 1[x_t = x]`.

    The counts are the sufficient statistic of i.i.d. messages: every function below takes
    counts, so a real-valued "typical" count vector ``k · p_θ*`` can be passed as well.

    Args:
      messages: integer messages in ``[0, M)``, shape ``(*batch, k)``.
      num_messages: ``M``.
      where: optional mask ``(*batch, k)`` of the positions that count.
      dtype: floating dtype of the counts.

    Returns:
      counts, shape ``(*batch, M)``.
    """
    func = "message_counts"
    messages = _checks.integer(func, "messages", messages)
    _rank(func, "messages", messages, 1, "(k,): a sequence of message indices")
    m = _positive_int(func, "num_messages", num_messages)
    where = _mask(func, where, messages.shape)
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"{func}: argument `dtype` must be a floating dtype, got {dtype}")
    return _counts(messages, where, m, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _counts(messages, where, m, dtype):
    hot = jax.nn.one_hot(messages, m, dtype=dtype)
    if where is not None:
        hot = jnp.where(where[..., None], hot, 0.0)
    return jnp.sum(hot, axis=-2)


def intent_log_joint(log_prior: LogPrior, log_emissions: LogEmissions,
                     counts: Counts) -> LogPrior:
    r"""The joint :math:`\log p(x_{1:k}, \theta) = \log\pi_\theta + \sum_x n_x \log p_\theta(x)`.

    Uses ``0 · log 0 = 0`` (a message not observed adds nothing). ``-inf`` for an intent that
    cannot have produced the observation.

    Args:
      log_prior: ``log π``, shape ``(*batch, K)``; ``-inf`` for impossible intents.
      log_emissions: ``log p_θ(x)``, shape ``(*batch, K, M)``.
      counts: message counts ``n_x ≥ 0`` (:func:`message_counts`), shape ``(*batch, M)``.

    Returns:
      shape ``(*batch, K)``.
    """
    args = _with_counts("intent_log_joint", log_prior, log_emissions, counts)
    return _log_joint(*args[:3])


@jax.jit
def _log_joint(log_prior, log_emissions, counts):
    dtype = _dtype(log_prior, log_emissions, counts)
    log_prior, log_emissions, counts = (a.astype(dtype) for a in (log_prior, log_emissions, counts))
    return log_prior + jnp.sum(mul_no_nan(counts[..., None, :], log_emissions), axis=-1)


def _log_normalise(a):
    """``a - logsumexp(a)``; all ``-inf`` when every entry is ``-inf`` (never NaN)."""
    top = jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True))
    dead = jnp.isneginf(top)
    safe_top = jnp.where(dead, 0.0, top)
    log_z = safe_top + jnp.log(jnp.sum(jnp.exp(a - safe_top), axis=-1, keepdims=True))
    return jnp.where(dead, -jnp.inf, a - jnp.where(dead, 0.0, log_z))


def intent_log_posterior(log_prior: LogPrior, log_emissions: LogEmissions,
                         counts: Counts) -> LogPrior:
    r"""The log posterior over intents after observing messages with counts :math:`n_x`.

    .. math::
        \log p(\theta\mid x_{1:k}) = \log\pi_\theta + \sum_x n_x\log p_\theta(x)
          - \log\sum_{\theta'}\pi_{\theta'}\prod_x p_{\theta'}(x)^{n_x}

    Computed in log space (max subtracted before exponentiating), so long contexts
    (``n_x`` in the thousands) do not underflow. ``-inf`` for intents that cannot have
    produced the observation; all ``-inf`` when no intent can.

    Args:
      log_prior, log_emissions, counts: as in :func:`intent_log_joint`.

    Returns:
      shape ``(*batch, K)``.
    """
    args = _with_counts("intent_log_posterior", log_prior, log_emissions, counts)
    return _log_posterior(*args[:3])


@jax.jit
def _log_posterior(log_prior, log_emissions, counts):
    return _log_normalise(_log_joint(log_prior, log_emissions, counts))


def intent_posterior(log_prior: LogPrior, log_emissions: LogEmissions,
                     counts: Counts) -> LogPrior:
    r"""The posterior :math:`p(\theta\mid x_{1:k})` (``exp`` of :func:`intent_log_posterior`).

    Zero for intents that cannot have produced the observation; the zero vector when no
    intent can (the observation has probability 0: there is no posterior).
    """
    args = _with_counts("intent_posterior", log_prior, log_emissions, counts)
    return jnp.exp(_log_posterior(*args[:3]))


def _intent_index(func, intent, batch):
    intent = _checks.integer(func, "intent", intent)
    _batch(func, ("tables", "intent"), (batch, intent.shape))
    return intent


def log_posterior_odds(log_prior: LogPrior, log_emissions: LogEmissions,
                       counts: Counts, intent: Int[Array, "*batch"]) -> LogPrior:
    r"""Log posterior odds of ``intent`` (:math:`\theta^*`) against every intent ``θ``.

    .. math::
        \log\frac{p(\theta^*\mid x_{1:k})}{p(\theta\mid x_{1:k})}
          = \log\frac{\pi_{\theta^*}}{\pi_\theta} + \sum_x n_x \log\frac{p_{\theta^*}(x)}{p_\theta(x)}

    (Bayes' rule: the evidence cancels.) ``0`` at ``θ = θ*``; ``+inf`` where ``θ`` cannot
    have produced the observation but ``θ*`` can.

    Args:
      log_prior, log_emissions, counts: as in :func:`intent_log_joint`.
      intent: index of :math:`\theta^*`, integer, shape ``(*batch,)``.

    Returns:
      shape ``(*batch, K)``.
    """
    func = "log_posterior_odds"
    log_prior, log_emissions, counts, batch = _with_counts(func, log_prior, log_emissions, counts)
    intent = _intent_index(func, intent, batch)
    return _odds(log_prior, log_emissions, counts, intent)


@jax.jit
def _odds(log_prior, log_emissions, counts, intent):
    joint = _log_joint(log_prior, log_emissions, counts)
    star = jnp.take_along_axis(joint, jnp.broadcast_to(intent, joint.shape[:-1])[..., None], axis=-1)
    k = jnp.arange(joint.shape[-1])
    return jnp.where(k == intent[..., None], 0.0, star - joint)


def expected_log_posterior_odds(log_prior: LogPrior, log_emissions: LogEmissions,
                                intent: Int[Array, "*batch"], num_examples) -> LogPrior:
    r"""Expected log posterior odds after ``k`` examples drawn from the true intent (claim E7).

    .. math::
        \mathbb E_{x_{1:k}\sim p_{\theta^*}^{\otimes k}}
          \log\frac{p(\theta^*\mid x_{1:k})}{p(\theta\mid x_{1:k})}
          = \log\frac{\pi_{\theta^*}}{\pi_\theta} + k\,\mathrm{KL}(p_{\theta^*}\,\|\,p_\theta)

    Linear in ``k`` with slope the KL divergence: the posterior concentrates on
    :math:`\theta^*` against every intent with :math:`\mathrm{KL} > 0`. ``+inf`` where
    :math:`\pi_\theta = 0` or the KL is infinite (for ``k > 0``); requires
    :math:`\pi_{\theta^*} > 0`.

    Args:
      log_prior, log_emissions: as in :func:`intent_log_joint`.
      intent: index of :math:`\theta^*`, shape ``(*batch,)``.
      num_examples: ``k ≥ 0``, a number (checked) or an array broadcasting to ``(*batch,)``.

    Returns:
      shape ``(*batch, K)``.
    """
    func = "expected_log_posterior_odds"
    log_prior, log_emissions, batch = _intent_tables(func, log_prior, log_emissions)
    intent = _intent_index(func, intent, batch)
    k = _checks.positive_scale(func, "num_examples", num_examples, _batch(func, ("tables", "intent"),
                                                                          (batch, intent.shape)), allow_zero=True)
    return _expected_odds(log_prior, log_emissions, intent, k)


@jax.jit
def _expected_odds(log_prior, log_emissions, intent, k):
    dtype = _dtype(log_prior, log_emissions, k)
    log_prior, log_emissions, k = log_prior.astype(dtype), log_emissions.astype(dtype), k.astype(dtype)
    shape = jnp.broadcast_shapes(log_prior.shape[:-1], log_emissions.shape[:-2], intent.shape)
    lp = jnp.broadcast_to(log_prior, shape + log_prior.shape[-1:])
    le = jnp.broadcast_to(log_emissions, shape + log_emissions.shape[-2:])
    idx = jnp.broadcast_to(intent, shape)
    star_prior = jnp.take_along_axis(lp, idx[..., None], axis=-1)
    star_rows = jnp.take_along_axis(le, idx[..., None, None], axis=-2)      # (*, 1, M)
    kl = kl_divergence_from_logits(jnp.broadcast_to(star_rows, le.shape), le)  # (*, K)
    odds = (star_prior - lp) + mul_no_nan(jnp.broadcast_to(k[..., None], kl.shape), kl)
    return jnp.where(jnp.arange(lp.shape[-1]) == idx[..., None], 0.0, odds)


def bayes_guess(log_prior: LogPrior, log_emissions: LogEmissions,
                counts: Counts) -> Int[Array, "*batch"]:
    r"""The Bayes (MAP) guess :math:`\hat\theta = \arg\max_\theta p(\theta\mid x_{1:k})` (first on ties)."""
    args = _with_counts("bayes_guess", log_prior, log_emissions, counts)
    return jnp.argmax(_log_joint(*args[:3]), axis=-1).astype(jnp.int32)


def _joint_and_marginal(log_prior, log_emissions):
    """``p(x, θ)`` as ``(*, K, M)`` and ``p(x)`` as ``(*, M)``."""
    dtype = _dtype(log_prior, log_emissions)
    joint = jnp.exp(log_prior.astype(dtype)[..., :, None] + log_emissions.astype(dtype))
    return joint, jnp.sum(joint, axis=-2)


def _except_max(a, axis):
    """``Σ a - max a`` along ``axis`` as a sum of the non-maximal entries (no cancellation)."""
    top = jnp.argmax(a, axis=axis, keepdims=True)
    rest = jnp.where(jnp.arange(a.shape[axis]).reshape((-1,) + (1,) * (a.ndim - 1 - axis % a.ndim)) == top, 0.0, a)
    return jnp.sum(rest, axis=axis)


def bayes_error(log_prior: LogPrior, log_emissions: LogEmissions
                ) -> Float[Array, "*batch"]:
    r"""Probability that the Bayes guess from one message is not the intent that sent it.

    .. math::
        P(\hat\theta(x) \ne \theta) = 1 - \sum_x \max_\theta \pi_\theta p_\theta(x)
          = \sum_x p(x)\,\varepsilon(x) \le \max_{x:\,p(x)>0}\varepsilon(x)

    with :math:`\varepsilon(x)` of :func:`message_ambiguity`; computed as the sum over ``x`` of
    the non-maximal joint probabilities (no ``1 - (1 - small)`` cancellation). For ``k``
    examples, pass :func:`sequence_log_emissions` (the messages are then whole prompts).

    Args:
      log_prior, log_emissions: as in :func:`intent_log_joint` (normalised).

    Returns:
      shape ``(*batch,)``.
    """
    log_prior, log_emissions, _ = _intent_tables("bayes_error", log_prior, log_emissions)
    return _bayes_error(log_prior, log_emissions)


@jax.jit
def _bayes_error(log_prior, log_emissions):
    joint, _ = _joint_and_marginal(log_prior, log_emissions)
    return jnp.sum(_except_max(joint, -2), axis=-1)


def message_ambiguity(log_prior: LogPrior, log_emissions: LogEmissions
                      ) -> Counts:
    r"""Per-message ambiguity :math:`\varepsilon(x) = 1 - \max_\theta p(\theta\mid x)`.

    The posterior mass left off the most likely intent; ``0`` for a message only one intent
    can emit, and (by convention) for a message no intent emits (:math:`p(x) = 0`). Computed
    as the sum of the non-maximal posterior probabilities.

    Returns:
      shape ``(*batch, M)``.
    """
    log_prior, log_emissions, _ = _intent_tables("message_ambiguity", log_prior, log_emissions)
    return _message_ambiguity(log_prior, log_emissions)


@jax.jit
def _message_ambiguity(log_prior, log_emissions):
    dtype = _dtype(log_prior, log_emissions)
    log_prior, log_emissions = log_prior.astype(dtype), log_emissions.astype(dtype)
    log_post = _log_normalise(jnp.swapaxes(log_prior[..., :, None] + log_emissions, -1, -2))   # (*, M, K)
    post = jnp.exp(log_post)
    return _except_max(post, -1)


def ambiguity(log_prior: LogPrior, log_emissions: LogEmissions
              ) -> Float[Array, "*batch"]:
    r"""The least ε for which the language is ε-ambiguous: :math:`\max_{x:\,p(x)>0}\varepsilon(x)`.

    A language is ε-ambiguous when every message that can occur leaves at least
    :math:`1-\varepsilon` posterior mass on its most likely intent; ``0`` exactly for an
    unambiguous language (:func:`is_unambiguous`).

    Returns:
      shape ``(*batch,)``.
    """
    log_prior, log_emissions, _ = _intent_tables("ambiguity", log_prior, log_emissions)
    return jnp.max(_message_ambiguity(log_prior, log_emissions), axis=-1)


def is_unambiguous(log_prior: LogPrior, log_emissions: LogEmissions
                   ) -> Bool[Array, "*batch"]:
    r"""Whether every message that can occur has exactly one intent able to emit it.

    Decided on the supports: for every ``x`` with :math:`p(x) > 0`, exactly one ``θ`` has
    :math:`\pi_\theta p_\theta(x) > 0`. Then the posterior after any one message is one-hot.

    Returns:
      boolean, shape ``(*batch,)``.
    """
    log_prior, log_emissions, _ = _intent_tables("is_unambiguous", log_prior, log_emissions)
    return _is_unambiguous(log_prior, log_emissions)


@jax.jit
def _is_unambiguous(log_prior, log_emissions):
    possible = jnp.isfinite(log_prior)[..., :, None] & (log_emissions > -jnp.inf)    # (*, K, M)
    emitters = jnp.sum(possible, axis=-2)
    return jnp.all(emitters <= 1, axis=-1)


def sequence_log_emissions(log_emissions: LogEmissions, num_examples: int
                           ) -> Float[Array, "*batch intents sequences"]:
    r"""Log-probabilities of whole prompts of ``k`` i.i.d. messages, one column per sequence.

    .. math:: \log p_\theta(x_1,\dots,x_k) = \sum_{t=1}^k \log p_\theta(x_t)

    The ``M**k`` sequences are in lexicographic order (``x_1`` varies slowest). Passing the
    result to :func:`bayes_error` or :func:`ambiguity` gives those of ``k``-example prompts.

    Args:
      log_emissions: shape ``(*batch, K, M)``.
      num_examples: ``k ≥ 0`` (a static int); ``M**k`` may not exceed :data:`MAX_SEQUENCES`.

    Returns:
      shape ``(*batch, K, M**k)``.
    """
    func = "sequence_log_emissions"
    log_emissions = _checks.floating(func, "log_emissions", log_emissions)
    _rank(func, "log_emissions", log_emissions, 2, "(K, M)")
    k = _positive_int(func, "num_examples", num_examples, allow_zero=True)
    m = log_emissions.shape[-1]
    if m**k > MAX_SEQUENCES:
        raise ValueError(f"{func}: M**k = {m}**{k} sequences exceed MAX_SEQUENCES = {MAX_SEQUENCES}")
    return _sequence_log_emissions(log_emissions, k)


@functools.partial(jax.jit, static_argnums=(1,))
def _sequence_log_emissions(log_emissions, k):
    le = log_emissions.astype(_dtype(log_emissions))
    out = jnp.zeros(le.shape[:-1] + (1,), le.dtype)
    for _ in range(k):
        out = (out[..., :, None] + le[..., None, :]).reshape(le.shape[:-1] + (-1,))
    return out

