"""vfe.sequences: chain-rule log-likelihood, the token-level loss and perplexity against the 50-digit
oracle (masks, -inf logits, logits of 1e4, where ≡ slicing, derivatives, low precision); the
exhaustive chain-rule joint (D1) and per-step versus global tempering (D4); samplers checked by
the DKW inequality, each beside a planted wrong sampler that the same check rejects.

Tolerances (stated once): ``oracle.rtol(dtype, n) = K · n · eps(dtype)``, ``K = 64``, with ``n = V``
per token, times the scale of each token's term ``|log p_t| + 1 + log V``, summed over the counted
tokens of a sequence (divided by their number for means).

Sampling checks (stated once): with ``n`` draws from a distribution with CDF ``F`` (categories in
index order), the DKW inequality with Massart's constant gives
``P(sup_x |F_n(x) - F(x)| > ε) ≤ 2 exp(-2 n ε²)``; ``ε = sqrt(log(2/δ) / (2n))`` with ``δ = 1e-9``
is the false-failure rate of each check (on the fixed keys used here the outcome is
deterministic; δ is its probability over the choice of key). The file runs ``SAMPLING_CHECKS = 12``
such checks, so a correct sampler fails any of them with probability below ``SAMPLING_CHECKS · δ``.
A planted wrong sampler is rejected when its distance exceeds ``ε``; each is asserted to be ≥ 4ε
from ``F`` on its fixed key, so its true distance is ≥ 3ε (except with probability δ) and another
key would let it pass with probability ≤ 2 exp(-2n(2ε)²) = 2 (δ/2)^4 < 1e-37.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import oracle as O
import pytest
import strategies as S
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

import vfe
from vfe import sequences as vs

FLOATS = S.FLOATS
B, L = S.BATCH, 3  # shape buckets: logits (B, L, V) with V ∈ S.SIZES; one compilation per V and dtype
N = S.DERIV_SIZE  # the one vocabulary size of the derivative, mask and transformation tests
FAIL_PROB = 1e-9
SAMPLING_CHECKS = 12


def _j(x):
    return jnp.asarray(x)


def _finite_or_zero(x):
    """``x`` with -inf replaced by 0 (value only; the gradient passes where x is finite)."""
    return jnp.where(jnp.isfinite(x), x, 0.0)


# jitted once at module level, so that Hypothesis examples reuse one compilation per shape bucket
LOG_PROB = jax.jit(vs.sequence_log_prob)
GRAD_LOG_PROB = jax.jit(jax.grad(lambda z, y, w: jnp.sum(S.ROW_WEIGHTS * _finite_or_zero(
    vs.sequence_log_prob(z, y, where=w)))))
GRAD_TOKEN_LOG_PROBS = jax.jit(jax.grad(lambda z, y, w: jnp.sum(vs.token_log_probs(z, y, where=w))))
GRAD_MEAN_NLL = jax.jit(jax.grad(lambda z, y, w: vs.mean_token_nll(z, y, where=w)))
VMAP_LOG_PROB = jax.jit(jax.vmap(vs.sequence_log_prob))
VMAP_MEAN_NLL = jax.jit(jax.vmap(lambda z, y: vs.mean_token_nll(z[None], y[None])))


# ============================================================================ oracle helpers


def _exact_token_terms(z, y, w=None):
    """50-digit ``log softmax(z_t)[y_t]`` per position (0 where not counted) and each term's scale
    ``|log p_t| + 1 + log V`` (0 where not counted), both float64 of shape ``y.shape``."""
    z = np.asarray(z, np.float64)
    w = np.ones(y.shape, bool) if w is None else np.broadcast_to(w, y.shape)
    lp = np.zeros(y.shape)
    exact_mp = np.empty(y.shape, dtype=object)
    for idx in np.ndindex(*y.shape):
        if not w[idx]:
            exact_mp[idx] = O.MP.mpf(0)
            continue
        v = O._log_softmax(O._vec(z[idx]))[int(y[idx])]
        exact_mp[idx] = v
        lp[idx] = float(v)
    scale = np.where(w, np.abs(O.finite_part(lp)) + 1 + np.log(z.shape[-1]), 0.0)
    return lp, exact_mp, scale


def _mp_sum_rows(exact_mp):
    """Sum the last axis in 50 digits, rounding once."""
    flat = exact_mp.reshape(-1, exact_mp.shape[-1])
    return np.array([float(O.MP.fsum(r)) for r in flat]).reshape(exact_mp.shape[:-1])


@st.composite
def sequences(draw, v=None, *, scales=S.LOGIT_SCALES, masks=True, where=True, label_masked=True):
    """``(logits (B, L, V), tokens (B, L) int32, where (B, L) bool or None)`` in float64.

    Tokens are uniform, or (``label_masked``) sometimes steered onto a ``-inf`` logit."""
    v = draw(S.sizes()) if v is None else v
    z = draw(S.logits(v, batch=B * L, scales=scales, masks=masks)).reshape(B, L, v)
    y = np.asarray(draw(S.labels(v, batch=B * L))).reshape(B, L)
    if not label_masked:
        y = np.where(np.isneginf(np.take_along_axis(z, y[..., None], -1)[..., 0]), np.argmax(z, -1), y)
    w = draw(st.one_of(st.none(), hnp.arrays(np.bool_, (B, L)))) if where else None
    return z, y.astype(np.int32), w


# ============================================================================ against the oracle


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_token_and_sequence_log_prob_match_oracle(dtype, data):
    z, y, w = data.draw(sequences())
    z = S.cast(z, dtype)
    v = z.shape[-1]
    lp_tok = vs.token_log_probs(_j(z), _j(y), where=w)
    lp_seq = vs.sequence_log_prob(_j(z), _j(y), where=w)
    nll = vs.sequence_nll(_j(z), _j(y), where=w)
    assert lp_tok.dtype == dtype and lp_tok.shape == (B, L)
    assert lp_seq.dtype == dtype and lp_seq.shape == (B,) and nll.shape == (B,)
    exact_tok, exact_mp, scale = _exact_token_terms(z, y, w)
    r = O.rtol(dtype, v)
    O.assert_close(lp_tok, exact_tok, r * scale, "token_log_probs")
    exact_seq = _mp_sum_rows(exact_mp)
    O.assert_close(lp_seq, exact_seq, r * scale.sum(-1), "sequence_log_prob")
    O.assert_close(nll, -exact_seq, r * scale.sum(-1), "sequence_nll")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_mean_token_nll_perplexity_and_bits_match_oracle(dtype, data):
    """The loss is one mean over every counted token of the batch (claims D2, A7). One vocabulary
    size: the per-token kernel is the one checked over all sizes above."""
    z, y, w = data.draw(sequences(N, scales=(1.0, 30.0)))
    if w is not None:
        w = w.copy()
        w[0, 0] = True  # at least one counted token (none gives NaN, tested below)
    z = S.cast(z, dtype)
    v = z.shape[-1]
    _, exact_mp, scale = _exact_token_terms(z, y, w)
    count = y.size if w is None else int(w.sum())
    mean = -O.MP.fsum(exact_mp.ravel()) / count
    tol = O.rtol(dtype, v) * scale.sum() / count
    got = vs.mean_token_nll(_j(z), _j(y), where=w)
    assert got.dtype == dtype and got.shape == ()
    O.assert_close(got, float(mean), tol, "mean_token_nll")
    # exp and /ln 2 add one rounding each; exp turns the absolute error tol into a relative one
    ppl, bits = float(O.MP.exp(mean)), float(mean / O.MP.log(2))
    O.assert_close(vs.perplexity_from_logits(_j(z), _j(y), where=w), ppl,
                   (tol + O.rtol(dtype, 1)) * ppl, "perplexity_from_logits")
    O.assert_close(vs.bits_per_token(_j(z), _j(y), where=w), bits,
                   tol / math.log(2) + O.rtol(dtype, 1) * abs(bits), "bits_per_token")


def test_perplexity_is_two_to_the_bits_and_loss_is_cross_entropy():
    """Claims A7 and D2 as identities between independent computations: PPL = 2^bits; and on data
    whose tokens have empirical distribution p̂ under fixed logits z, the mean token NLL is the
    cross-entropy H(p̂, softmax z) of vfe.information."""
    rng = np.random.default_rng(1)
    z1 = rng.normal(size=5) * 3
    y = rng.integers(0, 5, size=(4, 6)).astype(np.int32)
    z = np.broadcast_to(z1, (4, 6, 5))
    p_hat = np.bincount(y.ravel(), minlength=5) / y.size
    loss = float(vs.mean_token_nll(z, y))
    ce = float(vfe.cross_entropy_from_logits(p_hat, z1))
    assert abs(loss - ce) <= O.rtol(np.float64, 5) * (1 + abs(ce))
    ppl, bits = float(vs.perplexity_from_logits(z, y)), float(vs.bits_per_token(z, y))
    assert abs(ppl - 2.0 ** bits) <= O.rtol(np.float64, 5) * ppl


# ============================================================================ masks and -inf


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_where_equals_slicing_and_ignores_garbage(dtype, data):
    """Counting positions with ``where`` ≡ scoring only those positions (sliced out); uncounted
    positions may hold NaN / all -inf logits and out-of-range tokens: value unchanged, gradient 0."""
    z, y, w = data.draw(sequences(N, where=False))  # one V: the sliced shapes compile once each
    w = data.draw(hnp.arrays(np.bool_, (B, L)))
    z = S.cast(z, dtype)
    v = z.shape[-1]
    got = np.asarray(vs.sequence_log_prob(_j(z), _j(y), where=w))
    sliced = np.array([float(vs.sequence_log_prob(_j(z[b][w[b]][None]), _j(y[b][w[b]][None]))[0])
                       for b in range(B)])
    _, _, scale = _exact_token_terms(z, y, w)
    O.assert_close(got, sliced, O.rtol(dtype, v) * scale.sum(-1), "where vs slicing")
    garbage_z = np.where(w[..., None], z, np.where(np.arange(v) % 2 == 0, np.nan, -np.inf).astype(dtype))
    garbage_y = np.where(w, y, np.int32(v + 7))
    again = vs.sequence_log_prob(_j(garbage_z), _j(garbage_y), where=w)
    O.assert_close(again, got, 0.0, "garbage at uncounted positions")
    g = np.asarray(GRAD_LOG_PROB(_j(garbage_z), _j(garbage_y), w))
    assert np.all(g[~w] == 0), g
    assert not np.isnan(g).any(), g


def test_no_counted_position_gives_zero_log_prob_and_nan_mean():
    z = np.zeros((2, 3, 4))
    y = np.zeros((2, 3), np.int32)
    w = np.zeros((2, 3), bool)
    assert np.all(np.asarray(vs.sequence_log_prob(z, y, where=w)) == 0)
    assert np.isnan(float(vs.mean_token_nll(z, y, where=w)))
    # where broadcasts: a (L,) mask applies to every sequence
    w1 = np.array([True, False, True])
    O.assert_close(vs.sequence_log_prob(z, y, where=w1), 2 * np.log(0.25) * np.ones(2), 1e-15, "broadcast where")


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_masked_token_gives_minus_inf_never_nan_with_finite_gradient(dtype, data):
    """A counted token on a -inf logit: log-prob -inf, NLL/perplexity +inf; gradients NaN-free and
    finite (d/dz = onehot - softmax is bounded)."""
    z, y, w = data.draw(sequences(N))  # one bucket (V = N) for the jitted gradients
    z = S.cast(z, dtype)
    y = np.where(data.draw(st.booleans()), np.argmin(np.where(np.isneginf(z), -1.0, 0.0), -1).astype(np.int32), y)
    counted = np.ones(y.shape, bool) if w is None else w
    hit = np.isneginf(np.take_along_axis(z, y[..., None], -1)[..., 0]) & counted
    lp = np.asarray(vs.sequence_log_prob(_j(z), _j(y), where=w))
    assert not np.isnan(lp).any()
    assert np.array_equal(np.isneginf(lp), hit.any(-1)), (lp, hit)
    if hit.any():
        assert float(vs.mean_token_nll(_j(z), _j(y), where=w)) == np.inf
        assert float(vs.perplexity_from_logits(_j(z), _j(y), where=w)) == np.inf
    g = np.asarray(GRAD_TOKEN_LOG_PROBS(_j(z), _j(y), w))
    assert np.isfinite(g).all(), g
    gm = np.asarray(GRAD_MEAN_NLL(_j(z), _j(y), w))
    assert not np.isnan(gm).any(), gm


@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_masked_logits_equal_logits_clipped_to_minus_1e30(data):
    """-inf logits (tokens on unmasked entries) give the value and gradient of logits at -1e30 (float64)."""
    z, y, w = data.draw(sequences(N, label_masked=False))
    clipped = np.maximum(z, -1e30)
    vm, vc = np.asarray(LOG_PROB(_j(z), _j(y), where=w)), np.asarray(LOG_PROB(_j(clipped), _j(y), where=w))
    v = z.shape[-1]
    O.assert_close(vm, vc, O.rtol(np.float64, v * L) * (1 + np.abs(vc)), "value")
    gm, gc = np.asarray(GRAD_LOG_PROB(_j(z), _j(y), w)), np.asarray(GRAD_LOG_PROB(_j(clipped), _j(y), w))
    O.assert_close(gm, gc, O.rtol(np.float64, v), "gradient")


# ============================================================================ derivatives


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_gradient_matches_oracle(dtype, data):
    """∂/∂z_{t,i} Σ_b w_b log p(x_b) = w_b where_t (1[i = x_t] - softmax(z_t)_i), masks and 1e4 included."""
    z, y, w = data.draw(sequences(N))
    z = S.cast(z, dtype)
    g = GRAD_LOG_PROB(_j(z), _j(y), w)
    counted = np.ones(y.shape, bool) if w is None else w
    p = np.exp(O.rowwise(O.log_softmax, z.reshape(-1, N))).reshape(z.shape)
    exact = (np.eye(N)[y] - p) * counted[..., None] * S.ROW_WEIGHTS[:, None, None]
    assert g.dtype == dtype
    # a sequence whose value is -inf is replaced by 0 above: its gradient is 0
    finite = np.isfinite(np.asarray(vs.sequence_log_prob(_j(z), _j(y), where=w)))
    exact = exact * finite[:, None, None]
    O.assert_close(g, exact, O.rtol(dtype, N), "gradient")


@settings(max_examples=S.examples(3))
@given(data=st.data())
def test_check_grads_float64_interior(data):
    """Finite differences, forward and reverse (bits and perplexity are elementwise functions of
    the mean NLL, whose derivative is checked here)."""
    z, y, w = data.draw(sequences(N, scales=(1.0, 5.0), masks=False, where=False))
    w = data.draw(hnp.arrays(np.bool_, (B, L)))
    for f in (vs.sequence_log_prob, vs.mean_token_nll):
        check_grads(lambda z, f=f: f(z, _j(y), where=w | (np.arange(L) == 0)), (_j(z),), order=1,
                    modes=("fwd", "rev"))


# ============================================================================ transformations, dtypes


@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(4))
@given(data=st.data())
def test_jit_vmap_and_extra_batch_axes(dtype, data):
    z, y, w = data.draw(sequences(N))
    z = S.cast(z, dtype)
    ref = np.asarray(vs.sequence_log_prob(z, y, where=w))
    _, _, scale = _exact_token_terms(z, y, w)
    tol = O.rtol(dtype, N) * scale.sum(-1)
    O.assert_close(LOG_PROB(z, y, where=w), ref, tol, "jit")
    if w is None:  # (one variant each: op-by-op execution compiles every primitive per shape)
        with jax.disable_jit():
            O.assert_close(vs.sequence_log_prob(z, y), ref, tol, "eager")
        O.assert_close(VMAP_LOG_PROB(z[:, None], y[:, None])[:, 0], ref, tol, "vmap")
    # two leading batch axes ≡ the flattened batch
    z4, y4 = np.stack([z, z]), np.stack([y, y])
    O.assert_close(vs.sequence_log_prob(z4, y4, where=w)[1], ref, tol, "extra batch axis")
    per_seq = VMAP_MEAN_NLL(_j(z), _j(y))
    O.assert_close(per_seq, -np.asarray(vs.sequence_log_prob(z, y)) / L,
                   O.rtol(dtype, N) * _exact_token_terms(z, y)[2].sum(-1) / L, "vmap mean per sequence")


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", ["token_log_probs", "sequence_log_prob", "mean_token_nll", "bits_per_token"])
def test_low_precision_inputs_accumulate_in_float32(name, low):
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.normal(size=(B, L, 16)) * 8, low).at[0, 1, 3].set(-jnp.inf)
    y = jnp.asarray(rng.integers(0, 16, size=(B, L)), jnp.int32)
    f = getattr(vs, name)
    got = f(z, y)
    ref = np.asarray(f(np.asarray(z, np.float32), y))
    assert got.dtype == jnp.float32
    O.assert_close(got, ref, O.rtol(np.float32, 16) * L * (1 + np.abs(ref)), f"{low.__name__} {name}")


# ============================================================================ sampling: DKW helpers


def dkw_epsilon(n: int, fail_prob: float = FAIL_PROB) -> float:
    """``ε`` with ``P(sup|F_n - F| > ε) ≤ 2 exp(-2 n ε²) = fail_prob``."""
    return math.sqrt(math.log(2.0 / fail_prob) / (2.0 * n))


def ks_distance(samples, probs) -> float:
    """``sup_x |F_n(x) - F(x)|`` for integer samples against category probabilities (index order)."""
    probs = np.asarray(probs, np.float64).ravel()
    counts = np.bincount(np.asarray(samples).ravel(), minlength=probs.size)
    assert counts.size == probs.size, "a sample outside the support"
    return float(np.max(np.abs(np.cumsum(counts) / counts.sum() - np.cumsum(probs))))


def assert_distributed_as(samples, probs, what):
    """The DKW check (false-failure rate FAIL_PROB); never draws a zero-probability category."""
    probs = np.asarray(probs, np.float64).ravel()
    counts = np.bincount(np.asarray(samples).ravel(), minlength=probs.size)
    assert np.all(counts[probs == 0] == 0), f"{what}: drew impossible categories {np.flatnonzero(counts * (probs == 0))}"
    d, eps = ks_distance(samples, probs), dkw_epsilon(np.asarray(samples).size)
    assert d <= eps, f"{what}: KS distance {d:.4g} > DKW ε {eps:.4g} (false-failure rate {FAIL_PROB})"


def assert_rejected(samples, probs, what):
    """A planted wrong sampler: the check above must fail it, with a margin (distance ≥ 4ε)."""
    d, eps = ks_distance(samples, probs), dkw_epsilon(np.asarray(samples).size)
    assert d >= 4 * eps, f"{what}: the planted sampler is only {d:.4g} from F (ε = {eps:.4g}); the test is blind"


N_DRAWS = 2**17  # ε ≈ 0.0090


def fast_key(seed: int):
    """A key of the ``rbg`` implementation: a sampler on it compiles in a fraction of a second on
    CPU, against seconds for the default threefry. The samplers do not depend on the key's
    implementation (the Gumbel draw is ``jax.random.gumbel`` of the key); the autoregressive DKW
    check, which runs the same Gumbel-max kernel, uses a default threefry key, the others these."""
    return jax.random.key(seed, impl="rbg")


def _sampling_cases(dtype):
    """Rows of logits, their temperatures and exact probabilities (oracle): T = 0.7 and 3 with a
    mask; T → 0 with maxima tied at 1e4; T → ∞ with logits spread over 2e4 (uniform over unmasked)."""
    inf = -np.inf
    z = S.cast(np.array([1.5, -0.5, inf, 0.3, 2.0, -3.0]), dtype)
    big = S.cast(np.array([1e4, 9998.5, inf, 1e4, -1e4, 9999.0]), dtype)
    tiny_t = {np.float32: 1e-30, np.float64: 1e-300}[dtype]
    rows = np.stack([z, z, big, big])
    temps = np.array([0.7, 3.0, tiny_t, 1e30], dtype)
    exact = [O.tempered_softmax(z, 0.7), O.tempered_softmax(z, 3.0), O.zero_temperature_softmax(big),
             O.tempered_softmax(big, 1e30)]
    return rows, temps, exact


def _draw_rows(key, rows, temps):
    """N_DRAWS draws per row in one call: logits (4, N_DRAWS, 6), temperatures (4, 1)."""
    logits = np.broadcast_to(rows[:, None, :], (rows.shape[0], N_DRAWS, rows.shape[1]))
    return np.asarray(vs.sample_tempered(key, logits, temps[:, None]))


@pytest.mark.parametrize("dtype", FLOATS)
def test_sample_tempered_is_distributed_as_tempered_softmax(dtype):
    """Claim C9 (Gumbel-max) at T = 0.7, 3, T → 0 (uniform tie-breaking among maxima at 1e4) and
    T → ∞: 4 DKW checks per dtype; masked tokens never drawn."""
    rows, temps, exact = _sampling_cases(dtype)
    x = _draw_rows(fast_key(11 if dtype == np.float32 else 13), rows, temps)
    assert x.dtype == np.int32 and x.shape == (4, N_DRAWS)
    for i, name in enumerate(["T=0.7", "T=3", "T→0 ties", "T→∞"]):
        assert_distributed_as(x[i], exact[i], f"sample_tempered {name} {np.dtype(dtype).name}")


def test_planted_samplers_are_rejected_by_the_same_check():
    """Two wrong samplers the check must catch: one that ignores T (draws at T = 1 where T = 3 was
    asked), and the naive Gumbel-max ``argmax(z/T + G)`` in float32 (what ``jax.random.categorical(z/T)``
    computes), whose noise is absorbed by ``z/T ≈ 1e34`` at T = 1e-30: it always returns the first
    of the tied maxima."""
    rows, _, exact = _sampling_cases(np.float32)
    ignores_t = _draw_rows(fast_key(12), rows, np.ones(4, np.float32))  # same compilation as above
    assert_rejected(ignores_t[1], exact[1], "sampler ignoring T = 3")
    gumbel = np.random.default_rng(12).gumbel(size=(N_DRAWS, rows.shape[1])).astype(np.float32)
    naive = np.argmax(rows[2] / np.float32(1e-30) + gumbel, axis=-1)
    assert_rejected(naive, exact[2], "naive Gumbel-max at T → 0")


@settings(max_examples=S.examples(15))
@given(data=st.data())
def test_sample_tempered_never_draws_masked_and_is_greedy_at_tiny_t(data):
    """Any logits (masks, ties, 1e4) and T ∈ [1e-30, 1e30]: never a masked token. At T = 1e-30 never a
    token whose tempered logit is 40 or more below the maximum's: float32 Gumbel noise (mode "high")
    lies in about [-2.8, 32] (save an atom of probability 2^-46 at 87), so such a token cannot win
    — in practice always one of the maxima, except for logits within 4e-29 of it (1e-30 beside 0)."""
    z = S.cast(data.draw(S.logits(16)), np.float32)
    t = S.cast(data.draw(S.temperatures()), np.float32)
    seed = data.draw(st.integers(0, 2**31 - 1))
    x = np.asarray(vs.sample_tempered(fast_key(seed), z, t))
    rows = np.arange(z.shape[0])
    assert not np.isneginf(z[rows, x]).any(), (z, x)
    x0 = np.asarray(vs.sample_tempered(fast_key(seed), z, np.full_like(t, 1e-30)))
    gap = (z.max(-1).astype(np.float64) - z[rows, x0].astype(np.float64)) / 1e-30
    assert np.all(gap < 40), (z, x0)


def test_sample_tempered_axis_and_temperature_broadcast():
    """axis=k ≡ moveaxis (same key, same noise); a per-row temperature applies per row."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(B, 16)).astype(np.float32)  # the shape of the test above: no new compilation
    key = fast_key(5)
    t = np.array([0.5, 2.0], np.float32)
    ref = np.asarray(vs.sample_tempered(key, z, t))
    assert np.array_equal(np.asarray(vs.sample_tempered(key, np.moveaxis(z, -1, 0), t, axis=0)), ref)
    # the argument checks also run on tracers, inside a user's jit (traced here, not compiled)
    assert jax.eval_shape(jax.jit(vs.sample_tempered), key, z, t).shape == ref.shape
    assert ref.shape == (B,)
    # a row's temperature is its own: at T → 0 the argmax, whatever the other row's T
    cold = np.asarray(vs.sample_tempered(key, z, np.array([1e-30, 1e30], np.float32)))
    assert cold[0] == np.argmax(z[0])


def test_sample_tempered_accepts_bfloat16_logits():
    """bfloat16 logits are upcast to float32 before the noise is added: the same draws as the
    float32 copy of the logits, for the same key."""
    z = jnp.asarray(np.random.default_rng(6).normal(size=(B, 16)) * 4, jnp.bfloat16).at[0, 2].set(-jnp.inf)
    t = np.array([0.5, 2.0], np.float32)
    got = vs.sample_tempered(fast_key(7), z, t)
    assert got.dtype == jnp.int32
    assert np.array_equal(np.asarray(got), np.asarray(vs.sample_tempered(fast_key(7), np.asarray(z, np.float32), t)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_sample_categorical_is_distributed_as_probs(dtype):
    """Inverse-CDF sampling (claim C9, multinomial form): unnormalised weights with zeros at both
    ends and inside, never drawn; a planted sampler that forgets to rescale U is rejected."""
    w = S.cast(np.array([0.0, 0.2, 1.1, 0.0, 0.5, 0.7, 0.0]), dtype)
    probs = w.astype(np.float64) / w.astype(np.float64).sum()
    key = fast_key(21)
    x = vs.sample_categorical(key, np.broadcast_to(w, (N_DRAWS, w.size)))
    assert x.dtype == jnp.int32 and x.shape == (N_DRAWS,)
    assert_distributed_as(x, probs, f"sample_categorical {np.dtype(dtype).name}")
    # planted: U not rescaled by the total weight 2.5 (searchsorted on the raw cumulative sums)
    u = np.random.default_rng(21).uniform(size=N_DRAWS)
    wrong = np.searchsorted(np.cumsum(w), u, side="right")
    assert_rejected(wrong, probs, "inverse CDF without normalisation")


# ============================================================================ autoregressive models


def _tree_step(state, token):
    """The most general autoregressive model over V tokens: one logits row per prefix.

    ``state = (table, node)``; the prefix x_1..x_d is node ``Σ`` (breadth-first id in the complete
    V-ary tree: the children of node k are ``kV + 1 .. kV + V``); a negative token is the start."""
    table, node = state
    v = table.shape[-1]
    node = jnp.where(token < 0, node, node * v + token + 1)
    return (table, node), table[node]


def _markov_step(table, token):
    """A Markov chain: ``table`` rows 0..V-1 are transition logits, row V the initial logits."""
    return table, table[token]


def _independent_step(state, token):
    """Tokens independent across positions: the logits depend only on the position."""
    table, t = state
    return (table, t + 1), table[t]


def _tree_nodes(v, length):
    return sum(v**d for d in range(length))


def _exact_tree_joint(table, length, temperature=None):
    """50-digit Σ_t log softmax(table[node_t] / T)[x_t] for every sequence, and each entry's scale."""
    v = table.shape[-1]
    if temperature is None:
        rows = [O._log_softmax(O._vec(r)) for r in table]
    else:
        rows = [O._tempered_log(O._vec(r), temperature, "T")[3] for r in table]
    out, scale = np.empty((v,) * length), np.empty((v,) * length)
    for seq in itertools.product(range(v), repeat=length):
        node, terms = 0, []
        for x in seq:
            terms.append(rows[node][x])
            node = node * v + x + 1
        out[seq] = float(O.MP.fsum(terms))
        scale[seq] = sum(abs(float(t)) if t != -O.INF else 0.0 for t in terms) + length * (1 + np.log(v))
    return out, scale


@pytest.mark.parametrize("tempered", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_autoregressive_log_joint_is_the_normalised_chain_rule_product(dtype, tempered, data):
    """Claim D1 by enumeration: any conditionals (one row per prefix; masks, ties, 1e4 logits) give
    the chain-rule joint of the oracle, and it sums to one. With a temperature: the product of the
    per-step tempered conditionals (T ∈ [1e-30, 1e30]), again normalised."""
    v = 3  # one bucket: (V = 3)^3 sequences; V = 2 is exercised by the counterexamples below
    table = S.cast(data.draw(S.logits(v, batch=_tree_nodes(v, L))), dtype)
    t = float(S.cast(data.draw(S.temperatures(batch=1))[0], dtype)) if tempered else None
    got = vs.autoregressive_log_joint(_tree_step, (_j(table), jnp.int32(0)), -1, L, temperature=t)
    assert got.shape == (v,) * L and got.dtype == dtype
    exact, scale = _exact_tree_joint(table, L, t)
    tol = O.rtol(dtype, v) * scale
    O.assert_close(got, exact, tol, "autoregressive_log_joint")
    g = np.asarray(got, np.float64)
    p = np.exp(exact)
    # Σ_x p(x)(e^{δ_x} - 1) bounds the error of the total; δ_x ≤ tol_x
    bound = np.sum(np.where(p > 0, p * np.expm1(np.minimum(tol, 700.0)), 0.0)) + O.rtol(np.float64, v**L)
    assert abs(np.sum(np.exp(g)) - 1.0) <= bound, np.sum(np.exp(g))


def test_joint_of_a_sequence_equals_its_sequence_log_prob():
    """The enumeration and sequence_log_prob on teacher-forced logits agree entry by entry (D1)."""
    rng = np.random.default_rng(4)
    v = 3
    table = jnp.asarray(rng.normal(size=(v + 1, v)) * 2)
    joint = np.asarray(vs.autoregressive_log_joint(_markov_step, table, v, L))
    seqs = np.array(list(itertools.product(range(v), repeat=L)), np.int32)
    prev = np.concatenate([np.full((len(seqs), 1), v), seqs[:, :-1]], axis=1)
    lp = np.asarray(vs.sequence_log_prob(np.asarray(table)[prev], seqs))
    O.assert_close(joint.reshape(-1), lp, O.rtol(np.float64, v * L) * (1 + np.abs(lp)), "joint vs sequence_log_prob")


def test_joint_is_differentiable_and_its_total_has_zero_gradient():
    """D1 differentiated: Σ_x p(x) = 1 for every table of conditionals, so its gradient with respect
    to the table is 0 (to rounding, hence finite), untempered and per-step tempered, also through a
    masked transition."""
    rng = np.random.default_rng(8)
    table = jnp.asarray(rng.normal(size=(4, 3)) * 2).at[1, 2].set(-jnp.inf)

    def total(table, t):
        return jnp.sum(jnp.exp(vs.autoregressive_log_joint(_markov_step, table, 3, L, temperature=t)))

    for t in (None, 0.7):
        g = np.asarray(jax.grad(total)(table, t))
        assert np.all(np.abs(g) <= O.rtol(np.float64, 27)), g


@settings(max_examples=S.examples(10))
@given(data=st.data())
def test_per_step_equals_global_tempering_for_independent_tokens(data):
    """When the tokens are independent, p^{1/T}/Z factorises: per-step ≡ global tempering (D4)."""
    v = 3
    table = data.draw(S.logits(v, batch=L, scales=(1.0, 30.0)))
    t = float(data.draw(S.temperatures(1e-2, 1e2, batch=1))[0])
    state = (_j(table), jnp.int32(0))
    per_step = np.asarray(vs.autoregressive_log_joint(_independent_step, state, 0, L, temperature=t))
    glob = np.asarray(vs.globally_tempered_log_joint(vs.autoregressive_log_joint(_independent_step, state, 0, L), t))
    scale = np.abs(O.finite_part(per_step)) + L * (1 + np.log(v))
    O.assert_close(glob, per_step, O.rtol(np.float64, v**L) * scale / min(t, 1.0), "independent tokens")


def _counterexample_table():
    """V = 2, L = 2: p(x1) = (1/2, 1/2); p(x2 | x1 = 0) = (1/2, 1/2), p(x2 | x1 = 1) = (9/10, 1/10)."""
    return jnp.log(jnp.asarray([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]]))  # rows: after 0, after 1, start


def test_per_step_tempering_is_not_global_tempering_counterexample():
    """Claim D4. At T = 1/2 the per-step joint keeps p(x1) = (1/2, 1/2) (tempering a uniform first
    step changes nothing), while the globally tempered joint ∝ p² moves the first token:
    p(x1 = 1) = (0.45² + 0.05²)/(2·0.25² + 0.45² + 0.05²) = 0.205/0.33. Exact values by hand, in
    float64 fractions, not from vfe."""
    table = _counterexample_table()
    t = 0.5
    per_step = np.exp(np.asarray(vs.autoregressive_log_joint(_markov_step, table, 2, 2, temperature=t)))
    joint = np.exp(np.asarray(vs.autoregressive_log_joint(_markov_step, table, 2, 2)))
    glob = np.exp(np.asarray(vs.globally_tempered_log_joint(np.log(joint), t)))
    tol = O.rtol(np.float64, 4)
    O.assert_close(joint, [[0.25, 0.25], [0.45, 0.05]], tol, "joint")
    # per step: p(x2 | 1) ∝ (0.81, 0.01) → (81/82, 1/82)
    O.assert_close(per_step, [[0.25, 0.25], [0.5 * 81 / 82, 0.5 * 1 / 82]], tol, "per-step tempered")
    z = 2 * 0.0625 + 0.2025 + 0.0025
    O.assert_close(glob, np.array([[0.0625, 0.0625], [0.2025, 0.0025]]) / z, tol, "globally tempered")
    assert abs(per_step[1].sum() - glob[1].sum()) > 0.1  # 0.5 vs 0.621...


def test_greedy_decoding_is_not_the_joint_mode():
    """Claim D4 at T → 0: per-step tempering is greedy decoding (ties split equally), global
    tempering is the mode of the joint. p(x1) = (0.6, 0.4), p(x2|0) = (0.5, 0.5), p(x2|1) = (1, 0):
    greedy picks x1 = 0 then splits; the mode is (1, 0) with probability 0.4 > 0.3."""
    table = jnp.log(jnp.asarray([[0.5, 0.5], [1.0, 0.0], [0.6, 0.4]]))
    t = 1e-30
    per_step = np.exp(np.asarray(vs.autoregressive_log_joint(_markov_step, table, 2, 2, temperature=t)))
    joint = vs.autoregressive_log_joint(_markov_step, table, 2, 2)
    glob = np.exp(np.asarray(vs.globally_tempered_log_joint(joint, t)))
    O.assert_close(per_step, [[0.5, 0.5], [0.0, 0.0]], O.rtol(np.float64, 4), "greedy")
    O.assert_close(glob, [[0.0, 0.0], [1.0, 0.0]], O.rtol(np.float64, 4), "mode")


def _codes(tokens, v):
    """Sequences (…, L) → integers in [0, V^L), first token most significant (the joint's C order)."""
    tokens = np.asarray(tokens)
    return np.sum(tokens * v ** np.arange(tokens.shape[-1] - 1, -1, -1), axis=-1)


def _numpy_tempered_markov_joint(table, v, length, t):
    """Per-step tempered joint of a Markov table by direct multiplication in float64 (independent of vfe)."""
    table = np.asarray(table, np.float64)
    cond = np.exp((table - table.max(-1, keepdims=True)) / t)
    cond /= cond.sum(-1, keepdims=True)
    out = np.empty((v,) * length)
    for seq in itertools.product(range(v), repeat=length):
        prev, p = v, 1.0
        for x in seq:
            p *= cond[prev, x]
            prev = x
        out[seq] = p
    return out


def test_sample_autoregressive_is_distributed_as_the_per_step_tempered_joint():
    """Claim D4 by sampling: 2^17 Markov-chain sequences of length 3 over V = 3 at T = 0.5 (one
    batched call) against the per-step tempered joint computed by direct multiplication; the
    enumerated joint agrees with it. Planted: sampling at T = 1 (ignoring T), and sampling the
    globally tempered joint, are both rejected by the same check."""
    v, t = 3, 0.5
    # a peaked branch (after 0) beside flat ones: global tempering moves the first token's mass
    # towards it by 0.17 in CDF distance, ignoring T is 0.14 away; both ≫ 4ε = 0.036
    table = jnp.asarray([[3.0, -1.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    exact = _numpy_tempered_markov_joint(table, v, L, t)
    enumerated = np.exp(np.asarray(vs.autoregressive_log_joint(_markov_step, table, v, L, temperature=t)))
    O.assert_close(enumerated, exact, O.rtol(np.float64, v * L), "enumerated per-step joint")
    key = jax.random.key(41)
    start = jnp.full((N_DRAWS,), v, jnp.int32)
    x = vs.sample_autoregressive(key, _markov_step, table, start, L, t)
    assert x.shape == (N_DRAWS, L) and x.dtype == jnp.int32
    assert_distributed_as(_codes(x, v), exact.ravel(), "sample_autoregressive T=0.5")
    # planted 1: the temperature ignored
    assert_rejected(_codes(vs.sample_autoregressive(key, _markov_step, table, start, L, 1.0), v),
                    exact.ravel(), "autoregressive sampler ignoring T")
    # planted 2: the globally tempered joint (what per-step sampling is NOT)
    glob = np.exp(np.asarray(vs.globally_tempered_log_joint(vs.autoregressive_log_joint(_markov_step, table, v, L), t)))
    wrong = np.random.default_rng(41).choice(v**L, size=N_DRAWS, p=glob.ravel() / glob.sum())
    assert_rejected(wrong, exact.ravel(), "sampling the globally tempered joint")


def test_sample_autoregressive_vmap_over_keys_and_general_prefix_model():
    """The full-history (tree) model sampled by vmap over keys matches its enumerated tempered
    joint; at T → 0 every sample is the greedy sequence; masked tokens are never drawn."""
    v, t = 2, 1.5
    rng = np.random.default_rng(5)
    table = rng.normal(size=(_tree_nodes(v, L), v)) * 2
    table[1, 1] = -np.inf  # after x1 = 0, x2 = 1 is impossible
    state = (_j(table), jnp.int32(0))
    keys = jax.random.split(fast_key(51), N_DRAWS // 2)
    draw = jax.jit(jax.vmap(lambda k, t: vs.sample_autoregressive(k, _tree_step, state, -1, L, t), (0, None)))
    x = draw(keys, t)
    exact = np.exp(_exact_tree_joint(table, L, t)[0])
    assert_distributed_as(_codes(x, v), exact.ravel(), "tree model, vmap over keys")
    node, greedy = 0, []  # follow the argmax of each row (the drawn table has no ties)
    for _ in range(L):
        greedy.append(int(np.argmax(table[node])))
        node = node * v + greedy[-1] + 1
    assert np.all(np.asarray(draw(keys, 1e-30)) == greedy)  # the same compilation, T traced


# ============================================================================ argument errors


def _bad_step(state, token):
    return state, jnp.zeros((2, 3))


def _growing_step(state, token):
    return jnp.concatenate([state, state]), state[token]


KEY = jax.random.key(0)
Z = np.zeros((2, 3, 4), np.float32)
Y = np.zeros((2, 3), np.int32)
TABLE = jnp.zeros((4, 3))

ERRORS = [
    ("integer logits", lambda: vs.sequence_log_prob(Z.astype(np.int32), Y), TypeError, "logits"),
    ("float tokens", lambda: vs.sequence_log_prob(Z, Y.astype(np.float32)), TypeError, "tokens"),
    ("bool tokens", lambda: vs.token_log_probs(Z, Y.astype(bool)), TypeError, "tokens"),
    ("tokens shape", lambda: vs.sequence_nll(Z, Y[:, :2]), ValueError, "tokens"),
    ("1-D logits", lambda: vs.mean_token_nll(Z[0, 0], Y[0, 0]), ValueError, "logits"),
    ("integer where", lambda: vs.perplexity_from_logits(Z, Y, where=Y), TypeError, "where"),
    ("where shape", lambda: vs.bits_per_token(Z, Y, where=np.ones(5, bool)), ValueError, "where"),
    ("T = 0", lambda: vs.sample_tempered(KEY, Z, 0.0), ValueError, "temperature"),
    ("T < 0", lambda: vs.sample_tempered(KEY, Z, -1.0), ValueError, "temperature"),
    ("T shape", lambda: vs.sample_tempered(KEY, Z, np.ones(4)), ValueError, "temperature"),
    ("integer logits (sample)", lambda: vs.sample_tempered(KEY, Y, 1.0), TypeError, "logits"),
    ("not a key", lambda: vs.sample_tempered(123, Z, 1.0), TypeError, "key"),
    ("several keys", lambda: vs.sample_tempered(jax.random.split(KEY, 2), Z, 1.0), ValueError, "key"),
    ("axis", lambda: vs.sample_tempered(KEY, Z, 1.0, axis=3), ValueError, "axis"),
    ("integer probs", lambda: vs.sample_categorical(KEY, Y), TypeError, "probs"),
    ("length 0", lambda: vs.sample_autoregressive(KEY, _markov_step, TABLE, 3, 0, 1.0), ValueError, "length"),
    ("length float", lambda: vs.sample_autoregressive(KEY, _markov_step, TABLE, 3, 2.0, 1.0), TypeError, "length"),
    ("T = 0 (autoregressive)", lambda: vs.sample_autoregressive(KEY, _markov_step, TABLE, 3, 2, 0), ValueError,
     "temperature"),
    ("float start", lambda: vs.sample_autoregressive(KEY, _markov_step, TABLE, 3.0, 2, 1.0), TypeError, "start_token"),
    ("not callable", lambda: vs.sample_autoregressive(KEY, TABLE, TABLE, 3, 2, 1.0), TypeError, "step_fn"),
    ("logits shape", lambda: vs.sample_autoregressive(KEY, _bad_step, TABLE, 3, 2, 1.0), ValueError, "step_fn"),
    ("state changes", lambda: vs.sample_autoregressive(KEY, _growing_step, TABLE, 3, 2, 1.0), ValueError,
     "step_fn"),
    ("joint length", lambda: vs.autoregressive_log_joint(_markov_step, TABLE, 3, -1), ValueError, "length"),
    ("joint too large", lambda: vs.autoregressive_log_joint(_markov_step, TABLE, 3, 30), ValueError, "length"),
    ("joint T", lambda: vs.autoregressive_log_joint(_markov_step, TABLE, 3, 2, temperature=-2.0), ValueError,
     "temperature"),
    ("joint start shape", lambda: vs.autoregressive_log_joint(_markov_step, TABLE, np.array([3, 3]), 2),
     ValueError, "start_token"),
    ("global integer", lambda: vs.globally_tempered_log_joint(Y, 1.0), TypeError, "log_joint"),
    ("global scalar", lambda: vs.globally_tempered_log_joint(np.float32(0.0), 1.0), ValueError, "log_joint"),
    ("global T", lambda: vs.globally_tempered_log_joint(Z, 0.0), ValueError, "temperature"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_argument_errors_name_the_argument(case):
    _, call, exc, name = case
    with pytest.raises(exc, match=f"`{name}`"):
        call()
