"""vfe.in_context (claims E6, E7) against references written here in NumPy/mpmath from the papers'
formulas: the attention sum token by token, the gradient-descent step in closed form, Bayes' rule
as a product of probabilities, expectations by enumerating every prompt, the Bayes error by
Monte Carlo with a stated false-fail rate; edge cases (empty or padded contexts, impossible
observations, contexts of 10⁴ messages), low precision and argument errors.

Tolerances: float64 results within ``64 · n · eps`` relative (``n`` the number of terms), float32
within ``1e-4`` relative to the scale of the terms. Speed: fixed shapes (contexts padded to 8),
so each jitted function compiles a few times only.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

from vfe import in_context as ic

N, D, DY, M_Q = 8, 3, 2, 2          # context size, input and output dimensions, queries
RTOL = {np.float32: 1e-4, np.float64: 1e-12}


def _close(got, want, rtol, scale=None, msg=""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.maximum(np.abs(want), 1.0) if scale is None else np.maximum(scale, 1.0)
    err = np.abs(got - want) / scale
    assert got.shape == want.shape, (msg, got.shape, want.shape)
    assert np.all(err <= rtol), (msg, float(np.max(err)), got, want)


# ============================================================================= E6 references


def np_lsa(context, queries, w_k, w_q, w_v, proj, mask):
    """``e_j + P Σ_i (W_V e_i)(W_K e_i)ᵀ(W_Q e_j)``, token by token (one batch element)."""
    out = np.array(queries, dtype=np.float64)
    for j in range(len(queries)):
        acc = np.zeros(w_v.shape[0])
        for i in range(len(context)):
            if mask[i]:
                acc += (w_v @ context[i]) * float((w_k @ context[i]) @ (w_q @ queries[j]))
        out[j] = queries[j] + proj @ acc
    return out


def np_gd_step(w0, x, y, eta, mask):
    """``W_0 + (η/N) Σ_i (y_i - W_0 x_i) x_iᵀ`` over the unmasked examples."""
    n = max(int(mask.sum()), 1)
    step = sum(np.outer(y[i] - w0 @ x[i], x[i]) for i in range(len(x)) if mask[i])
    return w0 + eta / n * step


def np_loss(w, x, y, mask):
    n = max(int(mask.sum()), 1)
    return sum(float(np.sum((w @ x[i] - y[i]) ** 2)) for i in range(len(x)) if mask[i]) / (2 * n)


@st.composite
def tasks(draw):
    """A task with ``N ≤ 8`` examples padded to 8 (garbage in the padding), 2 queries, η, W_0."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, N))
    x, y = rng.uniform(-1, 1, (N, D)), rng.uniform(-3, 3, (N, DY))
    x[n:], y[n:] = np.inf, np.nan                      # padding: anything, the mask must hide it
    w0 = rng.uniform(-1, 1, (DY, D)) if draw(st.booleans()) else np.zeros((DY, D))
    return x, y, rng.uniform(-1, 1, (M_Q, D)), 10.0 ** draw(st.floats(-2, 0.5)), w0, np.arange(N) < n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=examples(25))
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, N))
def test_linear_self_attention_is_the_sum_over_tokens(dtype, seed, n):
    """E6: the layer equals the token-by-token sum of the definition, any weights, masked context."""
    rng = np.random.default_rng(seed)
    dim, dk, dv = D + DY, 4, 3
    context, queries = rng.normal(size=(N, dim)), rng.normal(size=(M_Q, dim))
    w_k, w_q, w_v, proj = (rng.normal(size=s) for s in ((dk, dim), (dk, dim), (dv, dim), (dim, dv)))
    mask = np.arange(N) < n
    args = [a.astype(dtype) for a in (context, queries, w_k, w_q, w_v, proj)]
    got = ic.linear_self_attention(*args, where=jnp.asarray(mask))
    assert got.dtype == dtype
    want = np_lsa(*[a.astype(np.float64) for a in args], mask)
    scale = np.abs(queries) + 20.0 * N   # the size of the summed terms
    _close(got, want, RTOL[dtype] * 10, scale, "lsa")


def test_gd_weights_are_the_construction_of_proposition_1():
    """E6: W_K = W_Q select x, W_V = [[0, 0], [W_0, -I]], P = (η/N) I (von Oswald et al., Prop. 1)."""
    w0 = np.arange(6.0).reshape(2, 3)
    w = ic.gd_weights(3, 2, 0.5, 4, w0=w0)
    sel = np.zeros((5, 5))
    sel[:3, :3] = np.eye(3)
    value = np.zeros((5, 5))
    value[3:, :3], value[3:, 3:] = w0, -np.eye(2)
    for got, want in zip(w, (sel, sel, value, 0.125 * np.eye(5)), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert w.proj.dtype == jnp.float64
    assert ic.gd_weights(3, 2, 0.5, 4).w_v.dtype == jnp.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=examples(25))
@given(task=tasks())
def test_lsa_prediction_is_one_gradient_step(dtype, task):
    """E6: LSA readout = GD prediction = (W_0 + (η/N) Σ (y_i - W_0x_i)x_iᵀ) x_q, any W_0, y ∈ R²."""
    x, y, xq, eta, w0, mask = (np.asarray(a, dtype) if a.dtype != bool else a for a in map(np.asarray, task))
    want = xq.astype(np.float64) @ np_gd_step(w0.astype(np.float64), x.astype(np.float64),
                                              y.astype(np.float64), float(eta), mask).T
    lsa = ic.lsa_prediction(x, y, xq, float(eta), w0=w0, where=jnp.asarray(mask))
    gd = ic.gd_prediction(x, y, xq, float(eta), w0=w0, where=jnp.asarray(mask))
    assert lsa.dtype == gd.dtype == dtype
    scale = 1.0 + float(eta) * 3 * D * 4
    _close(lsa, want, RTOL[dtype] * 10, scale, "lsa")
    _close(gd, want, RTOL[dtype] * 10, scale, "gd")


@settings(max_examples=examples(20))
@given(task=tasks())
def test_gd_step_is_minus_eta_times_the_gradient_of_the_loss(task):
    """E6: gd_step = W_0 - η∇L(W_0), ∇ by central differences of the NumPy loss; loss vs NumPy."""
    x, y, _, eta, w0, mask = task
    _close(ic.least_squares_loss(w0, x, y, where=jnp.asarray(mask)), np_loss(w0, x, y, mask), 1e-12)
    h = 1e-6
    grad = np.zeros_like(w0)
    for idx in np.ndindex(*w0.shape):
        e = np.zeros_like(w0)
        e[idx] = h
        grad[idx] = (np_loss(w0 + e, x, y, mask) - np_loss(w0 - e, x, y, mask)) / (2 * h)
    got = ic.gd_step(w0, x, y, eta, where=jnp.asarray(mask))
    _close(got, w0 - eta * grad, 1e-7, 1.0 + eta * 10, "fd")
    _close(got, np_gd_step(w0, x, y, eta, mask), 1e-12, 1.0 + eta * 10, "closed form")


def test_empty_context_predicts_w0_and_batches_agree():
    """N = 0 (all masked): the step is 0 (N read as 1), both routes predict W_0 x_q; batched calls
    (a per-task η and mask) equal task-by-task calls."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, N, D)), rng.normal(size=(2, N, DY))
    xq, w0 = rng.normal(size=(2, M_Q, D)), rng.normal(size=(DY, D))
    mask = np.stack([np.zeros(N, bool), np.arange(N) < 5])
    eta = np.array([0.3, 0.7])
    lsa = np.asarray(ic.lsa_prediction(x, y, xq, jnp.asarray(eta), w0=w0, where=jnp.asarray(mask)))
    gd = np.asarray(ic.gd_prediction(x, y, xq, jnp.asarray(eta), w0=w0, where=jnp.asarray(mask)))
    assert np.all(np.isfinite(lsa))
    _close(lsa[0], xq[0] @ w0.T, 1e-12)
    for b in range(2):
        want = xq[b] @ np_gd_step(w0, x[b], y[b], eta[b], mask[b]).T
        _close(lsa[b], want, 1e-12, msg=f"lsa {b}")
        _close(gd[b], want, 1e-12, msg=f"gd {b}")


def test_lsa_prediction_gradients_are_finite_and_ignore_the_padding():
    """d/dy of Σ ŷ_q² is (2η/N) Σ_q ŷ_q x_iᵀx_q on unmasked examples (closed form), 0 on padding."""
    rng = np.random.default_rng(1)
    x, y, xq = rng.normal(size=(N, D)), rng.normal(size=(N, DY)), rng.normal(size=(M_Q, D))
    mask = np.arange(N) < 3
    gx, gy = jax.jit(jax.grad(lambda x, y: jnp.sum(ic.lsa_prediction(x, y, xq, 0.5, where=jnp.asarray(mask)) ** 2),
                              (0, 1)))(x, y)
    pred = xq @ np_gd_step(np.zeros((DY, D)), x, y, 0.5, mask).T                    # (M_Q, DY)
    want = np.where(mask[:, None], (2 * 0.5 / 3) * (x @ xq.T) @ pred, 0.0)        # (N, DY)
    assert np.all(np.isfinite(np.asarray(gx)))
    _close(gy, want, 1e-12)
    assert np.all(np.asarray(gx)[3:] == 0)


def test_von_oswald_task_distribution():
    """E6 on the paper's setup: d = 10, N = 10, x ~ U(-1, 1), y = wᵀx with w ~ N(0, I): the constructed
    layer's predictions equal GD's for 64 tasks, in float32 to 1e-5, and one step with η ≤ 1 lowers
    the mean query loss below that of W_0 = 0 (the step is a descent step)."""
    rng = np.random.default_rng(2023)
    w = rng.normal(size=(64, 1, 10))
    x, xq = rng.uniform(-1, 1, (64, 10, 10)), rng.uniform(-1, 1, (64, 1, 10))
    y, yq = x @ np.swapaxes(w, -1, -2), xq @ np.swapaxes(w, -1, -2)
    lsa = np.asarray(ic.lsa_prediction(x.astype(np.float32), y.astype(np.float32), xq.astype(np.float32), 0.5))
    gd = xq @ np.swapaxes(np.stack([np_gd_step(np.zeros((1, 10)), x[b], y[b], 0.5, np.ones(10, bool))
                                    for b in range(64)]), -1, -2)
    _close(lsa, gd, 1e-5)
    assert np.mean((gd - yq) ** 2) < np.mean(yq**2)


def test_bfloat16_inputs_compute_in_float32():
    """bfloat16 in, float32 out: equal to the float32 computation on the upcast inputs (E6: the
    same call signature as the float32 property test; E7: against mpmath on the upcast values)."""
    rng = np.random.default_rng(3)
    x, y, xq = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in ((N, D), (N, DY), (M_Q, D)))
    w0, where = jnp.zeros((DY, D), jnp.bfloat16), jnp.ones(N, bool)
    got = ic.lsa_prediction(x, y, xq, 0.25, w0=w0, where=where)
    ref = ic.lsa_prediction(*(a.astype(jnp.float32) for a in (x, y, xq)), 0.25, w0=w0.astype(jnp.float32), where=where)
    assert got.dtype == jnp.float32
    _close(got, ref, 1e-6)
    prior, table = np.array([0.5, 0.5]), np.array([[0.25, 0.75], [0.5, 0.5]])
    lp, le = (jnp.asarray(a, jnp.bfloat16) for a in logs(prior, table))
    post = ic.intent_posterior(lp, le, jnp.asarray([1.0, 3.0], jnp.bfloat16))
    assert post.dtype == jnp.float32
    up_prior, up_table = np.exp(np.asarray(lp, np.float64)), np.exp(np.asarray(le, np.float64))
    _close(post, np_posterior(up_prior, up_table, [0, 1, 1, 1]), 1e-5)


# ============================================================================= E7 references

K, M = 3, 4


def language(rng, k=K, m=M, zeros=True):
    """Random prior and emission table with some exact zeros (never a whole row)."""
    def dist(n):
        w = np.exp(rng.uniform(-6, 0, n))
        if zeros:
            off = rng.random(n) < 0.3
            off[np.argmax(w)] = False
            w[off] = 0.0
        return w / w.sum()
    return dist(k), np.stack([dist(m) for _ in range(k)])


def logs(*arrays):
    with np.errstate(divide="ignore"):
        return tuple(np.log(a) for a in arrays)


def np_posterior(prior, table, messages):
    """Bayes' rule as a product of probabilities, in mpmath (no underflow)."""
    with mpmath.workdps(30):
        joint = [mpmath.mpf(float(prior[t])) * mpmath.fprod(mpmath.mpf(float(table[t, x])) for x in messages)
                 for t in range(len(prior))]
        total = mpmath.fsum(joint)
        return np.array([float(j / total) if total > 0 else 0.0 for j in joint])


@settings(max_examples=examples(30))
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, 12))
def test_intent_posterior_is_bayes_rule(seed, k):
    """E7: the posterior after k messages (any order) is π_θ Π_t p_θ(x_t) normalised; zeros exact."""
    rng = np.random.default_rng(seed)
    prior, table = language(rng)
    messages = rng.integers(0, M, 12)
    mask = np.arange(12) < k
    counts = ic.message_counts(jnp.asarray(messages), M, where=jnp.asarray(mask), dtype=jnp.float64)
    np.testing.assert_array_equal(np.asarray(counts), np.bincount(messages[:k], minlength=M))
    got = np.asarray(ic.intent_posterior(*logs(prior, table), counts))
    want = np_posterior(prior, table, messages[:k])
    _close(got, want, 1e-12)
    assert np.all((got == 0) == (want == 0))
    log_post = np.asarray(ic.intent_log_posterior(*logs(prior, table), counts))
    odds = np.asarray(ic.log_posterior_odds(*logs(prior, table), counts, jnp.asarray(0)))
    if want[0] > 0:
        with np.errstate(divide="ignore"):
            _close(odds[want > 0], (log_post[0] - log_post)[want > 0], 1e-12, 1 + np.abs(log_post[want > 0]))
        assert np.all(np.isposinf(odds[want == 0]))


def test_long_contexts_do_not_underflow_float32():
    """10⁴ messages: p_θ(x_{1:k}) underflows any float, the posterior does not (float32)."""
    prior, table = np.array([0.5, 0.3, 0.2]), np.array([[0.5, 0.5], [0.52, 0.48], [0.6, 0.4]])
    counts = np.array([5100.0, 4900.0], np.float32)
    got = np.asarray(ic.intent_posterior(*(a.astype(np.float32) for a in logs(prior, table)), counts))
    with mpmath.workdps(40):
        joint = [mpmath.mpf(prior[t]) * mpmath.mpf(table[t, 0]) ** 5100 * mpmath.mpf(table[t, 1]) ** 4900
                 for t in range(3)]
        want = np.array([float(j / mpmath.fsum(joint)) for j in joint])
    assert got.dtype == np.float32
    _close(got, want, 2e-3)   # log-joints of size 7e3 carry float32 rounding ~5e-4 into the odds


def test_expected_log_odds_by_enumerating_every_prompt():
    """E7: E[log odds] = log π*/π_θ + k KL(p*‖p_θ), with the expectation over all M^k prompts (NumPy)."""
    rng = np.random.default_rng(4)
    for trial in range(4):
        prior, table = language(rng, zeros=trial % 2 == 1)
        prior = np.where(prior == 0, 0.1, prior) / np.where(prior == 0, 0.1, prior).sum()
        star, k = trial % K, trial + 1
        got = np.asarray(ic.expected_log_posterior_odds(*logs(prior, table), jnp.asarray(star), k))
        total = np.zeros(K)
        for s in itertools.product(range(M), repeat=k):
            p = np.prod(table[star, list(s)])
            if p == 0:
                continue
            with np.errstate(divide="ignore"):
                total += p * (np.log(prior[star]) - np.log(prior)
                              + np.sum(np.log(table[star, list(s)])[:, None] - np.log(table[:, list(s)].T), axis=0))
        assert np.all(np.isposinf(got) == np.isposinf(total)), (got, total)
        fin = np.isfinite(total)
        _close(got[fin], total[fin], 1e-12, 1 + np.abs(total[fin]))
        assert got[star] == 0


def test_bayes_error_monte_carlo_and_ambiguity():
    """E7: Bayes error vs a Monte Carlo of guess-after-one-message (n = 2·10⁵, |error| ≤ 0.005: a
    binomial deviation of > 5.5σ, false-fail rate < 1e-7), and ≤ ε = max_x (1 - max_θ p(θ|x))."""
    rng = np.random.default_rng(5)
    prior, table = language(rng)
    n = 200_000
    theta = rng.choice(K, n, p=prior)
    x = (rng.random(n)[:, None] > np.cumsum(table[theta], axis=1)).sum(axis=1)
    guess = np.argmax(prior[:, None] * table, axis=0)[x]
    err = float(ic.bayes_error(*logs(prior, table)))
    assert abs(err - np.mean(guess != theta)) <= 0.005
    joint = prior[:, None] * table
    px = joint.sum(axis=0)
    eps_x = np.where(px > 0, 1 - joint.max(axis=0) / np.where(px > 0, px, 1), 0.0)
    _close(ic.message_ambiguity(*logs(prior, table)), eps_x, 1e-12)
    _close(ic.ambiguity(*logs(prior, table)), eps_x.max(), 1e-12)
    assert err <= eps_x.max() + 1e-12


def test_unambiguous_languages():
    """E7: one emitter per possible message ⇔ unambiguous; an intent with zero prior does not count."""
    table = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.3, 0.7]])
    prior = np.array([0.2, 0.8, 0.0])
    assert bool(ic.is_unambiguous(*logs(prior, table)))
    assert float(ic.ambiguity(*logs(prior, table))) == 0.0
    post = np.asarray(ic.intent_posterior(*logs(prior, table), np.eye(4)))
    np.testing.assert_array_equal(post, [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])  # x = 3 cannot occur
    prior2 = np.array([0.2, 0.4, 0.4])
    assert not bool(ic.is_unambiguous(*logs(prior2, table)))
    assert float(ic.ambiguity(*logs(prior2, table))) == pytest.approx(0.4 * 0.3 / (0.4 + 0.4 * 0.3))


def test_sequence_table_is_the_product_over_positions():
    rng = np.random.default_rng(6)
    _, table = language(rng, m=3)
    got = np.asarray(ic.sequence_log_emissions(*logs(table), 3))
    with np.errstate(divide="ignore"):
        want = np.stack([np.log([np.prod(table[t, list(s)]) for s in itertools.product(range(3), repeat=3)])
                         for t in range(K)])
    assert got.shape == (K, 27)
    assert np.all(np.isneginf(got) == np.isneginf(want))
    fin = np.isfinite(want)
    _close(got[fin], want[fin], 1e-13, 1 + np.abs(want[fin]))
    np.testing.assert_array_equal(np.asarray(ic.sequence_log_emissions(*logs(table), 0)), np.zeros((K, 1)))


def test_impossible_observations_give_zeros_and_finite_gradients():
    """No intent can emit the observation: posterior 0, log posterior -inf, no NaN; gradients finite
    (also where an entry is log 0 = -inf)."""
    table = np.array([[0.5, 0.5, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    lp, le = logs(np.array([0.5, 0.5, 0.0]), table)
    counts = np.array([1.0, 0.0, 2.0, 0.0])                     # message 2: nobody emits it
    assert np.all(np.asarray(ic.intent_posterior(lp, le, counts)) == 0)
    assert np.all(np.isneginf(np.asarray(ic.intent_log_posterior(lp, le, counts))))
    ok = jnp.asarray([3.0, 1.0, 0.0, 0.0])

    def objective(a, b):   # one compilation for both gradients
        return jnp.sum(ic.intent_posterior(a, b, ok) * jnp.arange(3.0)) + ic.bayes_error(a, b)

    g = jax.jit(jax.grad(objective, (0, 1)))(jnp.asarray(lp), jnp.asarray(le))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in g)


# ============================================================================= argument errors

X, Y, XQ = jnp.zeros((N, D)), jnp.zeros((N, DY)), jnp.zeros((M_Q, D))
LP, LE = jnp.zeros(K), jnp.zeros((K, M))


@pytest.mark.parametrize("call, exc, name", [
    (lambda: ic.gd_prediction(X, Y, XQ, 0.0), ValueError, "learning_rate"),
    (lambda: ic.gd_prediction(X, Y, XQ, -1.0), ValueError, "learning_rate"),
    (lambda: ic.gd_prediction(X, Y[:3], XQ, 0.1), ValueError, "y"),
    (lambda: ic.gd_prediction(X, Y, jnp.zeros((2, 4)), 0.1), ValueError, "x_query"),
    (lambda: ic.gd_prediction(X, Y, XQ, 0.1, where=jnp.ones(3, bool)), ValueError, "where"),
    (lambda: ic.gd_prediction(X, Y, XQ, 0.1, where=jnp.ones(N)), TypeError, "where"),
    (lambda: ic.lsa_prediction(X, Y, XQ, 0.1, w0=jnp.zeros((D, DY))), ValueError, "w0"),
    (lambda: ic.lsa_prediction(X.astype(jnp.int32), Y, XQ, 0.1), TypeError, "x"),
    (lambda: ic.gd_step(jnp.zeros((DY, D + 1)), X, Y, 0.1), ValueError, "w0"),
    (lambda: ic.least_squares_loss(jnp.zeros((DY, D)), X, jnp.zeros(N)), ValueError, "y"),
    (lambda: ic.gd_weights(0, 1, 0.1, 4), ValueError, "dim_x"),
    (lambda: ic.gd_weights(2, 1, 0.1, 0), ValueError, "n_context"),
    (lambda: ic.gd_weights(2, 1, float("nan"), 4), ValueError, "learning_rate"),
    (lambda: ic.linear_self_attention(jnp.zeros((N, D + 1)), XQ, jnp.zeros((4, D)), jnp.zeros((4, D)),
                                      jnp.zeros((3, D)), jnp.zeros((D, 3))), ValueError, "`context`: 4"),
    (lambda: ic.linear_self_attention(Y, Y, jnp.zeros((4, DY)), jnp.zeros((3, DY)), jnp.zeros((3, DY)),
                                      jnp.zeros((DY, 3))), ValueError, "`w_q`: 3"),
    (lambda: ic.intent_posterior(LP, jnp.zeros((K + 1, M)), jnp.zeros(M)), ValueError, "log_prior"),
    (lambda: ic.intent_posterior(LP, LE, jnp.zeros(M + 1)), ValueError, "counts"),
    (lambda: ic.message_counts(jnp.zeros(3), M), TypeError, "messages"),
    (lambda: ic.message_counts(jnp.zeros(3, jnp.int32), 0), ValueError, "num_messages"),
    (lambda: ic.expected_log_posterior_odds(LP, LE, jnp.asarray(0), -1.0), ValueError, "num_examples"),
    (lambda: ic.expected_log_posterior_odds(LP, LE, jnp.asarray(0.0), 1.0), TypeError, "intent"),
    (lambda: ic.sequence_log_emissions(LE, 40), ValueError, "MAX_SEQUENCES"),
    (lambda: ic.bayes_error(jnp.zeros((K,), jnp.int32), LE), TypeError, "log_prior"),
    (lambda: ic.intent_posterior(jnp.zeros(0), jnp.zeros((0, M)), jnp.zeros(M)), ValueError, "`log_prior` has no classes"),
    (lambda: ic.intent_posterior(LP, jnp.zeros((K, 0)), jnp.zeros(0)), ValueError, "`log_emissions` has no classes"),
])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as err:
        call()
    assert name in str(err.value), str(err.value)


def test_public_functions_document_a_formula():
    for name in ic.__all__:
        obj = getattr(ic, name)
        if callable(obj) and name != "LSAWeights":
            doc = obj.__doc__ or ""
            assert "math" in doc, name

