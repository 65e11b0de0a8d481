r"""Cross-entropy of a linear classifier head, without materialising the ``[N, V]`` logits.

For hidden states ``h`` (``[N, d]``), classifier weights ``W`` (``[d, V]``) and integer labels ``y``
(``[N]``) the per-token loss is

.. math:: \ell_n = \operatorname{lse}(h_n W) - (h_n W)_{y_n}
          = \log\sum_v e^{z_{nv} - m_n} - (z_{n y_n} - m_n),\qquad z = hW,\ m_n = \max_v z_{nv}.

:func:`linear_cross_entropy` computes it block by block: a loop over vocabulary blocks of
``block_vocab`` columns, and inside it a loop over token blocks of ``block_tokens`` rows, forms
one ``[block_tokens, block_vocab]`` tile of logits at a time and folds it into per-token running
statistics ``(m, s)`` with the online rule ``m' = max(m, max tile)``,
``s' = s e^{m - m'} + Σ e^{tile - m'}`` (claim S2 of ``proofs/streaming.py``). The label logit is
one gathered dot product per token. Memory beyond the inputs and outputs is one tile (plus
``O(N)`` statistics): independent of ``V`` (and of ``N``).

The backward pass (:func:`jax.custom_vjp`) keeps ``h``, ``W``, ``y`` and the per-token ``(m, log s)``
as residuals and recomputes each tile: with ``p = softmax(z)`` and ``G = g (p - onehot(y))`` it
accumulates ``∂h = G Wᵀ`` (float32, ``[N, d]``) over the vocabulary blocks and writes
``∂W[:, block] = hᵀ G`` once per vocabulary block. Cost: one tile matmul forward, three backward
— the price of never storing the logits (Cut Cross-Entropy makes the same trade).

With ``reduction="sum"`` or ``"mean"`` the cotangent is one number, so the gradients can be
formed during the forward pass (Liger-Kernel's trade): under differentiation the tokens are taken
in chunks of whole rows (``block_tokens · block_vocab / V`` tokens, so memory stays independent of
``V``), and each chunk's logits serve the loss, ``∂h`` and ``∂W`` at once — three matmuls instead of
four; the backward pass only scales the stored gradients. Without differentiation the reduced
loss is the sum of the tiled per-token losses. The price of the saved matmul: every chunk adds into
all of ``∂W``, so ``∂W`` is read and written ``N·V / (block_tokens · block_vocab)`` times (256 times
at ``N = 8192``, ``V = 128256`` with chunks of 32 tokens, 63 times with the default
:data:`REDUCED_BLOCK_TOKENS`: chunks of 130), where the per-token path writes it once. On XLA:CPU
the chunks win (float32 gradient, 1024 tokens, ``d = 256`` and 1024, ``V = 32000``: 0.97 and 1.08
of the materialised head with the default chunks, 1.0–1.06 and 1.23–1.29 with chunks a quarter as
deep, against 1.11 and 1.29 for the per-token path followed by a mean). Where a matmul's flops
are cheap against memory traffic and ``∂W`` is large (an accelerator at the shape above: 63 passes
over a float32 ``∂W`` of 2 GiB, ~250 GB), a still larger ``block_tokens`` (at
``block_tokens · block_vocab`` logits of memory per chunk) or ``reduction="none"`` followed by the
mean may be faster — measure (``benchmarks/llm.py`` times both at that shape on a GPU).

Blocks that do not divide ``N`` or ``V`` are handled by starting the last block early (at
``V - block``) and masking the columns (rows) that the previous block already covered (``∂W``'s
columns are computed again instead, the same sums, and written in place), so any block sizes work
without padding copies.

Differentiation: reverse mode, also reverse over reverse (Hessian-vector products in ``h`` and
``W``, for ``"sum"``/``"mean"`` through the gradients formed in the forward pass); no forward mode
(:func:`jax.custom_vjp`).

Precision: the tiles are computed with ``preferred_element_type=float32`` (bfloat16 inputs
accumulate in float32); gradients are returned in the dtypes of ``h`` and ``W``.

XLA:CPU computes bfloat16 dots in float32 and would convert all of ``W`` before the loops; the
tiles carry ``h`` and ``W`` through the loops behind barriers so that each tile is converted as it
is used (:func:`vfe._numerics.fori_loop_carrying`). The reduced losses' chunks likewise take their
products with ``W`` a tile of columns at a time, and add each chunk's ``∂W`` into the accumulator
tile by tile, for a bfloat16 ``W`` into a pair of bfloat16 arrays (16 significant bits, the
gradient's own buffer and one more of its size) instead of a float32 one: at h [8192, 4096],
W [4096, 128256] their temporaries under differentiation are 0.13 GiB in float32 and 1.2 GiB in
bfloat16, against 8 and 12 GiB for the materialised head (``benchmarks/LLM_RESULTS.md``).

References:
  E. Wijmans et al., "Cut your losses in large-vocabulary language models" (2024);
  Liger-Kernel ``fused_linear_cross_entropy``; levanter ``fused_cross_entropy_loss_and_logsumexp_penalty``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from vfe import _checks
from vfe._numerics import compute_dtype, fori_loop_carrying, from_holder, shift_across

__all__ = ["BLOCK_TOKENS", "BLOCK_VOCAB", "REDUCED_BLOCK_TOKENS", "REDUCTIONS", "linear_cross_entropy"]

BLOCK_TOKENS: int = 1024
"""Default token block (rows of a logits tile)."""

REDUCED_BLOCK_TOKENS: int = 4096
"""Default token block of ``reduction="sum"`` and ``"mean"``, whose chunks under differentiation have
``block_tokens · block_vocab / V`` tokens: every chunk reads and writes all of ``∂W``, so fewer,
deeper chunks than the per-token tiles (at V = 32000 float32, h [1024, 256] and [1024, 1024]: 0.97
and 1.08 of the materialised head's gradient time, against 1.06 and 1.29 with 1024)."""

BLOCK_VOCAB: int = 4096
"""Default vocabulary block (columns of a logits tile)."""


REDUCTIONS = ("none", "sum", "mean")


def linear_cross_entropy(hidden: Float[Array, "*batch d"], weight: Float[Array, "d V"],
                         labels: Int[Array, "*batch"], *, where: Bool[Array, "*batch"] | None = None,
                         reduction: str = "none", block_tokens: int | None = None, block_vocab: int | None = None
                         ) -> Float[Array, "*batch"] | Float[Array, ""]:
    r"""Per-token cross-entropy of ``softmax(hidden @ weight)`` against ``labels``, logits never stored.

    .. math:: \ell_n = \log\sum_v e^{(hW)_{nv}} - (hW)_{n y_n}

    Equal (to rounding) to ``vfe.cross_entropy_with_integer_labels(hidden @ weight, labels)``,
    with memory ``O(block_tokens · block_vocab)`` beyond inputs and outputs in both passes (the
    reduced losses under differentiation: plus an accumulator of ``∂W``, :func:`_accumulated`).

    Args:
      hidden: hidden states ``h``, shape ``(*batch, d)``.
      weight: classifier weights ``W``, shape ``(d, V)``.
      labels: integer targets in ``[0, V)``, shape ``(*batch,)`` (not range-checked under ``jit``:
        an out-of-range label's loss is NaN; mark padding with ``where`` instead).
      where: optional boolean mask broadcasting to ``labels``' shape, the tokens that count: a token
        where it is ``False`` (padding) has loss 0 and adds nothing to the gradients, whatever its
        label (``-100``, out of range); ``"mean"`` divides by the number of counted tokens.
      reduction: ``"none"`` (per-token losses), ``"sum"`` or ``"mean"`` over the (counted) tokens
        (one number; its gradient is computed in the forward pass, see the module docstring).
      block_tokens: rows per tile (default :data:`BLOCK_TOKENS`, at most the number of tokens; for
        ``"sum"`` and ``"mean"`` :data:`REDUCED_BLOCK_TOKENS`).
      block_vocab: columns per tile (default :data:`BLOCK_VOCAB`, at most ``V``).

    Returns:
      the loss per token in nats, shape ``(*batch,)``, or its sum or mean (shape ``()``); dtype
      ``promote_types(dtype, float32)``.

    Differentiable in ``hidden`` and ``weight`` (reverse mode). No tokens, or none counted: an
    empty (zero) loss, sum and mean 0.
    """
    func = "linear_cross_entropy"
    h = _checks.floating(func, "hidden", hidden)
    w = _checks.floating(func, "weight", weight)
    y = _checks.integer(func, "labels", labels)
    if h.ndim < 1 or w.ndim != 2:
        raise ValueError(f"{func}: `hidden` must have shape (*batch, d) and `weight` shape (d, V), "
                         f"got {h.shape} and {w.shape}")
    if h.shape[-1] != w.shape[0]:
        raise ValueError(f"{func}: the last axis of `hidden` ({h.shape[-1]}) must equal the first axis of "
                         f"`weight` ({w.shape[0]})")
    _checks.class_axis(func, "weight", w, 1)
    if y.shape != h.shape[:-1]:
        raise ValueError(f"{func}: argument `labels` must have shape {h.shape[:-1]} (hidden's shape without "
                         f"its last axis), got {y.shape}")
    _checks.one_of(func, "reduction", reduction, REDUCTIONS)
    counted = _checks.mask(func, where, y.shape, "`labels`")
    tokens = int(jnp.size(y))
    if tokens == 0:  # no token: no loss (and a sum or mean of none is 0)
        return jnp.zeros(y.shape if reduction == "none" else (), compute_dtype(jnp.result_type(h, w)))
    bt = _block(func, "block_tokens", block_tokens, BLOCK_TOKENS, tokens)
    bv = _block(func, "block_vocab", block_vocab, BLOCK_VOCAB, w.shape[1])
    if reduction == "none":
        return _linear_ce(h, w, y, counted, block_tokens=bt, block_vocab=bv)
    budget = chunk_budget(func, block_tokens, block_vocab)
    return _linear_ce_total(h, w, y, counted, block_tokens=budget[0], block_vocab=budget[1],
                            mean=reduction == "mean")


def chunk_budget(func: str, block_tokens, block_vocab) -> tuple[int, int]:
    """The tile of the reduced loss's row chunks (``block_tokens · block_vocab / V`` rows): the block
    sizes as given (or the defaults, :data:`REDUCED_BLOCK_TOKENS` and :data:`BLOCK_VOCAB`), not shrunk
    by a short batch or vocabulary."""
    return (_block(func, "block_tokens", block_tokens, REDUCED_BLOCK_TOKENS, 2**62),
            _block(func, "block_vocab", block_vocab, BLOCK_VOCAB, 2**62))


def _block(func: str, name: str, value, default: int, size: int) -> int:
    if value is None:
        return min(default, size)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{func}: argument `{name}` must be a positive int, got {value!r}")
    return min(value, size)


def counted_labels(y, counted):
    """The labels with those of uncounted tokens replaced by 0 (any label is then a valid index)."""
    return y if counted is None else jnp.where(counted, y, 0)


@functools.partial(jax.jit, static_argnames=("block_tokens", "block_vocab"))
def _linear_ce(h, w, y, counted, block_tokens, block_vocab):
    batch = y.shape
    h2, y2 = h.reshape(-1, h.shape[-1]), counted_labels(y, counted).reshape(-1)
    loss = _lce(h2, w, y2, (block_tokens, block_vocab)).reshape(batch)
    return loss if counted is None else jnp.where(counted, loss, 0.0)


@functools.partial(jax.jit, static_argnames=("block_tokens", "block_vocab", "mean"))
def _linear_ce_total(h, w, y, counted, block_tokens, block_vocab, mean):
    counted = jnp.ones(y.shape, bool) if counted is None else counted
    h2, y2 = h.reshape(-1, h.shape[-1]), counted_labels(y, counted).reshape(-1)
    total = _lce_total(h2, w, y2, counted.reshape(-1), (block_tokens, block_vocab))
    return total / jnp.maximum(jnp.sum(counted), 1) if mean else total


# ----------------------------------------------------------------------------- tiles


_ZERO = np.int32(0)  # an index of the same type as the loop's (int32 also under x64)


def _starts(index, block, size):
    """``(start, first)``: a block that would run past ``size`` starts early, at ``size - block``;
    entries before ``first = index · block`` belong to the previous block."""
    first = jnp.asarray(index, jnp.int32) * block
    return jnp.minimum(first, size - block), first


def _tile(h, w, t, j, blocks):
    """``(z, rows, cols, new_rows, new_cols)`` of tile ``(t, j)``: its float32 logits, the global
    row and column indices, and which rows/columns no earlier block covered."""
    (bt, bv), (n, d), v = blocks, h.shape, w.shape[1]
    r0, r_first = _starts(t, bt, n)
    c0, c_first = _starts(j, bv, v)
    h_t = lax.dynamic_slice(h, (r0, _ZERO), (bt, d))
    w_j = lax.dynamic_slice(w, (_ZERO, c0), (d, bv))
    z = jnp.matmul(h_t, w_j, preferred_element_type=compute_dtype(jnp.result_type(h, w)))
    rows = r0 + lax.iota(jnp.int32, bt)
    cols = c0 + lax.iota(jnp.int32, bv)
    return z, (h_t, w_j), rows, cols, rows >= r_first, cols >= c_first


def _count(block, size):
    return -(-size // block)


def _label_logits(h, w, y):
    """``z_{n y_n} = h_n · W[:, y_n]`` (one gathered column per token)."""
    cols = jnp.take(w, y, axis=1).T  # [N, d]
    dtype = compute_dtype(jnp.result_type(h, w))
    return jnp.sum(h.astype(dtype) * cols.astype(dtype), axis=-1)


def _zeros_like_inputs(x, y, dtype):
    """Zeros of ``x``'s shape computed from ``x`` and ``y``: under :func:`jax.shard_map` they vary over
    the same mesh axes as the inputs, as the loop carries they initialise must."""
    return (x.astype(dtype) * y.astype(dtype)) * 0


def _statistics(h, w, blocks):
    """Per-token ``(m, s)`` over the vocabulary, tile by tile with the online rule."""
    (bt, bv), n, v = blocks, h.shape[0], w.shape[1]
    dtype = compute_dtype(jnp.result_type(h, w))
    floor = jnp.finfo(dtype).min

    def vocab_block(j, carry, h, w):
        def token_block(t, carry, h, w):
            m_all, s_all = carry
            z, _, rows, _, new_rows, new_cols = _tile(h, w, t, j, blocks)
            z = jnp.where(new_cols, z, -jnp.inf)
            r0 = rows[0]
            m = lax.dynamic_slice(m_all, (r0,), (bt,))
            s = lax.dynamic_slice(s_all, (r0,), (bt,))
            m_new = jnp.maximum(m, jnp.max(z, axis=-1))
            s_new = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(z - m_new[:, None]), axis=-1)
            # rows that the previous token block covered already hold this tile
            m_new, s_new = jnp.where(new_rows, m_new, m), jnp.where(new_rows, s_new, s)
            return lax.dynamic_update_slice(m_all, m_new, (r0,)), lax.dynamic_update_slice(s_all, s_new, (r0,))

        return fori_loop_carrying(_count(bt, n), token_block, carry, h, w)

    zero = _zeros_like_inputs(h[:, 0], w[0, 0], dtype)
    return fori_loop_carrying(_count(bv, v), vocab_block, (zero + floor, zero), h, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lce(h, w, y, blocks):
    return _lce_fwd(h, w, y, blocks)[0]


def _lce_fwd(h, w, y, blocks):
    m, s = _statistics(h, w, blocks)
    log_s = jnp.log(s)
    loss = log_s - (_label_logits(h, w, y) - m)
    return loss, (h, w, y, m, log_s)


def _lce_bwd(blocks, res, g):
    h, w, y, m, log_s = res
    dh, dw = _backward(h, w, y, m, log_s, g, blocks)
    return dh.astype(h.dtype), dw, None


def _backward(h, w, y, m, log_s, g, blocks):
    """``(∂h, ∂W)`` of ``Σ_n g_n ℓ_n`` from the per-token statistics, tile by tile.

    ``∂h`` is returned in float32 (at least; the caller casts it), ``∂W`` in ``W``'s dtype.
    A label outside ``[0, V)`` matches no column (its one-hot term is absent): a vocabulary shard
    passes ``y - offset``.
    """
    (bt, bv), (n, d), v = blocks, h.shape, w.shape[1]
    dtype = compute_dtype(jnp.result_type(h, w))
    g = g.astype(dtype)

    def vocab_block(j, carry, h, w):
        dh, dw = carry

        def token_block(t, carry, h, w):
            dh, dw_j = carry
            z, (h_t, w_j), rows, cols, new_rows, new_cols = _tile(h, w, t, j, blocks)
            r0 = rows[0]
            m_t, ls_t, g_t, y_t = (lax.dynamic_slice(x, (r0,), (bt,)) for x in (m, log_s, g, y))
            p = jnp.exp((z - m_t[:, None]) - ls_t[:, None])
            grad = g_t[:, None] * (p - (cols[None, :] == y_t[:, None]))
            # rows that an earlier (overlapping) token block covered have been counted; columns that
            # the previous vocabulary block covered count in ∂h, and are computed again for ∂W
            grad = jnp.where(new_rows[:, None], grad, 0.0)
            dh_t = lax.dynamic_slice(dh, (r0, _ZERO), (bt, d)) + jnp.matmul(
                jnp.where(new_cols[None, :], grad, 0.0).astype(w_j.dtype), w_j.T, preferred_element_type=dtype)
            dw_j = dw_j + jnp.matmul(h_t.T, grad.astype(h_t.dtype), preferred_element_type=dtype)
            return lax.dynamic_update_slice(dh, dh_t, (r0, _ZERO)), dw_j

        zero = _zeros_like_inputs(lax.dynamic_slice(w, (_ZERO, _ZERO), (d, bv)), h[0, 0], dtype)
        dh, dw_j = fori_loop_carrying(_count(bt, n), token_block, (dh, zero), h, w)
        # the last block starts early and writes again (the same sums) the columns that the previous
        # one wrote: no select, so that XLA updates a bfloat16 ∂W in place (a select of the old
        # columns made it copy the whole of ∂W)
        return dh, lax.dynamic_update_slice(dw, dw_j.astype(dw.dtype), (_ZERO, _starts(j, bv, v)[0]))

    init = (_zeros_like_inputs(h, w[0, 0], dtype), _zeros_like_inputs(w, h[0, 0], w.dtype))
    return fori_loop_carrying(_count(bv, v), vocab_block, init, h, w)


_lce.defvjp(_lce_fwd, _lce_bwd)


# ----------------------------------------------------------------------------- reduced loss


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _lce_total(h, w, y, counted, blocks):
    """``Σ_n [counted_n] ℓ_n`` (labels already valid indices)."""
    tiles = (min(blocks[0], h.shape[0]), min(blocks[1], w.shape[1]))  # the budget, as tiles of the inputs
    return jnp.sum(jnp.where(counted, _lce_fwd(h, w, y, tiles)[0], 0.0))


def _lce_total_fwd(h, w, y, counted, blocks):
    total, dh, dw = _total_and_gradients(h, w, y, counted, blocks)
    return total, (dh, dw)


def _lce_total_bwd(blocks, res, g):
    return scaled_gradients(res, g) + (None, None)


def scaled_gradients(gradients, g):
    """The stored gradients of a reduced loss times its cotangent ``g``, each in its own dtype (one
    kept in parts, a tuple, is their float32 sum: :func:`_accumulated`)."""
    def scaled(x):
        if isinstance(x, tuple):
            return (g * (_widened(x[0]) + _widened(x[1]))).astype(x[0].dtype)
        return (g * x).astype(x.dtype)

    return tuple(scaled(x) for x in gradients)


def _total_and_gradients(h, w, y, counted, blocks, vocab_axis: str | None = None):
    """``(Σ_n [counted_n] ℓ_n, ∂h, ∂W)`` in one pass over token chunks of whole rows.

    A chunk has ``max(1, bt·bv // V)`` tokens (at most ``N``; ``bt``, ``bv`` as the caller gave them, not
    capped to ``N`` and ``V``): its ``[chunk, V]`` logits give the losses, ``G = softmax - onehot`` and
    both gradient contributions before the next chunk. ``∂h`` is returned in ``h``'s dtype.

    No array of ``W``'s size is formed besides the ``∂W`` accumulator: each chunk adds
    ``h_chunkᵀ G`` to it a tile of columns at a time (:func:`_column_tile`: at most
    ``max(bv, bt·bv/d)`` columns, so that the tile's product has at most ``max(d·bv, bt·bv)``
    elements; the whole product would be a float32 temporary the size of ``W``), and a ``W``
    narrower than the compute dtype (bfloat16, float16) is multiplied a tile at a time too, so that
    XLA:CPU converts it tile by tile instead of keeping a float32 copy (at the price of converting
    ``W`` once per chunk; backends that multiply bfloat16 natively keep the whole-``W`` products,
    :func:`_converted_by_tiles`). ``∂W`` is accumulated in float32 (at least) — for a float32 ``W`` in
    the gradient's own buffer — or, for a bfloat16 ``W`` (unsharded), in a bfloat16 pair
    (:func:`_accumulated`: the gradient's buffer and one more of its size, where a float32 array
    would be twice its size), returned as the tuple of the two parts (:func:`scaled_gradients`).

    With ``vocab_axis`` (inside :func:`jax.shard_map` or a named :func:`jax.vmap`), ``w`` is this
    device's slice of the columns and ``y`` the labels less the slice's first column (a label outside
    ``[0, V)`` matches no local column): each chunk's maximum and sum of exponentials are combined
    with a ``pmax`` and a ``psum`` (claim S3), the label's logit is ``psum``-ed from the device that
    holds it, and ``∂h`` (accumulated in float32) is ``psum``-ed once at the end; ``∂W`` is this
    device's columns. Without it the collectives are the identity.
    """
    (bt, bv), (n, d), v = blocks, h.shape, w.shape[1]
    rows = min(n, max(1, (bt * bv) // v))
    tile = _column_tile(v, max(bv, (bt * bv) // d))
    dtype = compute_dtype(jnp.result_type(h, w))
    narrow = _converted_by_tiles(h, w, dtype)
    pmax, psum = ((lambda x: x), (lambda x: x)) if vocab_axis is None else (
        functools.partial(shift_across, lax.pmax, axis_name=vocab_axis),
        functools.partial(lax.psum, axis_name=vocab_axis))

    def chunk(t, carry, h, w):
        total, dh, dw = carry
        r0, r_first = _starts(t, rows, n)
        # the counted tokens that no earlier chunk covered
        new = ((r0 + lax.iota(jnp.int32, rows)) >= r_first) & lax.dynamic_slice(counted, (r0,), (rows,))
        h_t = lax.dynamic_slice(h, (r0, _ZERO), (rows, d))
        y_t = lax.dynamic_slice(y, (r0,), (rows,))
        held = (y_t >= 0) & (y_t < v)
        z = _chunk_logits(h_t, w, tile, dtype) if narrow else jnp.matmul(h_t, w, preferred_element_type=dtype)
        m = pmax(jnp.max(z, axis=-1, keepdims=True))
        lse = m + jnp.log(psum(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True)))
        # softmax as e^{z - lse}, exp computed again behind a barrier: sharing e^{z - m} between the
        # sum and the gradient made XLA:CPU's jax.grad program 1.5x slower (see LLM_RESULTS.md).
        # No [chunk, V] compares or selects (slow in XLA:CPU's fused loops): the label's logit is
        # gathered, its -1 scattered (dropped where another device holds the label), and the other
        # rows (covered before, or not counted) zeroed by a product.
        picked = jnp.take_along_axis(z, jnp.where(held, y_t, 0)[:, None], axis=-1)[:, 0]
        loss = lse[:, 0] - from_holder(picked, held, vocab_axis)
        z, lse = lax.optimization_barrier((z, lse))  # (its results vary over vocab_axis: not for the loss)
        keep = new.astype(dtype)[:, None]
        grad = (jnp.exp(z - lse) * keep).at[lax.iota(jnp.int32, rows), jnp.where(held, y_t, v)].add(
            -keep[:, 0], mode="drop")
        dh_t, dw = _chunk_gradients(h_t, grad, dw, tile, dtype, w if narrow else None)
        if not narrow:
            dh_t = jnp.matmul(grad.astype(w.dtype), w.T, preferred_element_type=dtype)
        dh_t = jnp.where(new[:, None], dh_t.astype(dh.dtype), lax.dynamic_slice(dh, (r0, _ZERO), (rows, d)))
        return total + jnp.sum(jnp.where(new, loss, 0.0)), lax.dynamic_update_slice(dh, dh_t, (r0, _ZERO)), dw

    # ∂W's accumulator: float32 (at least), or a bfloat16 pair for a bfloat16 W (unsharded)
    split = vocab_axis is None and w.dtype == jnp.bfloat16 and dtype == jnp.float32
    accumulator = (_zeros_like_inputs(w, h[0, 0], w.dtype),) * 2 if split else (_zeros_like_inputs(w, h[0, 0], dtype),)
    # a device's partial ∂h is summed over the vocabulary shards: keep it in float32 until then
    dh_dtype = h.dtype if vocab_axis is None else dtype
    # (the total from h alone: under shard_map it is the same on every vocabulary shard)
    init = (_zeros_like_inputs(h[0, 0], h[0, 0], dtype), _zeros_like_inputs(h, w[0, 0], dh_dtype), accumulator)
    total, dh, dw = fori_loop_carrying(_count(rows, n), chunk, init, h, w)
    return total, psum(dh).astype(h.dtype), dw if split else dw[0].astype(w.dtype)


def _native_low_precision_dots() -> bool:
    """Whether the backend multiplies bfloat16 (float16) matrices as they are; XLA:CPU converts them
    to float32 first."""
    return jax.default_backend() != "cpu"


def _converted_by_tiles(h, w, dtype) -> bool:
    """Whether the reduced loss multiplies ``W`` a tile of columns at a time so that ``W`` is
    converted to the compute ``dtype`` tile by tile: ``W`` narrower than ``dtype``, unless ``h`` and
    ``W`` share a low-precision dtype that the backend multiplies natively (then nothing is
    converted, and the whole-``W`` products are kept)."""
    if w.dtype == dtype:
        return False
    return not (h.dtype == w.dtype and _native_low_precision_dots())


def _column_tile(v: int, cap: int) -> int:
    """Columns per product tile of the reduced loss: ``V`` if ``V ≤ cap``, else the largest divisor of
    ``V`` in ``[cap/4, cap]`` (tiles that do not overlap need no mask), else ``cap``."""
    if v <= cap:
        return v
    for t in range(cap, max(1, cap // 4) - 1, -1):
        if v % t == 0:
            return t
    return cap


def _chunk_logits(h_t, w, tile, dtype):
    """``h_t W`` (``[rows, V]``, ``dtype``), ``tile`` columns of ``W`` at a time (carried behind a
    barrier: a bfloat16 ``W`` is converted tile by tile, not whole). The last tile starts early and
    writes again the columns it shares with the previous one."""
    v = w.shape[1]

    def column_tile(j, z, w):
        c0, _ = _starts(j, tile, v)
        w_j = lax.dynamic_slice(w, (_ZERO, c0), (w.shape[0], tile))
        return lax.dynamic_update_slice(z, jnp.matmul(h_t, w_j, preferred_element_type=dtype), (_ZERO, c0))

    return fori_loop_carrying(_count(tile, v), column_tile, _zeros_like_inputs(h_t[:, :1], w[:1, :], dtype), w)


def _chunk_gradients(h_t, grad, dw, tile, dtype, w=None):
    """``(grad Wᵀ, dw + h_tᵀ grad)``, ``tile`` columns at a time, ``dw`` (a tuple of parts,
    :func:`_accumulated`) updated in place; without ``w`` the first is None. Columns of an
    overlapping last tile that the previous one covered are skipped."""
    (rows, d), v = h_t.shape, grad.shape[1]
    invariants = () if w is None else (w,)

    def column_tile(j, carry, *w):
        dh_t, dw = carry
        c0, c_first = _starts(j, tile, v)
        g_j = lax.dynamic_slice(grad, (_ZERO, c0), (rows, tile))
        if v % tile:
            g_j = jnp.where(((c0 + lax.iota(jnp.int32, tile)) >= c_first)[None, :], g_j, 0.0)
        if w:
            w_j = lax.dynamic_slice(w[0], (_ZERO, c0), (d, tile))
            dh_t = dh_t + jnp.matmul(g_j.astype(w_j.dtype), w_j.T, preferred_element_type=dtype)
        dw_j = _accumulated(tuple(lax.dynamic_slice(part, (_ZERO, c0), (d, tile)) for part in dw),
                            jnp.matmul(h_t.T, g_j.astype(h_t.dtype), preferred_element_type=dtype))
        return dh_t, tuple(lax.dynamic_update_slice(part, new, (_ZERO, c0)) for part, new in zip(dw, dw_j))

    dh_t = None if w is None else _zeros_like_inputs(h_t, grad[0, 0], dtype)  # None: no leaves to carry
    return fori_loop_carrying(_count(tile, v), column_tile, (dh_t, dw), *invariants)


def _accumulated(parts, x):
    """``parts + x`` (``x`` float32 or wider) for a sum kept in parts: one array in ``x``'s dtype, or a
    bfloat16 pair ``(hi, lo)`` whose float32 sum is the value: ``hi`` the float32 sum truncated to a
    bfloat16 (its leading 16 of 32 bits, exactly), ``lo`` the remainder (exact in float32) rounded to
    bfloat16 — 16 significant bits in all, each addition erring by at most ``2^-16`` of the sum
    (plus float32's rounding), in the memory of one float32 array. Bit operations throughout
    (XLA:CPU's float32 → bfloat16 conversion made this update about twice as slow), and the new tiles
    formed behind a barrier before either part is written, so that both are updated in place (XLA
    copied both whole when ``hi``'s update overwrote what ``lo``'s still read)."""
    if len(parts) == 1:
        return ((parts[0] + x).astype(parts[0].dtype),)
    total = _widened(parts[0]) + _widened(parts[1]) + x  # hi + lo exact in float32
    hi = _leading_half(total)
    return lax.optimization_barrier((hi, _rounded_half(total - _widened(hi))))


def _widened(b):
    """bfloat16 → float32 (exact), as bit operations."""
    return lax.bitcast_convert_type(lax.bitcast_convert_type(b, jnp.uint16).astype(jnp.uint32) << 16, jnp.float32)


def _leading_half(f):
    """The bfloat16 of ``f``'s leading 16 bits (``f`` truncated towards zero; ``f`` minus it is exact)."""
    return lax.bitcast_convert_type((lax.bitcast_convert_type(f, jnp.uint32) >> 16).astype(jnp.uint16),
                                    jnp.bfloat16)


def _rounded_half(f):
    """``f`` (finite float32) rounded to the nearest bfloat16, ties to even, as bit operations."""
    bits = lax.bitcast_convert_type(f, jnp.uint32)
    bits = bits + jnp.uint32(0x7FFF) + ((bits >> 16) & jnp.uint32(1))
    return lax.bitcast_convert_type((bits >> 16).astype(jnp.uint16), jnp.bfloat16)


_lce_total.defvjp(_lce_total_fwd, _lce_total_bwd)
