"""Machinery: the reductions over large vocabularies (claims S1–S3; ``vfe.streaming``,
``vfe.linear_cross_entropy``, ``vfe.sharding``).

Not claims of the seeds: the identities that let the library read the logits block by block,
element by element, or device by device and still compute the log-normaliser of the whole row.

* S1, the partition rule: the log-sum-exp of a row is the log-sum-exp of its blocks'
  log-sum-exps, whatever the partition; and any shift, applied before the sum or after it.
* S2, the online rule: ``m' = max(m, x)``, ``s' = s e^{m - m'} + e^{x - m'}`` keeps
  ``s = Σ_{seen} e^{z_i - m}`` (and, for the entropy, ``t' = e^{m - m'}(t + (m - m')s) + e^{x - m'}(x - m')``
  keeps ``t = Σ_{seen} e^{z_i - m}(z_i - m)``).
* S3, sharded = unsharded: a max over shard maxima, a sum of per-shard sums and the label's
  logit from the shard holding it give the unsharded cross-entropy; checked by running the
  library's per-device functions on simulated devices (``jax.vmap`` with a named axis, whose
  ``pmax``/``psum`` are the collectives of ``shard_map``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import vfe
from proofs.catalogue import Claim
from vfe import linear_cross_entropy as lce
from vfe import sharding, streaming
from vfe import testing as vt
from vfe.derivation import Derivation, Step

CLAIMS = (
    Claim(
        id="S1", title="Log-sum-exp over a partition is the log-sum-exp of the partial log-sum-exps", seeds=(),
        wording="machinery of vfe.streaming (blocked reductions, the variadic one-pass reduction)",
        statement=r"For any partition $\{1..n\} = A \cup B$: "
                  r"$\mathrm{lse}(z) = \mathrm{lse}\big(\mathrm{lse}(z_A), \mathrm{lse}(z_B)\big)$, with "
                  r"$\mathrm{lse}(\emptyset) = -\infty$",
        functions=("vfe.streaming.logsumexp", "vfe.streaming.exp_sum"),
    ),
    Claim(
        id="S2", title="The online log-sum-exp update keeps the running sum exact", seeds=(),
        wording="machinery of vfe.streaming and vfe.linear_cross_entropy (online max / sum-exp)",
        statement=r"With $m_k = \max(m_{k-1}, z_k)$ and $s_k = s_{k-1}e^{m_{k-1} - m_k} + e^{z_k - m_k}$ "
                  r"($m_0 = -\infty$, $s_0 = 0$): $m_k + \log s_k = \mathrm{lse}(z_1, \dots, z_k)$ for every $k$; "
                  r"likewise $t_k = e^{m_{k-1} - m_k}\big(t_{k-1} + (m_{k-1} - m_k)s_{k-1}\big) + e^{z_k - m_k}(z_k - m_k)$ "
                  r"gives $H(\mathrm{softmax}(z_{1..k})) = \log s_k - t_k/s_k$",
        functions=("vfe.streaming.logsumexp", "vfe.streaming.entropy_from_logits",
                   "vfe.linear_cross_entropy.linear_cross_entropy"),
    ),
    Claim(
        id="S3", title="Vocabulary-sharded cross-entropy equals the unsharded one", seeds=(),
        wording="machinery of vfe.sharding (pmax / psum over the vocabulary axis, no gather)",
        statement=r"For shards $k = 1..P$ of the classes: $\mathrm{lse}(z) - z_y = "
                  r"\log\sum_k\sum_{i \in k} e^{z_i - m} - \sum_k [y \in k](z_y - m)$ with "
                  r"$m = \max_k \max_{i\in k} z_i$ (or any shift common to the shards, such as $z_y$)",
        functions=("vfe.sharding.sharded_cross_entropy_with_integer_labels",
                   "vfe.sharding.sharded_linear_cross_entropy", "vfe.sharding.sharded_kl_divergence_from_logits"),
    ),
)

_N = 12  # classes per example: blocks of 3, 4 and 6, shards of 3 and 4 divide it
_LOGITS = vt.logits(sizes=(_N,))


# ----------------------------------------------------------------------------- S1: partition


def _lse_where(z, keep):
    """``lse`` of the entries of ``z`` where ``keep`` (``-inf`` for none): jax.nn.logsumexp."""
    return jax.nn.logsumexp(jnp.where(keep, z, -jnp.inf))


def _split(z, k):
    """``(lse(z_A), lse(z_B))`` for ``A = {i < k}``, ``B = {i ≥ k}``."""
    first = jnp.arange(z.shape[-1]) < k
    return _lse_where(z, first), _lse_where(z, ~first)


def _blocks_by_combine(z, block):
    """``m + log s`` from the blocks' ``(m_b, s_b)``, merged with the library's online rule."""
    zb = z.reshape(-1, block)
    m_b = jnp.maximum(jnp.max(zb, axis=-1), jnp.finfo(z.dtype).min)
    s_b = jnp.sum(jnp.exp(zb - m_b[:, None]), axis=-1)
    m, s = m_b[0], s_b[0]
    for i in range(1, zb.shape[0]):
        m, s = streaming._combine((m, s), (m_b[i], s_b[i]))
    return m + jnp.log(s)


def _two_term_lse(a, b):
    top = jnp.maximum(a, b)
    return top + jnp.log(jnp.exp(a - top) + jnp.exp(b - top))


S1 = Derivation(
    claim="S1",
    title="Log-sum-exp over a partition is the log-sum-exp of the partial log-sum-exps",
    statement=r"\mathrm{lse}(z) = \mathrm{lse}\big(\mathrm{lse}(z_A), \mathrm{lse}(z_B)\big),\quad "
              r"A = \{i < k\},\ B = \{i \ge k\}",
    inputs=st.fixed_dictionaries({"z": _LOGITS, "k": st.integers(0, _N)}),
    steps=[
        Step(r"\log\sum_{i=1}^{n} e^{z_i}", r"definition, written $m + \log\sum_i e^{z_i - m}$ with $m = \max_i z_i$",
             lambda z, k: jnp.max(z) + jnp.log(jnp.sum(jnp.exp(z - jnp.max(z))))),
        Step(r"\log\Big(\sum_{i \in A} e^{z_i} + \sum_{i \in B} e^{z_i}\Big)",
             r"$A$ and $B$ partition the classes: split the sum",
             lambda z, k: jnp.max(z) + jnp.log(jnp.sum(jnp.where(jnp.arange(_N) < k, jnp.exp(z - jnp.max(z)), 0.0))
                                               + jnp.sum(jnp.where(jnp.arange(_N) >= k, jnp.exp(z - jnp.max(z)), 0.0)))),
        Step(r"\log\big(e^{\mathrm{lse}(z_A)} + e^{\mathrm{lse}(z_B)}\big)",
             r"each block's sum is $e^{\mathrm{lse}}$ of the block (an empty block has $\mathrm{lse} = -\infty$, "
             r"sum 0); jax.nn.logsumexp per block",
             lambda z, k: _two_term_lse(*_split(z, k))),
        Step(r"\mathrm{lse}\big(\mathrm{lse}(z_A), \mathrm{lse}(z_B)\big)",
             "definition of lse on the two partial values; vfe.streaming.logsumexp",
             lambda z, k: streaming.logsumexp(jnp.stack(_split(z, k)))),
        Step(r"m + \log s,\ (m, s) = \bigoplus_b (m_b, s_b)",
             r"the same rule on blocks of 4 classes: each block's $(m_b, s_b)$, merged by the library's "
             r"combine (vfe.streaming._combine, as in the one-pass reduction and in vfe.sharding)",
             lambda z, k: _blocks_by_combine(z, 4)),
        Step(r"\mathrm{lse}(z)",
             "vfe.streaming.logsumexp, one-pass (a variadic reduction merging (m, s) pairs with that rule)",
             lambda z, k: streaming.logsumexp(z, implementation="onepass")),
    ],
)


def _library_rescaled(z):
    """``c + log s`` from :func:`vfe.streaming.exp_sum` on blocked rows of 4 classes, the library's guess."""
    rows = z[None]
    c, s = streaming.exp_sum(streaming.Stream((rows,), streaming.Rows("blocked", 4)), streaming.shift_guess(rows))
    return (c + jnp.log(s))[0, 0]


S1_RESCALED = Derivation(
    claim="S1",
    title="The log-normaliser from the unshifted sum of exponentials, rescaled by any shift",
    statement=r"\mathrm{lse}(z) = c + \log\Big(e^{-c}\sum_i e^{z_i}\Big)\quad\text{for every finite } c",
    inputs=st.fixed_dictionaries({"z": vt.logits(sizes=(_N,), min_value=-300.0, max_value=300.0),
                                  "c": st.floats(-300.0, 300.0)}),
    steps=[
        Step(r"\log\sum_i e^{z_i}", "definition; jax.nn.logsumexp", lambda z, c: jax.nn.logsumexp(z)),
        Step(r"c + \log\sum_i e^{z_i - c}", r"$e^{z_i} = e^{c}\,e^{z_i - c}$: any finite shift $c$",
             lambda z, c: c + jnp.log(jnp.sum(jnp.exp(z - c)))),
        Step(r"c + \log\Big(e^{-c}\sum_i e^{z_i}\Big)",
             r"$e^{z_i - c} = e^{z_i} e^{-c}$: the sum taken unshifted (one operation per class fewer), then "
             r"rescaled once (finite for logits in $[-300, 300]$ in float64)",
             lambda z, c: c + jnp.log(jnp.sum(jnp.exp(z)) * jnp.exp(-c))),
        Step(r"c + \log s,\ (c, s) = \texttt{exp\_sum}(z)",
             "vfe.streaming.exp_sum on blocked rows (the unshifted sum rescaled by the library's guess where every "
             "guess lies in its window, else the shifted sum)",
             lambda z, c: _library_rescaled(z)),
    ],
)


# ----------------------------------------------------------------------------- S2: online update


def _prefixes(z):
    """``[n, n]``: row ``k`` is ``z`` with the entries after ``k`` masked."""
    n = z.shape[-1]
    return jnp.where(jnp.arange(n)[None, :] <= jnp.arange(n)[:, None], z[None, :], -jnp.inf)


def _exp_or_zero(x, top):
    """``e^{x - top}``, and 0 for ``x = -inf`` (also when ``top = -inf``)."""
    return jnp.where(jnp.isneginf(x), 0.0, jnp.exp(x - jnp.where(jnp.isneginf(top), 0.0, top)))


def _rescale(m_old, m_new):
    """``e^{m_old - m_new}`` with ``e^{-∞ - (-∞)} := 1`` (nothing seen yet: ``s = 0`` anyway)."""
    return jnp.exp(jnp.where(m_old == m_new, 0.0, m_old - m_new))


def online(z, *, rescale=True):
    """``(m_k, s_k, t_k)`` for ``k = 1..n`` by the online rule (``rescale=False``: a planted error)."""
    def step(carry, x):
        m, s, t = carry
        m_new = jnp.maximum(m, x)
        r = _rescale(m, m_new) if rescale else 1.0
        gap = jnp.where(m_new == m, 0.0, m - m_new)  # m - m' (0 while nothing is seen)
        e = _exp_or_zero(x, m_new)
        d = jnp.where(jnp.isneginf(x), 0.0, x - m_new)
        s_new = s * r + e
        t_new = jnp.where(s == 0, 0.0, r * (t + gap * s)) + e * d  # nothing seen yet: no old terms
        return (m_new, s_new, t_new), (m_new, s_new, t_new)

    zero = jnp.zeros((), z.dtype)
    return jax.lax.scan(step, (jnp.full((), -jnp.inf, z.dtype), zero, zero), z)[1]


def _online_lse(z, **kw):
    m, s, _ = online(z, **kw)
    return m + jnp.log(s)


def _library_online_lse(z):
    """The library's combine applied element by element (each element a block ``(max(z_i, floor), e^{z_i - m_i})``)."""
    m0 = jnp.maximum(z, jnp.finfo(z.dtype).min)
    s0 = jnp.exp(z - m0)

    def step(carry, x):
        out = streaming._combine(carry, x)
        return out, out

    init = (jnp.finfo(z.dtype).min * jnp.ones((), z.dtype), jnp.zeros((), z.dtype))
    m, s = jax.lax.scan(step, init, (m0, s0))[1]
    return m + jnp.log(s)


S2 = Derivation(
    claim="S2",
    title="The online log-sum-exp update keeps the running sum exact",
    statement=r"m_k = \max(m_{k-1}, z_k),\ s_k = s_{k-1}e^{m_{k-1} - m_k} + e^{z_k - m_k} \implies "
              r"m_k + \log s_k = \mathrm{lse}(z_1, \dots, z_k)\ \ (k = 1..n)",
    variables={"z": _LOGITS},
    steps=[
        Step(r"\mathrm{lse}(z_1, \dots, z_k)_{k=1..n}", "definition, for every prefix; jax.nn.logsumexp",
             lambda z: jax.nn.logsumexp(_prefixes(z), axis=-1)),
        Step(r"m_k + \log\sum_{i \le k} e^{z_i - m_k},\ m_k = \max_{i\le k} z_i",
             r"shift each prefix by its maximum (exact); $-\infty$ while only masked entries are seen",
             lambda z: jnp.max(_prefixes(z), axis=-1)
             + jnp.log(jnp.sum(_exp_or_zero(_prefixes(z), jnp.max(_prefixes(z), axis=-1, keepdims=True)), axis=-1))),
        Step(r"m_k + \log s_k,\ s_k = s_{k-1}e^{m_{k-1} - m_k} + e^{z_k - m_k}",
             r"induction: if $s_{k-1} = \sum_{i<k} e^{z_i - m_{k-1}}$ then "
             r"$s_{k-1}e^{m_{k-1} - m_k} = \sum_{i<k} e^{z_i - m_k}$; add the new term",
             lambda z: _online_lse(z)),
        Step(r"m_k + \log s_k\ \text{(library)}",
             "the same recursion with the library's combine rule (vfe.streaming._combine), one element at a time",
             _library_online_lse),
        Step(r"\mathrm{lse}(z_1, \dots, z_k)\ \text{(library, one pass)}",
             "vfe.streaming.logsumexp of the prefixes, one-pass (a variadic reduction merging with the rule)",
             lambda z: streaming.logsumexp(_prefixes(z), implementation="onepass")),
        Step(r"\mathrm{lse}(z_1, \dots, z_k)\ \text{(library, blocked)}",
             "vfe.streaming.logsumexp of the prefixes, blocked (the row maximum first, then one sum)",
             lambda z: streaming.logsumexp(_prefixes(z), implementation="blocked")),
    ],
)


def _unmask_first(z):
    """``z`` with its first entry set to 0 (finite)."""
    z = np.array(z)
    z[0] = 0.0
    return z


def _online_entropy(z):
    _, s, t = online(z)
    return jnp.log(s) - t / s


def _prefix_entropy_definition(z):
    logp = jax.nn.log_softmax(_prefixes(z), axis=-1)
    return -jnp.sum(jnp.where(jnp.isneginf(logp), 0.0, jnp.exp(logp) * logp), axis=-1)


S2_ENTROPY = Derivation(
    claim="S2",
    title="The online update of Σ e^{z−m}(z−m) gives the entropy of every prefix",
    statement=r"t_k = e^{m_{k-1} - m_k}\big(t_{k-1} + (m_{k-1} - m_k)s_{k-1}\big) + e^{z_k - m_k}(z_k - m_k) "
              r"\implies H(\mathrm{softmax}(z_{1..k})) = \log s_k - t_k / s_k",
    # the first entry unmasked: the entropy of an all-masked prefix is undefined
    variables={"z": _LOGITS.map(_unmask_first)},
    steps=[
        Step(r"H(\mathrm{softmax}(z_{1..k}))_{k=1..n}", r"definition $-\sum_i p_i \log p_i$ per prefix, $0\log 0 = 0$",
             _prefix_entropy_definition),
        Step(r"\log s_k - t_k / s_k", r"$\log p_i = (z_i - m_k) - \log s_k$ and $\sum_i p_i = 1$; $s_k, t_k$ by the "
             r"online rule (induction as for $s_k$: $(z_i - m_k) = (z_i - m_{k-1}) + (m_{k-1} - m_k)$)",
             _online_entropy),
        Step(r"H(\mathrm{softmax}(z_{1..k}))\ \text{(library, one pass)}",
             "vfe.streaming.entropy_from_logits of the prefixes, one-pass (the variadic reduction merges "
             "(m, s, t) with this rule)",
             lambda z: streaming.entropy_from_logits(_prefixes(z), implementation="onepass")),
        Step(r"H(\mathrm{softmax}(z_{1..k}))\ \text{(library, blocked)}",
             "vfe.streaming.entropy_from_logits of the prefixes, blocked",
             lambda z: streaming.entropy_from_logits(_prefixes(z), implementation="blocked")),
    ],
)


# ----------------------------------------------------------------------------- S3: sharded = unsharded


def _nll_definition(z, y):
    return jax.nn.logsumexp(z) - z[y]


def _shards(x, p):
    """``[P, n/P]``: the classes of each simulated device."""
    return x.reshape(p, -1)


def _by_shards(z, y, p):
    """``log Σ_k Σ_{i∈k} e^{z_i - m} - Σ_k [y∈k](z_y - m)`` written with the shard axis explicit."""
    zs = _shards(z, p)
    m = jnp.max(jnp.max(zs, axis=-1))
    held = _shards(jnp.arange(_N) == y, p)
    return jnp.log(jnp.sum(jnp.sum(jnp.exp(zs - m), axis=-1))) - jnp.sum(jnp.where(held, zs - m, 0.0))


def _simulated(z, y, p):
    """vfe.sharding's per-device function on ``p`` simulated devices (vmap with a named axis)."""
    loss = jax.vmap(lambda zl: sharding.shard_cross_entropy_with_integer_labels(zl, y, "vocab")[0],
                    axis_name="vocab")(_shards(z, p))
    return loss[0]


_LABELLED = st.fixed_dictionaries({"z": _LOGITS, "y": st.integers(0, _N - 1)})

S3 = Derivation(
    claim="S3",
    title="Vocabulary-sharded cross-entropy equals the unsharded one",
    statement=r"\mathrm{lse}(z) - z_y = \log\sum_{k=1}^{P}\sum_{i \in k} e^{z_i - m} - \sum_k [y \in k](z_y - m),"
              r"\quad m = \max_k \max_{i \in k} z_i\ \text{(or any shift common to the shards: the library takes } z_y)",
    inputs=_LABELLED,
    steps=[
        Step(r"-\log\mathrm{softmax}(z)_y = \mathrm{lse}(z) - z_y", "definition; jax.nn.logsumexp",
             _nll_definition),
        Step(r"\log\sum_{k}\sum_{i \in k} e^{z_i - m} - \sum_k [y \in k](z_y - m)",
             r"4 shards of 3 classes: the max over all classes is the max of the shard maxima (pmax), the sum "
             r"splits over the shards (psum), and exactly one shard holds $y$",
             lambda z, y: _by_shards(z, y, 4)),
        Step(r"\text{the same, from the library's per-device function, } P = 4",
             "vfe.sharding.shard_cross_entropy_with_integer_labels on 4 simulated devices "
             "(jax.vmap with axis_name: the same pmax/psum/axis_index as under shard_map)",
             lambda z, y: _simulated(z, y, 4)),
        Step(r"\text{the same, } P = 3", "… on 3 simulated devices of 4 classes", lambda z, y: _simulated(z, y, 3)),
        Step(r"-\log\mathrm{softmax}(z)_y\ \text{(unsharded library)}",
             "vfe.streaming.cross_entropy_with_integer_labels", lambda z, y: streaming.cross_entropy_with_integer_labels(z, y)),
    ],
)


_D, _TOKENS = 3, 5


@st.composite
def _linear_inputs(draw):
    h = draw(vt.logits(sizes=(_D,), batch_shape=(_TOKENS,), min_value=-3.0, max_value=3.0, masked=False))
    w = draw(vt.logits(sizes=(_N,), batch_shape=(_D,), min_value=-3.0, max_value=3.0, masked=False))
    y = draw(st.lists(st.integers(0, _N - 1), min_size=_TOKENS, max_size=_TOKENS))
    return {"h": h, "w": w, "y": np.asarray(y, dtype=np.int32)}


def _linear_simulated(h, w, y, p):
    loss = jax.vmap(lambda wl: sharding.shard_linear_cross_entropy(h, wl, y, "vocab", (2, 2))[0],
                    axis_name="vocab", in_axes=1, out_axes=0)(w.reshape(_D, p, -1))
    return loss[0]


S3_LINEAR = Derivation(
    claim="S3",
    title="The vocabulary-sharded linear head gives the loss of the full logits",
    statement=r"\ell_n = \mathrm{lse}(h_n W) - (h_n W)_{y_n},\ W = [W_1 \cdots W_P]:\ "
              r"m = \max_k m_k,\ s = \sum_k s_k e^{m_k - m}",
    inputs=_linear_inputs(),
    steps=[
        Step(r"\mathrm{lse}(h_n W) - (h_n W)_{y_n}", r"definition, with the logits $z = hW$ formed; jax.nn.logsumexp",
             lambda h, w, y: jax.nn.logsumexp(h @ w, axis=-1) - jnp.take_along_axis(h @ w, y[:, None], -1)[:, 0]),
        Step(r"\log s_n - ((h_n W)_{y_n} - m_n)\ \text{tile by tile}",
             r"vfe.linear_cross_entropy with tiles of 2 tokens $\times$ 5 classes (the last tiles start early and "
             r"mask what the previous one covered): the online rule S2 per tile, no logits stored",
             lambda h, w, y: lce.linear_cross_entropy(h, w, y, block_tokens=2, block_vocab=5)),
        Step(r"\text{the same with } W \text{ split over } P = 4 \text{ devices}",
             r"vfe.sharding.shard_linear_cross_entropy on 4 simulated devices: per-device $(m_k, s_k)$ merged by "
             r"pmax and psum (S1), the label's logit from the device holding its column",
             lambda h, w, y: _linear_simulated(h, w, y, 4)),
    ],
)


def _sum_and_gradients(loss_sum):
    """``h, w, y ↦ (Σ_n ℓ_n, ∂h, ∂W)`` of a summed loss, flattened into one vector."""
    def value(h, w, y):
        total, (dh, dw) = jax.value_and_grad(loss_sum, (0, 1))(h, w, y)
        return jnp.concatenate([total[None], dh.ravel(), dw.ravel()])

    return value


def _linear_total_simulated(h, w, y, p, blocks):
    """``(Σ ℓ, ∂h, ∂W)`` from vfe.sharding.shard_linear_total on ``p`` simulated devices."""
    counted = jnp.ones(y.shape, bool)
    total, dh, dw = jax.vmap(lambda wl: sharding.shard_linear_total(h, wl, y, counted, "vocab", blocks),
                             axis_name="vocab", in_axes=1, out_axes=0)(w.reshape(_D, p, -1))
    return jnp.concatenate([total[:1], dh[0].ravel(), jnp.moveaxis(dw, 0, 1).reshape(w.shape).ravel()])


S3_LINEAR_SUM = Derivation(
    claim="S3",
    title="The summed linear-head loss and its gradients, formed in one pass, sharded or not",
    statement=r"\Big(\sum_n \ell_n,\ \partial_h,\ \partial_W\Big) = \Big(\sum_n \ell_n,\ G W^\top,\ h^\top G\Big),\ "
              r"G = \mathrm{softmax}(hW) - \mathrm{onehot}(y):\ "
              r"\text{per chunk of tokens } m = \max_k m_k,\ s = \sum_k s_k e^{m_k - m},\ "
              r"\partial_h = \sum_k G_k W_k^\top",
    inputs=_linear_inputs(),
    steps=[
        Step(r"\Big(\sum_n \ell_n,\ \nabla_h,\ \nabla_W\Big)\ \text{of the formed logits}",
             r"jax.value_and_grad of $\sum_n \mathrm{lse}(h_n W) - (h_n W)_{y_n}$, jax.nn.logsumexp",
             _sum_and_gradients(lambda h, w, y: jnp.sum(
                 jax.nn.logsumexp(h @ w, axis=-1) - jnp.take_along_axis(h @ w, y[:, None], -1)[:, 0]))),
        Step(r"\text{the same, formed chunk by chunk in the forward pass}",
             r"vfe.linear_cross_entropy(reduction='sum') with 3 $\times$ 8 tiles: chunks of 2 whole rows, the last "
             r"starting early (its first token not counted twice); jax.value_and_grad",
             _sum_and_gradients(lambda h, w, y: lce.linear_cross_entropy(h, w, y, reduction="sum", block_tokens=3,
                                                                          block_vocab=8))),
        Step(r"\text{the same with } W \text{ split over } P = 4 \text{ devices}",
             r"vfe.sharding.shard_linear_total on 4 simulated devices: each chunk's $(m_k, s_k)$ merged by pmax and "
             r"psum (S1) before its gradients; $\partial_h$ psum-ed, $\partial_W$ left on its device",
             lambda h, w, y: _linear_total_simulated(h, w, y, 4, (3, 4))),
    ],
)


def _kl_simulated(a, b, p, formula):
    """vfe.streaming's KL passes for ``formula`` on ``p`` simulated devices (a Stream given the named
    axis: each reduction pmax/psum-ed, each lax.cond agreed): what vfe.sharding runs on each shard."""
    def device(al, bl):
        stream = streaming.Stream((al, bl), streaming.rows_for(al.shape[-1], None), "vocab")
        return streaming._KL_FORWARD[formula](stream)[0]

    return jax.vmap(device, axis_name="vocab")(_shards(a, p), _shards(b, p))[0]


S3_KL = Derivation(
    claim="S3",
    title="Vocabulary-sharded KL between two logit tensors equals the unsharded one, in both formulas",
    statement=r"\mathrm{KL}(\mathrm{softmax}(a)\,\|\,\mathrm{softmax}(b)):\ "
              r"\text{every row statistic } \max_i,\ \sum_i \text{ of the passes is } "
              r"\max_k \max_{i\in k},\ \sum_k \sum_{i \in k}",
    inputs=st.fixed_dictionaries({"a": _LOGITS, "b": _LOGITS}),
    steps=[
        Step(r"\mathrm{KL}(p\,\|\,q) = \sum_i p_i (\log p_i - \log q_i)",
             r"definition ($+\infty$ where $b$ masks a class $a$ allows); vfe.kl_divergence_from_logits (vfe.information)",
             lambda a, b: vfe.kl_divergence_from_logits(a, b)),
        Step(r"\text{the accurate formula's passes, } P = 4",
             "vfe.streaming's cancellation-free passes on 4 simulated devices of 3 classes: each maximum a pmax, each "
             "sum a psum, the shift's fallback and the far-row branch agreed by a pmin",
             lambda a, b: _kl_simulated(a, b, 4, "accurate")),
        Step(r"\text{the same, } P = 3", "… on 3 simulated devices of 4 classes",
             lambda a, b: _kl_simulated(a, b, 3, "accurate")),
        Step(r"\sum_k\sum_{i\in k} p_i(a_i - b_i) - (\mathrm{lse}\,a - \mathrm{lse}\,b),\ P = 4",
             "the direct formula's passes (lse b, lse a, the weighted sum) on 4 simulated devices",
             lambda a, b: _kl_simulated(a, b, 4, "direct")),
        Step(r"\mathrm{KL}(p\,\|\,q)\ \text{(unsharded library)}", "vfe.streaming.kl_divergence_from_logits",
             lambda a, b: streaming.kl_divergence_from_logits(a, b)),
    ],
)
