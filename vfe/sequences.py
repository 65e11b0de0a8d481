r"""Sequences: chain-rule log-likelihood, the LLM training loss, perplexity and tempered sampling.

An autoregressive language model gives, at every position ``t`` of a sequence
:math:`x_{1:L}`, logits :math:`z_t \in \mathbb{R}^V` of the next-token conditional
:math:`p(x_t \mid x_{<t}) = \mathrm{softmax}(z_t)_{x_t}`. By the chain rule (claim D1)

.. math::
    p(x_{1:L}) = \prod_{t=1}^{L} p(x_t \mid x_{<t}), \qquad
    \log p(x_{1:L}) = \sum_{t=1}^{L} \log\mathrm{softmax}(z_t)_{x_t},

and the pre-training loss is the mean negative log-likelihood per token, the cross-entropy of
the model against the data (claim D2); its exponential is the perplexity and its value in bits
the bits per token (claim A7). Sampling draws one token per step from
:math:`\mathrm{softmax}(z_t/T)` and feeds it back (claims C9, D4); the resulting joint is the
product of the *per-step* tempered conditionals, which is not the *globally* tempered joint
:math:`p(x_{1:L})^{1/T}/Z` (compare :func:`autoregressive_log_joint` with ``temperature``
and :func:`globally_tempered_log_joint`).

Layout and conventions (the same for every function here):

* logits have shape ``(*batch, L, V)`` (positions, then the vocabulary, last); tokens are
  integers of shape ``(*batch, L)``: ``tokens[..., t]`` is the token scored by
  ``logits[..., t, :]`` (shift inputs and targets by one before calling, as usual).
* ``where`` (optional, bool, broadcastable to the tokens' shape) marks the positions that count.
  A position with ``where = False`` contributes exactly 0 to values *and* gradients, whatever
  its logits (NaN, all ``-inf``) or token (padding, out of range) — it is replaced before any
  arithmetic, not multiplied by 0 afterwards.
* ``-inf`` logits are masked tokens (probability 0). Scoring a masked token gives a
  log-probability of ``-inf`` (an NLL and perplexity of ``+inf``), never NaN, with finite
  gradients; sampling never draws one.
* bfloat16/float16 logits are accumulated in float32; results have dtype
  ``promote_types(logits dtype, float32)``. Samples are int32.
* Temperatures ``T`` are checked like :mod:`vfe.thermodynamics`: a Python/NumPy number must be
  ``> 0`` and finite, array values are not inspected. Sampling is exact in both limits:
  ``T → 0`` (down to 0 itself, e.g. a temperature that underflows) draws uniformly among the
  tied maximal logits; ``T → ∞`` draws uniformly among the unmasked tokens.

Outside the domain (not checked under ``jit``; see :mod:`vfe.validate`): tokens outside
``[0, V)`` at counted positions, rows whose logits are all ``-inf``, ``+inf`` or NaN logits.

References:
  Y. Bengio, R. Ducharme, P. Vincent, C. Jauvin, "A neural probabilistic language model",
  JMLR 3 (2003), §1 (chain rule, perplexity); F. Jelinek, R. L. Mercer, L. R. Bahl,
  J. K. Baker, "Perplexity — a measure of the difficulty of speech recognition tasks",
  JASA 62 (1977); E. J. Gumbel, *Statistical theory of extreme values* (1954);
  C. J. Maddison, D. Tarlow, T. Minka, "A* sampling", NeurIPS (2014), §2 (Gumbel-max).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from vfe import _checks
from vfe._numerics import upcast
from vfe.information import _integer_cross_entropy, nats_to_bits, perplexity
from vfe.thermodynamics import tempered_log_softmax

__all__ = [
    "autoregressive_log_joint",
    "bits_per_token",
    "globally_tempered_log_joint",
    "mean_token_nll",
    "perplexity_from_logits",
    "sample_autoregressive",
    "sample_categorical",
    "sample_tempered",
    "sequence_log_prob",
    "sequence_nll",
    "token_log_probs",
]

#: Largest ``V**L · L · V`` (logits held in memory) that :func:`autoregressive_log_joint` enumerates.
MAX_ENUMERATED_LOGITS = 2**26

StepFn = Callable[[Any, Array], tuple[Any, Array]]


# ----------------------------------------------------------------------------- argument checks


def _sequence_args(func: str, logits, tokens, where):
    """``(logits, tokens, where)`` checked: logits ``(*batch, L, V)`` floating, tokens
    ``(*batch, L)`` integer, ``where`` None or a bool mask broadcast to the tokens' shape."""
    logits = _checks.floating(func, "logits", logits)
    if logits.ndim < 2:
        raise ValueError(f"{func}: argument `logits` must have shape (*batch, L, V) (positions, then the "
                         f"vocabulary), got {logits.shape}")
    _checks.class_axis(func, "logits", logits, -1)
    tokens = _checks.integer(func, "tokens", tokens)
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(f"{func}: argument `tokens` must have shape {logits.shape[:-1]} (logits' shape "
                         f"without the vocabulary axis), got {tokens.shape}")
    where = _checks.mask(func, where, tokens.shape, "the tokens")
    return logits, tokens, where


def _key(func: str, key) -> jax.Array:
    """A single PRNG key: a typed key of shape ``()`` or a raw ``uint32`` key (``jax.random.PRNGKey``)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{func}: argument `key` must be a single key (shape ()), got shape {key.shape}; "
                             f"the batch axes share one key, or vmap over keys")
        return key
    if dtype == np.uint32 and np.ndim(key) == 1:
        return jnp.asarray(key)
    raise TypeError(f"{func}: argument `key` must be a PRNG key (jax.random.key(seed) or "
                    f"jax.random.PRNGKey(seed)), got {type(key).__name__} of dtype {dtype}")


def _positive_int(func: str, name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{func}: argument `{name}` must be a Python int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{func}: argument `{name}` must be ≥ 1, got {value}")
    return int(value)


def _step_vocab_size(func: str, step_fn, state, token) -> int:
    """Trace one call of ``step_fn`` (shapes only) and return the vocabulary size ``V``."""
    if not callable(step_fn):
        raise TypeError(f"{func}: argument `step_fn` must be callable, got {type(step_fn).__name__}")
    out = jax.eval_shape(step_fn, state, token)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{func}: argument `step_fn` must return a pair (state, logits), got {out!r}")
    new_state, logits = out
    old = jax.tree.map(lambda x: np.shape(x), state)
    new = jax.tree.map(lambda x: np.shape(x), new_state)
    if jax.tree.structure(old) != jax.tree.structure(new) or old != new:
        raise ValueError(f"{func}: argument `step_fn` must return a state of the same structure and shapes as "
                         f"the one it is given: got {new!r} for {old!r}")
    if not (hasattr(logits, "dtype") and jnp.issubdtype(logits.dtype, jnp.floating)):
        raise TypeError(f"{func}: argument `step_fn` must return floating logits, got {logits!r}")
    if logits.shape[:-1] != token.shape or len(logits.shape) != token.ndim + 1 or logits.shape[-1] == 0:
        raise ValueError(f"{func}: argument `step_fn` must return logits of shape {token.shape} + (V,) for "
                         f"tokens of shape {token.shape}, got {logits.shape}")
    return int(logits.shape[-1])


# ----------------------------------------------------------------------------- log-likelihood


def _masked_inputs(logits, tokens, where):
    """Counted positions unchanged; the others replaced by logits 0 and token 0 (finite, in range),
    so that they add neither NaN nor gradient."""
    if where is None:
        return logits, tokens
    return jnp.where(where[..., None], logits, jnp.zeros((), logits.dtype)), jnp.where(where, tokens, 0)


@jax.jit
def _token_log_probs(logits, tokens, where):
    z, y = _masked_inputs(upcast(logits), tokens, where)
    # −(lse(z) − z_y), computed by the integer-label cross-entropy kernel of vfe.information:
    # max-shifted, reductions only, +inf (here −inf) when the token's logit is −inf
    lp = -_integer_cross_entropy(z, y, axis=-1)
    return lp if where is None else jnp.where(where, lp, jnp.zeros((), lp.dtype))


@jax.jit
def _sequence_log_prob(logits, tokens, where):
    return jnp.sum(_token_log_probs(logits, tokens, where), axis=-1)


@jax.jit
def _mean_token_nll(logits, tokens, where):
    total = -jnp.sum(_token_log_probs(logits, tokens, where))
    count = tokens.size if where is None else jnp.sum(where)
    return total / count


@jax.jit
def _perplexity_from_logits(logits, tokens, where):
    return perplexity(_mean_token_nll(logits, tokens, where))


@jax.jit
def _bits_per_token(logits, tokens, where):
    return nats_to_bits(_mean_token_nll(logits, tokens, where))


def token_log_probs(logits: Float[Array, "*batch L V"], tokens: Int[Array, "*batch L"], *,
                    where: Bool[Array, "*batch L"] | None = None) -> Float[Array, "*batch L"]:
    r"""Log-probability of each token under its position's logits: the terms of the chain rule.

    .. math:: \ell_t = \log\mathrm{softmax}(z_t)_{x_t} = z_{t,x_t} - \operatorname{lse}(z_t)

    Computed by :func:`vfe.cross_entropy_with_integer_labels` (negated): max-shifted, no
    ``(*batch, L, V)`` log-softmax in memory. ``-inf`` where the token's logit is ``-inf``.

    Args:
      logits: shape ``(*batch, L, V)``, ``-inf`` for masked tokens.
      tokens: integer token ids in ``[0, V)``, shape ``(*batch, L)``.
      where: optional bool mask broadcastable to ``(*batch, L)``; positions where it is False
        give exactly 0 (value and gradient), whatever their logits and tokens.

    Returns:
      ``ℓ_t`` in nats, shape ``(*batch, L)``.
    """
    logits, tokens, where = _sequence_args("token_log_probs", logits, tokens, where)
    return _token_log_probs(logits, tokens, where)


def sequence_log_prob(logits: Float[Array, "*batch L V"], tokens: Int[Array, "*batch L"], *,
                      where: Bool[Array, "*batch L"] | None = None) -> Float[Array, "*batch"]:
    r"""Log-probability of whole sequences by the chain rule (claim D1).

    .. math:: \log p(x_{1:L}) = \sum_{t=1}^{L} \log p(x_t \mid x_{<t})
              = \sum_{t:\ \mathrm{where}_t} \big(z_{t,x_t} - \operatorname{lse}(z_t)\big)

    ``-inf`` if a counted token's logit is ``-inf``; 0 for a sequence with no counted position
    (the empty product). Gradient: ``∂/∂z_{t,i} = where_t (1[i = x_t] - softmax(z_t)_i)``,
    finite everywhere, 0 at masked logits and uncounted positions.

    Args:
      logits: shape ``(*batch, L, V)``; ``logits[..., t, :]`` scores ``tokens[..., t]``.
      tokens: integer token ids in ``[0, V)``, shape ``(*batch, L)``.
      where: optional bool mask broadcastable to ``(*batch, L)`` (e.g. False on padding);
        uncounted positions contribute exactly 0.

    Returns:
      ``log p(x_{1:L})`` in nats, shape ``(*batch,)``.

    References: Bengio et al. (2003), eq. (1).
    """
    logits, tokens, where = _sequence_args("sequence_log_prob", logits, tokens, where)
    return _sequence_log_prob(logits, tokens, where)


def sequence_nll(logits: Float[Array, "*batch L V"], tokens: Int[Array, "*batch L"], *,
                 where: Bool[Array, "*batch L"] | None = None) -> Float[Array, "*batch"]:
    r"""Negative log-likelihood of whole sequences, summed over their counted tokens.

    .. math:: \mathrm{NLL}(x_{1:L}) = -\log p(x_{1:L}) = -\sum_{t:\ \mathrm{where}_t} \log p(x_t \mid x_{<t})

    The code length of the sequence in nats (claim A7); ``+inf`` if a counted token is masked.
    Same arguments as :func:`sequence_log_prob`.

    Returns:
      NLL in nats, shape ``(*batch,)``.
    """
    logits, tokens, where = _sequence_args("sequence_nll", logits, tokens, where)
    return -_sequence_log_prob(logits, tokens, where)


def mean_token_nll(logits: Float[Array, "*batch L V"], tokens: Int[Array, "*batch L"], *,
                   where: Bool[Array, "*batch L"] | None = None) -> Float[Array, ""]:
    r"""Mean negative log-likelihood per token over the whole batch: the LLM pre-training loss.

    .. math::
        \mathcal{L} = -\frac{1}{N} \sum_{b} \sum_{t:\ \mathrm{where}_{b,t}} \log p(x_{b,t} \mid x_{b,<t}),
        \qquad N = \#\{(b, t) : \mathrm{where}_{b,t}\}

    With data drawn from :math:`p_\mathrm{data}` this estimates the cross-entropy
    :math:`H(p_\mathrm{data}, p_\theta)` per token, so minimising it is maximum likelihood
    (claim D2). Each token weighs the same, not each sequence: padding does not change the loss.
    For the mean per sequence, ``jax.vmap`` this function over the batch axis.

    Edge cases: ``+inf`` if a counted token is masked; NaN if no position is counted (0/0).

    Args:
      logits: shape ``(*batch, L, V)``.
      tokens: integer token ids, shape ``(*batch, L)``.
      where: optional bool mask broadcastable to ``(*batch, L)``.

    Returns:
      the mean NLL in nats, a scalar.

    References: optax ``softmax_cross_entropy_with_integer_labels`` followed by a masked mean.
    """
    logits, tokens, where = _sequence_args("mean_token_nll", logits, tokens, where)
    return _mean_token_nll(logits, tokens, where)


def perplexity_from_logits(logits: Float[Array, "*batch L V"], tokens: Int[Array, "*batch L"], *,
                           where: Bool[Array, "*batch L"] | None = None) -> Float[Array, ""]:
    r"""Perplexity of a model on tokens: the exponential of the mean NLL per token (claim A7).

    .. math:: \mathrm{PPL} = \exp(\mathcal{L}) = 2^{\mathcal{L}/\ln 2},
              \quad \mathcal{L} = \texttt{mean\_token\_nll}(z, x)

    The corpus perplexity: one mean over every counted token of the batch, then one exponential
    (:func:`vfe.perplexity` of :func:`mean_token_nll`). ``+inf`` if a counted token is masked.

    Returns:
      perplexity, a scalar ``≥ 1``.

    References: Jelinek et al. (1977).
    """
    logits, tokens, where = _sequence_args("perplexity_from_logits", logits, tokens, where)
    return _perplexity_from_logits(logits, tokens, where)


def bits_per_token(logits: Float[Array, "*batch L V"], tokens: Int[Array, "*batch L"], *,
                   where: Bool[Array, "*batch L"] | None = None) -> Float[Array, ""]:
    r"""Mean code length per token in bits: :math:`\mathcal{L}/\ln 2`, so that ``PPL = 2^{bits}`` (claim A7).

    :func:`vfe.nats_to_bits` of :func:`mean_token_nll`; same arguments.

    Returns:
      bits per token, a scalar.
    """
    logits, tokens, where = _sequence_args("bits_per_token", logits, tokens, where)
    return _bits_per_token(logits, tokens, where)


# ----------------------------------------------------------------------------- sampling


def _gumbel_argmax(key, z, temperature):
    """One draw per row (last axis) of ``softmax(z/T)``: ``argmax((z - max z)/T + G)``.

    ``(z - max z)/T`` is set to exactly 0 at the maximal logits, so that at any ``T`` (also one
    small enough for the other entries to be ``-inf``, or ``T = 0``) the tied maxima compete on
    the Gumbel noise alone: uniform tie-breaking, no overflow, no absorption of the noise.
    """
    masked = jnp.isneginf(z)
    centred = z - jnp.max(z, axis=-1, keepdims=True)
    s = jnp.where(centred == 0, jnp.zeros((), z.dtype), centred / temperature)
    s = jnp.where(masked, -jnp.inf, s)
    # mode="high": float32 noise reaches ~32 instead of ~16, so tokens down to ~e^-35 of the
    # mode's probability can still be drawn (see sample_tempered)
    g = jax.random.gumbel(key, z.shape, z.dtype, mode="high")
    return jnp.argmax(s + g, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("axis",))
def _sample_tempered(key, logits, temperature, axis):
    z = jnp.moveaxis(upcast(logits), axis, -1)
    return _gumbel_argmax(key, z, jnp.asarray(temperature, z.dtype)[..., None])


def sample_tempered(key: PRNGKeyArray, logits: Float[Array, "*batch V"], temperature, *,
                    axis: int = -1) -> Int[Array, "*batch"]:
    r"""One draw per row from the tempered softmax, by the Gumbel-max trick (claim C9).

    .. math::
        x = \arg\max_i \Big(\frac{z_i - \max_j z_j}{T} + G_i\Big),\quad G_i \overset{iid}{\sim}
        \mathrm{Gumbel}(0, 1) \quad\Longrightarrow\quad P(x = i) = \mathrm{softmax}(z/T)_i

    Limits, exact: ``T → 0`` (including array temperatures that are 0 or underflow) draws
    uniformly among the tied maximal logits — ``(z_i - \max z)/T`` is set to exactly 0 there,
    so the tie is broken by the noise alone (the naive ``z/T + G`` absorbs ``G`` into
    ``z/T ≈ 10^{30}`` and always returns the first maximum); ``T → ∞`` draws uniformly among the
    unmasked tokens. ``-inf`` logits are never drawn.

    Resolution: the noise has the compute dtype (float32 for float32/bfloat16/float16 logits,
    float64 for float64) and uses ``jax.random.gumbel(mode="high")``; in float32 it lies in
    about ``[-2.8, 32]`` (save an atom of probability ``2^{-46}`` at 87), so a token whose
    tempered logit is more than about 35 below the maximum is practically never drawn (its
    probability relative to the mode's is below 1e-15).

    Args:
      key: a PRNG key; every row gets independent noise from it.
      logits: shape ``(*batch, V)`` (``V`` along ``axis``), ``-inf`` for masked tokens.
      temperature: ``T > 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the vocabulary axis.

    Returns:
      int32 token ids of shape ``(*batch,)``.

    References: Gumbel (1954); Maddison, Tarlow & Minka (2014), §2.
    """
    func = "sample_tempered"
    key = _key(func, key)
    logits = _checks.floating(func, "logits", logits)
    axis = _checks.class_axis(func, "logits", logits, axis)
    t = _checks.positive_scale(func, "temperature", temperature, _checks.batch_shape(logits.shape, axis))
    return _sample_tempered(key, logits, t, axis=axis)


@functools.partial(jax.jit, static_argnames=("axis",))
def _sample_categorical(key, probs, axis):
    p = jnp.moveaxis(upcast(probs), axis, -1)
    cdf = jnp.cumsum(p, axis=-1)
    u = jax.random.uniform(key, p.shape[:-1] + (1,), p.dtype) * cdf[..., -1:]
    # the first category with positive mass whose cumulative mass exceeds u; a zero-mass category
    # is never chosen even where rounding makes the cumulative sum non-monotone
    above = (cdf > u) & (p > 0)
    n = p.shape[-1]
    last_positive = n - 1 - jnp.argmax(jnp.flip(p > 0, axis=-1), axis=-1)
    return jnp.where(jnp.any(above, axis=-1), jnp.argmax(above, axis=-1), last_positive).astype(jnp.int32)


def sample_categorical(key: PRNGKeyArray, probs: Float[Array, "*batch V"], *, axis: int = -1
                       ) -> Int[Array, "*batch"]:
    r"""One draw per row from probability vectors, by inverting the cumulative distribution (claim C9).

    .. math:: x = \min\{i : p_i > 0,\ F_i > U F_V\},\qquad F_i = \sum_{j \le i} p_j,\quad U \sim \mathcal{U}[0, 1)

    Rows need not be normalised (``F_V`` rescales them). Categories with ``p_i = 0`` are never
    drawn. Resolution: ``U`` has the precision of ``promote_types(probs dtype, float32)``, so in
    float32 probabilities are resolved to about ``2^{-23}``; use float64 for finer ones, or
    :func:`sample_tempered` on log-probabilities.

    Args:
      key: a PRNG key; every row gets an independent uniform from it.
      probs: non-negative weights, shape ``(*batch, V)`` (``V`` along ``axis``), not all 0.
      axis: the category axis.

    Returns:
      int32 category ids of shape ``(*batch,)``.
    """
    func = "sample_categorical"
    key = _key(func, key)
    probs = _checks.floating(func, "probs", probs)
    axis = _checks.class_axis(func, "probs", probs, axis)
    return _sample_categorical(key, probs, axis=axis)


# ----------------------------------------------------------------------------- autoregressive models


@functools.partial(jax.jit, static_argnames=("step_fn", "length"))
def _sample_autoregressive(key, step_fn, state, token, temperature, length):
    def body(carry, k):
        state, token = carry
        state, logits = step_fn(state, token)
        z = upcast(jnp.asarray(logits))
        nxt = _gumbel_argmax(k, z, jnp.asarray(temperature, z.dtype)[..., None])
        return (state, nxt), nxt

    _, tokens = jax.lax.scan(body, (state, token), jax.random.split(key, length))
    return jnp.moveaxis(tokens, 0, -1)


def sample_autoregressive(key: PRNGKeyArray, step_fn: StepFn, init_state: Any, start_token: Int[Array, "*batch"],
                          length: int, temperature) -> Int[Array, "*batch length"]:
    r"""Sample sequences token by token, feeding each sampled token back (claim D4).

    .. math::
        (s_t, z_t) = \texttt{step\_fn}(s_{t-1}, x_{t-1}),\qquad
        x_t \sim \mathrm{softmax}(z_t / T),\qquad t = 1, \dots, L,

    with :math:`(s_0, x_0)` = ``(init_state, start_token)``. Each step is a
    :func:`sample_tempered` draw (exact ``T → 0`` and ``T → ∞`` limits, masks never drawn), so
    the sequences are distributed as the product of the per-step tempered conditionals,
    :func:`autoregressive_log_joint` with the same ``temperature`` — which differs from the
    globally tempered joint ``p(x_{1:L})^{1/T}/Z`` (:func:`globally_tempered_log_joint`) unless
    ``T = 1`` or the tokens are independent.

    The model interface, in ``lax.scan`` style: ``step_fn(state, token) -> (state, logits)``
    consumes the previous token and returns the logits of the next one. It must be a pure
    function with a stable identity (a module-level function, not a fresh ``lambda`` per call:
    it is a static argument of ``jit``); put parameters and caches in ``state``. Examples:

    * a Markov chain with initial logits ``a`` (``V``) and transition logits ``B`` (``V × V``):
      ``state = jnp.concatenate([B, a[None]])``, ``step_fn = lambda s, x: (s, s[x])``,
      ``start_token = V`` (the extra row is the start);
    * a transformer over a token buffer: ``state = (params, buffer, t)``; ``step_fn`` writes
      ``token`` at ``t``, runs the model and returns the logits at ``t``.

    Batching: ``start_token`` of shape ``(*batch,)`` gives ``(*batch,)`` tokens to ``step_fn``,
    which must return logits of shape ``(*batch, V)``; every sequence gets independent noise from
    the one ``key``. Alternatively ``jax.vmap`` over keys.

    Args:
      key: a PRNG key.
      step_fn: ``(state, token) -> (state, logits)``; ``token`` int32 of shape ``(*batch,)``,
        logits floating of shape ``(*batch, V)``; the state's structure must not change.
      init_state: the state before the first step (any pytree, may be ``None``).
      start_token: integer, shape ``(*batch,)``: the token fed to the first step (a BOS token).
      length: the number ``L ≥ 1`` of tokens to sample (a Python int).
      temperature: ``T > 0``, scalar or broadcastable to ``(*batch,)``; the same at every step.

    Returns:
      int32 tokens :math:`x_{1:L}`, shape ``(*batch, L)`` (the start token not included).
    """
    func = "sample_autoregressive"
    key = _key(func, key)
    length = _positive_int(func, "length", length)
    token = _checks.integer(func, "start_token", start_token).astype(jnp.int32)
    _step_vocab_size(func, step_fn, init_state, token)
    t = _checks.positive_scale(func, "temperature", temperature, token.shape)
    return _sample_autoregressive(key, step_fn, init_state, token, t, length=length)


@functools.partial(jax.jit, static_argnames=("step_fn", "length", "vocab_size", "tempered"))
def _autoregressive_log_joint(step_fn, state, token, temperature, length, vocab_size, tempered):
    # every sequence, lexicographic: row k is the base-V digits of k, first token most significant
    seqs = jnp.asarray(np.indices((vocab_size,) * length).reshape(length, -1).T, jnp.int32)

    def teacher_forced_logits(seq):
        def body(carry, x):
            state, token = carry
            state, logits = step_fn(state, token)
            return (state, x), upcast(jnp.asarray(logits))

        return jax.lax.scan(body, (state, token), seq)[1]

    logits = jax.vmap(teacher_forced_logits)(seqs)  # (V^L, L, V)
    if tempered:
        log_cond = tempered_log_softmax(logits, temperature)
        lp = jnp.take_along_axis(log_cond, seqs[..., None], axis=-1)[..., 0]
    else:
        lp = _token_log_probs(logits, seqs, None)
    return jnp.sum(lp, axis=-1).reshape((vocab_size,) * length)


def autoregressive_log_joint(step_fn: StepFn, init_state: Any, start_token, length: int, *,
                             temperature=None) -> Float[Array, "*vocab"]:
    r"""The joint log-probability of every sequence of ``length`` tokens, by enumeration (claims D1, D4).

    .. math::
        \log p_T(x_{1:L}) = \sum_{t=1}^{L} \log\mathrm{softmax}(z_t / T)_{x_t},
        \qquad (s_t, z_t) = \texttt{step\_fn}(s_{t-1}, x_{t-1})

    teacher-forced through the same ``step_fn`` interface as :func:`sample_autoregressive`.
    Without ``temperature`` it is the model's own chain-rule joint (D1): whatever the
    conditionals, it is normalised, :math:`\sum_{x_{1:L}} p(x_{1:L}) = 1`. With ``temperature``
    it is the per-step tempered joint — the exact distribution of
    :func:`sample_autoregressive` at that temperature (D4), exact also as ``T → 0`` (greedy
    decoding, ties split equally) and ``T → ∞``.

    For exhaustive checks on small models only: it evaluates ``step_fn`` on all ``V^L``
    sequences (``V^L · L · V`` logits in memory, at most :data:`MAX_ENUMERATED_LOGITS`).

    Args:
      step_fn: ``(state, token) -> (state, logits)`` with scalar ``token`` and logits of shape ``(V,)``.
      init_state: the state before the first step (any pytree).
      start_token: integer scalar fed to the first step.
      length: the sequence length ``L ≥ 1`` (a Python int).
      temperature: None for the model's joint; else the per-step temperature ``T > 0`` (a scalar).

    Returns:
      ``log p_T(x_{1:L})`` with ``L`` axes of size ``V``: entry ``[x_1, ..., x_L]``; dtype
      ``promote_types(logits dtype, float32)``. ``-inf`` for sequences through a masked token.
    """
    func = "autoregressive_log_joint"
    length = _positive_int(func, "length", length)
    token = _checks.integer(func, "start_token", start_token).astype(jnp.int32)
    if token.ndim != 0:
        raise ValueError(f"{func}: argument `start_token` must be a scalar (vmap for several), got shape "
                         f"{token.shape}")
    vocab_size = _step_vocab_size(func, step_fn, init_state, token)
    if vocab_size ** length * length * vocab_size > MAX_ENUMERATED_LOGITS:
        raise ValueError(f"{func}: V^L · L · V = {vocab_size}^{length} · {length} · {vocab_size} logits exceed "
                         f"MAX_ENUMERATED_LOGITS = {MAX_ENUMERATED_LOGITS}; reduce `length`")
    tempered = temperature is not None
    t = _checks.positive_scale(func, "temperature", 1.0 if temperature is None else temperature, ())
    return _autoregressive_log_joint(step_fn, init_state, token, t, length=length, vocab_size=vocab_size,
                                     tempered=tempered)


def globally_tempered_log_joint(log_joint: Float[Array, "*shape"], temperature) -> Float[Array, "*shape"]:
    r"""The globally tempered joint :math:`p(x)^{1/T} / \sum_y p(y)^{1/T}` of a joint table, in logs (claim D4).

    .. math:: \log p^{(T)}(x) = \frac{\log p(x) - m}{T} - \log\sum_y e^{(\log p(y) - m)/T},
              \quad m = \max_y \log p(y)

    The whole array is one distribution (all its axes are normalised together), e.g. the output
    of :func:`autoregressive_log_joint`. :func:`vfe.tempered_log_softmax` of the flattened table,
    with its exact limits: ``T → 0`` is uniform over the most probable sequences (the joint's
    mode, which greedy decoding need not find), ``T → ∞`` uniform over the possible ones.
    Sampling token by token at temperature ``T`` does **not** draw from it unless ``T = 1`` or
    the tokens are independent.

    Args:
      log_joint: log-probabilities (or unnormalised), any shape with at least one axis;
        ``-inf`` for impossible outcomes.
      temperature: ``T > 0``, a scalar.

    Returns:
      log-probabilities of the same shape and dtype as ``log_joint``.
    """
    func = "globally_tempered_log_joint"
    log_joint = _checks.floating(func, "log_joint", log_joint)
    if log_joint.ndim == 0 or log_joint.size == 0:
        raise ValueError(f"{func}: argument `log_joint` must be a non-empty table, got shape {log_joint.shape}")
    t = _checks.positive_scale(func, "temperature", temperature, ())
    return tempered_log_softmax(log_joint.reshape(-1), t).reshape(log_joint.shape)

