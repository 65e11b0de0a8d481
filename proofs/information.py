"""Information theory (claims A1–A7 of ``CLAIMS.md``; seed 002)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from numpy.polynomial.hermite_e import hermegauss

import vfe
from proofs.catalogue import Claim
from vfe import coding, gaussian, methods
from vfe import testing as vt
from vfe.derivation import Derivation, Step, Terms

CLAIMS = (
    Claim(
        id="A1", title="Cross-entropy = entropy + KL divergence", seeds=("002",),
        wording="「H(p,q)=H(p)+D_{\\mathrm{KL}}(p|q) が成り立つ」 (\"H(p,q) = H(p) + KL(p‖q) holds\"), "
                "after defining H(p,q) = −Σ p log q",
        statement=r"$H(p,q) = -\sum_i p_i\log q_i = H(p) + \mathrm{KL}(p\,\|\,q)$, with $0\log 0 = 0$, "
                  r"and $+\infty$ on both sides when $q_i = 0 < p_i$",
        functions=("vfe.cross_entropy", "vfe.entropy", "vfe.kl_divergence"),
    ),
    Claim(
        id="A2", title="One-hot cross-entropy is the negative log-likelihood", seeds=("002",),
        wording="「one-hot により和が一点に潰れるため、交差エントロピー最小化は「正解トークンの負の対数確率」を最小化することと"
                "一致する」「系列全体・コーパス全体では、先のNLLと同一の目的関数が得られる」 (\"the one-hot target collapses "
                "the sum to one point, so minimising cross-entropy is minimising the negative log-probability of the correct "
                "token; over whole sequences and the corpus the same objective as the NLL results\")",
        statement=r"$H(\delta_y, q) = -\sum_v \delta_y(v)\log q_v = -\log q_y$; summed over the tokens $t$ of each "
                  r"sequence $s$ and over the sequences, $\sum_{s,t} H(\delta_{y_{st}}, p_\theta(\cdot\mid y_{s,<t})) = "
                  r"-\sum_s \log p_\theta(x^{(s)}_{1:T}) = \mathcal L_\mathrm{NLL}$ ($+\infty$ when $q_y = 0$)",
        functions=("vfe.cross_entropy", "vfe.cross_entropy_from_logits", "vfe.cross_entropy_with_integer_labels"),
    ),
    Claim(
        id="A3", title="Gibbs' inequality", seeds=("002",),
        wording="paraphrase: the seed uses, without stating it, that KL(p‖q) ≥ 0 with equality iff q = p, so that "
                "H(p,q) ≥ H(p) and the cross-entropy is minimised by matching the data distribution",
        statement=r"$\mathrm{KL}(p\,\|\,q) \ge \tfrac12\|p-q\|_1^2 \ge 0$ (Pinsker), so $\mathrm{KL}(p\,\|\,q) = 0$ "
                  r"iff $p = q$, and $H(p,q) = H(p) + \mathrm{KL}(p\,\|\,q) \ge H(p)$ with equality iff $q = p$",
        functions=("vfe.kl_divergence", "vfe.cross_entropy", "vfe.entropy"),
    ),
    Claim(
        id="A4", title="Minimising cross-entropy = minimising KL; the minimiser is q = p", seeds=("002",),
        wording="「(H(p,q)) を最小化することは、(D_{\\mathrm{KL}}(p|q)) を最小化することと等価である」 (\"minimising "
                "H(p,q) is equivalent to minimising KL(p‖q)\"), because H(p) does not depend on q",
        statement=r"$\arg\min_q H(p,q) = \arg\min_q \mathrm{KL}(p\,\|\,q) = p$ and $\min_q H(p,q) = H(p)$ over the "
                  r"simplex; for $p$ with zeros the minimiser $q = p$ lies on the boundary (softmax logits $\to -\infty$)",
        functions=("vfe.cross_entropy", "vfe.cross_entropy_from_logits", "vfe.kl_divergence", "vfe.entropy"),
    ),
    Claim(
        id="A5", title="The categorical MLE is the empirical distribution", seeds=("002",),
        wording="「LLMの標準学習は **最尤推定（尤度最大化）** であり、同時に **交差エントロピー最小化** である」 (\"standard LLM "
                "training is maximum-likelihood estimation and, at the same time, cross-entropy minimisation\")",
        statement=r"For data $x_1,\dots,x_n \in \{1..K\}$ with empirical frequencies $\hat p$: "
                  r"$-\frac1n\sum_i\log q_{x_i} = H(\hat p, q)$, so the MLE is $\hat q = \hat p$ and the minimal "
                  r"average NLL is $H(\hat p)$",
        functions=("vfe.cross_entropy_with_integer_labels", "vfe.cross_entropy_from_logits", "vfe.entropy",
                   "vfe.kl_divergence"),
    ),
    Claim(
        id="A6", title="KL is asymmetric: forward KL covers mass, reverse KL seeks a mode", seeds=("002",),
        wording="「KLは非対称であり」「データが出現しうる領域に対してモデルが確率を割り当てることを強く要求する」 (\"KL is "
                "asymmetric; minimising KL(p_data‖p_θ) strongly requires the model to put probability wherever data can "
                "occur\")",
        statement=r"$\mathrm{KL}(p\,\|\,q) = +\infty$ if $q_j = 0 < p_j$ while $\mathrm{KL}(q\,\|\,p)$ can be finite; "
                  r"over Gaussians $q$, $\arg\min_q \mathrm{KL}(p\,\|\,q)$ matches the mean and variance of $p$, while for a "
                  r"well-separated bimodal mixture $\arg\min_q \mathrm{KL}(q\,\|\,p)$ is (up to $e^{-50}$) its heavier "
                  r"component",
        functions=("vfe.kl_divergence", "vfe.gaussian.moment_match", "vfe.gaussian.gaussian_mixture_log_density",
                   "vfe.gaussian.gaussian_log_density", "vfe.gaussian_entropy"),
    ),
    Claim(
        id="A7", title="Log-likelihood is code length; perplexity", seeds=("002",),
        wording="「対数尤度最大化は情報理論的には符号長最小化（最短記述長）とも結びつき」 (\"maximising the log-likelihood is "
                "tied, information-theoretically, to minimising code length (minimum description length)\")",
        statement=r"$L(x) = -\log_2 p(x)$ bits; Shannon lengths $\ell_i = \lceil -\log_2 p_i\rceil$ satisfy "
                  r"$\sum_i 2^{-\ell_i} \le 1$ and $H_2(p) \le \mathbb E_p[\ell] < H_2(p) + 1$; "
                  r"$\mathrm{PPL} = e^{\mathrm{CE}} = 2^{\mathrm{CE}/\ln 2}$",
        functions=("vfe.coding.code_length_bits", "vfe.coding.shannon_code_lengths", "vfe.coding.kraft_sum",
                   "vfe.coding.expected_code_length", "vfe.perplexity", "vfe.nats_to_bits"),
    ),
)


def _pairs(pq):
    p, q = pq
    return {"p": p, "q": q}


def _plogp_over(p, q):
    """``p log(p/q)`` elementwise with ``0 log(0/q) = 0`` (``+inf`` where ``q = 0 < p``)."""
    return jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(q)), 0.0)


def _neg_plogq(p, q):
    return jnp.where(p > 0, -p * jnp.log(q), 0.0)


A1 = Derivation(
    claim="A1",
    title="Cross-entropy = entropy + KL divergence",
    statement=r"H(p,q) = -\sum_i p_i\log q_i = H(p) + \mathrm{KL}(p\,\|\,q)",
    inputs=st.one_of(*(vt.distribution_pairs(support=s) for s in ("shared", "nested", "partial", "near"))).map(_pairs),
    steps=[
        Step(r"H(p,q)", "vfe.cross_entropy", lambda p, q: vfe.cross_entropy(p, q)),
        Step(r"-\sum_i p_i \log q_i", r"definition of cross-entropy, with $0 \log q = 0$",
             lambda p, q: jnp.sum(_neg_plogq(p, q))),
        Step(r"-\sum_i p_i\log p_i + \sum_i p_i\log\frac{p_i}{q_i}",
             r"add and subtract $\sum_i p_i \log p_i$ (finite: $0 \le -p\log p \le 1/e$)",
             lambda p, q: Terms(jnp.sum(_neg_plogq(p, p)), jnp.sum(_plogp_over(p, q)))),
        Step(r"H(p) + \mathrm{KL}(p\,\|\,q)", "definitions of entropy and KL; vfe.entropy, vfe.kl_divergence",
             lambda p, q: Terms(vfe.entropy(p), vfe.kl_divergence(p, q))),
    ],
)



# ----------------------------------------------------------------------------- A2: one-hot targets

_SEEDS = st.integers(0, 2**32 - 1)


def _one_hot(labels, n):
    return (labels[..., None] == jnp.arange(n)).astype(jnp.float64)


def _picked(x, labels):
    """``x[..., labels]``: the entry of each row at its label."""
    return jnp.take_along_axis(x, labels[..., None], axis=-1)[..., 0]


def _log_softmax_written_out(z):
    """``z - lse(z)``, ``lse(z) = m + log Σ_v exp(z_v - m)`` with ``m = max z`` (masked ``-inf`` stay ``-inf``)."""
    top = jnp.max(z, axis=-1, keepdims=True)
    return z - (top + jnp.log(jnp.sum(jnp.exp(z - top), axis=-1, keepdims=True)))


def _labels(draw, rng, allowed):
    """One label per row: uniform over the classes, or (half the time) over the ``allowed`` ones."""
    u = rng.uniform(size=allowed.shape)
    if draw(st.booleans()):
        u = np.where(allowed, u, -1.0)
    return np.argmax(u, axis=-1).astype(np.int64)


@st.composite
def _probs_and_labels(draw):
    q = draw(vt.probability_vectors(sizes=(2, 16), batch_shape=(3,)))
    return {"q": q, "y": _labels(draw, np.random.default_rng(draw(_SEEDS)), q > 0)}


@st.composite
def _sequences_and_labels(draw, **logit_options):
    """Logits of ``S`` sequences of ``T`` tokens over ``n`` classes, and the observed tokens ``y``."""
    z = draw(vt.logits(sizes=(2, 16), batch_shape=(3, 4), **logit_options))
    return {"z": z, "y": _labels(draw, np.random.default_rng(draw(_SEEDS)), np.isfinite(z))}


A2 = Derivation(
    claim="A2",
    title="Cross-entropy against a one-hot target is −log q_y",
    statement=r"H(\delta_y, q) = -\sum_v \delta_y(v)\log q_v = -\log q_y",
    inputs=_probs_and_labels(),
    steps=[
        Step(r"H(\delta_y, q)", r"vfe.cross_entropy with the one-hot target $\delta_y$",
             lambda q, y: vfe.cross_entropy(_one_hot(y, q.shape[-1]), q)),
        Step(r"-\sum_v \delta_y(v)\log q_v", r"definition of cross-entropy, $0\log q_v = 0$ for $v \ne y$",
             lambda q, y: jnp.sum(_neg_plogq(_one_hot(y, q.shape[-1]), q), axis=-1)),
        Step(r"-\log q_y", r"the one-hot target collapses the sum onto $v = y$ ($+\infty$ when $q_y = 0$)",
             lambda q, y: -jnp.log(_picked(q, y))),
        Step(r"\mathrm{lse}(\log q) - \log q_y", r"vfe.cross_entropy_with_integer_labels on the logits $\log q$ "
             r"($\mathrm{lse}(\log q) = \log\sum_v q_v = 0$)",
             lambda q, y: vfe.cross_entropy_with_integer_labels(jnp.log(q), y)),
    ],
)

A2_NLL = Derivation(
    claim="A2",
    title="Summed over tokens and sequences, one-hot cross-entropy is the NLL",
    statement=(r"\sum_{s}\sum_{t} H\big(\delta_{y_{st}}, \mathrm{softmax}(z_{st})\big)"
               r" = -\sum_s \log p_\theta(x^{(s)}_{1:T}) = \mathcal L_\mathrm{NLL}"),
    inputs=_sequences_and_labels(),
    steps=[
        Step(r"\sum_{s,t} H\big(\delta_{y_{st}}, \mathrm{softmax}(z_{st})\big)",
             "vfe.cross_entropy_from_logits with one-hot targets, summed over tokens and sequences",
             lambda z, y: jnp.sum(vfe.cross_entropy_from_logits(_one_hot(y, z.shape[-1]), z))),
        Step(r"-\sum_{s,t}\sum_v \delta_{y_{st}}(v)\,\big(z_{stv} - \mathrm{lse}(z_{st})\big)",
             r"definition; $\log\mathrm{softmax}(z) = z - \mathrm{lse}(z)$ written out with the max shift",
             lambda z, y: jnp.sum(jnp.where(_one_hot(y, z.shape[-1]) > 0, -_log_softmax_written_out(z), 0.0))),
        Step(r"-\sum_s\sum_t \log p_\theta(y_{st}\mid y_{s,<t})", r"one-hot: each inner sum collapses onto $v = y_{st}$",
             lambda z, y: -jnp.sum(_picked(_log_softmax_written_out(z), y))),
        Step(r"-\sum_s \log p_\theta(x^{(s)}_{1:T})",
             r"chain rule $\log p_\theta(x_{1:T}) = \sum_t \log p_\theta(x_t\mid x_{<t})$ per sequence; "
             "vfe.cross_entropy_with_integer_labels",
             lambda z, y: jnp.sum(jnp.sum(vfe.cross_entropy_with_integer_labels(z, y), axis=-1))),
    ],
)



# ----------------------------------------------------------------------------- A3: Gibbs' inequality

_A3_SIZES = (2, 5, 16)


def _any_pair():
    """Pairs on shared, nested and partial supports (``KL = +∞`` there), and nearly equal pairs."""
    return st.one_of(*(vt.distribution_pairs(sizes=_A3_SIZES, support=s)
                       for s in ("shared", "nested", "partial", "near"))).map(_pairs)


def _half_l1_squared(p, q):
    return 0.5 * jnp.sum(jnp.abs(p - q), axis=-1) ** 2


A3 = Derivation(
    claim="A3",
    title="Gibbs: H(p,q) ≥ H(p) + ½‖p − q‖₁² ≥ H(p)",
    statement=r"H(p,q) = H(p) + \mathrm{KL}(p\,\|\,q) \ge H(p) + \tfrac12\|p-q\|_1^2 \ge H(p)",
    inputs=_any_pair(),
    steps=[
        Step(r"H(p,q)", "vfe.cross_entropy", lambda p, q: vfe.cross_entropy(p, q)),
        Step(r"H(p) + \mathrm{KL}(p\,\|\,q)", "claim A1; vfe.entropy, vfe.kl_divergence",
             lambda p, q: Terms(vfe.entropy(p), vfe.kl_divergence(p, q))),
        Step(r"H(p) + \tfrac12\|p-q\|_1^2", r"Pinsker's inequality $\mathrm{KL}(p\,\|\,q) \ge \tfrac12\|p-q\|_1^2$",
             lambda p, q: Terms(vfe.entropy(p), _half_l1_squared(p, q)), ">="),
        Step(r"H(p)", r"a square is $\ge 0$, and $> 0$ unless $p = q$", lambda p, q: vfe.entropy(p), ">="),
    ],
)


def _distinct(d):
    """``p ≠ q``, with ``½‖p − q‖₁²`` a normal float (``‖p − q‖₁ > 1e-150``; below, the ratio is 0/0 in float64)."""
    return bool(np.sum(np.abs(d["p"] - d["q"])) > 1e-150)


A3_STRICT = Derivation(
    claim="A3",
    title="Strictness: KL(p‖q) > 0 for p ≠ q, at every scale of ‖p − q‖₁",
    statement=r"p \ne q\ (\|p-q\|_1 > 10^{-150}) \implies \frac{\mathrm{KL}(p\,\|\,q)}{\tfrac12\|p-q\|_1^2} \ge 1, \ \text{so}\ "
              r"\mathrm{KL}(p\,\|\,q) \ge \tfrac12\|p-q\|_1^2 > 0",
    inputs=_any_pair().filter(_distinct),
    steps=[
        Step(r"\mathrm{KL}(p\,\|\,q)\big/\tfrac12\|p-q\|_1^2",
             r"vfe.kl_divergence over $\tfrac12\|p-q\|_1^2 > 0$ (scale-free: the nearly equal pairs have "
             r"$\mathrm{KL} \approx 10^{-16}$, which an absolute comparison could not tell from 0)",
             lambda p, q: vfe.kl_divergence(p, q) / _half_l1_squared(p, q)),
        Step(r"1", "Pinsker's inequality (Cover & Thomas, Lemma 11.6.1)", lambda p, q: jnp.ones(p.shape[:-1]), ">="),
    ],
)

_EXACT = 1e-300  # "exactly": only a difference below the smallest normal float could pass

A3_EQUALITY = Derivation(
    claim="A3",
    title="Equality case: KL(p‖p) = 0 and H(p,p) = H(p), exactly",
    statement=r"\mathrm{KL}(p\,\|\,p) = 0, \qquad H(p,p) - H(p) = 0",
    inputs=vt.probability_vectors(sizes=_A3_SIZES).map(lambda p: {"p": p}),
    steps=[
        Step(r"\mathrm{KL}(p\,\|\,p)", "vfe.kl_divergence", lambda p: vfe.kl_divergence(p, p)),
        Step(r"\sum_{i: p_i > 0} p_i \log\frac{p_i}{p_i}", r"definition, $0\log 0 = 0$",
             lambda p: jnp.sum(_plogp_over(p, p)), tol=_EXACT),
        Step(r"0", r"$p_i/p_i = 1$ and $\log 1 = 0$ are exact in floating point", lambda p: jnp.zeros(()), tol=_EXACT),
        Step(r"H(p,p) - H(p)", "vfe.cross_entropy and vfe.entropy evaluate the same terms",
             lambda p: Terms(vfe.cross_entropy(p, p), -vfe.entropy(p)), tol=_EXACT),
    ],
)


# ----------------------------------------------------------------------------- A4: argmin_q H(p, q) = p
#
# The optimiser works on softmax logits, so it can only reach full-support q. For p with zeros the
# infimum H(p) is still attained at q = p (A3_EQUALITY holds for every p), but on the boundary of
# the simplex (logits -> -inf), which no finite number of L-BFGS steps reaches: the optimiser part
# therefore draws full-support p (Dirichlet and nearly uniform vectors of one size).

_A4_N = 5


def _full_support(*, sizes=(_A4_N,)):
    return st.one_of(vt.probability_vectors(sizes=sizes, kind="uniform_like"),
                     vt.probability_vectors(sizes=sizes, kind="dirichlet")).map(lambda p: {"p": p})


def _random_logits(key, p, **_):
    return 3.0 * jax.random.normal(key, p.shape)


def _softmax_point(logits, **_):
    return jax.nn.softmax(logits)


_CROSS_ENTROPY_FIT = methods.Minimisation(
    lambda logits, p: vfe.cross_entropy_from_logits(p, logits), init=_random_logits, point=_softmax_point)
_KL_FIT = methods.Minimisation(
    lambda logits, p: vfe.kl_divergence(p, jax.nn.softmax(logits)), init=_random_logits, point=_softmax_point)
_FIT = "optax L-BFGS on softmax logits, 8 random starts × 100 iterations"  # Minimisation's defaults

A4 = Derivation(
    claim="A4",
    title="min over q of H(p, q) is H(p)",
    statement=r"\min_q H(p,q) = H(p) + \min_q \mathrm{KL}(p\,\|\,q) = H(p)",
    kind="variational",
    inputs=_full_support(),
    steps=[
        Step(r"H(p)", "vfe.entropy", lambda p: vfe.entropy(p)),
        Step(r"H(p) + \mathrm{KL}(p\,\|\,p)", r"$\mathrm{KL}(p\,\|\,p) = 0$ (A3); vfe.kl_divergence",
             lambda p: Terms(vfe.entropy(p), vfe.kl_divergence(p, p))),
        Step(r"H(p, p)", "claim A1 at q = p: the objective at the claimed minimiser; vfe.cross_entropy",
             lambda p: vfe.cross_entropy(p, p)),
        Step(r"\min_q H(p,q)", f"{_FIT}, objective vfe.cross_entropy_from_logits",
             lambda p: _CROSS_ENTROPY_FIT.minimum(p=p), tol=1e-9),
        Step(r"H(p) + \min_q \mathrm{KL}(p\,\|\,q)", r"$H(p,q) = H(p) + \mathrm{KL}(p\,\|\,q)$ (A1) and $H(p)$ does not "
             rf"depend on $q$; {_FIT}, objective vfe.kl_divergence",
             lambda p: Terms(vfe.entropy(p), _KL_FIT.minimum(p=p)), tol=1e-9),
    ],
    max_examples=30,
)

A4_ARGMIN = Derivation(
    claim="A4",
    title="argmin over q of H(p, q) = argmin of KL(p‖q) = p",
    statement=r"\arg\min_q H(p,q) = \arg\min_q \mathrm{KL}(p\,\|\,q) = p",
    kind="variational",
    inputs=_full_support(),
    steps=[
        Step(r"p", "the claimed minimiser (Gibbs: equality in A3 iff q = p)", lambda p: p),
        Step(r"\arg\min_q H(p,q)", f"{_FIT}, objective vfe.cross_entropy_from_logits",
             lambda p: _CROSS_ENTROPY_FIT.argmin(p=p), tol=1e-6),
        Step(r"\arg\min_q \mathrm{KL}(p\,\|\,q)", f"the objectives differ by $H(p)$, constant in $q$; {_FIT}, "
             "objective vfe.kl_divergence", lambda p: _KL_FIT.argmin(p=p), tol=1e-6),
    ],
    max_examples=30,
)


# ----------------------------------------------------------------------------- A5: MLE of a categorical

_A5_K, _A5_N = 4, 50


@st.composite
def _data(draw, *, sizes=(2, 5, 16), lengths=(10, 200), every_category=False):
    """``n`` integer observations ``x`` in ``{0..K-1}`` from a random categorical, and model logits ``z``.

    With ``every_category``, each category is observed at least once (the first ``K`` draws are
    ``0..K-1``, then shuffled), so that the MLE has full support (see A4's note on the boundary).
    """
    k, n = draw(st.sampled_from(sizes)), draw(st.sampled_from(lengths))
    truth = draw(vt.probability_vectors(sizes=(k,)))
    rng = np.random.default_rng(draw(_SEEDS))
    x = rng.choice(k, size=n, p=truth / truth.sum())
    if every_category:
        x[:k] = np.arange(k)
        x = rng.permutation(x)
    return {"x": x.astype(np.int64), "z": draw(vt.logits(sizes=(k,), min_value=-30.0, max_value=30.0))}


def _frequencies(x, k):
    """Empirical frequencies ``p̂_k = #{i: x_i = k}/n``."""
    return jnp.bincount(x, length=k) / x.shape[0]


def _average_nll(z, x):
    """``(1/n) Σ_i -log softmax(z)_{x_i}``: vfe.cross_entropy_with_integer_labels, one row per observation."""
    return jnp.mean(vfe.cross_entropy_with_integer_labels(jnp.broadcast_to(z, x.shape + z.shape), x))


A5_AVERAGE_NLL = Derivation(
    claim="A5",
    title="The average NLL of data is the cross-entropy from its empirical distribution",
    statement=r"-\frac1n\sum_{i=1}^n \log q_{x_i} = -\sum_k \hat p_k\log q_k = H(\hat p, q) = H(\hat p) + "
              r"\mathrm{KL}(\hat p\,\|\,q) \ge H(\hat p)",
    inputs=_data(),
    steps=[
        Step(r"-\frac1n\sum_{i=1}^n \log q_{x_i}", r"average NLL of the model $q = \mathrm{softmax}(z)$; "
             "vfe.cross_entropy_with_integer_labels", lambda x, z: _average_nll(z, x)),
        Step(r"-\sum_k \hat p_k \log q_k", r"group the observations by value: $\#\{i: x_i = k\} = n\hat p_k$",
             lambda x, z: jnp.sum(_neg_plogq(_frequencies(x, z.shape[-1]), jax.nn.softmax(z)))),
        Step(r"H(\hat p, q)", "definition of cross-entropy; vfe.cross_entropy_from_logits",
             lambda x, z: vfe.cross_entropy_from_logits(_frequencies(x, z.shape[-1]), z)),
        Step(r"H(\hat p) + \mathrm{KL}(\hat p\,\|\,q)", "claim A1; vfe.entropy, vfe.kl_divergence",
             lambda x, z: Terms(vfe.entropy(_frequencies(x, z.shape[-1])),
                                vfe.kl_divergence(_frequencies(x, z.shape[-1]), jax.nn.softmax(z)))),
        Step(r"H(\hat p)", r"Gibbs (A3): $\mathrm{KL} \ge 0$, with equality iff $q = \hat p$",
             lambda x, z: vfe.entropy(_frequencies(x, z.shape[-1])), ">="),
    ],
)

_NLL_FIT = methods.Minimisation(lambda logits, x, z: _average_nll(logits, x),
                                init=lambda key, x, z: 3.0 * jax.random.normal(key, z.shape), point=_softmax_point)
_MLE_DATA = _data(sizes=(_A5_K,), lengths=(_A5_N,), every_category=True)

A5 = Derivation(
    claim="A5",
    title="The minimal average NLL is the entropy of the empirical distribution",
    statement=r"\min_q -\frac1n\sum_i \log q_{x_i} = H(\hat p)",
    kind="variational",
    inputs=_MLE_DATA,
    steps=[
        Step(r"H(\hat p)", r"vfe.entropy of the empirical frequencies $\hat p_k = \#\{i: x_i = k\}/n$",
             lambda x, z: vfe.entropy(_frequencies(x, _A5_K))),
        Step(r"-\frac1n\sum_i \log \hat p_{x_i}", r"the average NLL at $q = \hat p$ (logits $\log\hat p$); group by value "
             "as in A5 above; vfe.cross_entropy_with_integer_labels",
             lambda x, z: _average_nll(jnp.log(_frequencies(x, _A5_K)), x)),
        Step(r"\min_q -\frac1n\sum_i \log q_{x_i}", f"{_FIT}, objective the average NLL",
             lambda x, z: _NLL_FIT.minimum(x=x, z=z), tol=1e-9),
    ],
    max_examples=20,
)

A5_MLE = Derivation(
    claim="A5",
    title="The maximum-likelihood categorical is the empirical frequencies",
    statement=r"\arg\max_q \prod_i q_{x_i} = \arg\min_q -\frac1n\sum_i\log q_{x_i} = \hat p",
    kind="variational",
    inputs=_MLE_DATA,
    steps=[
        Step(r"\hat p", r"the empirical frequencies $\#\{i: x_i = k\}/n$", lambda x, z: _frequencies(x, _A5_K)),
        Step(r"\arg\min_q -\frac1n\sum_i\log q_{x_i}", f"$\\log$ is increasing, so the MLE minimises the average NLL; {_FIT}",
             lambda x, z: _NLL_FIT.argmin(x=x, z=z), tol=1e-6),
    ],
    max_examples=20,
)


# ----------------------------------------------------------------------------- A6: forward vs reverse KL

_NODES, _NODE_WEIGHTS = hermegauss(64)
_NODE_WEIGHTS = _NODE_WEIGHTS / np.sqrt(2 * np.pi)
_QUADRATURE = ("Gauss–Hermite quadrature, 64 nodes (hermegauss): exact to rounding for polynomials of degree ≤ 127, "
               "hence for $\\log q$; for $\\log p$ near a component of a mixture separated by ≥ 20 standard "
               "deviations the integrand is that component's quadratic plus a term below $e^{-50}$ where the nodes "
               "carry weight (at the optima; checked there against a 400001-point trapezoid rule, agreement to 1e-14; for a "
               "broad $q$ spanning both modes it is off by up to 0.2 nats, which bends the optimiser's path only)")


def _expect_normal(f, mean, std):
    """``E_{N(mean, std²)}[f(x)]`` by Gauss–Hermite quadrature (probabilists' nodes)."""
    return jnp.sum(jnp.asarray(_NODE_WEIGHTS) * f(mean + std * jnp.asarray(_NODES)))


@st.composite
def _bimodal(draw):
    """A well-separated two-component mixture: gap between the means ≥ 20 of the larger std; unequal weights."""
    heavy = draw(st.floats(0.55, 0.95))
    stds = np.array([draw(st.floats(0.5, 2.0)), draw(st.floats(0.5, 2.0))])
    first = draw(st.floats(-3.0, 3.0))
    gap = draw(st.floats(20.0, 30.0)) * stds.max()
    weights = np.array([heavy, 1.0 - heavy]) if draw(st.booleans()) else np.array([1.0 - heavy, heavy])
    return {"weights": weights, "means": np.array([first, first + gap]), "stds": stds}


def _log_mixture(x, weights, means, stds):
    return gaussian.gaussian_mixture_log_density(x, weights, means, stds)


def _forward_kl(params, weights, means, stds):
    """``KL(p‖N(m, s²)) = Σ_k π_k E_{N_k}[log p - log q]`` (the expectation under p split by component)."""
    m, s = params[0], jnp.exp(params[1])
    per_component = [_expect_normal(lambda x: _log_mixture(x, weights, means, stds)
                                    - gaussian.gaussian_log_density(x, m, s), means[k], stds[k]) for k in range(2)]
    return weights[0] * per_component[0] + weights[1] * per_component[1]


def _reverse_kl(params, weights, means, stds):
    """``KL(N(m, s²)‖p) = -H(q) - E_q[log p]``."""
    m, s = params[0], jnp.exp(params[1])
    return -vfe.gaussian_entropy(s) - _expect_normal(lambda x: _log_mixture(x, weights, means, stds), m, s)


def _spread_start(key, weights, means, stds):
    """Mean uniform over the mixture's range ± 2 stds, log-std normal around the mean log-std."""
    k1, k2 = jax.random.split(key)
    lo, hi = jnp.min(means) - 2 * jnp.max(stds), jnp.max(means) + 2 * jnp.max(stds)
    return jnp.array([jax.random.uniform(k1, (), minval=lo, maxval=hi), jnp.mean(jnp.log(stds)) + jax.random.normal(k2)])


def _mean_std(params, **_):
    return jnp.array([params[0], jnp.exp(params[1])])


_FORWARD_FIT = methods.Minimisation(_forward_kl, init=_spread_start, point=_mean_std, starts=8, iterations=40)
_REVERSE_FIT = methods.Minimisation(_reverse_kl, init=_spread_start, point=_mean_std, starts=16, iterations=40)

A6_FORWARD = Derivation(
    claim="A6",
    title="Forward KL(p‖q) over Gaussians q is minimised by moment matching (mass-covering)",
    statement=(r"\arg\min_{m,s} \mathrm{KL}\big(p\,\|\,\mathcal N(m,s^2)\big) = \big(\mathbb E_p x,\ "
               r"\sqrt{\mathrm{Var}_p x}\big),\quad p = \textstyle\sum_k \pi_k\mathcal N(\mu_k,\sigma_k^2)"),
    kind="variational",
    inputs=_bimodal(),
    steps=[
        Step(r"(\bar\mu, \bar\sigma)", "vfe.gaussian.moment_match",
             lambda weights, means, stds: jnp.stack(gaussian.moment_match(weights, means, stds))),
        Step(r"\Big(\sum_k \pi_k\mu_k,\ \big[\sum_k \pi_k(\sigma_k^2 + (\mu_k - \bar\mu)^2)\big]^{1/2}\Big)",
             r"$\mathrm{KL}(p\,\|\,q) = -H(p) + \tfrac12\log(2\pi s^2) + \mathbb E_p(x-m)^2/2s^2$; "
             r"$\partial_m = 0$ gives $m = \mathbb E_p x$, $\partial_s = 0$ gives $s^2 = \mathbb E_p(x-m)^2$",
             lambda weights, means, stds: jnp.stack([
                 jnp.sum(weights * means),
                 jnp.sqrt(jnp.sum(weights * (stds**2 + (means - jnp.sum(weights * means)) ** 2)))])),
        Step(r"\arg\min_{m,s}\mathrm{KL}\big(p\,\|\,\mathcal N(m,s^2)\big)",
             f"optax L-BFGS on $(m, \\log s)$, 8 random starts × 40 iterations; {_QUADRATURE}",
             lambda weights, means, stds: _FORWARD_FIT.argmin(weights=weights, means=means, stds=stds), tol=1e-6),
    ],
    max_examples=10,
)

A6_REVERSE = Derivation(
    claim="A6",
    title="Reverse KL(q‖p) over Gaussians q locks onto one mode (mode-seeking)",
    statement=(r"\arg\min_{m,s} \mathrm{KL}\big(\mathcal N(m,s^2)\,\|\,p\big) \approx (\mu_{k^*}, \sigma_{k^*}),"
               r"\quad k^* = \arg\max_k \pi_k,\ \text{for well-separated components}"),
    kind="variational",
    inputs=_bimodal(),
    steps=[
        Step(r"(\mu_{k^*}, \sigma_{k^*})", r"the heavier component: $\mathrm{KL}(\mathcal N_k\,\|\,p) = -\log\pi_k + "
             r"O(e^{-50})$ at each component, the smallest at $k^*$",
             lambda weights, means, stds: jnp.stack([means[jnp.argmax(weights)], stds[jnp.argmax(weights)]])),
        Step(r"\arg\min_{m,s}\mathrm{KL}\big(\mathcal N(m,s^2)\,\|\,p\big)",
             f"$\\mathrm{{KL}} = -H(q) - \\mathbb E_q\\log p$ (vfe.gaussian_entropy, vfe.gaussian.gaussian_mixture_log_density); "
             f"optax L-BFGS on $(m, \\log s)$, 16 random starts × 40 iterations; {_QUADRATURE}",
             lambda weights, means, stds: _REVERSE_FIT.argmin(weights=weights, means=means, stds=stds), tol=1e-6),
    ],
    max_examples=10,
)


@st.composite
def _covering_pair(draw):
    """``p`` with full support and ``q`` with zeros (so ``q_j = 0 < p_j`` somewhere), of one size."""
    n = draw(st.sampled_from(_A3_SIZES[1:]))
    return {"p": draw(vt.probability_vectors(sizes=(n,), kind="dirichlet")),
            "q": draw(vt.probability_vectors(sizes=(n,), kind="sparse"))}


A6_MASS_COVERING = Derivation(
    claim="A6",
    title="Forward KL is +∞ when q misses mass of p",
    statement=r"q_j = 0 < p_j \implies \mathrm{KL}(p\,\|\,q) = +\infty",
    inputs=_covering_pair(),
    steps=[
        Step(r"\mathrm{KL}(p\,\|\,q)", "vfe.kl_divergence", lambda p, q: vfe.kl_divergence(p, q)),
        Step(r"\sum_i p_i\log\frac{p_i}{q_i}", "definition", lambda p, q: jnp.sum(_plogp_over(p, q))),
        Step(r"+\infty", r"the term $p_j\log(p_j/0) = +\infty$, and every other term is $\ge p_i\log p_i > -\infty$",
             lambda p, q: jnp.asarray(jnp.inf)),
    ],
)

A6_ASYMMETRY = Derivation(
    claim="A6",
    title="… while the reverse KL(q‖p) of the same pair is finite: KL is not symmetric",
    statement=r"\mathrm{KL}(q\,\|\,p) \le -\log\min_i p_i < \infty = \mathrm{KL}(p\,\|\,q)",
    inputs=_covering_pair(),
    steps=[
        Step(r"\mathrm{KL}(q\,\|\,p)", "vfe.kl_divergence with the arguments swapped", lambda p, q: vfe.kl_divergence(q, p)),
        Step(r"\sum_i q_i\log q_i - \sum_i q_i\log p_i", r"definition; $0\log 0 = 0$ where $q_i = 0$",
             lambda p, q: Terms(-jnp.sum(_neg_plogq(q, q)), jnp.sum(_neg_plogq(q, p)))),
        Step(r"-\sum_i q_i\log p_i", r"$\sum_i q_i\log q_i = -H(q) \le 0$", lambda p, q: jnp.sum(_neg_plogq(q, p)), "<="),
        Step(r"-\log\min_i p_i", r"$-\log p_i \le -\log\min_i p_i$ and $\sum_i q_i = 1$ (finite: $p > 0$)",
             lambda p, q: -jnp.log(jnp.min(p)), "<="),
        Step(r"\mathrm{KL}(p\,\|\,q) = +\infty", "A6 above; vfe.kl_divergence", lambda p, q: vfe.kl_divergence(p, q), "<="),
    ],
)


# ----------------------------------------------------------------------------- A7: code lengths and perplexity

_DYADIC = {"p": np.array([0.5, 0.25, 0.125, 0.125, 0.0])}  # every p_i a power of two: H_2 = E[ℓ] = 1.75 bits


def _bits(p):
    """``-log₂ p_i`` where ``p_i > 0``, else 0 (the weight ``p_i = 0`` multiplies it)."""
    return jnp.where(p > 0, -jnp.log(jnp.where(p > 0, p, 1.0)) / jnp.log(2.0), 0.0)


_A7_PROBS = vt.probability_vectors(sizes=_A3_SIZES).map(lambda p: {"p": p})

A7_KRAFT = Derivation(
    claim="A7",
    title="Shannon code lengths ⌈−log₂ p⌉ satisfy Kraft's inequality",
    statement=r"\ell_i = \lceil -\log_2 p_i\rceil \implies \sum_i 2^{-\ell_i} \le \sum_i p_i = 1",
    inputs=_A7_PROBS,
    examples=[_DYADIC],
    steps=[
        Step(r"\sum_i 2^{-\ell_i}", "vfe.coding.kraft_sum of vfe.coding.shannon_code_lengths",
             lambda p: coding.kraft_sum(coding.shannon_code_lengths(p))),
        Step(r"\sum_{i: p_i > 0} 2^{-\ell_i}", r"a symbol with $p_i = 0$ gets no codeword ($\ell_i = +\infty$)",
             lambda p: jnp.sum(jnp.where(p > 0, jnp.exp2(-coding.shannon_code_lengths(p)), 0.0))),
        Step(r"\sum_{i: p_i > 0} 2^{\log_2 p_i} = \sum_i p_i", r"$\ell_i \ge -\log_2 p_i$ and $2^{-x}$ is decreasing",
             lambda p: jnp.sum(p), "<="),
        Step(r"1", r"$p$ is a distribution", lambda p: jnp.ones(()), "<="),
    ],
)

A7_SHANNON = Derivation(
    claim="A7",
    title="Shannon code: H₂(p) ≤ E[ℓ] < H₂(p) + 1 bits",
    statement=r"H_2(p) \le \mathbb E_p[\ell] \le H_2(p) + \max_{i: p_i>0}\big(\ell_i + \log_2 p_i\big) < H_2(p) + 1",
    inputs=_A7_PROBS,
    examples=[_DYADIC],
    steps=[
        Step(r"H_2(p)", "vfe.nats_to_bits(vfe.entropy(p))", lambda p: vfe.nats_to_bits(vfe.entropy(p))),
        Step(r"\sum_i p_i(-\log_2 p_i)", "definition of entropy, in bits", lambda p: jnp.sum(p * _bits(p))),
        Step(r"\mathbb E_p[\ell] = \sum_i p_i\ell_i", r"$\ell_i = \lceil -\log_2 p_i\rceil \ge -\log_2 p_i$ "
             "(equality iff every $p_i$ is a power of two); vfe.coding.expected_code_length",
             lambda p: coding.expected_code_length(p, coding.shannon_code_lengths(p)), "<="),
        Step(r"H_2(p) + \max_{i: p_i > 0}(\ell_i + \log_2 p_i)",
             r"$\sum_i p_i(\ell_i + \log_2 p_i) \le \max_i(\ell_i + \log_2 p_i)\sum_i p_i$",
             lambda p: Terms(vfe.nats_to_bits(vfe.entropy(p)),
                             jnp.max(jnp.where(p > 0, coding.shannon_code_lengths(p) - _bits(p), -jnp.inf))), "<="),
        Step(r"H_2(p) + 1", r"$\lceil x\rceil - x < 1$: the maximum is $< 1$, so the bound is strict",
             lambda p: Terms(vfe.nats_to_bits(vfe.entropy(p)), jnp.ones(())), "<="),
    ],
)


@st.composite
def _tokens(draw):
    """Logits of one sequence of ``T`` tokens (moderate range, so the product of probabilities stays normal)."""
    z = draw(vt.logits(sizes=(2, 16), batch_shape=(8,), min_value=-20.0, max_value=20.0, masked=False))
    return {"z": z, "y": _labels(draw, np.random.default_rng(draw(_SEEDS)), np.isfinite(z))}


def _mean_nll(z, y):
    return jnp.mean(vfe.cross_entropy_with_integer_labels(z, y))


A7_CODE_LENGTH = Derivation(
    claim="A7",
    title="The NLL of a sequence is its code length: −log₂ p(x) bits",
    statement=r"\sum_t -\log_2 p_\theta(y_t\mid y_{<t}) = \frac{\mathcal L_\mathrm{NLL}}{\ln 2}",
    inputs=_tokens(),
    steps=[
        Step(r"\sum_t L(y_t)", "vfe.coding.code_length_bits of each token's log-probability",
             lambda z, y: jnp.sum(coding.code_length_bits(_picked(_log_softmax_written_out(z), y)))),
        Step(r"-\sum_t \frac{\log p_\theta(y_t\mid y_{<t})}{\ln 2}", r"$\log_2 x = \ln x/\ln 2$",
             lambda z, y: -jnp.sum(_picked(_log_softmax_written_out(z), y)) / jnp.log(2.0)),
        Step(r"\mathcal L_\mathrm{NLL}/\ln 2", "claim A2; vfe.cross_entropy_with_integer_labels, vfe.nats_to_bits",
             lambda z, y: vfe.nats_to_bits(jnp.sum(vfe.cross_entropy_with_integer_labels(z, y)))),
    ],
)

A7_PERPLEXITY = Derivation(
    claim="A7",
    title="Perplexity = exp(cross-entropy in nats) = 2^(bits per token)",
    statement=r"\mathrm{PPL} = e^{\mathrm{CE}} = 2^{\mathrm{CE}/\ln 2} = \Big(\prod_{t=1}^T p_\theta(y_t\mid y_{<t})\Big)^{-1/T}",
    inputs=_tokens(),
    steps=[
        Step(r"\mathrm{PPL}", "vfe.perplexity of the mean NLL per token", lambda z, y: vfe.perplexity(_mean_nll(z, y))),
        Step(r"e^{\mathrm{CE}}", "definition", lambda z, y: jnp.exp(_mean_nll(z, y))),
        Step(r"2^{\mathrm{CE}/\ln 2}", r"$e^x = 2^{x/\ln 2}$; vfe.nats_to_bits (bits per token)",
             lambda z, y: jnp.exp2(vfe.nats_to_bits(_mean_nll(z, y)))),
        Step(r"\Big(\prod_t p_\theta(y_t\mid y_{<t})\Big)^{-1/T}", r"$\mathrm{CE} = -\frac1T\sum_t\log p_\theta(y_t\mid y_{<t})$: "
             "the inverse geometric mean of the token probabilities",
             lambda z, y: jnp.prod(jnp.exp(_picked(_log_softmax_written_out(z), y))) ** (-1.0 / y.shape[-1])),
    ],
)
