r"""Exact-match accuracy as a function of the per-token loss: emergence as a metric effect (claim E5).

A model that assigns probabilities :math:`p_1, \dots, p_L` to the ``L`` tokens of a target
(each conditioned on the target's previous tokens) produces the whole target, sampling token by
token at temperature 1, with probability (chain rule)

.. math:: \mathrm{EM} = \prod_{i=1}^{L} p_i = \exp\Big(\sum_i \log p_i\Big) = e^{-L\cdot\mathrm{CE}},
          \qquad \mathrm{CE} = -\frac1L\sum_i \log p_i,

the *exact-match accuracy*, a function of the mean per-token cross-entropy alone. Schaeffer et
al. (2023) contrast it with a metric linear in the per-token probability, the expected token
edit distance :math:`L(1 - e^{-\mathrm{CE}})` (the expected number of wrong tokens when each
token is right with probability :math:`e^{-\mathrm{CE}}`).

What "sharp while the loss is smooth" means, precisely (checked in ``proofs/scaling.py``):

* :math:`d\,\mathrm{EM}/d\log N = -L\cdot\mathrm{EM}\cdot d\mathrm{CE}/d\log N`: the relative
  change of EM is ``L`` times the loss's change;
* EM rises from 10% to 90% while CE falls from :math:`\log(10)/L` to :math:`\log(10/9)/L`, a
  drop of :math:`\log 9/L` nats, which vanishes like ``1/L``;
* if CE follows a pure power law :math:`(N_c/N)^\alpha`, EM is, in :math:`\log N`, a Gumbel
  distribution function of scale :math:`1/\alpha` located :math:`\log(L)/\alpha` to the right:
  its 10–90% width, :math:`\log(\log 10/\log(10/9))/\alpha \approx 3.08/\alpha`, and its
  steepest slope, :math:`\alpha/e` (where CE = 1/L), do **not** depend on ``L``
  (:func:`log_scale_at_exact_match` gives where it rises).

Conventions: cross-entropies in nats; ``length`` ``L ≥ 0`` (Python ints are checked, arrays
are not); ``L = 0`` gives an accuracy of 1 even when CE is infinite. bfloat16/float16 inputs
are computed in float32.

References:
  R. Schaeffer, B. Miranda and S. Koyejo, "Are emergent abilities of large language models a
  mirage?", NeurIPS 2023, §2 and Fig. 2.
  J. Wei et al., "Emergent abilities of large language models", TMLR 2022.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from vfe import _checks
from vfe._numerics import result_compute_dtype as _dtype
from vfe._numerics import mul_no_nan

__all__ = [
    "exact_match",
    "exact_match_from_token_probs",
    "expected_token_edit_distance",
    "expected_token_errors",
    "log_scale_at_exact_match",
]


def _arg(func: str, name: str, value, *, non_negative: bool = False, positive: bool = False) -> jax.Array:
    """A floating JAX array (integer arrays cast to float); ``non_negative``: ≥ 0, ``positive``: > 0."""
    return _checks.parameter(func, name, value, positive=positive, non_negative=non_negative, integers=True)


_broadcast = _checks.broadcast_shape


def _masked_last(p, where, axis):
    """``p`` (at least float32) and its mask, both with ``axis`` moved last (inside jit)."""
    mask = jnp.ones(p.shape, dtype=bool) if where is None else jnp.broadcast_to(where, p.shape)
    return jnp.moveaxis(p.astype(_dtype(p)), axis, -1), jnp.moveaxis(mask, axis, -1)


# ----------------------------------------------------------------------------- metrics


def exact_match(cross_entropy: Float[Array, "*shape"], length) -> Float[Array, "*shape"]:
    r"""Exact-match accuracy over ``L`` tokens from the mean per-token cross-entropy: :math:`e^{-L\cdot\mathrm{CE}}`.

    Equals :func:`exact_match_from_token_probs` of the per-token probabilities whose mean
    negative log is ``cross_entropy``.

    Args:
      cross_entropy: the mean per-token cross-entropy CE (nats), any shape; ``+inf`` gives 0.
      length: ``L ≥ 0``, the number of tokens (scalar or broadcasting with ``cross_entropy``).

    Returns:
      the accuracy in ``[0, 1]`` for ``CE ≥ 0``, of the broadcast shape; exactly 1 at ``L = 0``.
      Derivatives: ``∂/∂CE = −L·EM``, ``∂/∂L = −CE·EM``, both 0 where ``EM = 0``; at ``L = 0``,
      ``CE = +inf`` (where EM jumps from 1 to 0) ``∂/∂L`` is ``−finfo.max`` instead of ``−inf``.
    """
    func = "exact_match"
    ce = _arg(func, "cross_entropy", cross_entropy)
    n = _arg(func, "length", length, non_negative=True)
    _broadcast(func, ("cross_entropy", "length"), (ce, n))
    return _exact_match(ce, n)


@jax.jit
def _exact_match(ce, n):
    dtype = _dtype(ce, n)
    ce, n = ce.astype(dtype), n.astype(dtype)
    return jnp.exp(-mul_no_nan(n, ce))


def exact_match_from_token_probs(probs: Float[Array, "*batch L"], *, axis: int = -1, where=None
                                 ) -> Float[Array, "*batch"]:
    r"""Exact-match accuracy :math:`\prod_i p_i` from the per-token probabilities of the target tokens.

    Computed as :math:`\exp(\sum_i \log p_i)` in at least float32, so it is accurate (relative
    error ``O(L·eps)``) until it underflows; 0 as soon as one ``p_i`` is 0, with finite
    gradients (:math:`\partial/\partial p_i = \prod_{j\ne i} p_j`).

    Args:
      probs: :math:`p_i \in [0, 1]`, the probability of the ``i``-th target token given the
        previous ones; tokens along ``axis``.
      axis: the token axis (default ``-1``).
      where: optional boolean mask; positions where it is ``False`` (padding) count as ``p = 1``.

    Returns:
      the accuracy, of the shape of ``probs`` without ``axis``.
    """
    func = "exact_match_from_token_probs"
    p = _checks.floating(func, "probs", probs)
    ax = _checks.axis(func, axis, p.ndim)
    where = _checks.mask(func, where, p.shape, "`probs`")
    return _product(p, where, axis=ax)


@functools.partial(jax.jit, static_argnames=("axis",))
def _product(p, where, axis):
    p, mask = _masked_last(p, where, axis)
    return jnp.prod(jnp.where(mask, p, 1.0), axis=-1)  # JAX's product rule is exact at zeros


def expected_token_errors(probs: Float[Array, "*batch L"], *, axis: int = -1, where=None) -> Float[Array, "*batch"]:
    r"""Expected number of wrong tokens :math:`\sum_i (1 - p_i)` when token ``i`` is right with probability :math:`p_i`.

    The expected Hamming distance to the target, a metric linear in the per-token
    probabilities. By the AM–GM inequality it is at most
    :func:`expected_token_edit_distance` of the mean cross-entropy, with equality when all
    :math:`p_i` are equal.

    Args:
      probs: :math:`p_i \in [0, 1]`; tokens along ``axis``.
      axis: the token axis.
      where: optional boolean mask; masked positions count as right.

    Returns:
      the expected count, of the shape of ``probs`` without ``axis``.
    """
    func = "expected_token_errors"
    p = _checks.floating(func, "probs", probs)
    ax = _checks.axis(func, axis, p.ndim)
    where = _checks.mask(func, where, p.shape, "`probs`")
    return _errors(p, where, axis=ax)


@functools.partial(jax.jit, static_argnames=("axis",))
def _errors(p, where, axis):
    p, mask = _masked_last(p, where, axis)
    return jnp.sum(jnp.where(mask, 1.0 - p, 0.0), axis=-1)


def expected_token_edit_distance(cross_entropy: Float[Array, "*shape"], length) -> Float[Array, "*shape"]:
    r"""Schaeffer et al.'s smooth metric: :math:`L\,(1 - e^{-\mathrm{CE}})`, the expected number of wrong tokens.

    The expected token (Hamming) edit distance to an ``L``-token target when every token is
    right with the same probability :math:`e^{-\mathrm{CE}}`; computed as
    ``−L·expm1(−CE)`` (accurate at small CE). Unlike :func:`exact_match`, its normalised form
    :math:`1 - \mathrm{ED}/L = e^{-\mathrm{CE}}` does not depend on ``L``.

    Args:
      cross_entropy: mean per-token cross-entropy CE ``≥ 0`` (nats).
      length: ``L ≥ 0``.

    Returns:
      the expected distance in ``[0, L]``, of the broadcast shape.
    """
    func = "expected_token_edit_distance"
    ce = _arg(func, "cross_entropy", cross_entropy)
    n = _arg(func, "length", length, non_negative=True)
    _broadcast(func, ("cross_entropy", "length"), (ce, n))
    return _edit_distance(ce, n)


@jax.jit
def _edit_distance(ce, n):
    dtype = _dtype(ce, n)
    ce, n = ce.astype(dtype), n.astype(dtype)
    return mul_no_nan(n, -jnp.expm1(-ce))


def log_scale_at_exact_match(accuracy: Float[Array, "*shape"], length, *, alpha, n_c) -> Float[Array, "*shape"]:
    r"""Where a power-law loss reaches a given exact-match accuracy: :math:`\log N` with :math:`e^{-L(N_c/N)^\alpha} = q`.

    .. math:: \log N_q = \log N_c + \frac{\log L - \log(-\log q)}{\alpha}

    So, in :math:`\log N`, the accuracy is the Gumbel distribution function
    :math:`\exp(-e^{-\alpha(\log N - \log N_c) + \log L})`: the curves of different ``L`` are
    translates of one another by :math:`\log(L)/\alpha`, and the 10–90% width
    :math:`\log N_{0.9} - \log N_{0.1} = \log\big(\log 10/\log\tfrac{10}{9}\big)/\alpha` is
    independent of ``L``.

    Args:
      accuracy: ``q ∈ (0, 1)``; all arguments broadcast.
      length: ``L > 0``.
      alpha: the power law's exponent ``α > 0``.
      n_c: its scale ``N_c > 0`` (CE = 1 at ``N = N_c``).

    Returns:
      :math:`\log N_q` (natural log; ``N_q`` itself may overflow), of the broadcast shape;
      ``-inf`` at ``q = 0`` and ``+inf`` at ``q = 1``.
    """
    func = "log_scale_at_exact_match"
    args = (_arg(func, "accuracy", accuracy), _arg(func, "length", length, positive=True),
            _arg(func, "alpha", alpha, positive=True), _arg(func, "n_c", n_c, positive=True))
    _broadcast(func, ("accuracy", "length", "alpha", "n_c"), args)
    return _log_scale(*args)


@jax.jit
def _log_scale(q, n, alpha, n_c):
    dtype = _dtype(q, n, alpha, n_c)
    q, n, alpha, n_c = (a.astype(dtype) for a in (q, n, alpha, n_c))
    return jnp.log(n_c) + (jnp.log(n) - jnp.log(-jnp.log(q))) / alpha
