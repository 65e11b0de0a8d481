r"""Entropy, cross-entropy and KL divergence, from probabilities and from logits.

Every function reduces over one axis (``axis=-1`` by default) and is batched over all the
others. Quantities are in nats; see :func:`nats_to_bits`.

Conventions (the same for every function here):

* ``0 · log 0 = 0``: a zero probability contributes nothing, whatever the other argument.
* ``H(p, q)`` and ``KL(p‖q)`` are ``+inf`` when ``q = 0`` where ``p > 0`` — never NaN.
* Logits may contain ``-inf`` (masked entries, probability exactly 0). A row whose logits are
  all ``-inf`` is not a distribution; the result is NaN there (:mod:`vfe.validate` flags it).
* bfloat16/float16 inputs are accumulated in float32; results have dtype
  ``promote_types(input dtype, float32)``.
* Gradients and forward-mode derivatives are finite wherever the function is finite; a
  derivative that is mathematically infinite (``d/dp`` at ``p = 0``) is returned as
  ``±finfo(dtype).max`` (see :mod:`vfe._numerics`).

Fast path and invalid input: these functions do not inspect values. Negative entries give NaN
(from the logarithm); probability vectors that do not sum to one give the formulas' value on
the unnormalised vectors (for :func:`kl_divergence`, the generalised KL
:math:`\sum_i p_i\log(p_i/q_i) - p_i + q_i`). Use :mod:`vfe.validate` to check values.

References:
  T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., ch. 2.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from vfe import _checks
from vfe._numerics import exact_gap, finite_or_max, kl_term, mul_no_nan, two_difference, upcast, xlogy

__all__ = [
    "entropy",
    "entropy_from_logits",
    "cross_entropy",
    "cross_entropy_from_logits",
    "cross_entropy_with_integer_labels",
    "kl_divergence",
    "kl_divergence_from_logits",
    "perplexity",
    "nats_to_bits",
    "bits_to_nats",
]

_jit_axis = functools.partial(jax.jit, static_argnames=("axis",))


def _one(func: str, name: str, x, axis: int) -> tuple[jax.Array, int]:
    x = _checks.floating(func, name, x)
    return x, _checks.class_axis(func, name, x, axis)


def _two(func: str, names: tuple[str, str], a, b, axis: int) -> tuple[jax.Array, jax.Array, int]:
    a = _checks.floating(func, names[0], a)
    b = _checks.floating(func, names[1], b)
    _checks.same_shape(func, names, a, b)
    return a, b, _checks.class_axis(func, names[0], a, axis)


# ----------------------------------------------------------------------------- probabilities


def entropy(probs: Float[Array, "*batch n"], *, axis: int = -1) -> Float[Array, "*batch"]:
    r"""Shannon entropy of probability vectors.

    .. math:: H(p) = -\sum_i p_i \log p_i \qquad (0 \log 0 = 0)

    Args:
      probs: probabilities, non-negative, summing to one along ``axis``.
      axis: the axis holding the distribution.

    Returns:
      ``H(p)`` in nats, shape ``probs.shape`` without ``axis``.

    The derivative ``∂H/∂p_i = -(\log p_i + 1)`` is ``+finfo.max`` at ``p_i = 0``.

    References: Cover & Thomas, eq. (2.1).
    """
    probs, axis = _one("entropy", "probs", probs, axis)
    return _entropy(probs, axis=axis)


@_jit_axis
def _entropy(probs, axis):
    p = upcast(probs)
    return -jnp.sum(xlogy(p, p), axis=axis)


def cross_entropy(p: Float[Array, "*batch n"], q: Float[Array, "*batch n"], *, axis: int = -1
                  ) -> Float[Array, "*batch"]:
    r"""Cross-entropy of ``q`` relative to ``p`` (the expected code length of ``p`` under ``q``).

    .. math:: H(p, q) = -\sum_i p_i \log q_i

    ``+inf`` if ``q_i = 0`` for some ``p_i > 0``; terms with ``p_i = 0`` are 0 even if ``q_i = 0``.

    Args:
      p: the data (target) distribution, shape ``(*batch, n)`` (``n`` along ``axis``).
      q: the model distribution, same shape as ``p``.
      axis: the axis holding the distributions.

    Returns:
      ``H(p, q)`` in nats, shape ``(*batch,)``.

    References: Cover & Thomas, §2.3 and problem 2.19 (``H(p,q) = H(p) + KL(p‖q)``, claim A1).
    """
    p, q, axis = _two("cross_entropy", ("p", "q"), p, q, axis)
    return _cross_entropy(p, q, axis=axis)


@_jit_axis
def _cross_entropy(p, q, axis):
    p, q = upcast(p), upcast(q)
    return -jnp.sum(xlogy(p, q), axis=axis)


def kl_divergence(p: Float[Array, "*batch n"], q: Float[Array, "*batch n"], *, axis: int = -1
                  ) -> Float[Array, "*batch"]:
    r"""Kullback–Leibler divergence ``KL(p‖q)``, never negative, accurate when ``p ≈ q``.

    .. math::
        \mathrm{KL}(p\|q) = \sum_i p_i \log\frac{p_i}{q_i}
                          = \sum_i \Big(p_i \log\frac{p_i}{q_i} - p_i + q_i\Big)

    The second form (equal to the first when both sum to one) is a sum of non-negative
    terms, each computed without cancellation (:func:`vfe._numerics.kl_term`), so the result
    is ``≥ 0`` and has a small *relative* error even when ``p`` and ``q`` agree to six digits,
    where ``Σ p log(p/q)`` in float32 returns negative values. For vectors that do not sum
    to one exactly (e.g. rounded to float32) it is the generalised KL divergence of the
    given vectors, still ``≥ 0`` and ``= 0`` iff ``p = q``.

    Edge cases: ``+inf`` if ``q_i = 0 < p_i``; entries with ``p_i = 0`` contribute ``q_i``
    (i.e. nothing, for normalised inputs).

    Args:
      p: first distribution, shape ``(*batch, n)``.
      q: second distribution, same shape.
      axis: the axis holding the distributions.

    Returns:
      ``KL(p‖q)`` in nats, shape ``(*batch,)``.

    Gradients: ``∂/∂p_i = \log(p_i/q_i)``, ``∂/∂q_i = 1 - p_i/q_i`` (the gradient of the
    generalised form; on the simplex it agrees with ``-p_i/q_i`` up to a constant that any
    normalised direction ignores).

    References: Cover & Thomas, §2.3; S. Kullback and R. A. Leibler (1951).
    """
    p, q, axis = _two("kl_divergence", ("p", "q"), p, q, axis)
    return _kl_divergence(p, q, axis=axis)


@jax.custom_jvp
def _kl_terms(p, q):
    # d = log(p/q), to about one ulp: through log1p of the (exactly computed) relative gap
    # r = (q - p)/p when |r| <= 0.3, where a log of q/p would cancel; as the log of the rounded
    # ratio elsewhere (XLA:CPU's float64 log1p is ~100 ulps off for r in [-0.5, -0.3]); as a
    # difference of logs only where q/p over- or underflows (then |d| > 700 and cancels nothing).
    safe_p = jnp.where(p == 0, jnp.ones_like(p), p)
    safe_q = jnp.where(q == 0, jnp.ones_like(q), q)
    ratio = safe_q / safe_p
    d = jnp.where(jnp.abs(q - p) <= 0.3 * p, -jnp.log1p((q - p) / safe_p),
                  jnp.where((ratio >= jnp.finfo(ratio.dtype).tiny) & (ratio <= jnp.finfo(ratio.dtype).max),
                            -jnp.log(ratio), jnp.log(safe_p) - jnp.log(safe_q)))
    return kl_term(p, q, jnp.where(q == 0, jnp.inf, d))


@_kl_terms.defjvp
def _kl_terms_jvp(primals, tangents):
    p, q = primals
    p_dot, q_dot = tangents
    safe_p = jnp.where(p == 0, jnp.ones_like(p), p)
    safe_q = jnp.where(q == 0, jnp.ones_like(q), q)
    log_ratio = jnp.where(p == 0, jnp.where(q == 0, 0.0, -jnp.inf), jnp.log(safe_p) - jnp.log(safe_q))
    log_ratio = jnp.where((q == 0) & (p > 0), jnp.inf, log_ratio)
    d_dq = jnp.where(q == 0, jnp.where(p == 0, 1.0, -jnp.inf), 1.0 - p / safe_q)
    return _kl_terms(p, q), p_dot * finite_or_max(log_ratio) + q_dot * finite_or_max(d_dq)


@_jit_axis
def _kl_divergence(p, q, axis):
    return jnp.sum(_kl_terms(upcast(p), upcast(q)), axis=axis)


# ----------------------------------------------------------------------------- logits


def entropy_from_logits(logits: Float[Array, "*batch n"], *, axis: int = -1) -> Float[Array, "*batch"]:
    r"""Entropy of ``softmax(logits)``.

    .. math:: H(\mathrm{softmax}(z)) = -\sum_i p_i \log p_i, \quad \log p = z - \operatorname{lse}(z)

    ``-inf`` logits are masked entries (probability 0). Invariant under adding a constant to
    ``logits``; exact for logits of any magnitude representable in the dtype (the maximum
    is subtracted first). The gradient ``∂H/∂z_i = -p_i(\log p_i + H)`` is finite everywhere
    and 0 at masked entries.

    Args:
      logits: unnormalised log-probabilities (or log-probabilities), shape ``(*batch, n)``.
      axis: the axis holding the distribution.

    Returns:
      entropy in nats, shape ``(*batch,)``.
    """
    logits, axis = _one("entropy_from_logits", "logits", logits, axis)
    return _entropy_from_logits(logits, axis=axis)


@_jit_axis
def _entropy_from_logits(logits, axis):
    log_p = jax.nn.log_softmax(upcast(logits), axis=axis)
    return -jnp.sum(mul_no_nan(jnp.exp(log_p), log_p), axis=axis)


def cross_entropy_from_logits(p: Float[Array, "*batch n"], logits: Float[Array, "*batch n"], *,
                              axis: int = -1) -> Float[Array, "*batch"]:
    r"""Cross-entropy of ``softmax(logits)`` relative to target probabilities ``p``.

    .. math:: H(p, \mathrm{softmax}(z)) = -\sum_i p_i \log\mathrm{softmax}(z)_i
              = \operatorname{lse}(z)\sum_i p_i - \sum_i p_i z_i

    ``+inf`` where a masked logit (``-inf``) carries target mass; masked entries with
    ``p_i = 0`` contribute nothing (value and gradient).

    Args:
      p: target probabilities (soft labels), shape ``(*batch, n)``.
      logits: model logits, same shape.
      axis: the axis holding the distributions.

    Returns:
      cross-entropy in nats, shape ``(*batch,)``.

    References: the training loss of claim D2; optax ``softmax_cross_entropy``.
    """
    p, logits, axis = _two("cross_entropy_from_logits", ("p", "logits"), p, logits, axis)
    return _cross_entropy_from_logits(p, logits, axis=axis)


@_jit_axis
def _cross_entropy_from_logits(p, logits, axis):
    log_q = jax.nn.log_softmax(upcast(logits), axis=axis)
    return -jnp.sum(mul_no_nan(upcast(p), log_q), axis=axis)


def cross_entropy_with_integer_labels(logits: Float[Array, "*batch n"], labels: Int[Array, "*batch"], *,
                                      axis: int = -1) -> Float[Array, "*batch"]:
    r"""Negative log-likelihood of integer labels: cross-entropy against one-hot targets.

    .. math:: H(\delta_y, \mathrm{softmax}(z)) = -\log \mathrm{softmax}(z)_y = \operatorname{lse}(z) - z_y

    Summed over the tokens of a sequence this is the sequence NLL (claim A2). ``+inf`` when
    the label's logit is ``-inf``.

    Args:
      logits: shape ``(*batch, n)`` with the classes along ``axis``.
      labels: integer class indices in ``[0, n)``, shape ``(*batch,)``. Out-of-range labels
        are not checked under ``jit``: their loss is NaN (JAX's gather fills reads out of
        bounds with NaN); :func:`vfe.validate.labels` checks them eagerly.
      axis: the axis holding the classes.

    Returns:
      NLL in nats, shape ``(*batch,)``.
    """
    func = "cross_entropy_with_integer_labels"
    logits, axis = _one(func, "logits", logits, axis)
    labels = _checks.integer(func, "labels", labels)
    expected = _checks.batch_shape(logits.shape, axis)
    if labels.shape != expected:
        raise ValueError(f"{func}: argument `labels` must have shape {expected} (logits' shape without "
                         f"axis {axis}), got {labels.shape}")
    return _integer_cross_entropy(logits, labels, axis=axis)


@_jit_axis
def _integer_cross_entropy(logits, labels, axis):
    # log Σ exp(z - m) - (z_y - m), m = max z: reductions only, no [*batch, n] log-softmax in
    # memory, and no cancellation between lse(z) and z_y when the logits are large
    z = upcast(logits)
    top = jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    picked = jnp.take_along_axis(z, jnp.expand_dims(labels, axis), axis=axis) - top
    return jnp.squeeze(jnp.log(jnp.sum(jnp.exp(z - top), axis=axis, keepdims=True)) - picked, axis)


def kl_divergence_from_logits(p_logits: Float[Array, "*batch n"], q_logits: Float[Array, "*batch n"], *,
                              axis: int = -1) -> Float[Array, "*batch"]:
    r"""``KL(softmax(a) ‖ softmax(b))`` from two logit tensors, never negative, accurate when close.

    .. math::
        \mathrm{KL}(p\|q) = \sum_i p_i\,\psi(d_i),\quad d_i = \log p_i - \log q_i,\quad
        \psi(d) = e^{-d} - 1 + d \ge 0,

    where :math:`d_i = \delta_i - \log\sum_j q_j e^{\delta_j}` with :math:`\delta = a - b`
    shifted by its value at the mode of ``q``; the log-sum is evaluated as
    ``log1p(Σ q expm1(δ))``, so when the two distributions agree closely ``d`` keeps its
    relative accuracy instead of being the difference of two rounded log-probabilities. ``δ`` is
    carried exactly (TwoSum), and ``p``, ``q`` come from the row maxima, so an offset between or
    on the two logit tensors adds no error of its scale (the naive ``log_softmax`` formula's
    rounding is the bound elsewhere).

    Edge cases: ``+inf`` if some ``b_i = -inf`` where ``a_i`` is finite; masked entries of ``a``
    contribute 0. Gradients: ``∂/∂a_i = p_i(d_i - KL)``, ``∂/∂b_i = q_i - p_i``; where the
    value is ``+inf`` the gradient is reported as 0 (the divergence has no finite slope there).

    Args:
      p_logits: logits ``a`` of the first distribution, shape ``(*batch, n)``.
      q_logits: logits ``b`` of the second distribution, same shape.
      axis: the axis holding the distributions.

    Returns:
      ``KL(p‖q)`` in nats, shape ``(*batch,)``.
    """
    a, b, axis = _two("kl_divergence_from_logits", ("p_logits", "q_logits"), p_logits, q_logits, axis)
    return _kl_divergence_from_logits(a, b, axis=axis)


def _kl_row_stats(a, b):
    """Per-row scalars (shape ``(*batch, 1)``) from which every KL term is elementwise.

    Returns ``(ma, log_sa, mb, log_sb, ref, ref_lo, shift, near)``: ``log p = (a - ma) - log sa``
    and ``log q = (b - mb) - log sb`` (``m`` the maxima: rounded in proportion to the spread of the
    logits, not to their offset), and for the accurate log-ratio ``d = x - shift`` with
    ``x = (a - b) - (ref + ref_lo)`` (:func:`vfe._numerics.exact_gap`): ``ref + ref_lo`` is ``a - b`` at the mode of
    ``q`` (among entries where both logits are finite) exactly, and
    ``shift = log Σ_j q_j e^{x_j}``, evaluated as ``log1p(Σ q expm1(x))`` — no cancellation, no
    overflow — on rows that are ``near`` (``x ≤ 30`` wherever both are finite, and at most half of
    ``q``'s mass where ``a`` is masked, whose entries add ``q_j expm1(-inf) = -q_j``). Other rows use
    ``d = log p - log q``, whose rounding is small against their divergence. Only reductions appear
    here, so that XLA can fuse each with the elementwise expression it reduces instead of
    materialising ``[*batch, n]`` arrays.
    """
    ma, mb = jnp.max(a, axis=-1, keepdims=True), jnp.max(b, axis=-1, keepdims=True)
    log_sa = jnp.log(jnp.sum(jnp.exp(a - ma), axis=-1, keepdims=True))
    log_sb = jnp.log(jnp.sum(jnp.exp(b - mb), axis=-1, keepdims=True))
    both = jnp.isfinite(a) & jnp.isfinite(b)
    mode = jnp.argmax(jnp.where(both, b, -jnp.inf), axis=-1, keepdims=True)
    ref, ref_lo = two_difference(jnp.take_along_axis(a, mode, axis=-1), jnp.take_along_axis(b, mode, axis=-1))
    q = jnp.exp((b - mb) - log_sb)
    masked_mass = jnp.sum(jnp.where(jnp.isneginf(a), q, 0.0), axis=-1, keepdims=True)
    x = exact_gap(a, b, ref, ref_lo)
    spread = jnp.max(jnp.where(both, x, -jnp.inf), axis=-1, keepdims=True)
    near = (spread <= 30.0) & (masked_mass <= 0.5)
    gap = jnp.where(both & near, x, 0.0)
    shift = jnp.log1p(jnp.sum(jnp.where(both & (q > 0), q * jnp.expm1(gap), 0.0), axis=-1, keepdims=True)
                      - masked_mass)
    return ma, log_sa, mb, log_sb, ref, ref_lo, shift, near


def _kl_elements(a, b, stats):
    """``(p, q, d)`` elementwise from the logits and :func:`_kl_row_stats`."""
    ma, log_sa, mb, log_sb, ref, ref_lo, shift, near = stats
    log_p, log_q = (a - ma) - log_sa, (b - mb) - log_sb
    d = jnp.where(near, exact_gap(a, b, ref, ref_lo) - shift, log_p - log_q)
    d = jnp.where(jnp.isneginf(b) & ~jnp.isneginf(a), jnp.inf, d)
    d = jnp.where(jnp.isneginf(a), -jnp.inf, d)
    return jnp.exp(log_p), jnp.exp(log_q), d


def _kl_value_last(a, b):
    """``(row stats, KL)``. KL is ``+inf`` wherever ``b`` masks a token that ``a`` allows, even
    if ``p`` underflows there (the support of ``softmax(a)`` is where ``a`` is finite)."""
    stats = _kl_row_stats(a, b)
    escapes = jnp.any(jnp.isfinite(a) & jnp.isneginf(b), axis=-1)
    return stats, jnp.where(escapes, jnp.inf, jnp.sum(kl_term(*_kl_elements(a, b, stats)), axis=-1))


@jax.custom_jvp
def _kl_from_logits_last(a, b):
    return _kl_value_last(a, b)[1]


@_kl_from_logits_last.defjvp
def _kl_from_logits_last_jvp(primals, tangents):
    a, b = primals
    a_dot, b_dot = tangents
    stats, kl = _kl_value_last(a, b)
    p, q, d = _kl_elements(a, b, stats)
    finite = jnp.isfinite(kl)[..., None]
    coef_a = jnp.where((p == 0) | ~finite, 0.0, p * (d - jnp.where(finite, kl[..., None], 0.0)))
    coef_b = jnp.where(finite, q - p, 0.0)
    dot = jnp.sum(coef_a * jnp.where(p == 0, 0.0, a_dot) + coef_b * jnp.where(finite, b_dot, 0.0), axis=-1)
    return kl, dot


@_jit_axis
def _kl_divergence_from_logits(a, b, axis):
    a, b = jnp.moveaxis(upcast(a), axis, -1), jnp.moveaxis(upcast(b), axis, -1)
    return _kl_from_logits_last(a, b)


# ----------------------------------------------------------------------------- units


def perplexity(cross_entropy_nats: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
    r"""Perplexity from a cross-entropy (or NLL per token) in nats.

    .. math:: \mathrm{PPL} = e^{H} = 2^{H / \ln 2}

    ``+inf`` for an infinite cross-entropy. See claim A7.
    """
    return jnp.exp(upcast(_checks.floating("perplexity", "cross_entropy_nats", cross_entropy_nats)))


def nats_to_bits(nats: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""Convert an information quantity from nats to bits: :math:`x / \ln 2`."""
    return upcast(_checks.floating("nats_to_bits", "nats", nats)) / math.log(2.0)


def bits_to_nats(bits: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""Convert an information quantity from bits to nats: :math:`x \ln 2`."""
    return upcast(_checks.floating("bits_to_nats", "bits", bits)) * math.log(2.0)
