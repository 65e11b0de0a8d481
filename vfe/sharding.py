r"""Softmax reductions over a vocabulary sharded across devices, without gathering the logits.

Each device holds a slice of the classes (``V / P`` logits per token, or ``V / P`` columns of the
classifier weights). The row statistics of :mod:`vfe.streaming` combine across the slices with two
collectives (claim S3 of ``proofs/streaming.py``):

.. math::
    m = \operatorname{pmax}_k m_k, \qquad s = \operatorname{psum}_k \sum_{i \in k} e^{z_i - m},
    \qquad z_y - m = \operatorname{psum}_k [\,y \in k\,](z_y - m),

so a token's loss costs three scalars of communication per device, whatever ``V``; the logits
(and their gradient, which is local: ``softmax(z) - onehot(y)`` on each slice) never leave their
device. The per-device functions (``shard_*``) only use ``pmax``, ``psum`` and ``axis_index`` over
``vocab_axis``, so they run unchanged under :func:`jax.vmap` with ``axis_name=vocab_axis`` over a
``[P, ..., V/P]`` array: that is how ``proofs/streaming.py`` and the tests check sharded = unsharded
on one device. For the linear head the gradient with respect to the hidden states is the one reduction
of the backward pass (``∂h = psum_k G_k W_kᵀ``); ``∂W`` stays sharded like ``W``.

Every quantity of :mod:`vfe.streaming` has its sharded version: log-sum-exp, entropy, integer- and
soft-label cross-entropy, KL (both formulas), log Z and the Helmholtz free energy, and the linear
head. All but the linear head run the passes of :mod:`vfe.streaming` on each device's slices
through a :class:`vfe.streaming.Stream` given ``vocab_axis``: each reduction is completed by a
``pmax``/``psum``, and each :func:`jax.lax.cond` (the shift's fallback, the KL's far rows) takes
the branch agreed by all devices (a ``pmin`` of the predicate over every mesh axis). So the sums are
shifted by a guess rather than by the maximum (the label's logit for the cross-entropy, else the
maximum of the first classes, a ``pmax`` of a few scalars), and the maximum costs a pass only where
the guess overflows: the cross-entropy and log-sum-exp read each slice once, as unsharded rows are.

The functions run under :func:`jax.shard_map` over a :class:`jax.sharding.Mesh`: ``vocab_axis``
names the mesh axis that shards the classes (the last axis of the logits, the second of the
weights) and, optionally, ``batch_axis`` a mesh axis that shards the tokens (the first axis). The
arrays may be passed already sharded (``NamedSharding(mesh, P(batch_axis, vocab_axis))``) or not
(they are then resharded on entry). The number of classes must be divisible by the size of
``vocab_axis``, and the tokens by that of ``batch_axis``.

Each function computes the same values as its unsharded counterpart (``vfe.streaming`` /
``vfe.linear_cross_entropy``); differentiable in reverse mode, also twice (Hessian-vector
products: the maxima, which only shift the sums, are taken without a derivative,
:func:`vfe._numerics.shift_across`). The functions are not wrapped in
:func:`jax.jit` themselves (call them inside the caller's ``jit``): with jax 0.10.2, the eager
reverse-mode transpose of a ``jit`` with a static mesh argument failed when a second mesh was
used in the same process.

References:
  M. Shoeybi et al., "Megatron-LM" (2019), §3 (vocabulary-parallel cross-entropy);
  the levanter and MaxText vocabulary-sharded losses.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Bool, Float, Int

from vfe import _checks
from vfe import linear_cross_entropy as _lce
from vfe import streaming as _st
from vfe._numerics import compute_dtype, from_holder, shift_across

__all__ = [
    "shard_cross_entropy_with_integer_labels",
    "shard_entropy",
    "shard_label_logit",
    "shard_linear_backward",
    "shard_linear_cross_entropy",
    "shard_linear_total",
    "shard_log_normaliser",
    "shard_softmax_grad",
    "sharded_cross_entropy_from_logits",
    "sharded_cross_entropy_with_integer_labels",
    "sharded_entropy_from_logits",
    "sharded_helmholtz_free_energy",
    "sharded_kl_divergence_from_logits",
    "sharded_linear_cross_entropy",
    "sharded_log_partition",
    "sharded_logsumexp",
]


def _shard_map(f, mesh, in_specs, out_specs):
    """:func:`jax.shard_map` (jax ≥ 0.6), or ``jax.experimental.shard_map`` on older versions."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    from jax.experimental.shard_map import shard_map  # pragma: no cover - old jax

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Static description of a sharded call (hashable, not a pytree: a ``custom_vjp`` static argument)."""

    mesh: Mesh
    vocab_axis: str
    batch_axis: str | None
    ndim: int

    @property
    def tokens(self) -> P:
        """Spec of a per-token array: the logits' axes but the last, the first over ``batch_axis``."""
        return P(self.batch_axis, *([None] * (self.ndim - 2))) if self.ndim > 1 else P()

    @property
    def logits(self) -> P:
        """Spec of the logits: tokens as :attr:`tokens`, classes over ``vocab_axis``."""
        return P(*self.tokens, self.vocab_axis)

    @property
    def mesh_axes(self) -> tuple[str, ...]:
        """Every named axis of the call (over which a ``lax.cond`` predicate is agreed)."""
        return tuple(self.mesh.axis_names)

    def stream(self, arrays, implementation) -> _st.Stream:
        """A :class:`vfe.streaming.Stream` of this device's slices, its reductions over the whole rows."""
        rows = _st.rows_for(arrays[0].shape[-1], implementation)
        return _st.Stream(arrays, rows, self.vocab_axis, self.mesh_axes)

    def map(self, f, in_specs, out_specs):
        """``f`` under :func:`jax.shard_map` on this layout's mesh."""
        return _shard_map(f, self.mesh, in_specs, out_specs)


def _check_mesh(func: str, mesh, vocab_axis, batch_axis, classes: int, tokens: int | None) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{func}: argument `mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    for name, axis in (("vocab_axis", vocab_axis), ("batch_axis", batch_axis)):
        if axis is not None and axis not in mesh.shape:
            raise ValueError(f"{func}: argument `{name}`={axis!r} is not an axis of the mesh {dict(mesh.shape)}")
    if vocab_axis is None or vocab_axis == batch_axis:
        raise ValueError(f"{func}: `vocab_axis` must name a mesh axis other than `batch_axis`")
    if classes % mesh.shape[vocab_axis]:
        raise ValueError(f"{func}: the {classes} classes do not split evenly over the {mesh.shape[vocab_axis]} "
                         f"devices of mesh axis {vocab_axis!r}")
    if batch_axis is not None and tokens is not None and tokens % mesh.shape[batch_axis]:
        raise ValueError(f"{func}: the leading axis ({tokens}) does not split evenly over the "
                         f"{mesh.shape[batch_axis]} devices of mesh axis {batch_axis!r}")


def _logits_args(func, logits, mesh, vocab_axis, batch_axis, implementation, name="logits"):
    z = _checks.floating(func, name, logits)
    if z.ndim == 0:
        raise ValueError(f"{func}: the input is a scalar; it needs a class axis (the last)")
    _checks.class_axis(func, name, z, -1)
    _st._implementation(func, implementation)
    if implementation == "onepass":
        raise ValueError(f"{func}: implementation='onepass' is not offered for sharded logits")
    _check_mesh(func, mesh, vocab_axis, batch_axis, z.shape[-1], z.shape[0] if z.ndim > 1 else None)
    if batch_axis is not None and z.ndim < 2:
        raise ValueError(f"{func}: `batch_axis` needs logits with a leading token axis, got shape {z.shape}")
    return z, _Layout(mesh, vocab_axis, batch_axis, z.ndim)


# ----------------------------------------------------------------------------- per-device functions


def offset(vocab_axis: str, local_classes: int):
    """Index of this device's first class along ``vocab_axis``."""
    return lax.axis_index(vocab_axis) * local_classes


def shard_log_normaliser(z, vocab_axis: str, implementation: str | None = None, mesh_axes: tuple[str, ...] = ()):
    """``(c, log s)`` of the full rows, shapes ``[..., 1]``, from this device's slice ``z`` of the logits:
    ``s = psum_k Σ_{i∈k} e^{z_i - c}`` (so ``lse = c + log s``).

    ``c`` is the maximum of the row's first classes (the same on every slice, a ``pmax``), one pass in
    all; the row maximum ``pmax_k max_{i∈k} z_i`` and a second pass only where that overflows
    (:func:`vfe.streaming.shifted_sums`). ``mesh_axes``: every named axis of the call (the ``lax.cond``
    predicate agreed over all of them; default ``(vocab_axis,)``).
    """
    return _shard_stats(z, vocab_axis, implementation, mesh_axes, with_t=False)


def _shard_stats(z, vocab_axis, implementation, mesh_axes, *, with_t, guess=None):
    """``(c, log s[, t/s])`` of the full rows from this slice, shifted by ``guess`` (default the head
    guess of :meth:`vfe.streaming.Stream.guess`; the same on every slice) unless that overflows."""
    stream = _st.Stream((z,), _st.rows_for(z.shape[-1], implementation), vocab_axis, mesh_axes)
    sums = (_st._exp_gap, _st._exp_gap_times_gap) if with_t else (_st._exp_gap,)
    c, s, *t = _st.shifted_sums(stream, stream.guess() if guess is None else guess, sums)
    log_s = jnp.log(s)
    return (c, log_s) + ((t[0] / s,) if with_t else ())


def shard_entropy(z, vocab_axis: str, implementation: str | None = None, mesh_axes: tuple[str, ...] = ()):
    """``(c, log s, H)`` of the full rows from this device's slice: ``H = log s - t/s`` with
    ``t = psum_k Σ_{i∈k} e^{z_i - c}(z_i - c)`` (the shift ``c`` as in :func:`shard_log_normaliser`)."""
    c, log_s, t_over_s = _shard_stats(z, vocab_axis, implementation, mesh_axes, with_t=True)
    return c, log_s, log_s - t_over_s


def shard_label_logit(z, labels, m, vocab_axis: str):
    """``psum_k [y ∈ k](z_y - m)``, shape ``[..., 1]``: the label's centred logit, from the device that
    holds its class (NaN for a label outside ``[0, V)``)."""
    n = z.shape[-1]
    idx = labels - offset(vocab_axis, n).astype(labels.dtype)
    held = (idx >= 0) & (idx < n)
    picked = _st._up(jnp.take_along_axis(z, jnp.clip(idx, 0, n - 1)[..., None], axis=-1))
    return from_holder(picked - m, held[..., None], vocab_axis)


def shard_cross_entropy_with_integer_labels(z, labels, vocab_axis: str, implementation: str | None = None,
                                            mesh_axes: tuple[str, ...] = ()):
    """``(NLL, c, log s)`` per token (shapes ``[...]``) from this device's slice of the logits, shifted
    by the label's own logit ``c = z_y`` (a ``psum`` from the device holding it) as the unsharded
    function is — ``NLL = log s``, one pass — or by the row maximum where that overflows."""
    picked = shard_label_logit(z, labels, jnp.zeros((), compute_dtype(z.dtype)), vocab_axis)
    c, log_s = _shard_stats(z, vocab_axis, implementation, mesh_axes, with_t=False, guess=picked)
    loss = log_s - (picked - c)
    return loss[..., 0], c[..., 0], log_s[..., 0]


def shard_softmax_grad(z, labels, m, log_s, g, vocab_axis: str):
    """This slice's ``g (softmax(z) - onehot(y))`` (``labels=None``: ``g softmax(z)``); no collective."""
    p, _ = _st._softmax(_st._up(z), m[..., None], log_s[..., None])
    if labels is not None:
        cols = lax.broadcasted_iota(labels.dtype, z.shape, z.ndim - 1) + offset(vocab_axis, z.shape[-1]).astype(
            labels.dtype)
        p = p - (cols == labels[..., None])
    return (g[..., None] * p).astype(z.dtype)


def shard_linear_cross_entropy(h, w, labels, vocab_axis: str, blocks: tuple[int, int]):
    """``(loss, m, log s)`` per token of the linear head from this device's columns ``w`` of ``W``:
    per-device ``(m_k, s_k)`` streamed tile by tile, then ``m = pmax m_k``,
    ``s = psum s_k e^{m_k - m}`` (the partition rule S1)."""
    m_k, s_k = _lce._statistics(h, w, blocks)
    m = shift_across(lax.pmax, m_k, vocab_axis)
    log_s = jnp.log(lax.psum(s_k * jnp.exp(m_k - m), vocab_axis))
    n = w.shape[1]
    idx = labels - offset(vocab_axis, n).astype(labels.dtype)
    held = (idx >= 0) & (idx < n)
    picked = _lce._label_logits(h, w, jnp.clip(idx, 0, n - 1))
    return log_s - from_holder(picked - m, held, vocab_axis), m, log_s


def shard_linear_backward(h, w, labels, m, log_s, g, vocab_axis: str, blocks: tuple[int, int]):
    """``(∂h, ∂W_k)`` on this device: ``∂h = psum_k G_k W_kᵀ`` (in float32, then ``h``'s dtype) and
    this device's columns of ``∂W``."""
    local = labels - offset(vocab_axis, w.shape[1]).astype(labels.dtype)  # no local column if not held
    dh, dw = _lce._backward(h, w, local, m, log_s, g, blocks)
    return lax.psum(dh, vocab_axis).astype(h.dtype), dw


def shard_linear_total(h, w, labels, counted, vocab_axis: str, blocks: tuple[int, int]):
    """``(Σ_n [counted_n] ℓ_n, ∂h, ∂W_k)`` of the summed loss on this device (``counted``: a boolean
    per token), the gradients formed in the same pass over chunks of whole (local) rows: each chunk's
    ``(m, s)`` and label logit combined with a ``pmax`` and two ``psum``, ``∂h = psum_k G_k W_kᵀ``
    once at the end, ``∂W_k`` local."""
    local = labels - offset(vocab_axis, w.shape[1]).astype(labels.dtype)  # no local column if not held
    return _lce._total_and_gradients(h, w, local, counted, blocks, vocab_axis)


# ----------------------------------------------------------------------------- log-sum-exp


def sharded_logsumexp(logits: Float[Array, "*batch V"], *, mesh: Mesh, vocab_axis: str,
                      batch_axis: str | None = None, implementation: str | None = None
                      ) -> Float[Array, "*batch"]:
    r"""``log Σ_i e^{z_i}`` over the last axis of logits sharded over ``vocab_axis``.

    .. math:: \operatorname{lse}(z) = c + \log\operatorname{psum}_k\sum_{i\in k} e^{z_i - c},
              \quad c \le \operatorname{pmax}_k \max_{i \in k} z_i

    (``c`` the guess of :func:`shard_log_normaliser`: one pass over each slice.)

    Args:
      logits: shape ``(*batch, V)``.
      mesh: the device mesh.
      vocab_axis: mesh axis sharding the classes (``V`` divisible by its size).
      batch_axis: optional mesh axis sharding the first axis.
      implementation: the local reductions' implementation (``"blocked"``, ``"fused"`` or None).

    Returns:
      shape ``(*batch,)``, sharded over ``batch_axis`` (replicated over ``vocab_axis``).
    """
    z, layout = _logits_args("sharded_logsumexp", logits, mesh, vocab_axis, batch_axis, implementation)
    return _lse_vjp(z, layout, implementation)


def _lse_stats(z, layout, implementation):
    def body(zl):
        m, log_s = shard_log_normaliser(zl, layout.vocab_axis, implementation, layout.mesh_axes)
        return m[..., 0], log_s[..., 0]

    return layout.map(body, (layout.logits,), (layout.tokens,) * 2)(z)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _lse_vjp(z, layout, implementation):
    m, log_s = _lse_stats(z, layout, implementation)
    return m + log_s


def _lse_fwd(z, layout, implementation):
    m, log_s = _lse_stats(z, layout, implementation)
    return m + log_s, (z, m, log_s)


def _lse_bwd(layout, implementation, res, g):
    z, m, log_s = res
    body = functools.partial(shard_softmax_grad, labels=None, vocab_axis=layout.vocab_axis)
    return (layout.map(lambda zl, m, ls, g: body(zl, m=m, log_s=ls, g=g), (layout.logits,) + (layout.tokens,) * 3,
                       layout.logits)(z, m, log_s, g),)


_lse_vjp.defvjp(_lse_fwd, _lse_bwd)


# ----------------------------------------------------------------------------- entropy


def sharded_entropy_from_logits(logits: Float[Array, "*batch V"], *, mesh: Mesh, vocab_axis: str,
                                batch_axis: str | None = None, implementation: str | None = None
                                ) -> Float[Array, "*batch"]:
    r"""Entropy of ``softmax(logits)`` for logits sharded over ``vocab_axis``.

    .. math:: H = \log s - t/s,\quad s = \operatorname{psum}_k \sum_{i\in k} e^{z_i - c},\quad
              t = \operatorname{psum}_k \sum_{i\in k} e^{z_i - c}(z_i - c)

    (``c`` the shift of :func:`shard_log_normaliser`.)

    Arguments and result as in :func:`sharded_logsumexp`; equal to
    :func:`vfe.streaming.entropy_from_logits` of the gathered logits. Gradient
    ``-p_i(\log p_i + H)``, computed on each slice.
    """
    z, layout = _logits_args("sharded_entropy_from_logits", logits, mesh, vocab_axis, batch_axis,
                             implementation)
    return _entropy_vjp(z, layout, implementation)


def _entropy_stats(z, layout, implementation):
    def body(zl):
        return tuple(x[..., 0] for x in shard_entropy(zl, layout.vocab_axis, implementation, layout.mesh_axes))

    return layout.map(body, (layout.logits,), (layout.tokens,) * 3)(z)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _entropy_vjp(z, layout, implementation):
    return _entropy_stats(z, layout, implementation)[2]


def _entropy_fwd(z, layout, implementation):
    m, log_s, h = _entropy_stats(z, layout, implementation)
    return h, (z, m, log_s, h)


def _entropy_bwd(layout, implementation, res, g):
    z, m, log_s, h = res

    def body(zl, m, log_s, h, g):
        p, log_p = _st._softmax(_st._up(zl), m[..., None], log_s[..., None])
        return (-g[..., None] * p * (jnp.maximum(log_p, -_st._CUT) + h[..., None])).astype(zl.dtype)

    return (layout.map(body, (layout.logits,) + (layout.tokens,) * 4, layout.logits)(z, m, log_s, h, g),)


_entropy_vjp.defvjp(_entropy_fwd, _entropy_bwd)


# ----------------------------------------------------------------------------- soft labels


def sharded_cross_entropy_from_logits(p: Float[Array, "*batch V"], logits: Float[Array, "*batch V"], *,
                                      mesh: Mesh, vocab_axis: str, batch_axis: str | None = None,
                                      implementation: str | None = None) -> Float[Array, "*batch"]:
    r"""Cross-entropy ``H(p, softmax(z))`` of soft targets, both sharded alike over ``vocab_axis``.

    .. math:: H(p, q) = \sum_i p_i\big(\log s - (z_i - c)\big),\qquad
              s = \operatorname{psum}_k \sum_{i\in k} e^{z_i - c},\quad \text{the outer sum a } \operatorname{psum}_k

    The passes of :func:`vfe.streaming.cross_entropy_from_logits` on each device's slices, every
    row statistic completed by a ``pmax``/``psum``; ``+inf`` where ``p`` puts mass on a masked
    logit. The gradients (``(Σp) q - p`` and ``-log q``) are computed on each slice.

    Args:
      p: target probabilities, shape ``(*batch, V)``, sharded like the logits.
      logits: model logits, same shape.
      mesh: the device mesh.
      vocab_axis: mesh axis sharding the classes.
      batch_axis: optional mesh axis sharding the first axis.
      implementation: the local reductions' implementation (``"blocked"``, ``"fused"`` or None).

    Returns:
      cross-entropy per token, shape ``(*batch,)``.
    """
    func = "sharded_cross_entropy_from_logits"
    z, layout = _logits_args(func, logits, mesh, vocab_axis, batch_axis, implementation)
    p = _checks.floating(func, "p", p)
    _checks.same_shape(func, ("p", "logits"), p, z)
    return _soft_ce_vjp(p, z, layout, implementation)


def _soft_ce_stats(p, z, layout, implementation, with_mass):
    def body(pl, zl):
        value, stats = _st._soft_ce_forward(layout.stream((zl, pl), implementation), with_mass)
        return value, tuple(x[..., 0] for x in stats)

    stats = (layout.tokens,) * (3 if with_mass else 2)
    return layout.map(body, (layout.logits,) * 2, (layout.tokens, stats))(p, z)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _soft_ce_vjp(p, z, layout, implementation):
    return _soft_ce_stats(p, z, layout, implementation, with_mass=False)[0]


def _soft_ce_fwd(p, z, layout, implementation):
    value, stats = _soft_ce_stats(p, z, layout, implementation, with_mass=True)
    return value, (p, z, *stats)


def _soft_ce_bwd(layout, implementation, res, g):
    def body(pl, zl, m, log_s, mass, g):
        return _st._soft_ce_bwd(None, (pl, zl, m[..., None], log_s[..., None], mass[..., None]), g)

    return layout.map(body, (layout.logits,) * 2 + (layout.tokens,) * 4, (layout.logits,) * 2)(*res, g)


_soft_ce_vjp.defvjp(_soft_ce_fwd, _soft_ce_bwd)


# ----------------------------------------------------------------------------- log Z and F


def sharded_log_partition(energies: Float[Array, "*batch V"], beta, *, mesh: Mesh, vocab_axis: str,
                          batch_axis: str | None = None, implementation: str | None = None
                          ) -> Float[Array, "*batch"]:
    r"""``log Z(β) = log Σ_i e^{-β E_i}`` for energies sharded over ``vocab_axis``.

    .. math:: \log Z = \beta m + \log\operatorname{psum}_k \sum_{i\in k} e^{\beta(z_i - m)},\quad
              z = -E,\ m = \operatorname{pmax}_k \max_{i\in k} z_i

    Equal to :func:`vfe.streaming.log_partition` of the gathered energies; ``beta`` (``≥ 0``, a
    scalar or one per token) is checked as there. Gradients ``-βp`` (on each slice) and ``-⟨E⟩``
    (one more ``psum``).

    Args:
      energies: shape ``(*batch, V)``, states sharded over ``vocab_axis``; ``+inf`` forbidden.
      beta: ``β ≥ 0``, scalar or broadcastable to ``(*batch,)``.
      mesh, vocab_axis, batch_axis, implementation: as in :func:`sharded_logsumexp`.

    Returns:
      ``log Z`` per token, shape ``(*batch,)``.
    """
    return _thermo("sharded_log_partition", energies, "beta", beta, _st.BETA, mesh, vocab_axis, batch_axis,
                   implementation)


def sharded_helmholtz_free_energy(energies: Float[Array, "*batch V"], temperature, *, mesh: Mesh,
                                  vocab_axis: str, batch_axis: str | None = None,
                                  implementation: str | None = None) -> Float[Array, "*batch"]:
    r"""Helmholtz free energy ``F = -T log Σ_i e^{-E_i/T}`` for energies sharded over ``vocab_axis``.

    .. math:: F = -\Big(m + T\log\operatorname{psum}_k \sum_{i\in k} e^{(z_i - m)/T}\Big)

    Equal to :func:`vfe.streaming.helmholtz_free_energy` of the gathered energies (``T > 0``, a
    scalar or one per token). Gradients ``p`` (on each slice) and ``-H(p)`` (one more ``psum``).

    Args:
      energies: shape ``(*batch, V)``, states sharded over ``vocab_axis``; ``+inf`` forbidden.
      temperature: ``T > 0``, scalar or broadcastable to ``(*batch,)``.
      mesh, vocab_axis, batch_axis, implementation: as in :func:`sharded_logsumexp`.

    Returns:
      ``F`` per token, shape ``(*batch,)``.
    """
    return _thermo("sharded_helmholtz_free_energy", energies, "temperature", temperature, _st.TEMPERATURE, mesh,
                   vocab_axis, batch_axis, implementation)


def _thermo(func, energies, name, scale, kind, mesh, vocab_axis, batch_axis, implementation):
    e, layout = _logits_args(func, energies, mesh, vocab_axis, batch_axis, implementation, name="energies")
    batch = e.shape[:-1]
    scale = _checks.positive_scale(func, name, scale, batch, allow_zero=kind == _st.BETA)
    scale = jnp.broadcast_to(jnp.asarray(scale, compute_dtype(e.dtype)), batch)
    return _thermo_vjp(e, scale, layout, kind, implementation)


def _thermo_stats(e, scale, layout, kind, implementation):
    def body(el, k):
        value, stats = _st._thermo_forward(layout.stream((el,), implementation), k[..., None], kind)
        return value, tuple(x[..., 0] for x in stats)

    return layout.map(body, (layout.logits, layout.tokens), (layout.tokens, (layout.tokens,) * 2))(e, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _thermo_vjp(e, scale, layout, kind, implementation):
    return _thermo_stats(e, scale, layout, kind, implementation)[0]


def _thermo_fwd(e, scale, layout, kind, implementation):
    value, (m, log_s) = _thermo_stats(e, scale, layout, kind, implementation)
    return value, (e, scale, m, log_s)


def _thermo_bwd(layout, kind, implementation, res, g):
    def body(el, k, m, log_s, g):
        stream = layout.stream((el,), implementation)
        return _st._thermo_backward(el, stream, k, m[..., None], log_s[..., None], g, kind)

    specs = (layout.logits,) + (layout.tokens,) * 4
    return layout.map(body, specs, (layout.logits, layout.tokens))(*res, g)


_thermo_vjp.defvjp(_thermo_fwd, _thermo_bwd)


# ----------------------------------------------------------------------------- KL divergence


def sharded_kl_divergence_from_logits(p_logits: Float[Array, "*batch V"], q_logits: Float[Array, "*batch V"], *,
                                      mesh: Mesh, vocab_axis: str, batch_axis: str | None = None,
                                      formula: str = "accurate", implementation: str | None = None
                                      ) -> Float[Array, "*batch"]:
    r"""``KL(softmax(a) ‖ softmax(b))`` for two logit tensors sharded alike over ``vocab_axis``.

    The passes of :func:`vfe.streaming.kl_divergence_from_logits` (either ``formula``) on each
    device's slices, every row statistic completed by a ``pmax`` or ``psum`` (a few scalars per token
    and pass), the branch of each :func:`jax.lax.cond` agreed by all devices. For the default,
    cancellation-free formula, e.g.

    .. math:: \mathrm{KL} = S e^{-t} - \varphi(-t),\qquad
              S = \operatorname{psum}_k \sum_{i\in k} q_i\,\psi(x_i), \ \dots

    The gradients (``p_i(\log p_i - \log q_i - KL)`` and ``q_i - p_i``) are computed on each slice.

    Args:
      p_logits: logits ``a`` of the first distribution, shape ``(*batch, V)``.
      q_logits: logits ``b`` of the second distribution, same shape and sharding.
      mesh: the device mesh.
      vocab_axis: mesh axis sharding the classes.
      batch_axis: optional mesh axis sharding the first axis.
      formula: ``"accurate"`` or ``"direct"`` (see :func:`vfe.streaming.kl_divergence_from_logits`).
      implementation: the local reductions' implementation (``"blocked"``, ``"fused"`` or None).

    Returns:
      ``KL(p‖q)`` per token, shape ``(*batch,)``.
    """
    func = "sharded_kl_divergence_from_logits"
    a, layout = _logits_args(func, p_logits, mesh, vocab_axis, batch_axis, implementation, name="p_logits")
    b = _checks.floating(func, "q_logits", q_logits)
    _checks.same_shape(func, ("p_logits", "q_logits"), a, b)
    _checks.one_of(func, "formula", formula, _st.KL_FORMULAS)
    return _kl_vjp(a, b, layout, formula, implementation)


def _kl_stats(a, b, layout, formula, implementation):
    """``(KL, statistics)`` per token, the statistics (:class:`vfe.streaming._KLStats`) squeezed to ``[...]``."""
    def body(al, bl):
        value, stats = _st._KL_FORWARD[formula](layout.stream((al, bl), implementation))
        return value, tuple(x[..., 0] for x in stats)

    stats = (layout.tokens,) * len(_st._KLStats._fields)
    value, stats = layout.map(body, (layout.logits,) * 2, (layout.tokens, stats))(a, b)
    return value, _st._KLStats(*stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _kl_vjp(a, b, layout, formula, implementation):
    return _kl_stats(a, b, layout, formula, implementation)[0]


def _kl_fwd(a, b, layout, formula, implementation):
    value, stats = _kl_stats(a, b, layout, formula, implementation)
    return value, (a, b, value, stats)


def _kl_bwd(layout, formula, implementation, res, g):
    a, b, value, stats = res

    def body(al, bl, value, g, *stats):
        local = _st._KLStats(*(x[..., None] for x in stats))
        return _st._kl_bwd(None, formula, (al, bl, value, local), g)

    specs = (layout.logits,) * 2 + (layout.tokens,) * (2 + len(stats))  # value, g and the statistics
    return layout.map(body, specs, (layout.logits,) * 2)(a, b, value, g, *stats)


_kl_vjp.defvjp(_kl_fwd, _kl_bwd)


# ----------------------------------------------------------------------------- integer labels


def sharded_cross_entropy_with_integer_labels(logits: Float[Array, "*batch V"], labels: Int[Array, "*batch"], *,
                                              mesh: Mesh, vocab_axis: str, batch_axis: str | None = None,
                                              implementation: str | None = None) -> Float[Array, "*batch"]:
    r"""Negative log-likelihood of integer labels for logits sharded over ``vocab_axis``.

    .. math:: -\log\mathrm{softmax}(z)_y = \log\operatorname{psum}_k\sum_{i\in k} e^{z_i - z_y}, \quad
              z_y = \operatorname{psum}_k [\,y \in k\,]\,z_y

    One pass over each slice, shifted by the label's logit as
    :func:`vfe.streaming.cross_entropy_with_integer_labels` is (by the row maximum, a second pass,
    where that overflows). The gradient ``softmax(z) - onehot(y)`` is computed on each slice; nothing is gathered.

    Args:
      logits: shape ``(*batch, V)``, classes sharded over ``vocab_axis``.
      labels: integer classes in ``[0, V)``, shape ``(*batch,)`` (not range-checked under ``jit``: an
        out-of-range label, held by no device, gives NaN as unsharded).
      mesh: the device mesh.
      vocab_axis: mesh axis sharding the classes.
      batch_axis: optional mesh axis sharding the first axis.
      implementation: the local reductions' implementation (``"blocked"``, ``"fused"`` or None).

    Returns:
      NLL per token, shape ``(*batch,)``.
    """
    func = "sharded_cross_entropy_with_integer_labels"
    z, layout = _logits_args(func, logits, mesh, vocab_axis, batch_axis, implementation)
    labels = _checks.integer(func, "labels", labels)
    if labels.shape != z.shape[:-1]:
        raise ValueError(f"{func}: argument `labels` must have shape {z.shape[:-1]}, got {labels.shape}")
    return _nll_vjp(z, labels, layout, implementation)


def _nll_stats(z, labels, layout, implementation):
    def body(zl, y):
        return shard_cross_entropy_with_integer_labels(zl, y, layout.vocab_axis, implementation, layout.mesh_axes)

    return layout.map(body, (layout.logits, layout.tokens), (layout.tokens,) * 3)(z, labels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _nll_vjp(z, labels, layout, implementation):
    return _nll_stats(z, labels, layout, implementation)[0]


def _nll_fwd(z, labels, layout, implementation):
    loss, m, log_s = _nll_stats(z, labels, layout, implementation)
    return loss, (z, labels, m, log_s)


def _nll_bwd(layout, implementation, res, g):
    z, labels, m, log_s = res

    def body(zl, y, m, log_s, g):
        return shard_softmax_grad(zl, y, m, log_s, g, layout.vocab_axis)

    return layout.map(body, (layout.logits,) + (layout.tokens,) * 4, layout.logits)(z, labels, m, log_s, g), None


_nll_vjp.defvjp(_nll_fwd, _nll_bwd)


# ----------------------------------------------------------------------------- linear head


def sharded_linear_cross_entropy(hidden: Float[Array, "N d"], weight: Float[Array, "d V"],
                                 labels: Int[Array, "N"],  # noqa: F821, UP037 (a jaxtyping dimension, not a name)
                                 *, mesh: Mesh, vocab_axis: str, batch_axis: str | None = None,
                                 where: Bool[Array, "N"] | None = None,  # noqa: F821
                                 reduction: str = "none", block_tokens: int | None = None,
                                 block_vocab: int | None = None
                                 ) -> Float[Array, "N"] | Float[Array, ""]:  # noqa: F821, UP037
    r""":func:`vfe.linear_cross_entropy.linear_cross_entropy` with the weights' columns sharded over ``vocab_axis``.

    Each device streams its ``V / P`` columns tile by tile (memory one tile), the per-token
    ``(m, s)`` combine with a ``pmax`` and a ``psum``, and the label's logit comes from the device
    that holds its column. Backward: ``∂W`` is computed where its columns live; ``∂h`` is the
    ``psum`` over ``vocab_axis`` of the per-slice ``G_k W_kᵀ`` (and ``∂W`` is summed over
    ``batch_axis`` when the tokens are sharded).

    With ``reduction="sum"`` or ``"mean"`` the gradients are formed in the forward pass, as in the
    unsharded function: each device takes its tokens in chunks of ``block_tokens · block_vocab / (V/P)``
    whole local rows, and every chunk's statistics are combined across ``vocab_axis`` before its
    gradients (a ``pmax`` and two ``psum`` of per-token vectors per chunk, one ``psum`` of ``∂h`` at
    the end; never the logits).

    Args:
      hidden: ``h``, shape ``(N, d)`` (tokens sharded over ``batch_axis`` if given).
      weight: ``W``, shape ``(d, V)``, columns sharded over ``vocab_axis``.
      labels: integer classes in ``[0, V)``, shape ``(N,)`` (an out-of-range label gives NaN, as unsharded).
      mesh: the device mesh.
      vocab_axis: mesh axis sharding the classes.
      batch_axis: optional mesh axis sharding the tokens.
      where: optional boolean mask of the tokens that count, shape ``(N,)`` (as in the unsharded
        function: an uncounted token has loss 0 and no gradient, whatever its label).
      reduction: ``"none"`` (per-token losses), ``"sum"`` or ``"mean"`` over the (counted) tokens.
      block_tokens: rows per tile (default as the unsharded function).
      block_vocab: columns per tile (default as the unsharded function, at most ``V / P``).

    Returns:
      the loss per token, shape ``(N,)``, or its sum or mean (shape ``()``, replicated).
    """
    func = "sharded_linear_cross_entropy"
    h = _checks.floating(func, "hidden", hidden)
    w = _checks.floating(func, "weight", weight)
    y = _checks.integer(func, "labels", labels)
    if h.ndim != 2 or w.ndim != 2 or h.shape[1] != w.shape[0] or y.shape != h.shape[:1]:
        raise ValueError(f"{func}: expected hidden (N, d), weight (d, V), labels (N,), got {h.shape}, {w.shape}, "
                         f"{y.shape}")
    _checks.class_axis(func, "weight", w, 1)
    _checks.one_of(func, "reduction", reduction, _lce.REDUCTIONS)
    counted = _checks.mask(func, where, y.shape, "`labels`")
    _check_mesh(func, mesh, vocab_axis, batch_axis, w.shape[1], h.shape[0])
    local_tokens = h.shape[0] // (mesh.shape[batch_axis] if batch_axis else 1)
    local_vocab = w.shape[1] // mesh.shape[vocab_axis]
    blocks = (_lce._block(func, "block_tokens", block_tokens, _lce.BLOCK_TOKENS, max(local_tokens, 1)),
              _lce._block(func, "block_vocab", block_vocab, _lce.BLOCK_VOCAB, local_vocab))
    if h.shape[0] == 0:  # no token: no loss (and a sum or mean of none is 0)
        return jnp.zeros(y.shape if reduction == "none" else (), compute_dtype(jnp.result_type(h, w)))
    layout = _Layout(mesh, vocab_axis, batch_axis, 2)
    y = _lce.counted_labels(y, counted)
    if reduction == "none":
        loss = _linear_vjp(h, w, y, layout, blocks)
        return loss if counted is None else jnp.where(counted, loss, 0.0)
    counted = jnp.ones(y.shape, bool) if counted is None else counted
    budget = _lce.chunk_budget(func, block_tokens, block_vocab)
    total = _linear_total_vjp(h, w, y, counted, layout, (blocks, budget))
    return total / jnp.maximum(jnp.sum(counted), 1) if reduction == "mean" else total


def _linear_specs(layout):
    return P(layout.batch_axis, None), P(None, layout.vocab_axis), P(layout.batch_axis)


def _linear_stats(h, w, y, layout, blocks):
    def body(hl, wl, yl):
        return shard_linear_cross_entropy(hl, wl, yl, layout.vocab_axis, blocks)

    spec_h, spec_w, spec_t = _linear_specs(layout)
    return layout.map(body, (spec_h, spec_w, spec_t), (spec_t,) * 3)(h, w, y)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _linear_vjp(h, w, y, layout, blocks):
    return _linear_stats(h, w, y, layout, blocks)[0]


def _linear_fwd(h, w, y, layout, blocks):
    loss, m, log_s = _linear_stats(h, w, y, layout, blocks)
    return loss, (h, w, y, m, log_s)


def _linear_bwd(layout, blocks, res, g):
    h, w, y, m, log_s = res

    def body(hl, wl, yl, m, log_s, g):
        dh, dw = shard_linear_backward(hl, wl, yl, m, log_s, g, layout.vocab_axis, blocks)
        if layout.batch_axis is not None:
            dw = lax.psum(dw, layout.batch_axis)
        return dh, dw

    spec_h, spec_w, spec_t = _linear_specs(layout)
    dh, dw = layout.map(body, (spec_h, spec_w) + (spec_t,) * 4, (spec_h, spec_w))(h, w, y, m, log_s, g)
    return dh, dw, None


_linear_vjp.defvjp(_linear_fwd, _linear_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _linear_total_vjp(h, w, y, counted, layout, blocks):
    """``Σ_n [counted_n] ℓ_n``; ``blocks = (tiles, budget)``: the tiles of the per-token forward pass
    (no gradient wanted) and the chunk budget of the pass that forms the gradients."""
    return jnp.sum(jnp.where(counted, _linear_stats(h, w, y, layout, blocks[0])[0], 0.0))


def _linear_total_fwd(h, w, y, counted, layout, blocks):
    def body(hl, wl, yl, cl):
        total, dh, dw = shard_linear_total(hl, wl, yl, cl, layout.vocab_axis, blocks[1])
        if layout.batch_axis is not None:
            total, dw = lax.psum(total, layout.batch_axis), lax.psum(dw, layout.batch_axis)
        return total, dh, dw

    spec_h, spec_w, spec_t = _linear_specs(layout)
    total, dh, dw = layout.map(body, (spec_h, spec_w, spec_t, spec_t), (P(), spec_h, spec_w))(h, w, y, counted)
    return total, (dh, dw)


def _linear_total_bwd(layout, blocks, res, g):
    return _lce.scaled_gradients(res, g) + (None, None)


_linear_total_vjp.defvjp(_linear_total_fwd, _linear_total_bwd)
