r"""In-context learning as gradient descent and as Bayesian inference (claims E6, E7 of ``CLAIMS.md``;
seeds 001, 004).

E6 (von Oswald et al. 2022, Proposition 1): one linear self-attention layer with constructed
weights moves the query token by exactly one gradient-descent step on the in-context
least-squares loss, for every task: regression tasks with ``d ≤ 8`` inputs, ``d_y ≤ 2`` outputs
and ``N ≤ 16`` examples, embedded in one shape (zero coordinates beyond ``d``, ``d_y``; examples
beyond ``N`` masked by the layer's ``where``, holding garbage the mask must hide), so that each
chain compiles once.

E7 (seed 004, Jiang 2023; Xie et al. 2021): a small discrete model of intents (``K = 3``) and
messages. Expectations over prompts are computed exactly: by enumerating all ``3³`` prompts of
three messages (a prompt of ``k ≤ 3`` messages is its first ``k``; the others are summed out), or,
for two messages, by summing over the ``k + 1`` message counts with binomial weights (the counts
are the sufficient statistic), which reaches ``k = 2¹¹``.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import vfe
from proofs.catalogue import Claim
from vfe import in_context as ic
from vfe._numerics import mul_no_nan, xlogy
from vfe.derivation import Derivation, Step, Terms, geometric

CLAIMS = (
    Claim(
        id="E6", title="In-context learning as one gradient-descent step (linear self-attention)", seeds=("001",),
        wording="「Transformerの各層が、勾配降下法と同じ役割を果たし、これまでの生成した内容に応じて適応している "
                "[Oswald 2022]」 (\"each layer of the Transformer plays the same role as gradient descent, adapting to "
                "what has been generated so far\")",
        statement=r"Tokens $e_i = (x_i, y_i)$, $i \le N$, and a query $e_q = (x_q, -W_0x_q)$. The linear self-attention "
                  r"layer $e_j \leftarrow e_j + P\sum_{i=1}^N (W_Ve_i)(W_Ke_i)^\top(W_Qe_j)$ with "
                  r"$W_K = W_Q = \begin{pmatrix}I&0\\0&0\end{pmatrix}$, "
                  r"$W_V = \begin{pmatrix}0&0\\W_0&-I\end{pmatrix}$, $P = \frac{\eta}{N}I$ maps every token "
                  r"$(x_j, y_j)$ to $(x_j, y_j - \Delta W x_j)$, $\Delta W = -\eta\nabla L(W_0)$, "
                  r"$L(W) = \frac{1}{2N}\sum_i\lVert Wx_i - y_i\rVert^2$; so minus the query's $y$-entry is the "
                  r"prediction $(W_0 + \Delta W)x_q$ of one GD step (with $W_0 = 0$: "
                  r"$\frac{\eta}{N}\sum_i y_i\,x_i^\top x_q$), exactly, for every task and any $W_0$",
        verdict="loose: the construction is exact (one linear self-attention layer, every task, any W_0, "
                "multi-dimensional y), but 'each layer of the Transformer' is not: with softmax attention the same "
                "weights do not make a GD step (refuted on a counterexample), and the equivalence is a construction, "
                "which trained linear layers are found to match on regression tasks",
        functions=("vfe.in_context.linear_self_attention", "vfe.in_context.gd_weights",
                   "vfe.in_context.lsa_prediction", "vfe.in_context.gd_prediction", "vfe.in_context.gd_step",
                   "vfe.in_context.least_squares_loss"),
    ),
    Claim(
        id="E7", title="In-context learning as Bayesian inference over a latent intent", seeds=("004",),
        wording="「言語を「非曖昧(unambiguous)」と「ε-曖昧(ε-ambiguous)」に分類し、それぞれでのモデル挙動を定量的に示す」 "
                "(\"it classifies languages as unambiguous and ε-ambiguous and shows the model's behaviour in each "
                "quantitatively\"), 「モデルは文脈から迅速に適切な意味に収束し」 (\"the model quickly converges from "
                "the context to the appropriate meaning\"), 「マージナル(周辺)分布が同時分布のピークと一致しやすく」 "
                "(\"the marginal distribution tends to coincide with the peak of the joint\") and 「言葉と意味の対応が"
                "尖っている領域では比較的安定した運用が期待できる」 (\"where the correspondence between words and meanings "
                "is sharp, relatively stable operation can be expected\"); the article gives no formulas",
        statement=r"Intents $\theta$ with prior $\pi$ emit i.i.d. messages $x \sim p_\theta$. (i) "
                  r"$\mathbb E_{x_{1:k}\sim p_{\theta^*}}\log\frac{p(\theta^*|x_{1:k})}{p(\theta|x_{1:k})} = "
                  r"\log\frac{\pi_{\theta^*}}{\pi_\theta} + k\,\mathrm{KL}(p_{\theta^*}\|p_\theta)$; (ii) "
                  r"$\mathbb E\,p(\theta^*|x_{1:k}) \to \pi_{\theta^*}/\sum_{\theta: p_\theta = p_{\theta^*}}\pi_\theta$ "
                  r"(to 1 when every other intent is distinguishable), with "
                  r"$\mathbb E[1 - p(\theta^*|x_{1:k})] \le \sum_{\theta\ne\theta^*}\sqrt{\pi_\theta/\pi_{\theta^*}}\,"
                  r"\mathrm{BC}(p_{\theta^*}, p_\theta)^k$; (iii) unambiguous (each possible message has one intent "
                  r"that can emit it) $\Rightarrow$ the posterior is one-hot after one message; (iv) "
                  r"$\varepsilon$-ambiguous ($\max_\theta p(\theta|x) \ge 1-\varepsilon$ for every possible $x$) "
                  r"$\Rightarrow \max_\theta p(x,\theta) \ge (1-\varepsilon)p(x)$ and the Bayes guess errs with "
                  r"probability $\le\varepsilon$; more examples never raise the Bayes error",
        verdict="loose (the precise versions above hold): ε-ambiguity bounds the error averaged over the intents, not for "
                "each intent (a rare intent can be misread every time: refuted), and the worst-case ambiguity of a "
                "k-example prompt can grow with k (refuted) although the Bayes error cannot",
        functions=("vfe.in_context.intent_posterior", "vfe.in_context.intent_log_posterior",
                   "vfe.in_context.log_posterior_odds", "vfe.in_context.expected_log_posterior_odds",
                   "vfe.in_context.message_counts", "vfe.in_context.bayes_guess", "vfe.in_context.bayes_error",
                   "vfe.in_context.message_ambiguity", "vfe.in_context.ambiguity", "vfe.in_context.is_unambiguous",
                   "vfe.in_context.sequence_log_emissions"),
    ),
)

# ============================================================================= E6

N_MAX, D_MAX, DY_MAX = 16, 8, 2
_TIGHT = 1e-12                        # E6 holds to float64 rounding


@st.composite
def _regression_task(draw, *, zero_init: bool = False):
    """A regression task in ``d ≤ 8`` input and ``d_y ≤ 2`` output dimensions with ``N ≤ 16``
    examples and 2 queries, embedded in one shape (so the chain compiles once): the coordinates
    beyond ``d`` and ``d_y`` are 0 and the examples beyond ``N`` are masked out (they hold garbage
    that the mask must hide). Entries are uniform on [-1, 1] (targets ×1 or ×5) from a drawn
    seed; the learning rate is log-uniform on [1e-3, 3]; ``W_0`` is 0 or random."""
    d, dy, n = draw(st.integers(1, D_MAX)), draw(st.integers(1, DY_MAX)), draw(st.integers(1, N_MAX))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-1, 1, (N_MAX, D_MAX)) * (np.arange(D_MAX) < d)
    y = draw(st.sampled_from([1.0, 5.0])) * rng.uniform(-1, 1, (N_MAX, DY_MAX)) * (np.arange(DY_MAX) < dy)
    x[n:] = rng.uniform(-50, 50, (N_MAX - n, D_MAX))      # padding: garbage
    y[n:] = rng.uniform(-50, 50, (N_MAX - n, DY_MAX))
    x_query = rng.uniform(-1, 1, (2, D_MAX)) * (np.arange(D_MAX) < d)
    eta = 10.0 ** draw(st.floats(-3.0, 0.5))
    random_init = not zero_init and draw(st.booleans())
    w0 = rng.uniform(-1, 1, (DY_MAX, D_MAX)) * (np.arange(DY_MAX) < dy)[:, None] if random_init else np.zeros((DY_MAX, D_MAX))
    return {"x": x, "y": y, "x_query": x_query, "eta": eta, "w0": w0, "where": np.arange(N_MAX) < n}


def _n(where):
    return jnp.sum(where).astype(jnp.float64)


def _tokens(x, y, x_query, w0):
    """Context tokens ``(x_i, y_i)`` and query tokens ``(x_q, -W_0 x_q)``."""
    return jnp.concatenate([x, y], -1), jnp.concatenate([x_query, -x_query @ w0.T], -1)


def _lsa_readout(x, y, x_query, eta, w0, where, **_):
    """Minus the query's y-entry after vfe's linear self-attention with the constructed weights."""
    dim_x, dim_y = x.shape[-1], y.shape[-1]
    weights = ic.gd_weights(dim_x, dim_y, eta, _n(where), w0=w0)
    context, queries = _tokens(x, y, x_query, w0)
    return -ic.linear_self_attention(context, queries, *weights, where=where)[:, dim_x:]


def _masked(where, a):
    return jnp.where(where[:, None], a, 0.0)


def _grad_l(w0, x, y, where):
    return jax.grad(lambda w: ic.least_squares_loss(w, x, y, where=where))(w0)


E6_LSA_IS_GD = Derivation(
    claim="E6",
    title="One linear self-attention layer makes exactly one GD step's prediction",
    statement=r"-\big[\mathrm{LSA}(e_q)\big]_y = (W_0 - \eta\nabla L(W_0))\,x_q,\quad "
              r"L(W) = \tfrac{1}{2N}\textstyle\sum_i\lVert Wx_i - y_i\rVert^2",
    inputs=_regression_task(),
    steps=[
        Step(r"-\big[e_q + P\sum_i (W_Ve_i)(W_Ke_i)^\top W_Qe_q\big]_y",
             "vfe.in_context.linear_self_attention with vfe.in_context.gd_weights (Proposition 1), "
             r"query token $(x_q, -W_0x_q)$, $N$ = unmasked tokens",
             _lsa_readout),
        Step(r"W_0x_q - \frac{\eta}{N}\sum_i (W_0x_i - y_i)\,x_i^\top x_q",
             r"$W_Ke_i = (x_i, 0)$ and $W_Qe_q = (x_q, 0)$, so $(W_Ke_i)^\top W_Qe_q = x_i^\top x_q$; "
             r"$W_Ve_i = (0, W_0x_i - y_i)$; $P = \frac{\eta}{N}I$",
             lambda x, y, x_query, eta, w0, where: Terms(
                 x_query @ w0.T,
                 -(eta / _n(where)) * (x_query @ _masked(where, x).T) @ _masked(where, x @ w0.T - y)),
             tol=_TIGHT),
        Step(r"\Big(W_0 - \frac{\eta}{N}\sum_i (W_0x_i - y_i)x_i^\top\Big)x_q",
             r"pull $x_q$ out of the sum: $(W_0x_i - y_i)\,x_i^\top x_q = \big((W_0x_i - y_i)x_i^\top\big)x_q$",
             lambda x, y, x_query, eta, w0, where: x_query @ (
                 w0 - (eta / _n(where)) * _masked(where, x @ w0.T - y).T @ _masked(where, x)).T,
             tol=_TIGHT),
        Step(r"\big(W_0 - \eta\nabla L(W_0)\big)x_q",
             r"$\nabla L(W) = \frac1N\sum_i (Wx_i - y_i)x_i^\top$ (autodiff of vfe.in_context.least_squares_loss)",
             lambda x, y, x_query, eta, w0, where: x_query @ (w0 - eta * _grad_l(w0, x, y, where)).T,
             tol=_TIGHT),
        Step(r"W_1x_q", "vfe.in_context.gd_prediction (one GD step from $W_0$, then predict)",
             lambda x, y, x_query, eta, w0, where: ic.gd_prediction(x, y, x_query, eta, w0=w0, where=where),
             tol=_TIGHT),
    ],
)

E6_ZERO_INIT = Derivation(
    claim="E6",
    title="From W_0 = 0: the LSA prediction is (η/N) Σ y_i x_iᵀ x_q",
    statement=r"W_0 = 0:\quad -\big[\mathrm{LSA}(e_q)\big]_y = \frac{\eta}{N}\sum_i y_i\,x_i^\top x_q "
              r"= -\eta\nabla L(0)\,x_q",
    inputs=_regression_task(zero_init=True),
    steps=[
        Step(r"-\big[\mathrm{LSA}(e_q)\big]_y", "vfe.in_context.lsa_prediction (query token $(x_q, 0)$)",
             lambda x, y, x_query, eta, where, **_: ic.lsa_prediction(x, y, x_query, eta, where=where)),
        Step(r"\frac{\eta}{N}\sum_i y_i\,x_i^\top x_q", r"the construction with $W_0 = 0$: $W_Ve_i = (0, -y_i)$",
             lambda x, y, x_query, eta, where, **_: (eta / _n(where)) * (x_query @ _masked(where, x).T)
             @ _masked(where, y), tol=_TIGHT),
        Step(r"-\eta\nabla L(0)\,x_q", r"$\nabla L(0) = -\frac1N\sum_i y_ix_i^\top$ (autodiff)",
             lambda x, y, x_query, eta, w0, where: x_query @ (-eta * _grad_l(w0, x, y, where)).T, tol=_TIGHT),
        Step(r"\Delta W\,x_q", "vfe.in_context.gd_prediction from $W_0 = 0$",
             lambda x, y, x_query, eta, where, **_: ic.gd_prediction(x, y, x_query, eta, where=where), tol=_TIGHT),
    ],
)

E6_DATA = Derivation(
    claim="E6",
    title="The layer transforms the data as a GD step transforms the model",
    statement=r"L\big(W_0;\,x,\,y - \Delta W x\big) = L\big(W_0 + \Delta W;\,x,\,y\big),\quad "
              r"(x_j, y_j - \Delta Wx_j) = \mathrm{LSA}(e_j)",
    inputs=_regression_task(),
    steps=[
        Step(r"L\big(W_0;\, x,\, [\mathrm{LSA}(e_j)]_y\big)",
             "vfe.in_context.linear_self_attention of the context on itself, then "
             "vfe.in_context.least_squares_loss of $W_0$ on the updated targets",
             lambda x, y, x_query, eta, w0, where: ic.least_squares_loss(
                 w0, x, ic.linear_self_attention(
                     _tokens(x, y, x_query, w0)[0], _tokens(x, y, x_query, w0)[0],
                     *ic.gd_weights(x.shape[-1], y.shape[-1], eta, _n(where), w0=w0), where=where)[:, x.shape[-1]:],
                 where=where)),
        Step(r"\frac{1}{2N}\sum_i\lVert W_0x_i - (y_i - \Delta Wx_i)\rVert^2",
             r"the construction moves each token's $y$ to $y_j + \frac{\eta}{N}\sum_i(W_0x_i - y_i)x_i^\top x_j "
             r"= y_j - \Delta Wx_j$",
             lambda x, y, x_query, eta, w0, where: jnp.sum(_masked(where, x @ w0.T - (
                 y - x @ (ic.gd_step(w0, x, y, eta, where=where) - w0).T)) ** 2) / (2 * _n(where))),
        Step(r"\frac{1}{2N}\sum_i\lVert (W_0 + \Delta W)x_i - y_i\rVert^2", "regroup",
             lambda x, y, x_query, eta, w0, where: jnp.sum(_masked(
                 where, x @ ic.gd_step(w0, x, y, eta, where=where).T - y) ** 2) / (2 * _n(where))),
        Step(r"L(W_1)", "vfe.in_context.least_squares_loss at vfe.in_context.gd_step",
             lambda x, y, x_query, eta, w0, where: ic.least_squares_loss(
                 ic.gd_step(w0, x, y, eta, where=where), x, y, where=where)),
    ],
)


def _softmax_readout(x, y, x_query, eta, w0, where):
    """The same weights in a softmax attention layer (P = η I: softmax already averages)."""
    dim_x = x.shape[-1]
    w = ic.gd_weights(dim_x, y.shape[-1], eta, 1, w0=w0)
    context, queries = _tokens(x, y, x_query, w0)
    scores = (queries @ w.w_q.T) @ (context @ w.w_k.T).T
    attn = jax.nn.softmax(jnp.where(where[None, :], scores, -jnp.inf), axis=-1)
    return -(queries + (attn @ (context @ w.w_v.T)) @ w.proj.T)[:, dim_x:]


E6_SEED_SOFTMAX = Derivation(
    claim="E6",
    title="Seed, read as 'every Transformer layer': softmax attention with these weights makes a GD step",
    statement=r"-\big[e_q + P\sum_i\mathrm{softmax}_i(e_i^\top W_K^\top W_Qe_q)\,W_Ve_i\big]_y = W_1x_q",
    inputs=_regression_task(),
    # one example, x_1 = y_1 = 1, x_q = 2: softmax attention to one token predicts η y_1 = 1 whatever x_q;
    # the GD step predicts η y_1 x_1 x_q = 2
    examples=[{"x": np.array([[1.0]]), "y": np.array([[1.0]]), "x_query": np.array([[2.0]]), "eta": 1.0,
               "w0": np.zeros((1, 1)), "where": np.array([True])}],
    expect="refuted",
    steps=[
        Step(r"-\big[\mathrm{softmax\ attention}(e_q)\big]_y",
             r"the constructed $W_K, W_Q, W_V$ with $P = \eta I$ in a softmax attention layer", _softmax_readout),
        Step(r"W_1x_q", "vfe.in_context.gd_prediction: the claim (it holds for linear attention only)",
             lambda x, y, x_query, eta, w0, where: ic.gd_prediction(x, y, x_query, eta, w0=w0, where=where)),
    ],
)

# ============================================================================= E7

K = 3          # intents


def _distribution(rng, n: int, *, zeros: bool = True, keep: int | None = None) -> np.ndarray:
    """A distribution on ``n`` outcomes: weights ``e^u``, ``u`` uniform on ``[-8, 0]``, each
    exactly 0 with probability 1/3 when ``zeros`` (never all; never entry ``keep``)."""
    w = np.exp(rng.uniform(-8.0, 0.0, n))
    if zeros:
        off = rng.random(n) < 1 / 3
        off[int(np.argmax(w)) if keep is None else keep] = False
        w = np.where(off, 0.0, w)
    return w / w.sum()


def _logs(**arrays):
    with np.errstate(divide="ignore"):
        return {k: np.log(v) for k, v in arrays.items()}


@st.composite
def _language(draw, m: int, *, prior_zeros: bool = True):
    """``(log π, log p_θ(x), θ*)``: K intents on m messages from a drawn seed, zeros allowed, π_θ* > 0."""
    star = draw(st.integers(0, K - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prior = _distribution(rng, K, zeros=prior_zeros, keep=star)
    table = np.stack([_distribution(rng, m) for _ in range(K)])
    return {**_logs(log_prior=prior, log_emissions=table), "star": np.int64(star)}


# ----------------------------------------------------------------------------- (i) expected log odds

_M_ODDS, _T = 3, 3
_PROMPTS = np.array(list(itertools.product(range(_M_ODDS), repeat=_T)))    # all 27 prompts of 3 messages


def _prompt_weights(log_emissions, star):
    """``P*(s) = Π_t p_θ*(s_t)`` for each of the 27 prompts."""
    return jnp.prod(jnp.exp(log_emissions[star])[_PROMPTS], axis=-1)


def _first(k):
    """``(27, 3)`` mask of the first ``k`` positions."""
    return jnp.arange(_T)[None, :] < k


def _expectation(weights, values):
    """``Σ_s w_s v_s`` over the leading axis, ``0·(±inf or NaN) = 0``."""
    return jnp.sum(mul_no_nan(weights[:, None], values), axis=0)


def _odds_by_prompt(log_prior, log_emissions, star, k):
    counts = ic.message_counts(jnp.asarray(_PROMPTS), _M_ODDS, where=jnp.broadcast_to(_first(k), _PROMPTS.shape),
                               dtype=jnp.float64)
    return ic.log_posterior_odds(log_prior, log_emissions, counts, jnp.broadcast_to(star, (len(_PROMPTS),)))


def _odds_written_out(log_prior, log_emissions, star, k):
    per_message = log_emissions[star][_PROMPTS][:, :, None] - log_emissions.T[_PROMPTS]      # (27, 3, K)
    summed = jnp.sum(jnp.where(_first(k)[:, :, None], per_message, 0.0), axis=1)
    prior_odds = log_prior[star] - log_prior
    star_row = jnp.arange(K) == star
    return jnp.where(star_row, 0.0, prior_odds + summed)


def _kl_sum(log_emissions, star):
    """``E_{x~p*} log p*(x)/p_θ(x)`` written out (``0 log 0 = 0``)."""
    p_star = jnp.exp(log_emissions[star])
    return jnp.sum(mul_no_nan(p_star[None, :], log_emissions[star][None, :] - log_emissions), axis=-1)


E7_ODDS = Derivation(
    claim="E7",
    title="Expected log posterior odds grow by KL(p_θ* ‖ p_θ) per example",
    statement=r"\mathbb E_{x_{1:k}\sim p_{\theta^*}}\log\frac{p(\theta^*|x_{1:k})}{p(\theta|x_{1:k})}"
              r" = \log\frac{\pi_{\theta^*}}{\pi_\theta} + k\,\mathrm{KL}(p_{\theta^*}\|p_\theta)",
    inputs=st.tuples(_language(_M_ODDS), st.integers(0, _T)).map(lambda t: {**t[0], "k": np.int64(t[1])}),
    steps=[
        Step(r"\sum_{s\in\mathcal X^3} P_{\theta^*}(s)\,\log\frac{p(\theta^*|s_{1:k})}{p(\theta|s_{1:k})}",
             "exact expectation over all 27 prompts of 3 messages (the last 3 − k summed out); "
             "vfe.in_context.log_posterior_odds of vfe.in_context.message_counts",
             lambda log_prior, log_emissions, star, k: _expectation(
                 _prompt_weights(log_emissions, star), _odds_by_prompt(log_prior, log_emissions, star, k))),
        Step(r"\sum_s P_{\theta^*}(s)\Big[\log\frac{\pi_{\theta^*}}{\pi_\theta}"
             r" + \sum_{t\le k}\log\frac{p_{\theta^*}(s_t)}{p_\theta(s_t)}\Big]",
             r"Bayes' rule: $p(\theta|s) = \pi_\theta\prod_t p_\theta(s_t)/p(s)$, and $p(s)$ cancels in the ratio",
             lambda log_prior, log_emissions, star, k: _expectation(
                 _prompt_weights(log_emissions, star), _odds_written_out(log_prior, log_emissions, star, k))),
        Step(r"\log\frac{\pi_{\theta^*}}{\pi_\theta} + k\sum_x p_{\theta^*}(x)\log\frac{p_{\theta^*}(x)}{p_\theta(x)}",
             r"linearity; $\sum_s P_{\theta^*}(s) = 1$ and each $s_t \sim p_{\theta^*}$",
             lambda log_prior, log_emissions, star, k: jnp.where(
                 jnp.arange(K) == star, 0.0,
                 (log_prior[star] - log_prior) + mul_no_nan(jnp.full(K, k, jnp.float64), _kl_sum(log_emissions, star)))),
        Step(r"\log\frac{\pi_{\theta^*}}{\pi_\theta} + k\,\mathrm{KL}(p_{\theta^*}\|p_\theta)",
             "definition of KL; vfe.kl_divergence",
             lambda log_prior, log_emissions, star, k: jnp.where(
                 jnp.arange(K) == star, 0.0, (log_prior[star] - log_prior) + mul_no_nan(
                     jnp.full(K, k, jnp.float64),
                     vfe.kl_divergence(jnp.broadcast_to(jnp.exp(log_emissions[star]), (K, _M_ODDS)),
                                       jnp.exp(log_emissions))))),
        Step(r"\mathbb E\log\text{odds}", "vfe.in_context.expected_log_posterior_odds",
             lambda log_prior, log_emissions, star, k: ic.expected_log_posterior_odds(
                 log_prior, log_emissions, star, k.astype(jnp.float64))),
    ],
)

# ----------------------------------------------------------------------------- (ii) concentration

_K_MAX = 1 << 11
_COUNTS = jnp.arange(_K_MAX + 1, dtype=jnp.float64)      # n = number of messages "1" among k
_SEPARATION = 0.35


@st.composite
def _bernoulli_language(draw, k_max: int | None = None):
    """Three intents on two messages, ``p_θ(1) = b_θ``. The intent after θ* differs from it by at
    least 0.35 in ``b`` (so its Chernoff information is at least ``-log(2√(0.325·0.675)) ≈ 0.065``) and
    has prior mass; the third one too, or (probability 1/4) equals θ* exactly: indistinguishable,
    the posterior then keeps their prior ratio. The third intent's prior may be 0."""
    star = draw(st.integers(0, K - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b_star = draw(st.sampled_from([0.0, 0.5, 1.0, float(rng.random())]))
    b = np.full(K, b_star)
    other, third = (star + 1) % K, (star + 2) % K
    for theta in (other, third):
        if theta == other or rng.random() < 0.75:
            # a point of [0, b* - s] ∪ [b* + s, 1], the two pieces laid end to end
            left, right = max(b_star - _SEPARATION, 0.0), max(1.0 - b_star - _SEPARATION, 0.0)
            pos = rng.random() * (left + right)
            b[theta] = pos if pos < left else min(b_star + _SEPARATION + (pos - left), 1.0)
    prior = _distribution(rng, K, keep=star)
    if prior[other] == 0:
        prior[other] = prior[star]
        prior /= prior.sum()
    out = {**_logs(log_prior=prior, log_emissions=np.stack([1 - b, b], axis=-1)), "star": np.int64(star)}
    if k_max is not None:
        out["k"] = np.int64(draw(st.integers(0, k_max)))
    return out


def _binomial_weights(log_emissions, star, k, counts):
    """``Binom(n; k, b*)`` for ``n`` in ``counts`` (0 beyond k), renormalised (lgamma rounding)."""
    b = jnp.exp(log_emissions[star, 1])
    log_w = (jax.scipy.special.gammaln(k + 1) - jax.scipy.special.gammaln(counts + 1)
             - jax.scipy.special.gammaln(jnp.maximum(k - counts, 0) + 1)
             + xlogy(counts, b) + xlogy(jnp.maximum(k - counts, 0), 1 - b))
    log_w = jnp.where(counts <= k, log_w, -jnp.inf)
    return jnp.exp(log_w - jax.nn.logsumexp(log_w))


def _posterior_by_count(log_prior, log_emissions, k, counts):
    pairs = jnp.stack([jnp.maximum(k - counts, 0.0), counts], axis=-1)
    return ic.intent_posterior(log_prior, log_emissions, pairs)                       # (n, K)


def _expected_posterior(log_prior, log_emissions, star, k, counts=_COUNTS):
    w = _binomial_weights(log_emissions, star, k, counts)
    return jnp.sum(w * _posterior_by_count(log_prior, log_emissions, k, counts)[:, star])


def _indistinguishable_share(log_prior, log_emissions, star):
    same = jnp.all(log_emissions == log_emissions[star], axis=-1)
    prior = jnp.exp(log_prior)
    return prior[star] / jnp.sum(jnp.where(same, prior, 0.0))


E7_CONCENTRATION = Derivation(
    claim="E7",
    title="The posterior concentrates on the true intent (up to indistinguishable ones)",
    statement=r"\mathbb E_{x_{1:k}\sim p_{\theta^*}}\,p(\theta^*|x_{1:k}) \xrightarrow{k\to\infty}"
              r" \frac{\pi_{\theta^*}}{\sum_{\theta:\,p_\theta = p_{\theta^*}}\pi_\theta}",
    inputs=_bernoulli_language(),
    schedule=geometric("k", 1.0, float(_K_MAX), 12, r"k \to \infty"),
    steps=[
        Step(r"\sum_{n=0}^{k}\binom{k}{n}b_*^n(1-b_*)^{k-n}\,p(\theta^*\mid n)",
             "exact expectation over the count n of message 1 (the sufficient statistic); "
             "vfe.in_context.intent_posterior of the counts (k − n, n)",
             lambda log_prior, log_emissions, star, k: _expected_posterior(log_prior, log_emissions, star, jnp.round(k))),
        Step(r"\frac{\pi_{\theta^*}}{\sum_{\theta:\,p_\theta = p_{\theta^*}}\pi_\theta}",
             r"against each distinguishable $\theta$ the log odds grow like $k\,\mathrm{KL} \to \infty$ in "
             r"probability (law of large numbers); indistinguishable intents keep their prior ratio; bounded convergence",
             lambda log_prior, log_emissions, star, k: _indistinguishable_share(log_prior, log_emissions, star),
             relation="->"),
    ],
)

_K_BOUND = 256
_BOUND_COUNTS = jnp.arange(_K_BOUND + 1, dtype=jnp.float64)


def _not_star(star):
    return jnp.arange(K) != star


def _expected_by_count(log_prior, log_emissions, star, k, values):
    w = _binomial_weights(log_emissions, star, k, _BOUND_COUNTS)
    return _expectation(w, values)


def _odds_by_count(log_prior, log_emissions, star, k):
    pairs = jnp.stack([jnp.maximum(k - _BOUND_COUNTS, 0.0), _BOUND_COUNTS], axis=-1)
    return ic.log_posterior_odds(log_prior, log_emissions, pairs, jnp.broadcast_to(star, _BOUND_COUNTS.shape))


def _bhattacharyya(log_emissions, star):
    return jnp.sum(jnp.exp(0.5 * (log_emissions[star][None, :] + log_emissions)), axis=-1)


E7_RATE = Derivation(
    claim="E7",
    title="The posterior error decays exponentially (Bhattacharyya bound)",
    statement=r"\mathbb E_{x_{1:k}\sim p_{\theta^*}}\big[1 - p(\theta^*|x_{1:k})\big] \le "
              r"\sum_{\theta\ne\theta^*}\sqrt{\pi_\theta/\pi_{\theta^*}}\;\mathrm{BC}(p_{\theta^*}, p_\theta)^k,"
              r"\quad \mathrm{BC}(p, q) = \sum_x\sqrt{p(x)q(x)}",
    inputs=_bernoulli_language(k_max=_K_BOUND),
    steps=[
        Step(r"\mathbb E\big[1 - p(\theta^*|x_{1:k})\big]",
             "exact expectation over the count of message 1; vfe.in_context.intent_posterior",
             lambda log_prior, log_emissions, star, k: 1.0 - _expected_posterior(
                 log_prior, log_emissions, star, k.astype(jnp.float64), _BOUND_COUNTS)),
        Step(r"\sum_{\theta\ne\theta^*}\mathbb E\,p(\theta|x_{1:k})", "the posterior sums to one",
             lambda log_prior, log_emissions, star, k: jnp.sum(jnp.where(_not_star(star), _expected_by_count(
                 log_prior, log_emissions, star, k.astype(jnp.float64), _posterior_by_count(
                     log_prior, log_emissions, k.astype(jnp.float64), _BOUND_COUNTS)), 0.0))),
        Step(r"\sum_{\theta\ne\theta^*}\mathbb E\sqrt{p(\theta|x_{1:k})/p(\theta^*|x_{1:k})}",
             r"$p(\theta|x) \le \min(1, r) \le \sqrt r$ with $r = p(\theta|x)/p(\theta^*|x)$; "
             "vfe.in_context.log_posterior_odds",
             lambda log_prior, log_emissions, star, k: jnp.sum(jnp.where(_not_star(star), _expected_by_count(
                 log_prior, log_emissions, star, k.astype(jnp.float64),
                 jnp.exp(-0.5 * _odds_by_count(log_prior, log_emissions, star, k.astype(jnp.float64)))), 0.0)),
             relation="<="),
        Step(r"\sum_{\theta\ne\theta^*}\sqrt{\pi_\theta/\pi_{\theta^*}}\;\mathrm{BC}(p_{\theta^*}, p_\theta)^k",
             r"$r = \frac{\pi_\theta}{\pi_{\theta^*}}\prod_t\frac{p_\theta(x_t)}{p_{\theta^*}(x_t)}$ and "
             r"$\mathbb E_{p_{\theta^*}}\sqrt{p_\theta/p_{\theta^*}} = \mathrm{BC}$ per i.i.d. message",
             lambda log_prior, log_emissions, star, k: jnp.sum(jnp.where(
                 _not_star(star),
                 jnp.exp(0.5 * (log_prior - log_prior[star])) * _bhattacharyya(log_emissions, star) ** k, 0.0))),
    ],
)

# ----------------------------------------------------------------------------- (iii) unambiguous languages

_M_UNAMB = 6


@st.composite
def _unambiguous_language(draw):
    """Each message has one owner intent (every intent owns at least one); only the owner emits it."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    owner = rng.permutation(np.concatenate([np.arange(K), rng.integers(0, K, _M_UNAMB - K)]))
    table = np.zeros((K, _M_UNAMB))
    for theta in range(K):
        own = np.flatnonzero(owner == theta)
        table[theta, own] = _distribution(rng, len(own))
    return {**_logs(log_prior=_distribution(rng, K), log_emissions=table), "owner": owner}


def _possible(log_prior, log_emissions):
    """``p(x) > 0`` per message."""
    return jnp.any(jnp.isfinite(log_prior[:, None] + log_emissions), axis=0)


E7_UNAMBIGUOUS = Derivation(
    claim="E7",
    title="Unambiguous language: the posterior is one-hot after one message",
    statement=r"\#\{\theta: \pi_\theta p_\theta(x) > 0\} = 1\ \forall x: p(x) > 0"
              r"\implies p(\theta|x) = \mathbb 1[\theta = \mathrm{owner}(x)]",
    inputs=_unambiguous_language(),
    steps=[
        Step(r"p(\theta\mid x)\ \text{for every message } x",
             "vfe.in_context.intent_posterior of one message (counts = a one-hot row); "
             "the zero vector for a message that cannot occur",
             lambda log_prior, log_emissions, owner: ic.intent_posterior(
                 log_prior, log_emissions, jnp.eye(_M_UNAMB, dtype=jnp.float64))),
        Step(r"\frac{\pi_\theta p_\theta(x)}{\sum_{\theta'}\pi_{\theta'}p_{\theta'}(x)}", "Bayes' rule",
             lambda log_prior, log_emissions, owner: jnp.where(
                 _possible(log_prior, log_emissions)[:, None],
                 (jnp.exp(log_prior)[:, None] * jnp.exp(log_emissions)).T
                 / jnp.sum(jnp.exp(log_prior)[:, None] * jnp.exp(log_emissions), axis=0)[:, None], 0.0)),
        Step(r"\mathbb 1[\theta = \mathrm{owner}(x)]",
             "only the owner has a non-zero term in the numerator, so it equals the denominator",
             lambda log_prior, log_emissions, owner: jnp.where(
                 _possible(log_prior, log_emissions)[:, None],
                 jax.nn.one_hot(owner, K, dtype=jnp.float64), 0.0)),
    ],
)

E7_UNAMBIGUOUS_EPSILON = Derivation(
    claim="E7",
    title="An unambiguous language is 0-ambiguous",
    statement=r"\text{unambiguous}\implies \varepsilon = \max_{x:\,p(x)>0}\big(1 - \max_\theta p(\theta|x)\big) = 0",
    inputs=_unambiguous_language(),
    steps=[
        Step(r"\varepsilon", "vfe.in_context.ambiguity",
             lambda log_prior, log_emissions, owner: ic.ambiguity(log_prior, log_emissions)),
        Step(r"1 - \mathbb 1[\text{unambiguous}]", "every posterior is one-hot (above); vfe.in_context.is_unambiguous",
             lambda log_prior, log_emissions, owner: 1.0 - ic.is_unambiguous(log_prior, log_emissions).astype(jnp.float64)),
        Step(r"0", "the language is unambiguous by construction", lambda **_: jnp.zeros(())),
    ],
)

# ----------------------------------------------------------------------------- (iv) ε-ambiguous languages

_M_AMB = 4


def _joint(log_prior, log_emissions):
    return jnp.exp(log_prior[:, None] + log_emissions)                  # (K, M)


def _marginal(log_prior, log_emissions):
    return jnp.sum(_joint(log_prior, log_emissions), axis=0)


E7_PEAK = Derivation(
    claim="E7",
    title="ε-ambiguous: the joint's peak matches the marginal up to a factor 1 − ε",
    statement=r"\max_\theta p(x,\theta) = \big(1 - \varepsilon(x)\big)\,p(x) \ge (1 - \varepsilon)\,p(x)",
    inputs=_language(_M_AMB),
    steps=[
        Step(r"\max_\theta p(x, \theta)", r"the peak of the joint $\pi_\theta p_\theta(x)$ over intents, per message",
             lambda log_prior, log_emissions, star: jnp.max(_joint(log_prior, log_emissions), axis=0)),
        Step(r"\big(1 - \varepsilon(x)\big)\,p(x)",
             r"$p(x,\theta) = p(\theta|x)\,p(x)$ and $\varepsilon(x) = 1 - \max_\theta p(\theta|x)$; "
             "vfe.in_context.message_ambiguity (0 where p(x) = 0)",
             lambda log_prior, log_emissions, star: (1.0 - ic.message_ambiguity(log_prior, log_emissions))
             * _marginal(log_prior, log_emissions)),
        Step(r"(1 - \varepsilon)\,p(x)", r"$\varepsilon(x) \le \varepsilon$ on every possible message; vfe.in_context.ambiguity",
             lambda log_prior, log_emissions, star: (1.0 - ic.ambiguity(log_prior, log_emissions))
             * _marginal(log_prior, log_emissions), relation=">="),
    ],
)

E7_BAYES_ERROR = Derivation(
    claim="E7",
    title="ε-ambiguous: the Bayes guess errs with probability at most ε",
    statement=r"P(\hat\theta(x)\ne\theta) = \sum_x p(x)\,\varepsilon(x) \le \varepsilon",
    inputs=_language(_M_AMB),
    steps=[
        Step(r"P(\hat\theta(x)\ne\theta)", "vfe.in_context.bayes_error",
             lambda log_prior, log_emissions, star: ic.bayes_error(log_prior, log_emissions)),
        Step(r"1 - \sum_x \max_\theta p(x, \theta)",
             r"the guess $\hat\theta(x) = \arg\max_\theta p(x,\theta)$ is right with probability "
             r"$\sum_x p(x, \hat\theta(x))$",
             lambda log_prior, log_emissions, star: Terms(1.0, -jnp.sum(jnp.max(_joint(log_prior, log_emissions), axis=0)))),
        Step(r"\sum_x p(x)\,\varepsilon(x)",
             r"the peak identity above: $\max_\theta p(x,\theta) = (1-\varepsilon(x))p(x)$, and $\sum_x p(x) = 1$",
             lambda log_prior, log_emissions, star: jnp.sum(
                 _marginal(log_prior, log_emissions) * ic.message_ambiguity(log_prior, log_emissions))),
        Step(r"\varepsilon", "an average is at most the maximum; vfe.in_context.ambiguity",
             lambda log_prior, log_emissions, star: ic.ambiguity(log_prior, log_emissions), relation="<="),
    ],
)

_M_MORE = 3


def _best_joint_sum(log_prior, log_table):
    return jnp.sum(jnp.max(_joint(log_prior, log_table), axis=0))


E7_MORE_EXAMPLES = Derivation(
    claim="E7",
    title="A second example never raises the Bayes error",
    statement=r"P(\hat\theta(x_1, x_2)\ne\theta) \le P(\hat\theta(x_1)\ne\theta)",
    inputs=_language(_M_MORE),
    steps=[
        Step(r"P(\hat\theta(x_1,x_2)\ne\theta)",
             "vfe.in_context.bayes_error of the 2-message prompts (vfe.in_context.sequence_log_emissions)",
             lambda log_prior, log_emissions, star: ic.bayes_error(log_prior, ic.sequence_log_emissions(log_emissions, 2))),
        Step(r"1 - \sum_{x_1}\sum_{x_2}\max_\theta \pi_\theta p_\theta(x_1)p_\theta(x_2)", "as above, on prompts",
             lambda log_prior, log_emissions, star: Terms(1.0, -jnp.sum(jnp.max(
                 jnp.exp(log_prior[:, None, None] + log_emissions[:, :, None] + log_emissions[:, None, :]), axis=0)))),
        Step(r"1 - \sum_{x_1}\max_\theta \sum_{x_2}\pi_\theta p_\theta(x_1)p_\theta(x_2)",
             r"$\sum_{x_2}\max_\theta f(\theta, x_2) \ge \max_\theta\sum_{x_2} f(\theta, x_2)$",
             lambda log_prior, log_emissions, star: Terms(1.0, -_best_joint_sum(log_prior, log_emissions)),
             relation="<="),
        Step(r"P(\hat\theta(x_1)\ne\theta)", r"$\sum_{x_2}p_\theta(x_2) = 1$; vfe.in_context.bayes_error",
             lambda log_prior, log_emissions, star: ic.bayes_error(log_prior, log_emissions)),
    ],
)

# The seed's over-reading: "a sharp language lets the model recover each meaning reliably". With
# π = (0.9, 0.1), p_1 = (0.5, 0.5), p_2 = (0.6, 0.4), every message leaves ≥ 0.88 posterior mass
# on intent 1 (ε ≈ 0.118), yet when intent 2 speaks the Bayes guess is wrong every time.
_RARE_INTENT = {**_logs(log_prior=np.array([0.9, 0.1]), log_emissions=np.array([[0.5, 0.5], [0.6, 0.4]])),
                "star": np.int64(1)}


def _error_given_intent(log_prior, log_emissions):
    """``P(θ̂(x) ≠ θ | θ) = Σ_x p_θ(x) 1[θ̂(x) ≠ θ]`` for each θ."""
    m = log_emissions.shape[-1]
    guess = ic.bayes_guess(log_prior, log_emissions, jnp.eye(m, dtype=jnp.float64))               # (M,)
    wrong = jnp.arange(log_prior.shape[-1])[:, None] != guess[None, :]                             # (K, M)
    return jnp.sum(jnp.where(wrong, jnp.exp(log_emissions), 0.0), axis=-1)


E7_SEED_EVERY_INTENT = Derivation(
    claim="E7",
    title="Seed: in an ε-ambiguous language every intent is recovered with error ≤ ε",
    statement=r"P(\hat\theta(x)\ne\theta\mid\theta) \le \varepsilon\ \text{for every intent}\ \theta",
    inputs=_language(_M_AMB, prior_zeros=False),
    examples=[_RARE_INTENT],
    expect="refuted",
    steps=[
        Step(r"P(\hat\theta(x)\ne\theta\mid\theta)",
             "per intent: vfe.in_context.bayes_guess on each message, weighted by p_θ",
             lambda log_prior, log_emissions, star: _error_given_intent(log_prior, log_emissions)),
        Step(r"\varepsilon", "the claim (ε bounds only the average over θ ~ π: the E7_BAYES_ERROR chain)",
             lambda log_prior, log_emissions, star: jnp.broadcast_to(ic.ambiguity(log_prior, log_emissions),
                                                                     log_prior.shape), relation="<="),
    ],
)

# With p_1 = (0.9, 0.1), p_2 = (0.1, 0.9) and a flat prior, each single message leaves 0.9 on
# one intent (ε = 0.1) but the prompt (x_1, x_2) = (0, 1) leaves 0.5 (ε = 0.5).
_CONFLICT = {**_logs(log_prior=np.array([0.5, 0.5, 0.0]),
                     log_emissions=np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])),
             "star": np.int64(0)}


E7_SEED_WORST_CASE = Derivation(
    claim="E7",
    title="Over-reading: more examples make every prompt less ambiguous",
    statement=r"\varepsilon(\text{2-message prompts}) \le \varepsilon(\text{1-message prompts})",
    inputs=_language(_M_MORE),
    examples=[_CONFLICT],
    expect="refuted",
    steps=[
        Step(r"\max_{x_1,x_2}\big(1 - \max_\theta p(\theta|x_1,x_2)\big)",
             "vfe.in_context.ambiguity of vfe.in_context.sequence_log_emissions(·, 2)",
             lambda log_prior, log_emissions, star: ic.ambiguity(log_prior, ic.sequence_log_emissions(log_emissions, 2))),
        Step(r"\max_{x}\big(1 - \max_\theta p(\theta|x)\big)",
             "the claim (false: conflicting examples can cancel; only the average, the Bayes error, falls)",
             lambda log_prior, log_emissions, star: ic.ambiguity(log_prior, log_emissions), relation="<="),
    ],
)
