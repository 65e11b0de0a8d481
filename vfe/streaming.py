r"""Reductions over large vocabularies that never materialise a ``[*batch, V]`` intermediate.

Every quantity of a softmax over ``V`` classes is a function of a few *row statistics*: the
maximum ``m = max_i z_i``, the scaled sum of exponentials ``s = Σ_i e^{z_i - m}`` (so that
``lse(z) = m + log s``), and one or two weighted sums such as ``Σ_i e^{z_i - m}(z_i - m)``.
This module computes those statistics with plain reductions over the logits, evaluates the
quantity from them, and differentiates through :func:`jax.custom_vjp` rules that keep only the
logits (which the caller holds anyway) and the per-row statistics (``m``, ``log s``, the value)
as residuals: the backward pass recomputes ``softmax(z)`` in one elementwise sweep, with no
``[*batch, V]`` log-softmax stored between the passes.

The statistics combine over any partition of the vocabulary (claims S1–S3 of
``proofs/streaming.py``):

.. math::
    m = \max_b m_b, \qquad s = \sum_b s_b\, e^{m_b - m}, \qquad
    t = \sum_b e^{m_b - m}\big(t_b + (m_b - m)\, s_b\big),

where ``(m_b, s_b, t_b)`` are the statistics of block ``b`` (``t = Σ e^{z-m}(z-m)``). The same
rule, applied one element at a time, is the online update ``m' = max(m, x)``,
``s' = s e^{m - m'} + e^{x - m'}``; across devices it is a ``pmax`` then a ``psum``
(:mod:`vfe.sharding`).

Implementations (``implementation=``; every one computes the same function, and the tests
check each against the float64/mpmath reference on CPU):

* ``"blocked"`` (default on CPU): each sum is its own reduction over the vocabulary viewed as
  ``[V / b, b]`` blocks of at most ``BLOCK`` classes. On XLA:CPU (jax 0.10.2) a reduction of
  rows longer than 32768 runs several times slower than the same reduction of shorter rows (it
  allocates a run-time workspace: ~10× with 4 KiB pages, ~2.5× with huge pages), and two
  reductions that share an elementwise expression (or a constant) are split into a materialised
  ``[*batch, V]`` temporary plus two reductions; the blocks, the optimisation
  barriers of :class:`Stream` and the row-scalar constants of :func:`_like` avoid both.
* ``"fused"`` (default on GPU and TPU): the same reductions over whole rows, left to XLA to fuse
  (sibling sums that read the same logits can become one multi-output pass on GPU).

Both shift the exponentials by a guess ``c ≤ max z`` instead of the maximum: the label's own
logit for the cross-entropy (``NLL = log Σ e^{z - z_y}``), else the maximum of the first 256
classes. Every statistic is exact for any such shift as long as ``e^{z - c}`` does not overflow;
when it does (``max z - c > 88`` in float32) the batch is recomputed with the row maximum
(:func:`shifted_sums`). So in the common case the logits are read once per statistic and never
for the maximum: the integer-label cross-entropy reads them once in the forward pass. Under
``"blocked"`` rows a plain ``Σ e^z`` (the log-normalisers of :func:`logsumexp`, the cross-entropies
and the KL) is taken unshifted and rescaled by ``e^c`` per row where the logits allow it
(:func:`exp_sum`) and summed by columns: XLA:CPU's passes are bound by their operations per class,
not by the reading.
* ``"onepass"``: one variadic :func:`jax.lax.reduce` computing ``(m, s)`` (and ``t``) jointly with
  the online rule, reading the logits exactly once. Offered for :func:`logsumexp`,
  :func:`cross_entropy_with_integer_labels` and :func:`entropy_from_logits`; slow on XLA:CPU,
  where variadic reductions are not vectorised (see ``benchmarks/LLM_RESULTS.md``).

Conventions (those of :mod:`vfe.information` and :mod:`vfe.thermodynamics`, which these functions
agree with on every input): ``-inf`` logits are masked classes (probability exactly 0, zero
gradient); a row whose logits are all ``-inf`` gives NaN (``-inf`` for :func:`logsumexp`);
bfloat16/float16 inputs are accumulated in float32 and the results have dtype
``promote_types(dtype, float32)``; gradients have the dtype of the input they belong to.
(float16 under ``"blocked"`` rows: XLA:CPU's fused reductions take no float16 and would convert the
whole input to float32 before each pass — 2–6× the input, measured — so :class:`Stream` takes such
inputs a chunk of rows at a time, about ``2^21`` elements.)

Differentiation: reverse mode only (``jax.grad``, ``jax.vjp``); :func:`jax.custom_vjp` functions
have no forward-mode rule, so ``jax.jvp``/``jax.jacfwd`` raise. Use :mod:`vfe.information` for
forward-mode derivatives. Reverse over reverse (a ``jax.grad`` of a ``jax.grad``: Hessian-vector
products) works: the backward rules are differentiable JAX, and the tests check them against the
reference implementations' second derivatives.

References:
  M. Milakov and N. Gimelshein, "Online normalizer calculation for softmax" (2018);
  E. Wijmans et al., "Cut your losses in large-vocabulary language models" (Cut Cross-Entropy,
  2024); the levanter and Liger-Kernel fused cross-entropy losses.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from vfe import _checks
from vfe._numerics import compute_dtype, exact_gap, fori_loop_carrying, shift_across, two_difference

__all__ = [
    "BLOCK",
    "IMPLEMENTATIONS",
    "KL_FORMULAS",
    "cross_entropy_from_logits",
    "cross_entropy_with_integer_labels",
    "default_implementation",
    "entropy_from_logits",
    "helmholtz_free_energy",
    "kl_divergence_from_logits",
    "log_partition",
    "logsumexp",
]

IMPLEMENTATIONS: tuple[str, ...] = ("blocked", "fused", "onepass")
"""The accepted values of ``implementation=``."""

KL_FORMULAS: tuple[str, ...] = ("accurate", "direct")
"""The accepted values of ``formula=`` of :func:`kl_divergence_from_logits`."""

BLOCK: int = 32768
"""Longest block of classes a ``"blocked"`` reduction reduces at once (see the module notes)."""

_MIN_BLOCK = 1024  # a vocabulary with no divisor in [_MIN_BLOCK, BLOCK] is reduced whole
_CHUNK = 1 << 21  # float16 on XLA:CPU: elements converted to float32 at a time (Stream._by_rows)
_CUT = 1000.0  # exp(-_CUT) == 0 in float32 and float64: clamping z - m at -_CUT changes no term
_ONEPASS = ("logsumexp", "cross_entropy_with_integer_labels", "entropy_from_logits")


def default_implementation() -> str:
    """``"blocked"`` on CPU, ``"fused"`` on other backends (the default of ``implementation=``)."""
    return "blocked" if jax.default_backend() == "cpu" else "fused"


# ----------------------------------------------------------------------------- row reductions


class Rows(NamedTuple):
    """How the reductions over the last axis are carried out (static, hashable).

    Attributes:
      implementation: one of :data:`IMPLEMENTATIONS`.
      block: block length for ``"blocked"`` (a divisor of the row length), else the row length.
    """

    implementation: str
    block: int

    @property
    def barriers(self) -> bool:
        """Separate each reduction from the others (no shared elementwise expression)."""
        return self.implementation == "blocked"


def block_length(n: int, cap: int = BLOCK) -> int:
    """The largest divisor of ``n`` in ``[min(1024, cap), cap]``, or ``n`` itself if it is ``≤ cap``
    or has no such divisor (then the row is reduced whole)."""
    if n <= cap:
        return n
    for b in range(cap, min(_MIN_BLOCK, cap) - 1, -1):
        if n % b == 0:
            return b
    return n


_COLUMNS = (512, 1024, 2048)  # (shortest, preferred, longest) column count of Stream.sum(columns=True)


def column_length(n: int) -> int | None:
    """The divisor of ``n`` in ``[512, 2048]`` nearest to 1024 (by ratio) when ``n ≥ 8·512``, else
    ``None``: the columns of :meth:`Stream.sum`'s ``columns=True`` view."""
    low, best, high = _COLUMNS
    if n < 8 * low:
        return None
    divisors = [b for b in range(low, high + 1) if n % b == 0]
    return min(divisors, key=lambda b: abs(math.log(b / best)), default=None)


def rows_for(n: int, implementation: str | None) -> Rows:
    """The :class:`Rows` configuration for rows of length ``n``."""
    impl = default_implementation() if implementation is None else implementation
    return Rows(impl, block_length(n) if impl == "blocked" else n)


def _in_blocks(x: jax.Array, b: int) -> jax.Array:
    """``[..., n]`` → ``[..., n / b, b]`` (``b`` divides ``n``)."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // b, b)


class Stream:
    """A sequence of reductions over the last axis of the same arrays (shape ``[..., n]``, any
    floating dtype: each reduction upcasts them to at least float32 as it reads them).

    With ``"blocked"`` rows, every reduction reads the arrays through an optimisation barrier
    chained to the previous one. XLA:CPU would otherwise merge the
    reductions' common elementwise work (``e^{z - m}`` in ``s`` and ``t``) into one materialised
    ``[..., n]`` temporary read by both; distinct barriers over the same operands are merged
    too, hence the chain. Block partials are kept behind a barrier as well, or XLA folds the
    two-level sum back into one reduction over the whole (slow) row.

    ``vocab_axis``: the named axis (of :func:`jax.shard_map`, or of :func:`jax.vmap` simulating it)
    over which the rows are split, each device holding a slice of the classes; every reduction is
    then over the whole rows (the local one followed by a ``pmax``/``pmin``/``psum``), and
    :meth:`cond` makes its predicate agree over ``mesh_axes`` (every named axis of the call; default
    ``(vocab_axis,)``) so that all devices take the same branch.
    """

    def __init__(self, arrays: tuple[jax.Array, ...], rows: Rows, vocab_axis: str | None = None,
                 mesh_axes: tuple[str, ...] = ()):
        self.rows = rows
        self._arrays = tuple(arrays)
        self.vocab_axis = vocab_axis
        self.mesh_axes = tuple(mesh_axes) or ((vocab_axis,) if vocab_axis else ())

    def again(self) -> Stream:
        """A new stream of the same arrays and layout (for a :func:`jax.lax.cond` branch, whose
        tracers must not leak into this one)."""
        return Stream(self._arrays, self.rows, self.vocab_axis, self.mesh_axes)

    def _across(self, x, collective):
        """``collective`` over ``vocab_axis`` (the identity for unsharded rows). A maximum or minimum
        (``pmax``/``pmin``) only ever serves as a shift: taken without a derivative
        (:func:`vfe._numerics.shift_across`), so that a sharded stream can be differentiated twice."""
        if not self.vocab_axis:
            return x
        if collective is lax.psum:
            return collective(x, self.vocab_axis)
        return shift_across(collective, x, self.vocab_axis)

    def cond(self, ok: jax.Array, if_true, if_false):
        """:func:`jax.lax.cond` on the scalar ``ok``, agreed by all devices of a sharded stream."""
        if self.mesh_axes:
            ok = lax.pmin(ok.astype(jnp.int32), self.mesh_axes) > 0
        return lax.cond(ok, if_true, if_false, None)

    def guess(self, index: int = 0, *, minimum: bool = False) -> jax.Array:
        """:func:`shift_guess` of array ``index``, the same on every slice of a sharded row."""
        head = shift_guess(self._arrays[index], minimum=minimum)
        return self._across(head, lax.pmin if minimum else lax.pmax)

    def _inputs(self, scalars: tuple[jax.Array, ...], view=None):
        """The arrays (upcast to the compute dtype here, inside the reduction) and scalars; ``view``
        (a reshape) applied before the upcast, behind a barrier of its own: else XLA moves the
        reshape after the elementwise work and reduces whole rows; a reshape of the upcast
        array, inside the fused reduction, made bfloat16 ``logsumexp`` 4.9× slower at
        [1024, 128256]."""
        if self.rows.barriers:
            self._arrays, scalars = lax.optimization_barrier((self._arrays, scalars))
        arrays = self._arrays
        if view is not None:
            arrays = lax.optimization_barrier(tuple(view(a) for a in arrays))
        return tuple(_up(a) for a in arrays), scalars

    def classes(self, index: int = 0) -> int:
        """Length of this slice's rows of array ``index``."""
        return self._arrays[index].shape[-1]

    def _split(self) -> bool:
        return self.rows.barriers and self.rows.block < self.classes()

    def _chunked(self) -> bool:
        """float16 under ``"blocked"`` rows: XLA:CPU's fused reductions take no float16, so a pass would
        convert the whole input to float32 first (an ``[..., n]`` temporary); the rows are taken in
        chunks of about ``_CHUNK`` elements instead (:meth:`_by_rows`)."""
        return self.rows.barriers and any(a.dtype == jnp.float16 for a in self._arrays)

    def _by_rows(self, reduce, scalars, view=None):
        """``reduce(arrays, scalars)`` (upcast arrays, seen through ``view`` as in :meth:`_inputs`, and
        row scalars of a chunk of rows → ``[rows, 1]``) chunk by chunk; a last chunk that would run
        past the rows starts early. The arrays are carried
        through the loop (:func:`vfe._numerics.fori_loop_carrying`) as a guard against the whole-array
        conversion XLA:CPU hoists out of the linear head's loops; here (jax 0.10.2) the chunking alone
        already kept the float16 conversion per chunk."""
        batch, n = self._arrays[0].shape[:-1], self._arrays[0].shape[-1]
        rows = math.prod(batch)
        arrays = tuple(a.reshape(rows, n) for a in self._arrays)
        scalars = tuple(jnp.broadcast_to(x, (*batch, 1)).reshape(rows, 1) for x in scalars)
        size = max(1, min(rows, _CHUNK // n))

        def step(i, out, *arrays):
            start = jnp.minimum(i * size, rows - size)
            chunk = tuple(lax.dynamic_slice_in_dim(a, start, size) for a in arrays)
            if view is not None:
                chunk = lax.optimization_barrier(tuple(map(view, chunk)))
            part = reduce(tuple(_up(a) for a in chunk), tuple(lax.dynamic_slice_in_dim(x, start, size) for x in scalars))
            return lax.dynamic_update_slice_in_dim(out, part, start, 0)

        init = jnp.zeros_like(_up(arrays[0][:, :1]))  # every row is overwritten
        return fori_loop_carrying(-(-rows // size), step, init, *arrays).reshape(*batch, 1)

    def _local(self, reduce, scalars=(), view=None):
        """``reduce(arrays, scalars)`` over this device's rows (``[..., 1]``), the arrays upcast and
        seen through ``view`` (:meth:`_inputs`)."""
        if self._chunked():
            return self._by_rows(reduce, scalars, view)
        return reduce(*self._inputs(scalars, view))

    def _reduce(self, reduce, f, scalars=(), columns: bool = False):
        """``reduce`` (``jnp.sum``, ``jnp.max`` or ``jnp.min``) of ``f(*arrays, *scalars)`` over this
        device's rows, shape ``[..., 1]``: whole rows, or blocks of them (see :meth:`sum`) whose
        partial results are kept behind a barrier (else XLA folds the two levels back into one)."""
        b = column_length(self.classes()) if columns and self.rows.barriers else None
        if b is not None:  # [..., n / b, b], reduced over the blocks first
            view, axis = functools.partial(_in_blocks, b=b), -2
        elif self._split():  # [..., n / block, block], reduced within the blocks first
            view, axis = functools.partial(_in_blocks, b=self.rows.block), -1
        else:
            view, axis = None, -1

        def local(arrays, scalars):
            if view is None:
                return reduce(f(*arrays, *scalars), axis=-1, keepdims=True)
            parts = reduce(f(*arrays, *(x[..., None] for x in scalars)), axis=axis)
            return reduce(lax.optimization_barrier(parts), axis=-1, keepdims=True)

        return self._local(local, scalars, view)

    def max(self, index: int = 0) -> jax.Array:
        """``max(max_i x_i, finfo.min)`` of array ``index``, shape ``[..., 1]``.

        The floor ``finfo.min`` keeps ``x - m`` free of ``-inf - (-inf)`` on fully masked rows.
        """
        m = self._reduce(jnp.max, lambda *arrays: arrays[index])
        return jnp.maximum(self._across(m, lax.pmax), jnp.finfo(m.dtype).min)

    def min(self, index: int = 0) -> jax.Array:
        """``min(min_i x_i, finfo.max)`` (for energies, whose minimum is the logits' maximum)."""
        m = self._reduce(jnp.min, lambda *arrays: arrays[index])
        return jnp.minimum(self._across(m, lax.pmin), jnp.finfo(m.dtype).max)

    def sum(self, f, *scalars: jax.Array, columns: bool = False) -> jax.Array:
        """``Σ_i f(*arrays, *scalars)_i``, shape ``[..., 1]``; ``f`` is elementwise and the
        ``scalars`` (row statistics) have shape ``[..., 1]``.

        ``columns=True`` (``"blocked"`` rows; ignored where :func:`column_length` finds no ``b``):
        each row is viewed as ``[n / b, b]`` and its ``b`` columns are summed first, then the ``b``
        column sums — vectorised adds with no dependence between lanes, 0.83–0.87 of the time of
        the row sum for ``f = e^x`` at [2048, 32000] and [4096, 32000] float32 on XLA:CPU, 0.91–0.98
        at [1024, 128256], but slower for summands with a row scalar or a second array (up to
        several times for ``e^{x-m}(x-m)``), and no faster for bfloat16 inputs: hence an option,
        used for the unshifted ``Σ e^x`` of :func:`exp_sum`. Each column adds ``n / b`` terms in
        sequence, fewer than a row reduction's lanes do.
        """
        return self._across(self._reduce(jnp.sum, f, scalars, columns), lax.psum)


def _isolated(x, rows: Rows):
    """``x`` behind an optimisation barrier under ``"blocked"`` rows (see :class:`Stream`)."""
    return lax.optimization_barrier(x) if rows.barriers else x


def row_max(z: jax.Array, rows: Rows) -> jax.Array:
    """``max(max_i z_i, finfo.min)`` over the last axis (one reduction), shape ``[..., 1]``."""
    return Stream((z,), rows).max()


_GUESS = 256  # classes whose maximum is the shift tried first


def shift_guess(x: jax.Array, *, minimum: bool = False) -> jax.Array:
    """The maximum (``minimum``: minimum) of the first ``min(n, 256)`` entries of each row, shape
    ``[..., 1]``: a shift no greater than the row maximum, read from a small slice."""
    head = _up(x[..., :min(x.shape[-1], _GUESS)])
    return jnp.min(head, axis=-1, keepdims=True) if minimum else jnp.max(head, axis=-1, keepdims=True)


def shifted_sums(stream: Stream, guess: jax.Array, sums, *scalars, index: int = 0, minimum: bool = False,
                 first: tuple[jax.Array, ...] | None = None):
    """``(c, Σ f(arrays, c, *scalars) for f in sums)`` for a shift ``c`` that is at most the row maximum.

    Every row statistic is exact for any shift ``c`` with ``e^{x - c}`` finite (``lse = c + log s``
    whatever ``c``), so the sums are first taken with ``c = guess`` (an element of each row, or
    the maximum of a few: :func:`shift_guess`), one pass each and no pass for the maximum. If a
    sum is not finite (``e^{x - c}`` overflowed: some ``x - c > 88`` in float32; or ``c = -inf``,
    the guessed entries masked), every row is recomputed with ``c`` = its maximum, the extra pass
    paid only then (a :func:`jax.lax.cond`). ``minimum=True``: for energies, ``c`` bounds the
    minimum from above and the fallback is the row minimum (of array ``index``). On a sharded
    stream the guess must be the same on every slice (:meth:`Stream.guess`). ``first``: the shift
    and sums already taken some other way (:func:`exp_sum`), kept unless they are not finite.
    """
    c, *fast = (guess, *(stream.sum(f, guess, *scalars) for f in sums)) if first is None else first
    ok = jnp.all(jnp.isfinite(c))
    for total in fast:
        ok &= jnp.all(jnp.isfinite(total))

    def exact(_):
        again = stream.again()
        m = again.min(index) if minimum else again.max(index)
        return (m, *(again.sum(f, m, *scalars) for f in sums))

    return stream.cond(ok, lambda _: (c, *fast), exact)


def exp_sum(stream: Stream, guess: jax.Array, *, index: int = 0) -> tuple[jax.Array, jax.Array]:
    r"""``(c, s)`` with ``s = Σ_i e^{x_i - c}`` over array ``index`` of ``stream``, ``c = guess`` on
    every row where that does not overflow (so ``lse x = c + log s``), shapes ``[..., 1]``: the
    statistics of :func:`shifted_sums` with one sum.

    Under ``"blocked"`` rows (XLA:CPU, where a pass costs its operations per class) the sum is taken
    without the shift, ``σ = Σ_i e^{x_i}`` (one operation per class fewer: 0.78 of the time of
    ``Σ_i e^{x_i - c}`` at [2048, 32000] float32; summed by columns, :meth:`Stream.sum`, 0.85 of
    that again), and rescaled per row, ``s = σ / e^{c}``: each term
    carries the rounding of one ``exp`` (a shifted one also that of ``x_i - c``, but the guess's own
    term is 1 exactly), the rescaling two roundings per row, so ``log s`` errs by at most about
    ``1.5ε`` more than the shifted sum's (measured: the cross-entropies' and ``lse``'s errors
    unchanged, the direct KL's, which is that of two log-normalisers, 0–6% higher in the median)
    unless a term overflows or the terms that matter are subnormal. The unshifted sum is taken
    when every row's ``guess`` (an entry of the row, or the maximum of a few: ``σ ≥ e^{guess}``)
    lies in ``[log(n·tiny/ε), log(finfo.max / n)]`` — then the subnormal terms, which XLA:CPU
    flushes to zero, each losing less than ``tiny``, change ``σ`` by less than ``ε σ`` — a row
    whose ``s`` overflows keeping ``c = 0`` and ``s = σ``; otherwise (logits beyond about
    ``-(70 - log n)`` or ``88 - log n`` in float32) the shifted sum. Either is one pass; where it
    is not finite, :func:`shifted_sums`'s maximum. Sharded and ``"fused"`` streams go to
    :func:`shifted_sums` directly (a sharded row's length is not this slice's; on GPU a pass is
    bound by memory, not by its operations).
    """
    shifted = (lambda *args: jnp.exp(args[index] - args[-1]),)  # args: the arrays, then c
    if stream.rows.implementation != "blocked" or stream.vocab_axis is not None:
        return shifted_sums(stream, guess, shifted, index=index)
    info = jnp.finfo(guess.dtype)
    n = stream.classes(index)
    low, high = math.log(n * float(info.tiny) / float(info.eps)), math.log(float(info.max) / n)

    def unshifted(_):
        sigma = stream.again().sum(lambda *arrays: jnp.exp(arrays[index]), columns=True)
        s = sigma / jnp.exp(guess)
        rescaled = jnp.isfinite(s)
        return jnp.where(rescaled, guess, 0.0), jnp.where(rescaled, s, sigma)

    first = stream.cond(jnp.all((guess >= low) & (guess <= high)), unshifted,
                        lambda _: (guess, stream.again().sum(shifted[0], guess)))
    return shifted_sums(stream, guess, shifted, index=index, first=first)


def _floor(dtype):
    return jnp.finfo(dtype).min


def _combine(a, b):
    """The online rule on ``(m, s, t)`` triples (``t`` may be absent): the statistics of a union."""
    m = jnp.maximum(a[0], b[0])
    da, db = jnp.maximum(a[0] - m, -_CUT), jnp.maximum(b[0] - m, -_CUT)
    ea, eb = jnp.exp(da), jnp.exp(db)
    out = (m, a[1] * ea + b[1] * eb)
    if len(a) == 3:
        out += (ea * (a[2] + da * a[1]) + eb * (b[2] + db * b[1]),)
    return out


def onepass_stats(z: jax.Array, with_t: bool) -> tuple[jax.Array, ...]:
    """``(m, s[, t])`` over the last axis in one variadic reduction, each of shape ``[..., 1]``.

    Every element enters as its own block ``(max(z_i, finfo.min), e^{z_i - m_i}, 0)`` (``s_i`` is
    1, or 0 for a masked class) and the blocks are merged with :func:`_combine`.
    """
    m0 = jnp.maximum(z, _floor(z.dtype))
    ops = (m0, jnp.exp(z - m0)) + ((jnp.zeros_like(z),) if with_t else ())
    init = tuple(jnp.asarray(v, z.dtype) for v in (_floor(z.dtype), 0.0, 0.0)[:len(ops)])
    out = lax.reduce(ops, init, _combine, (z.ndim - 1,))
    return tuple(o[..., None] for o in out)


# ----------------------------------------------------------------------------- plumbing


def _implementation(func: str, implementation) -> None:
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{func}: argument `implementation` must be one of {IMPLEMENTATIONS} or None, "
                         f"got {implementation!r}")
    if implementation == "onepass" and func not in _ONEPASS:
        raise ValueError(f"{func}: implementation='onepass' is offered for {', '.join(_ONEPASS)} only")


def _one(func, name, x, axis, implementation):
    x = _checks.floating(func, name, x)
    _implementation(func, implementation)
    return x, _checks.class_axis(func, name, x, axis)


def _two(func, names, a, b, axis, implementation):
    a = _checks.floating(func, names[0], a)
    b = _checks.floating(func, names[1], b)
    _checks.same_shape(func, names, a, b)
    _implementation(func, implementation)
    return a, b, _checks.class_axis(func, names[0], a, axis)


def _last(x, axis):
    return jnp.moveaxis(x, axis, -1)


def _up(x):
    return x.astype(compute_dtype(x.dtype))


_jit = functools.partial(jax.jit, static_argnames=("axis", "implementation"))


def _log_normaliser(z, rows: Rows):
    """``(c, log s)`` with ``s = Σ e^{z - c}`` (:func:`exp_sum`; ``c`` the maximum itself for
    ``"onepass"``), shapes ``[..., 1]``, in the compute dtype: ``lse(z) = c + log s``."""
    if rows.implementation == "onepass":
        m, s = onepass_stats(_up(z), with_t=False)
        return m, jnp.log(s)
    c, s = exp_sum(Stream((z,), rows), shift_guess(z))
    return c, jnp.log(s)


def _exp_gap(x, m):
    return jnp.exp(x - m)


def _exp_gap_times_gap(x, m):
    """``e^{x - m}(x - m)``, with ``x - m`` clamped at ``-1000`` (where ``e^{x - m} = 0``: masked; a row
    scalar, :func:`_like`, as the backward pass clamps at the same constant)."""
    return jnp.exp(x - m) * jnp.maximum(x - m, _like(m, -_CUT))


def _softmax(z, m, log_s):
    """``(p, log p)`` elementwise from the statistics, ``log p`` exact to the rounding of ``z - m``."""
    log_p = (z - m) - log_s
    return jnp.exp(log_p), log_p


# ----------------------------------------------------------------------------- log-sum-exp


def logsumexp(logits: Float[Array, "*batch n"], *, axis: int = -1, implementation: str | None = None
              ) -> Float[Array, "*batch"]:
    r"""``log Σ_i e^{z_i}``, streamed.

    .. math:: \operatorname{lse}(z) = m + \log\sum_i e^{z_i - m}, \qquad m = \max_i z_i

    Masked classes (``-inf``) add nothing; a fully masked row gives ``-inf``. The gradient is
    ``softmax(z)``, recomputed in the backward pass from ``z`` and ``(m, log s)``.

    Args:
      logits: shape ``(*batch, n)``.
      axis: the axis reduced over.
      implementation: ``"blocked"``, ``"fused"``, ``"onepass"`` or None (backend default).

    Returns:
      ``lse`` of shape ``(*batch,)``, dtype ``promote_types(logits.dtype, float32)``.
    """
    z, axis = _one("logsumexp", "logits", logits, axis, implementation)
    return _logsumexp(z, axis=axis, implementation=implementation)


@_jit
def _logsumexp(z, axis, implementation):
    z = _last(z, axis)
    return _lse(z, rows_for(z.shape[-1], implementation))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _lse(z, rows):
    return _lse_fwd(z, rows)[0]


def _lse_fwd(z, rows):
    m, log_s = _log_normaliser(z, rows)
    return (m + log_s)[..., 0], (z, m, log_s)


def _lse_bwd(rows, res, g):
    z, m, log_s = res
    p, _ = _softmax(_up(z), m, log_s)
    return ((g[..., None] * p).astype(z.dtype),)


_lse.defvjp(_lse_fwd, _lse_bwd)


# ----------------------------------------------------------------------------- integer labels


def cross_entropy_with_integer_labels(logits: Float[Array, "*batch n"], labels: Int[Array, "*batch"], *,
                                      axis: int = -1, implementation: str | None = None
                                      ) -> Float[Array, "*batch"]:
    r"""Negative log-likelihood of integer labels, streamed over the classes.

    .. math:: -\log\mathrm{softmax}(z)_y = \log\sum_i e^{z_i - z_y}
              = \log\sum_i e^{z_i - m} - (z_y - m), \qquad m = \max_i z_i

    The first form is one pass over the logits (a sum of terms, one of them 1: no cancellation,
    and no digits lost to ``lse(z) - z_y`` for logits of magnitude ``1e4``; on CPU the sum
    ``Σ_i e^{z_i}`` divided by ``e^{z_y}``, :func:`exp_sum`, clamped at 1); rows where
    ``e^{z_i - z_y}`` would overflow (``z_y`` more than ~88 below the maximum in float32, or
    ``-inf``) are recomputed with the second (:func:`shifted_sums`). ``+inf`` when the label's
    logit is ``-inf``. Gradient ``softmax(z) - onehot(y)``, recomputed in the backward pass; the
    residuals are ``z``, ``y`` and the shift and ``log s`` per row.

    Args:
      logits: shape ``(*batch, n)`` with the classes along ``axis``.
      labels: integer class indices in ``[0, n)``, shape ``(*batch,)`` (not range-checked under
        ``jit``: an out-of-range label's loss is NaN, JAX's gather filling reads out of bounds;
        :func:`vfe.validate.labels` checks them eagerly).
      axis: the axis holding the classes.
      implementation: ``"blocked"``, ``"fused"``, ``"onepass"`` or None (backend default).

    Returns:
      NLL in nats, shape ``(*batch,)``.

    References: optax ``softmax_cross_entropy_with_integer_labels``; claim A2.
    """
    func = "cross_entropy_with_integer_labels"
    z, axis = _one(func, "logits", logits, axis, implementation)
    labels = _checks.integer(func, "labels", labels)
    expected = _checks.batch_shape(z.shape, axis)
    if labels.shape != expected:
        raise ValueError(f"{func}: argument `labels` must have shape {expected} (logits' shape without "
                         f"axis {axis}), got {labels.shape}")
    return _integer_ce(z, labels, axis=axis, implementation=implementation)


@_jit
def _integer_ce(z, labels, axis, implementation):
    z = _last(z, axis)
    return _nll(z, labels, rows_for(z.shape[-1], implementation))


def _label_logit(z, labels):
    return _up(jnp.take_along_axis(z, labels[..., None], axis=-1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _nll(z, labels, rows):
    return _nll_fwd(z, labels, rows)[0]


def _nll_fwd(z, labels, rows):
    picked = _label_logit(z, labels)
    if rows.implementation == "onepass":
        c, log_s = _log_normaliser(z, rows)
        return (log_s - (picked - c))[..., 0], (z, labels, c, log_s)
    c, s = exp_sum(Stream((z,), rows), picked)  # one pass over the logits
    log_s = jnp.log(s)
    # c = z_y on most rows: NLL = log Σ e^{z_i - z_y}, a sum ≥ 1 (its label term 1): no cancellation;
    # rows shifted by 0 or the maximum take Σ e^{z_i - z_y} = s / e^{z_y - c} too, unless it overflows
    # (NLL beyond ~88, where log s - (z_y - c) is accurate)
    terms = jnp.maximum(s / jnp.exp(picked - c), 1.0)
    nll = jnp.where(jnp.isfinite(terms), jnp.log(terms), log_s - (picked - c))
    return nll[..., 0], (z, labels, c, log_s)


def _nll_bwd(rows, res, g):
    z, labels, m, log_s = res
    p, _ = _softmax(_up(z), m, log_s)
    hot = lax.broadcasted_iota(labels.dtype, z.shape, z.ndim - 1) == labels[..., None]
    return (g[..., None] * (p - hot)).astype(z.dtype), None


_nll.defvjp(_nll_fwd, _nll_bwd)


# ----------------------------------------------------------------------------- entropy


def entropy_from_logits(logits: Float[Array, "*batch n"], *, axis: int = -1, implementation: str | None = None
                        ) -> Float[Array, "*batch"]:
    r"""Entropy of ``softmax(logits)``, streamed.

    .. math::
        H = \log s - \frac{t}{s}, \qquad s = \sum_i e^{z_i - m},\quad t = \sum_i e^{z_i - m}(z_i - m)

    Both terms are ``≥ 0`` (``t ≤ 0``), so there is no cancellation. Masked classes contribute
    nothing (``z_i - m`` is clamped at ``-1000``, where ``e^{z_i - m}`` is exactly 0). Gradient
    ``∂H/∂z_i = -p_i(\log p_i + H)``, recomputed in the backward pass.

    Args:
      logits: shape ``(*batch, n)``.
      axis: the axis holding the distribution.
      implementation: ``"blocked"``, ``"fused"``, ``"onepass"`` or None (backend default).

    Returns:
      entropy in nats, shape ``(*batch,)``.
    """
    z, axis = _one("entropy_from_logits", "logits", logits, axis, implementation)
    return _entropy(z, axis=axis, implementation=implementation)


@_jit
def _entropy(z, axis, implementation):
    z = _last(z, axis)
    return _entropy_vjp(z, rows_for(z.shape[-1], implementation))


def _entropy_stats(z, rows):
    """``(m, s, t)`` of the logits, in the compute dtype."""
    if rows.implementation == "onepass":
        return onepass_stats(_up(z), with_t=True)
    return shifted_sums(Stream((z,), rows), shift_guess(z), (_exp_gap, _exp_gap_times_gap))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _entropy_vjp(z, rows):
    return _entropy_fwd(z, rows)[0]


def _entropy_fwd(z, rows):
    m, s, t = _entropy_stats(z, rows)
    log_s = jnp.log(s)
    h = log_s - t / s
    return h[..., 0], (z, m, log_s, h)


def _entropy_bwd(rows, res, g):
    z, m, log_s, h = res
    p, log_p = _softmax(_up(z), m, log_s)
    return ((-g[..., None] * p * (jnp.maximum(log_p, -_CUT) + h)).astype(z.dtype),)


_entropy_vjp.defvjp(_entropy_fwd, _entropy_bwd)


# ----------------------------------------------------------------------------- soft targets


def cross_entropy_from_logits(p: Float[Array, "*batch n"], logits: Float[Array, "*batch n"], *,
                              axis: int = -1, implementation: str | None = None) -> Float[Array, "*batch"]:
    r"""Cross-entropy of ``softmax(logits)`` relative to target probabilities ``p``, streamed.

    .. math::
        H(p, \mathrm{softmax}(z)) = \sum_i p_i\big(\log s - (z_i - c)\big),\qquad
        s = \sum_i e^{z_i - c},\quad c \le \max_i z_i

    Two passes: ``s``, then the sum of the terms ``-p_i \log q_i ≥ 0`` (no cancellation).
    ``+inf`` where a masked logit carries target mass; masked classes with ``p_i = 0`` contribute
    nothing. Masks are handled with arithmetic (a clamp that is 0 or ``-∞`` with ``p_i``), not
    selects, so that each sum stays one fused reduction on CPU. The gradient's residuals add
    ``P = Σ_i p_i`` (a third pass, run only when differentiating).

    Gradients: ``∂/∂z_i = P q_i - p_i`` and ``∂/∂p_i = -\log q_i`` (``finfo.max`` where ``q_i = 0``
    because the class is masked), ``q = softmax(z)``.

    Args:
      p: target probabilities (soft labels), shape ``(*batch, n)``; any real weights are accepted,
        the value being linear in ``p`` (a negative weight on a masked logit adds ``-∞``).
      logits: model logits, same shape.
      axis: the axis holding the distributions.
      implementation: ``"blocked"``, ``"fused"`` or None (backend default).

    Returns:
      cross-entropy in nats, shape ``(*batch,)``.
    """
    p, z, axis = _two("cross_entropy_from_logits", ("p", "logits"), p, logits, axis, implementation)
    return _soft_ce(p, z, axis=axis, implementation=implementation)


@_jit
def _soft_ce(p, z, axis, implementation):
    p, z = _last(p, axis), _last(z, axis)
    return _soft_ce_vjp(p, z, rows_for(z.shape[-1], implementation))


def _like(r, value):
    """The constant ``value`` as a row scalar computed from the row statistic ``r`` (``r·0 + value``).

    Inside :class:`Stream` reductions: a literal constant used by several reductions is one
    broadcast that XLA:CPU materialises at the full ``[..., n]`` shape and shares; a constant
    derived from a statistic that each reduction reads through its own barrier stays a scalar.
    (``r`` must be finite, or the constant is NaN: the maxima are floored at ``finfo.min``; the KL's
    ``lse a - lse b`` is infinite only on rows where a logit tensor is fully masked, whose value
    :func:`_kl_direct_sum` sets apart.)
    """
    return r * 0 + value


def _finite_gap(x, m):
    """``(c, gap)``: ``c = max(x - m, -finfo.max)`` (finite) and ``gap = (x - m) - c`` (0, or ``-inf``
    exactly where ``x`` is masked) — a mask as arithmetic, without a select."""
    d = x - m
    c = jnp.maximum(d, _like(m, -jnp.finfo(d.dtype).max))
    return c, d - c


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _soft_ce_vjp(p, z, rows):
    return _soft_ce_forward(Stream((z, p), rows), with_mass=False)[0]


def _soft_ce_term(x, w, c, log_s):
    """``-w_i log q_i = w_i(log s - (x_i - c))``, its gap ``x_i - c`` clamped at ``-(|w_i|·finfo.max)·finfo.max``:
    that bound is 0 where ``w_i = 0`` (a masked class then adds 0, not ``0·∞``) and ``-∞`` where
    ``w_i ≠ 0`` (target mass on a masked logit adds ``+∞``) — a mask without a select or comparison."""
    big = _like(c, jnp.finfo(x.dtype).max)
    return w * (log_s - jnp.maximum(x - c, (jnp.abs(w) * big) * -big))


def _soft_ce_forward(stream: Stream, with_mass: bool):
    """``(CE, (c, log s[, mass]))`` of the stream's ``(logits, p)`` (sharded or not), statistics
    ``[..., 1]``: two passes, ``s = Σ e^{z - c}`` and the sum of :func:`_soft_ce_term`; a third,
    ``mass = Σ p``, for the gradient only."""
    c, s = exp_sum(stream, stream.guess(0))
    log_s = jnp.log(s)
    value = stream.sum(_soft_ce_term, c, log_s)
    return value[..., 0], (c, log_s) + ((stream.sum(lambda x, w: w),) if with_mass else ())


def _soft_ce_fwd(p, z, rows):
    value, stats = _soft_ce_forward(Stream((z, p), rows), with_mass=True)
    return value, (p, z, *stats)


def _soft_ce_bwd(rows, res, g):
    p, z, m, log_s, mass = res
    zc = _up(z)
    q, _ = _softmax(zc, m, log_s)
    g = g[..., None]
    d_z = g * (mass * q - _up(p))
    d_p = g * (log_s - _finite_gap(zc, m)[0])  # -log q, finite
    return d_p.astype(p.dtype), d_z.astype(z.dtype)


_soft_ce_vjp.defvjp(_soft_ce_fwd, _soft_ce_bwd)


# ----------------------------------------------------------------------------- KL divergence


def kl_divergence_from_logits(p_logits: Float[Array, "*batch n"], q_logits: Float[Array, "*batch n"], *,
                              axis: int = -1, formula: str = "accurate",
                              implementation: str | None = None) -> Float[Array, "*batch"]:
    r"""``KL(softmax(a) ‖ softmax(b))``, streamed, ``≥ 0``; with the default ``formula`` accurate when
    the two are close.

    With ``q = softmax(b)``, ``δ = a - b``, any reference ``r`` (here ``lse a - lse b``) and
    ``x = δ - r``, ``p_i = q_i e^{x_i}/Z`` with ``Z = Σ_i q_i e^{x_i}``, and

    .. math::
        \mathrm{KL}(p\|q) = S e^{-t} - \varphi(-t),\qquad
        S = \sum_i q_i\,\psi(x_i),\quad t = \log Z = \operatorname{log1p}(T),\quad
        T = \sum_i q_i \operatorname{expm1}(x_i),

    where ``ψ(x) = 1 + (x - 1)e^x ≥ 0`` and ``φ(x) = e^x - 1 - x ≥ 0`` (exact for every ``r``;
    ``ψ(x_i) → 1`` where ``a`` masks a class). ``S`` is a sum of non-negative terms, each to a few
    tens of ε; ``t`` is small (the rounding of ``r``) and ``T``'s own rounding enters multiplied by
    ``S + t``, a second-order error. So for ``p ≈ q`` the divergence keeps its relative accuracy
    instead of being the difference of two rounded log-normalisers — also when the two tensors
    differ by an offset: ``a_i - b_i`` is carried exactly (TwoSum) and ``r`` in two parts, so ``x``
    is not rounded at the offset's scale. Four passes over the logits: ``lse b``,
    ``lse a``, ``T`` and ``S``; masks need no pass of their own (where ``a`` masks most of ``q``'s
    mass, ``S`` is still a sum of non-negative terms). Rows where ``e^x`` overflows (``T`` or ``S``
    not finite, summed as ``s_b T`` and ``s_b S`` with ``s_b = Σ_i e^{b_i - m_b} ≤ n``: ``p_i/q_i``
    beyond about ``e^{88}/n`` in float32) or ``b`` masks a class that ``a`` allows (and, as a
    guard, rows with ``T ≤ -1/2``, which finite inputs do not produce: ``T`` is the rounding of ``r``)
    use ``Σ p_i(\log p_i - \log q_i)``, whose rounding is small against their divergence; its pass
    runs only when some row needs it (a :func:`jax.lax.cond`).

    ``formula="direct"`` evaluates the definition instead,

    .. math:: \mathrm{KL}(p\|q) = \sum_i p_i (\log p_i - \log q_i),\qquad
        \log p_i = (a_i - m_a) - \log \textstyle\sum_j e^{a_j - m_a}\ \text{(likewise } q\text{)},

    in three light passes (``lse b``, ``lse a``, the weighted sum ``Σ p_i(\log p_i - \log q_i)`` with
    each log-probability from its own log-normaliser) and about half the time of the accurate form:
    its rounding is the naive formula's, an absolute error of a few ``ε·(1 + log n + span)`` (``ε``
    the float32 or float64 epsilon, ``span`` that of each row's logits, whatever their offset), so
    for ``p ≈ q`` it returns rounding noise, clamped at 0. Meant for distributions that differ by more than that
    (distillation, comparing models); the accurate form for regularisers near ``p = q``.

    Edge cases: ``+inf`` if ``b`` masks a class that ``a`` allows (for logits spanning less than
    ``finfo.max/2``; also when ``b`` masks them all, as :func:`vfe.kl_divergence_from_logits` does;
    NaN if ``a`` does); classes masked by ``a`` contribute 0. Gradients
    ``∂/∂a_i = p_i(\log p_i - \log q_i - KL)``, ``∂/∂b_i = q_i - p_i``; 0 where the value is ``+inf``.

    Args:
      p_logits: logits ``a`` of the first distribution, shape ``(*batch, n)``.
      q_logits: logits ``b`` of the second distribution, same shape.
      axis: the axis holding the distributions.
      formula: one of :data:`KL_FORMULAS`: ``"accurate"`` (the cancellation-free form) or
        ``"direct"`` (the definition, faster, the naive formula's rounding).
      implementation: ``"blocked"``, ``"fused"`` or None (backend default).

    Returns:
      ``KL(p‖q)`` in nats, shape ``(*batch,)``.
    """
    func = "kl_divergence_from_logits"
    a, b, axis = _two(func, ("p_logits", "q_logits"), p_logits, q_logits, axis, implementation)
    _checks.one_of(func, "formula", formula, KL_FORMULAS)
    return _kl(a, b, axis=axis, formula=formula, implementation=implementation)


@functools.partial(jax.jit, static_argnames=("axis", "formula", "implementation"))
def _kl(a, b, axis, formula, implementation):
    a, b = _last(a, axis), _last(b, axis)
    return _kl_vjp(a, b, rows_for(a.shape[-1], implementation), formula)


def _gap(x, r):
    """``(c, gap)``: ``c = max(x, -finfo.max)`` and ``gap = x - c`` (0, or ``-inf`` where masked)."""
    c = jnp.maximum(x, _like(r, -jnp.finfo(x.dtype).max))
    return c, x - c


def _kl_gap(a, b, mb, ref, ref_lo):
    """``x = (a - b) - (ref + ref_lo)`` with ``a - b`` carried exactly
    (:func:`vfe._numerics.exact_gap`): where ``a - b ≈ ref`` (``p ≈ q``, whatever the offset
    between the two logit tensors) the subtraction of ``ref`` is exact and ``x`` keeps its relative
    accuracy; elsewhere its error is relative to ``x``. Masked logits are clamped at ``-finfo.max``:
    ``x ≈ -finfo.max`` where ``a`` masks a class, ``≈ finfo.max`` where only ``b`` does and ``-ref``
    where both do. (``e^x`` overflows where only ``b`` masks a class, where both do and
    ``ref < -88`` in float32 (``-709`` in float64), and where ``a - b`` overflows, for logits beyond
    ``finfo.max/2``: such rows take the direct sum. Marking the classes both mask instead costs
    XLA:CPU a materialised ``[..., n]`` temporary in the ``S`` pass.)"""
    return exact_gap(_gap(a, mb)[0], _gap(b, mb)[0], ref, ref_lo)


def _log_prob(x, m, log_s):
    """``log softmax`` from the statistics, clamped at ``-finfo.max``: finite for every logit (``-∞`` and
    any finite value), its error the rounding of ``x - m`` — independent of the logits' offset."""
    return _finite_gap(x, m)[0] - log_s


_SERIES_RADIUS = 0.125


def _series_or_direct(x, coefficients, direct):
    r"""``Σ_k c_k x^k`` (``coefficients`` from ``k = 2``) for ``|x| ≤ 1/8``, ``direct(x)`` elsewhere
    (``direct`` must be finite for ``|x| ≤ 1/8``).

    Written for XLA:CPU, whose fused reductions (YNNPACK fusions) stop growing at 100 instructions and
    compute what is left over into a ``[..., n]`` temporary: few operations and constants, no select.
    The switch is a weight ``w = sign(|x| - min(|x|, 1/8))``, exactly 0 or 1; the series is evaluated
    at ``x - w x`` (``x`` inside the radius, 0 outside, where it vanishes) and ``w·direct(x)`` added."""
    magnitude = jnp.abs(x)
    w = jnp.sign(magnitude - jnp.minimum(magnitude, _SERIES_RADIUS))
    xs = x - x * w
    series = coefficients[-1] * xs
    for c in reversed(coefficients[:-1]):
        series = (series + c) * xs
    return series * xs + w * direct(x)


def _degree(x, float32: int, float64: int) -> int:
    return float64 if jnp.finfo(x.dtype).bits > 32 else float32


def _phi(x):
    r"""``φ(x) = e^x - 1 - x ≥ 0`` to within 35ε: its Taylor series ``Σ_{k≥2} x^k/k!`` for ``|x| ≤ 1/8``
    (degree 6 in float32, 12 in float64: the first omitted term is below 2e-8 / 5e-19 of the sum),
    ``expm1(x) - x`` elsewhere (its cancellation, worst near ``|x| = 1/8``: 33ε / 35ε measured in
    float32 / float64)."""
    degree = _degree(x, 6, 12)
    return _series_or_direct(x, [1.0 / math.factorial(k) for k in range(2, degree + 1)],
                             lambda x: jnp.expm1(x) - x)


def _psi(x, r):
    r"""``ψ(x) = 1 + (x - 1)e^x = Σ_{k≥2} (k - 1)x^k/k! ≥ 0`` to within 36ε: the series for ``|x| ≤ 1/8``
    (degree 7 in float32, 11 in float64: the first omitted term is below 2e-9 / 5e-17 of the sum),
    ``x expm1(x) - (expm1(x) - x)`` elsewhere (its cancellation, worst near ``|x| = 1/8``: 36ε / 30ε
    measured in float32 / float64; ``(x - 1)expm1(x) + x`` reached 40ε), with ``x`` clamped at
    ``-1000`` there so that ``ψ(-∞) = 1`` exactly (a row scalar made from the statistic ``r``,
    :func:`_like`: the backward pass clamps at the same constant)."""
    degree = _degree(x, 7, 11)

    def direct(x):
        x = jnp.maximum(x, _like(r, -_CUT))
        e = jnp.expm1(x)
        return x * e - (e - x)

    return _series_or_direct(x, [(k - 1) / math.factorial(k) for k in range(2, degree + 1)], direct)


# The summands of the accurate KL (see kl_divergence_from_logits), one reduction each, without q's
# normaliser: the row sums are s_b T and s_b S (fewer instructions per class; see _series_or_direct).
def _kl_t(a, b, mb, ref, ref_lo):
    """``e^{b_i - m_b} expm1(x_i)``, ``x = a - b - ref - ref_lo``: the row sum is ``s_b T``."""
    return jnp.exp(b - mb) * jnp.expm1(_kl_gap(a, b, mb, ref, ref_lo))


def _kl_s(a, b, mb, ref, ref_lo):
    """``e^{b_i - m_b} ψ(x_i) ≥ 0``, ``x = a - b - ref - ref_lo``: the row sum is ``s_b S``."""
    return jnp.exp(b - mb) * _psi(_kl_gap(a, b, mb, ref, ref_lo), ref)


class _KLStats(NamedTuple):
    """Per-row statistics of the KL pass (shapes ``[..., 1]``), the backward pass's residuals."""

    mb: jax.Array
    log_sb: jax.Array
    ref: jax.Array  # lse a - lse b = ref + ref_lo, in two parts (the first ma - mb rounded)
    ref_lo: jax.Array
    shift: jax.Array  # log p - log q = x - shift on near rows (shift = log(1 + T)), else 0
    near: jax.Array  # the accurate form's rows (p from q and x); none, for the direct formula
    ma: jax.Array
    log_sa: jax.Array


def _kl_log_normalisers(stream: Stream):
    """``(ma, log sa, mb, log sb, ref, ref_lo, sb)``: two passes, one per log-normaliser
    (:func:`exp_sum`), and ``lse a - lse b = (ma - mb) + (log sa - log sb)`` as ``ref + ref_lo``,
    ``ref = fl(ma - mb)`` and ``ref_lo`` the rest (:func:`vfe._numerics.two_difference`): an offset
    between the two tensors is then carried exactly, and the accurate form's ``t`` stays the rounding
    of ``log s``."""
    mb, sb = exp_sum(stream, stream.guess(1), index=1)
    ma, sa = exp_sum(stream, stream.guess(0))
    log_sa, log_sb = jnp.log(sa), jnp.log(sb)
    ref, rest = two_difference(ma, mb)
    return ma, log_sa, mb, log_sb, ref, rest + (log_sa - log_sb), sb


def _kl_escapes(d, r):
    """1 where ``d = log p_i - log q_i`` (:func:`_log_prob`) reaches ``finfo.max/2``, else 0: where ``b``
    masks a class that ``a`` allows (``log q_i`` is clamped at ``-finfo.max``; logits spanning more
    than ``finfo.max/2`` would blur the two). Four operations, where testing each mask took twelve."""
    return jnp.sign(jnp.maximum(d - _like(r, jnp.finfo(d.dtype).max / 2), _like(r, 0.0)))


def _kl_direct_term(a, b, ma, log_sa, mb, log_sb):
    """``p_i (log p_i - log q_i)``, the log-probabilities from their own log-normalisers
    (:func:`_log_prob`: the naive formula's rounding, whatever the offset between ``a`` and ``b``) and
    their difference clamped at ``-1000`` where ``p = 0``; plus ``finfo.max`` where ``b`` masks a class
    that ``a`` allows (:func:`_kl_escapes`): a row sum that reaches ``finfo.max`` is ``KL = +∞``."""
    log_p, log_q = _log_prob(a, ma, log_sa), _log_prob(b, mb, log_sb)
    d = log_p - log_q
    big = _like(ma, jnp.finfo(d.dtype).max)
    return jnp.exp(log_p) * jnp.maximum(d, _like(ma, -_CUT)) + _kl_escapes(d, ma) * big


def _kl_direct_sum(stream: Stream, ma, log_sa, mb, log_sb):
    """``Σ p (log p - log q)`` from the log-normalisers (one pass), ``+∞`` where ``b`` masks a class
    that ``a`` allows (every class, if ``b`` is fully masked and ``a`` is not), clamped at 0; NaN where
    ``a`` is fully masked (``p`` undefined)."""
    total = stream.sum(_kl_direct_term, ma, log_sa, mb, log_sb)
    value = jnp.where(total >= jnp.finfo(total.dtype).max, jnp.inf, jnp.maximum(total, 0.0))
    value = jnp.where(jnp.isneginf(log_sb), jnp.inf, value)
    return jnp.where(jnp.isneginf(log_sa), jnp.nan, value)


def _kl_forward(stream: Stream):
    """``(KL, _KLStats)`` of the logits ``(a, b)`` of ``stream`` by the accurate form (any floating
    dtype; upcast as they are read; sharded or not): the log-normalisers, ``T`` and ``S`` (four
    passes), the direct sum for the rows it cannot take (a fifth pass, run only if some row needs it)."""
    ma, log_sa, mb, log_sb, ref, ref_lo, sb = _kl_log_normalisers(stream)
    inv_sb = 1 / sb  # not e^{-log sb}, which errs by ε·log sb
    big_t = stream.sum(_kl_t, mb, ref, ref_lo) * inv_sb
    big_s = stream.sum(_kl_s, mb, ref, ref_lo) * inv_sb
    near = jnp.isfinite(big_t) & jnp.isfinite(big_s) & (big_t > -0.5)
    shift = jnp.where(near, jnp.log1p(jnp.where(near, big_t, 0.0)), 0.0)
    accurate = jnp.maximum(big_s * jnp.exp(-shift) - _phi(-shift), 0.0)
    far = stream.cond(jnp.all(near), lambda _: jnp.zeros_like(ref),
                      lambda _: _kl_direct_sum(stream.again(), ma, log_sa, mb, log_sb))
    value = jnp.where(near, accurate, far)
    return value[..., 0], _KLStats(mb, log_sb, ref, ref_lo, shift, near, ma, log_sa)


def _kl_direct_forward(stream: Stream):
    """``(KL, _KLStats)`` by the definition ``Σ p (log p - log q)``: ``lse b``, ``lse a`` and the
    sum, one pass each (no row is "near": the backward pass also takes ``log p - log q``)."""
    ma, log_sa, mb, log_sb, ref, ref_lo, _ = _kl_log_normalisers(stream)
    value = _kl_direct_sum(stream, ma, log_sa, mb, log_sb)
    return value[..., 0], _KLStats(mb, log_sb, ref, ref_lo, jnp.zeros_like(ref), jnp.zeros(ref.shape, bool),
                                   ma, log_sa)


_KL_FORWARD = {"accurate": _kl_forward, "direct": _kl_direct_forward}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _kl_vjp(a, b, rows, formula):
    return _KL_FORWARD[formula](Stream((a, b), rows))[0]


def _kl_fwd(a, b, rows, formula):
    value, stats = _KL_FORWARD[formula](Stream((a, b), rows))
    return value, (a, b, value, stats)


def _kl_bwd(rows, formula, res, g):
    a, b, value, st = res
    ac, bc = _up(a), _up(b)
    log_p, log_q = _log_prob(ac, st.ma, st.log_sa), _log_prob(bc, st.mb, st.log_sb)
    d = log_p - log_q
    if formula == "accurate":  # near rows: x - log(1 + T), without cancellation, and p from q with it
        x = _kl_gap(ac, bc, st.mb, st.ref, st.ref_lo)
        d = jnp.where(st.near, x - st.shift, d)
        log_p = jnp.where(st.near, log_q + d, log_p)
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    kl = value[..., None]
    finite = jnp.isfinite(kl)  # +inf rows (an escape) have no finite slope: 0, and p is not computed there
    g = g[..., None]
    d_a = jnp.where(finite, g * p * (jnp.maximum(d, -_CUT) - jnp.where(finite, kl, 0.0)), 0.0)
    d_b = jnp.where(finite, g * (q - p), 0.0)
    return d_a.astype(a.dtype), d_b.astype(b.dtype)


_kl_vjp.defvjp(_kl_fwd, _kl_bwd)


# ----------------------------------------------------------------------------- thermodynamics

BETA, TEMPERATURE = "beta", "temperature"


def log_partition(energies: Float[Array, "*batch n"], beta, *, axis: int = -1,
                  implementation: str | None = None) -> Float[Array, "*batch"]:
    r"""``log Z(β) = log Σ_i e^{-β E_i}``, streamed (:func:`vfe.log_partition` computes the same).

    .. math:: \log Z(\beta) = \beta m + \log\sum_i e^{\beta(z_i - m)},\qquad z = -E,\ m = \max_i z_i

    ``+inf`` energies are forbidden states (excluded also at ``β = 0``, with arithmetic masks).
    Gradients ``∂/∂E_i = -β p_i`` and ``∂/∂β = E_p[z] = -⟨E⟩`` (one more reduction in the backward).

    Args:
      energies: shape ``(*batch, n)``.
      beta: ``β ≥ 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the axis holding the states.
      implementation: ``"blocked"``, ``"fused"`` or None (backend default).

    Returns:
      ``log Z`` of shape ``(*batch,)``.
    """
    func = "log_partition"
    e, axis = _one(func, "energies", energies, axis, implementation)
    beta = _checks.positive_scale(func, "beta", beta, _checks.batch_shape(e.shape, axis), allow_zero=True)
    return _thermo(e, beta, axis=axis, kind=BETA, implementation=implementation)


def helmholtz_free_energy(energies: Float[Array, "*batch n"], temperature, *, axis: int = -1,
                          implementation: str | None = None) -> Float[Array, "*batch"]:
    r"""Helmholtz free energy ``F = -T log Σ_i e^{-E_i/T}``, streamed.

    .. math:: F = -\Big(m + T\log\sum_i e^{(z_i - m)/T}\Big),\qquad z = -E,\ m = \max_i z_i = -\min_i E_i

    Tends to ``min E`` exactly as ``T → 0``. Gradients ``∂F/∂E_i = p_i`` and ``∂F/∂T = -H(p)``
    (one more reduction in the backward), ``p`` the Boltzmann distribution at ``T``.

    Args:
      energies: shape ``(*batch, n)``; ``+inf`` for forbidden states.
      temperature: ``T > 0``, scalar or broadcastable to ``(*batch,)``.
      axis: the axis holding the states.
      implementation: ``"blocked"``, ``"fused"`` or None (backend default).

    Returns:
      ``F`` of shape ``(*batch,)``.
    """
    func = "helmholtz_free_energy"
    e, axis = _one(func, "energies", energies, axis, implementation)
    t = _checks.positive_scale(func, "temperature", temperature, _checks.batch_shape(e.shape, axis))
    return _thermo(e, t, axis=axis, kind=TEMPERATURE, implementation=implementation)


@functools.partial(jax.jit, static_argnames=("axis", "kind", "implementation"))
def _thermo(e, scale, axis, kind, implementation):
    e = _last(e, axis)
    dtype = compute_dtype(e.dtype)
    scale = jnp.broadcast_to(jnp.asarray(scale, dtype), e.shape[:-1])
    return _thermo_vjp(e, scale, rows_for(e.shape[-1], implementation), kind)


def _scaled(e, m, scale, kind):
    """``β(z - m)`` or ``(z - m)/T`` for ``z = -e``, with ``-inf`` kept exactly at forbidden states
    (also at ``β = 0``). Written ``(-m) - e``: XLA:CPU's fused reductions run ``-e - m`` several
    times slower."""
    d = (-m) - e
    c = jnp.maximum(d, _like(m, -jnp.finfo(d.dtype).max))
    gap = d - c
    return (c * scale if kind == BETA else c / scale) + gap


def _thermo_forward(stream: Stream, k, kind):
    """``(log Z or F, (m, log s))`` of the stream's energies (sharded or not) at the scale ``k``
    (``β`` or ``T``, shape ``[..., 1]``); ``m = max z = -min E`` and ``log s`` of shape ``[..., 1]``."""
    # shift by the logits' side: c = -(minimum energy) of a few states, at most max z = -min E
    neg_c, s = shifted_sums(stream, stream.guess(0, minimum=True),
                            (lambda x, neg_c, k: jnp.exp(_scaled(x, -neg_c, k, kind)),), k, minimum=True)
    m, log_s = -neg_c, jnp.log(s)
    value = k * m + log_s if kind == BETA else -(m + k * log_s)
    return value[..., 0], (m, log_s)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _thermo_vjp(e, scale, rows, kind):
    return _thermo_forward(Stream((e,), rows), scale[..., None], kind)[0]


def _thermo_fwd(e, scale, rows, kind):
    value, stats = _thermo_forward(Stream((e,), rows), scale[..., None], kind)
    return value, (e, scale, *stats)


def _thermo_bwd(rows, kind, res, g):
    e, scale, m, log_s = res
    return _thermo_backward(e, Stream((e,), rows), scale, m, log_s, g, kind)


def _thermo_backward(e, stream: Stream, scale, m, log_s, g, kind):
    """``(∂/∂E, ∂/∂scale)``: ``p`` elementwise from ``e`` and one reduction over ``stream`` (of ``e``,
    sharded or not) for the scale's derivative."""
    k = scale[..., None]
    # the gradient's elementwise pass reads its own copy: XLA may not share it with the reduction
    p = jnp.exp(_scaled(_up(_isolated(e, stream.rows)), m, k, kind) - log_s)
    g = g[..., None]
    if kind == BETA:  # d log Z/dβ = E_p[z] = m + E_p[z - m]
        mean = stream.sum(lambda x, m, k, ls: jnp.exp(_scaled(x, m, k, kind) - ls)
                          * jnp.maximum((-m) - x, _like(m, -jnp.finfo(x.dtype).max)), m, k, log_s)
        d_e, d_scale = -g * k * p, g * (m + mean)
    else:  # dF/dT = -H(p) = -(log s - E_p[(z - m)/T])
        mean = stream.sum(lambda x, m, k, ls: jnp.exp(_scaled(x, m, k, kind) - ls)
                          * jnp.maximum(_scaled(x, m, k, kind), _like(m, -jnp.finfo(x.dtype).max)), m, k, log_s)
        d_e, d_scale = g * p, -g * (log_s - mean)
    return d_e.astype(e.dtype), d_scale[..., 0].astype(scale.dtype)


_thermo_vjp.defvjp(_thermo_fwd, _thermo_bwd)
