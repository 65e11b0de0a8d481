"""Temperature and the Boltzmann distribution (claims C1–C9 of ``CLAIMS.md``; seeds 000, 003)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vfe
import vfe.sequences
from proofs.catalogue import Claim
from vfe import methods
from vfe import testing as vt
from vfe.derivation import Derivation, Step, Terms, geometric
from vfe.thermodynamics import (
    energy_variance,
    heat_capacity,
    mean_energy,
    thermodynamic_entropy,
)

CLAIMS = (
    Claim(
        id="C1", title="Softmax with temperature is the Boltzmann distribution", seeds=("000", "003"),
        wording="「softmax sampling = ボルツマン分布」「これは比喩ではなく**数式レベルの同型**です」 (\"softmax sampling = "
                "the Boltzmann distribution; this is not a metaphor but an isomorphism at the level of the formulas\"), "
                "with the table エネルギー E(x) ↔ −z_i, 逆温度 β ↔ 1/T, 分配関数 Z ↔ softmaxの正規化項",
        statement=r"$\mathrm{softmax}(z/T)_i = e^{z_i/T}/\sum_j e^{z_j/T} = e^{-\beta E_i}/Z(\beta)$ with $E = -z$, "
                  r"$\beta = 1/T$, $Z(\beta) = \sum_j e^{-\beta E_j}$; unchanged by a shift $z \mapsto z + c$",
        functions=("vfe.tempered_softmax", "vfe.boltzmann", "vfe.log_partition"),
    ),
    Claim(
        id="C2", title="Limits of temperature: greedy, the model, uniform", seeds=("000", "003"),
        wording="「$T \\downarrow 0$ ：最大確率トークンに集中（決定論的）」「$T = 1$ ：学習時の分布」"
                "「$T \\uparrow \\infty$ ：一様分布に近づく」 (\"T → 0: concentrates on the most probable token "
                "(deterministic); T = 1: the training-time distribution; T → ∞: approaches the uniform distribution\")",
        statement=r"$\lim_{T\to0}\mathrm{softmax}(z/T) = \mathrm{uniform}(\arg\max z)$ (ties share the mass), "
                  r"$\mathrm{softmax}(z/1) = \mathrm{softmax}(z)$, $\lim_{T\to\infty}\mathrm{softmax}(z/T) = "
                  r"\mathrm{uniform}\{i : z_i > -\infty\}$; finite for $T \in [10^{-30}, 10^{30}]$ and masked logits",
        verdict="correct; with ties the T → 0 limit is uniform over the argmax set, not a single token",
        functions=("vfe.tempered_softmax",),
    ),
    Claim(
        id="C3", title="Temperature is a power transform; it keeps the order of the tokens", seeds=("003",),
        wording="paraphrase: temperature \"softens\" (和らげる) the model's distribution without changing which "
                "characters are likely: low T sharpens it, high T flattens it",
        statement=r"$\mathrm{softmax}(z/T) = p^{1/T}/\sum_j p_j^{1/T}$ with $p = \mathrm{softmax}(z)$; "
                  r"$z_i \le z_j \Rightarrow \mathrm{softmax}(z/T)_i \le \mathrm{softmax}(z/T)_j$, so the argmax is the same at every $T > 0$",
        functions=("vfe.tempered_softmax", "vfe.tempered_log_softmax"),
    ),
    Claim(
        id="C4", title="Low T sharpens, high T flattens", seeds=("003",),
        wording="「分布を*鋭く*します。信頼度の高い予測の確率はさらに高くなり、低い確率はゼロに近づけられます。」 (\"[T < 1] "
                "sharpens the distribution: confident predictions become more probable, low probabilities are pushed "
                "to zero\") and 「分布を*平坦に*します。確率がより均一になり」 (\"[T > 1] flattens it: the probabilities "
                "become more uniform\")",
        statement=r"$T \mapsto H(\mathrm{softmax}(z/T))$ is non-decreasing with $dH/dT = \mathrm{Var}_{p_T}(z)/T^3$, "
                  r"and $T \mapsto \max_i \mathrm{softmax}(z/T)_i$ is non-increasing",
        functions=("vfe.tempered_softmax", "vfe.entropy", "vfe.heat_capacity"),
    ),
    Claim(
        id="C5", title="Helmholtz free energy and the Gibbs variational principle", seeds=("000",),
        wording="「統計力学の自由エネルギー：」「F = \\langle E \\rangle - TS」 (\"the free energy of statistical "
                "mechanics: F = ⟨E⟩ − TS\") and 「$\\mathcal{F}_\\beta(q) = \\mathbb{E}_q[E] - \\beta^{-1} H(q)$」",
        statement=r"$F = \langle E\rangle - TS = -T\log Z$ for the Boltzmann law, and "
                  r"$\min_q\big(\mathbb{E}_q[E] - T H(q)\big) = -T\log Z$, attained at $q = e^{-E/T}/Z$",
        functions=("vfe.helmholtz_free_energy", "vfe.gibbs_free_energy", "vfe.mean_energy",
                   "vfe.thermodynamic_entropy", "vfe.log_partition", "vfe.boltzmann"),
    ),
    Claim(
        id="C6", title="Thermodynamic derivatives of log Z", seeds=("000",),
        wording="paraphrase: the seed's dictionary (分配関数 Z = softmax の正規化項, F = ⟨E⟩ − TS) implies the standard "
                "relations between log Z, the softmax, the mean and variance of the energy, the entropy and the heat capacity",
        statement=r"$\partial\log Z/\partial z_i = \mathrm{softmax}_i$; $\langle E\rangle = -\partial_\beta\log Z$; "
                  r"$\mathrm{Var}(E) = \partial^2_\beta\log Z$; $S = -\partial F/\partial T$; "
                  r"$C = \partial\langle E\rangle/\partial T = \mathrm{Var}(E)/T^2$; $\nabla^2\operatorname{lse} = \mathrm{diag}(p) - pp^\top$",
        functions=("vfe.log_partition", "vfe.helmholtz_free_energy", "vfe.mean_energy", "vfe.energy_variance",
                   "vfe.thermodynamic_entropy", "vfe.heat_capacity", "vfe.tempered_softmax"),
    ),
    Claim(
        id="C7", title="Higher temperature, more mistakes", seeds=("003",),
        wording="「より多くの間違い（例：スペルミスなど）を代償に」 (\"at the cost of more mistakes (e.g. spelling "
                "errors)\"), said of high temperature",
        statement=r"$T \mapsto \mathbb{E}_{p_T}[-\log p_1] = \operatorname{lse}(z) - \langle z\rangle_{p_T}$ is non-decreasing, "
                  r"with derivative $\mathrm{Var}_{p_T}(z)/T^2 \ge 0$",
        verdict="correct (the derivative Var_{p_T}(z)/T² of CLAIMS.md is confirmed by differentiation)",
        functions=("vfe.cross_entropy_from_logits", "vfe.tempered_softmax", "vfe.heat_capacity"),
    ),
    Claim(
        id="C8", title="Temperature acts only at sampling time", seeds=("000", "003"),
        wording="「本質的に、温度は何か新しいことを「学習」するものではありません。」 (\"in essence, temperature does not "
                "'learn' anything new\") and the table row 「| 学習に影響 | する | しない |」 (\"affects learning: "
                "[free energy] yes, [LLM temperature] no\")",
        statement=r"a gradient step on the $T = 1$ loss gives the same parameters whatever the sampling temperature, "
                  r"and $\arg\max_i \mathrm{softmax}(z/T)_i \ni \arg\max_i \mathrm{softmax}(z)_i$ for every $T > 0$",
        functions=("vfe.cross_entropy_with_integer_labels", "vfe.sequences.sample_tempered", "vfe.tempered_softmax"),
    ),
    Claim(
        id="C9", title="Sampling draws from the Boltzmann distribution", seeds=("003",),
        wording="「この分布から次の文字を*サンプリング*します（例えば、多項サンプリングを介して）」 (\"sample the next "
                "character from this distribution (e.g. by multinomial sampling)\")",
        statement=r"inverse-CDF sampling of $\mathrm{softmax}(z/T)$ and Gumbel-max $\arg\max_i(z_i/T + G_i)$, "
                  r"$G_i \sim \mathrm{Gumbel}(0, 1)$ i.i.d., both draw from $\mathrm{softmax}(z/T)$",
        functions=("vfe.sequences.sample_tempered", "vfe.sequences.sample_categorical", "vfe.tempered_softmax"),
    ),
)

_SIZES = (2, 5, 16)  # few fixed shape buckets: the chains compile once per bucket
_LOGITS_AND_T = st.fixed_dictionaries({"z": vt.logits(), "T": vt.temperatures()})
_BUCKETED_LOGITS_AND_T = st.fixed_dictionaries({"z": vt.logits(sizes=_SIZES), "T": vt.temperatures()})


def _centred(z):
    """``z - max z`` with masked (``-inf``) entries kept at ``-inf``."""
    return jnp.where(jnp.isneginf(z), -jnp.inf, z - jnp.max(z))


def _boltzmann_shifted(z, T):
    """``e^{-β(E_i - E_min)} / Σ_j e^{-β(E_j - E_min)}`` with ``E = -z``, ``β = 1/T``."""
    energy_gap = -_centred(z)  # E - E_min >= 0, +inf for masked states
    weights = jnp.exp(-energy_gap / T)
    return weights / jnp.sum(weights)


C1 = Derivation(
    claim="C1",
    title="Softmax with temperature is the Boltzmann distribution",
    statement=(r"\mathrm{softmax}(z/T)_i = \frac{e^{z_i/T}}{\sum_j e^{z_j/T}}"
               r" = \frac{e^{-\beta E_i}}{Z(\beta)},\quad E = -z,\ \beta = 1/T,\ Z(\beta) = \sum_j e^{-\beta E_j}"),
    inputs=_LOGITS_AND_T,
    steps=[
        Step(r"\mathrm{softmax}(z/T)_i", "vfe.tempered_softmax", lambda z, T: vfe.tempered_softmax(z, T)),
        Step(r"\frac{e^{(z_i - m)/T}}{\sum_j e^{(z_j - m)/T}},\ m = \max_j z_j",
             r"definition $e^{z_i/T}/\sum_j e^{z_j/T}$, numerator and denominator multiplied by $e^{-m/T}$",
             lambda z, T: jnp.exp(_centred(z) / T) / jnp.sum(jnp.exp(_centred(z) / T))),
        Step(r"\frac{e^{-\beta(E_i - E_{\min})}}{\sum_j e^{-\beta(E_j - E_{\min})}}",
             r"substitute $E = -z$ (so $-m = E_{\min}$) and $\beta = 1/T$",
             lambda z, T: _boltzmann_shifted(z, T)),
        Step(r"\frac{e^{-\beta E_i}}{Z(\beta)}",
             r"multiply numerator and denominator by $e^{-\beta E_{\min}}$: the denominator becomes $Z(\beta)$;"
             r" vfe.boltzmann",
             lambda z, T: vfe.boltzmann(-z, 1.0 / T)),
    ],
)

C1_SHIFT = Derivation(
    claim="C1",
    title="The Boltzmann distribution ignores a shift of the energies (logits)",
    # Checked for T >= 1e-3: below that, the rounding of z + c itself (1e-13 for |z| <= 1e3) moves
    # softmax(z/T) by more than the tolerance; the identity is exact, its floating-point input is not.
    statement=r"\mathrm{softmax}((z + c)/T) = \mathrm{softmax}(z/T)",
    inputs=st.fixed_dictionaries({"z": vt.logits(min_value=-1e3, max_value=1e3),
                                  "T": vt.temperatures(min_value=1e-3),
                                  "c": st.floats(-1e3, 1e3)}),
    steps=[
        Step(r"\mathrm{softmax}((z + c)/T)_i", "vfe.tempered_softmax of shifted logits",
             lambda z, T, c: vfe.tempered_softmax(z + c, T)),
        Step(r"\frac{e^{c/T} e^{z_i/T}}{e^{c/T}\sum_j e^{z_j/T}}",
             r"$e^{(z_i + c)/T} = e^{c/T}e^{z_i/T}$; written with the maximum subtracted as in C1",
             lambda z, T, c: jnp.exp(_centred(z + c) / T) / jnp.sum(jnp.exp(_centred(z + c) / T))),
        Step(r"\mathrm{softmax}(z/T)_i", r"cancel $e^{c/T}$; vfe.tempered_softmax",
             lambda z, T, c: vfe.tempered_softmax(z, T)),
    ],
)


# ----------------------------------------------------------------------------- helpers

_SMALL = (3, 5)  # support sizes of the costly checks (optimisers, differences, samplers)
_SMOOTH_Z = vt.logits(sizes=_SMALL, min_value=-5.0, max_value=5.0, masked=False)
_MODERATE_T = vt.temperatures(min_value=0.2, max_value=5.0)


def _where_p(p, x):
    """``p_i x_i`` with ``p_i = 0`` terms exactly 0 (also where ``x_i = ±inf``)."""
    return jnp.where(p > 0, p * jnp.where(p > 0, x, 0.0), 0.0)


def _mean(p, x):
    return jnp.sum(_where_p(p, x))


def _var(p, x):
    """``Var_p(x) = Σ_i p_i (x_i - ⟨x⟩_p)²``."""
    return _mean(p, (x - _mean(p, x)) ** 2)


def _argmax_set(z):
    """Uniform on the argmax set of ``z``."""
    top = (z == jnp.max(z)).astype(jnp.float64)
    return top / jnp.sum(top)


def _uniform_allowed(z):
    """Uniform over the unmasked (finite) entries of ``z``."""
    allowed = jnp.isfinite(z).astype(jnp.float64)
    return allowed / jnp.sum(allowed)


def _lse(z):
    top = jnp.max(z)
    return top + jnp.log(jnp.sum(jnp.exp(z - top)))


def _normalised_exp(a, T):
    """``e^{a_i/T} / Σ_j e^{a_j/T}`` written out, with ``max a`` subtracted first."""
    w = jnp.exp((a - jnp.max(a)) / T)
    return w / jnp.sum(w)


# ----------------------------------------------------------------------------- C2: limits

C2_COLD = Derivation(
    claim="C2",
    title="T → 0: greedy decoding, ties share the mass",
    statement=r"\lim_{T\to 0}\mathrm{softmax}(z/T) = \mathrm{uniform}(\arg\max_i z_i)",
    variables={"z": vt.logits(sizes=_SIZES)},
    schedule=geometric("T", 1.0, 1e-30, 31, r"T \to 0"),
    steps=[
        Step(r"\mathrm{softmax}(z/T)", "vfe.tempered_softmax (exact: max z subtracted before dividing by T)",
             lambda z, T: vfe.tempered_softmax(z, T)),
        Step(r"\frac{\mathbb{1}[z_i = \max z]}{|\arg\max z|}",
             r"$e^{(z_i - \max z)/T} \to 0$ for $z_i < \max z$ and $= 1$ on the argmax set; normalise",
             lambda z, T: _argmax_set(z), relation="->"),
    ],
)

C2_ONE = Derivation(
    claim="C2",
    title="T = 1: the model's own distribution",
    statement=r"\mathrm{softmax}(z/1) = \mathrm{softmax}(z)",
    variables={"z": vt.logits(sizes=_SIZES)},
    steps=[
        Step(r"\mathrm{softmax}(z/T)\big|_{T=1}", "vfe.tempered_softmax at T = 1", lambda z: vfe.tempered_softmax(z, 1.0)),
        Step(r"e^{z_i - \operatorname{lse}(z)}", r"$z/1 = z$; softmax written as $e^{z_i - \log\sum_j e^{z_j}}$",
             lambda z: jnp.exp(z - _lse(z))),
        Step(r"\mathrm{softmax}(z)", "the model's (training-time) distribution, jax.nn.softmax",
             lambda z: jax.nn.softmax(z)),
    ],
)

C2_HOT = Derivation(
    claim="C2",
    title="T → ∞: uniform over the unmasked tokens",
    statement=r"\lim_{T\to\infty}\mathrm{softmax}(z/T) = \mathrm{uniform}\{i : z_i > -\infty\}",
    variables={"z": vt.logits(sizes=_SIZES)},
    schedule=geometric("T", 1.0, 1e30, 31, r"T \to \infty"),
    steps=[
        Step(r"\mathrm{softmax}(z/T)", "vfe.tempered_softmax", lambda z, T: vfe.tempered_softmax(z, T)),
        Step(r"\frac{\mathbb{1}[z_i > -\infty]}{|\{j : z_j > -\infty\}|}",
             r"$e^{(z_i - \max z)/T} \to 1$ for finite $z_i$, $= 0$ for masked ones; normalise",
             lambda z, T: _uniform_allowed(z), relation="->"),
    ],
)


# ----------------------------------------------------------------------------- C3: a power transform

C3 = Derivation(
    claim="C3",
    title="Temperature is a power transform of the model's distribution",
    # T >= 1e-2 and |z| <= 1e3: log p = z - lse(z) carries a rounding error ~eps·1e3, which 1/T
    # amplifies; the identity is exact, its floating-point evaluation is not below that.
    statement=r"\mathrm{softmax}(z/T)_i = \frac{p_i^{1/T}}{\sum_j p_j^{1/T}},\quad p = \mathrm{softmax}(z)",
    variables={"z": vt.logits(sizes=_SIZES, min_value=-1e3, max_value=1e3), "T": vt.temperatures(min_value=1e-2)},
    steps=[
        Step(r"\mathrm{softmax}(z/T)_i", "vfe.tempered_softmax", lambda z, T: vfe.tempered_softmax(z, T)),
        Step(r"\frac{e^{(z_i - \operatorname{lse} z)/T}}{\sum_j e^{(z_j - \operatorname{lse} z)/T}}",
             r"multiply numerator and denominator by $e^{-\operatorname{lse}(z)/T}$",
             lambda z, T: _normalised_exp(z - _lse(z), T)),
        Step(r"\frac{p_i^{1/T}}{\sum_j p_j^{1/T}}",
             r"$z_i - \operatorname{lse} z = \log p_i$ (vfe.tempered_log_softmax at T = 1), $e^{\log p_i/T} = p_i^{1/T}$",
             lambda z, T: _normalised_exp(vfe.tempered_log_softmax(z, 1.0), T)),
    ],
)


def _sorted_by_logit(z, T):
    """``softmax(z/T)`` listed in increasing order of ``z``."""
    return vfe.tempered_softmax(z, T)[jnp.argsort(z, stable=True)]


C3_ORDER = Derivation(
    claim="C3",
    title="Temperature never reorders the tokens",
    statement=r"z_i \le z_j \implies \mathrm{softmax}(z/T)_i \le \mathrm{softmax}(z/T)_j\quad(T > 0)",
    inputs=_BUCKETED_LOGITS_AND_T,
    steps=[
        Step(r"0", "(one entry per consecutive pair of tokens sorted by logit)",
             lambda z, T: jnp.zeros(z.size - 1)),
        Step(r"\mathrm{softmax}(z/T)_{(k+1)} - \mathrm{softmax}(z/T)_{(k)}",
             r"$x \mapsto e^{(x - \max z)/T}$ is increasing for $T > 0$, and all share one normaliser;"
             r" vfe.tempered_softmax sorted by $z$",
             lambda z, T: jnp.diff(_sorted_by_logit(z, T)), relation="<="),
    ],
)

C3_ARGMAX = Derivation(
    claim="C3",
    title="Temperature never moves the argmax",
    statement=r"\max_i \mathrm{softmax}(z/T)_i = \mathrm{softmax}(z/T)_{i^*},\quad i^* \in \arg\max_i z_i",
    inputs=_BUCKETED_LOGITS_AND_T,
    steps=[
        Step(r"\max_i \mathrm{softmax}(z/T)_i", "vfe.tempered_softmax", lambda z, T: jnp.max(vfe.tempered_softmax(z, T))),
        Step(r"\mathrm{softmax}(z/T)_{i^*}", "order preserved (C3, previous derivation): the largest logit has the largest probability",
             lambda z, T: vfe.tempered_softmax(z, T)[jnp.argmax(z)]),
        Step(r"\frac{1}{\sum_j e^{(z_j - z_{i^*})/T}}", r"definition, with $z_{i^*} = \max z$ subtracted: its numerator is $e^0$",
             lambda z, T: 1.0 / jnp.sum(jnp.exp((z - jnp.max(z)) / T))),
    ],
)


# ----------------------------------------------------------------------------- C4: sharpen / flatten

def _entropy_at(z, T):
    return vfe.entropy(vfe.tempered_softmax(z, T))


C4 = Derivation(
    claim="C4",
    title="dH/dT of the tempered softmax is Var_p(z)/T³",
    statement=r"\frac{d}{dT} H\big(\mathrm{softmax}(z/T)\big) = \frac{\mathrm{Var}_{p_T}(z)}{T^3} \ge 0",
    kind="derivative",
    variables={"z": _SMOOTH_Z, "T": _MODERATE_T},
    steps=[
        Step(r"\frac{\mathrm{Var}_{p_T}(z)}{T^3}", r"the claimed derivative, $p_T$ = vfe.tempered_softmax",
             lambda z, T: _var(vfe.tempered_softmax(z, T), z) / T**3),
        Step(r"\frac{C(T)}{T},\ E = -z", r"$\mathrm{Var}(E) = \mathrm{Var}(z)$ and $C = \mathrm{Var}(E)/T^2$; vfe.heat_capacity",
             lambda z, T: heat_capacity(-z, T) / T),
        Step(r"\frac{\partial}{\partial T} H(p_T)", "jax.grad in T of vfe.entropy(vfe.tempered_softmax(z, T))",
             methods.grad(_entropy_at, "T")),
        Step(r"\Delta_h H(p_T)", "central differences in T (Richardson)", methods.finite_difference(_entropy_at, "T"),
             tol=1e-7),
    ],
)

_MONOTONE = st.fixed_dictionaries({"z": vt.logits(sizes=_SIZES), "T": vt.temperatures(), "r": st.floats(1.0, 1e3)})

C4_ENTROPY = Derivation(
    claim="C4",
    title="Higher temperature, higher entropy",
    statement=r"T \le T' \implies H(\mathrm{softmax}(z/T)) \le H(\mathrm{softmax}(z/T')) \le \log|\{i : z_i > -\infty\}|",
    inputs=_MONOTONE,
    steps=[
        Step(r"H(\mathrm{softmax}(z/T))", "vfe.entropy of vfe.tempered_softmax", lambda z, T, r: _entropy_at(z, T)),
        Step(r"H(\mathrm{softmax}(z/rT)),\ r \ge 1",
             r"$dH/dT = \mathrm{Var}_{p_T}(z)/T^3 \ge 0$ (C4, previous derivation), integrated from $T$ to $rT$",
             lambda z, T, r: _entropy_at(z, r * T), relation="<="),
        Step(r"\log|\{i : z_i > -\infty\}|", "the uniform law has the largest entropy on its support (Gibbs' inequality)",
             lambda z, T, r: jnp.log(jnp.sum(jnp.isfinite(z))), relation="<="),
    ],
)

C4_MAX_PROB = Derivation(
    claim="C4",
    title="Higher temperature, lower top probability",
    statement=r"T \le T' \implies \tfrac{1}{n_{\mathrm{allowed}}} \le \max_i \mathrm{softmax}(z/T')_i \le \max_i \mathrm{softmax}(z/T)_i \le 1",
    inputs=_MONOTONE,
    steps=[
        Step(r"\frac{1}{|\{i : z_i > -\infty\}|}", "count of unmasked tokens", lambda z, T, r: 1.0 / jnp.sum(jnp.isfinite(z))),
        Step(r"\max_i \mathrm{softmax}(z/rT)_i", "the largest of n_allowed numbers summing to 1 is at least their mean",
             lambda z, T, r: jnp.max(vfe.tempered_softmax(z, r * T)), relation="<="),
        Step(r"\max_i \mathrm{softmax}(z/T)_i",
             r"$\max_i p_{T,i} = 1/\sum_j e^{-(\max z - z_j)/T}$ (C3) and each $e^{-(\max z - z_j)/T}$ grows with $T$",
             lambda z, T, r: jnp.max(vfe.tempered_softmax(z, T)), relation="<="),
        Step(r"1", "a probability", lambda z, T, r: jnp.ones(()), relation="<="),
    ],
)


# ----------------------------------------------------------------------------- C5: free energies

_ENERGIES_AND_T = st.fixed_dictionaries({"E": vt.logits(sizes=_SIZES).map(lambda z: -z), "T": vt.temperatures()})


def _boltzmann_at(E, T):
    return vfe.boltzmann(E, 1.0 / T)


C5 = Derivation(
    claim="C5",
    title="Helmholtz free energy: ⟨E⟩ − TS = −T log Z",
    statement=r"F = \langle E\rangle - TS = \sum_i p_i E_i + T\sum_i p_i\log p_i = G_T(p) = -T\log Z,\quad p_i = e^{-E_i/T}/Z",
    inputs=_ENERGIES_AND_T,
    steps=[
        Step(r"\langle E\rangle - TS", "vfe.mean_energy and vfe.thermodynamic_entropy",
             lambda E, T: Terms(mean_energy(E, T), -T * thermodynamic_entropy(E, T))),
        Step(r"\sum_i p_i E_i + T\sum_i p_i\log p_i", r"definitions $\langle E\rangle = \sum p E$, $S = -\sum p\log p$; p = vfe.boltzmann",
             lambda E, T: Terms(_mean(_boltzmann_at(E, T), E), T * _mean(_boltzmann_at(E, T), jnp.log(_boltzmann_at(E, T))))),
        Step(r"G_T(p)", "the Gibbs free energy at q = p; vfe.gibbs_free_energy",
             lambda E, T: vfe.gibbs_free_energy(_boltzmann_at(E, T), E, T)),
        Step(r"-T\log Z", r"$\log p_i = -E_i/T - \log Z$: the $E_i$ terms cancel, $\sum p = 1$; vfe.log_partition at $\beta = 1/T$",
             lambda E, T: -T * vfe.log_partition(E, 1.0 / T)),
        Step(r"F", "vfe.helmholtz_free_energy", lambda E, T: vfe.helmholtz_free_energy(E, T)),
    ],
)

_GIBBS_INPUTS = {"E": vt.logits(sizes=(4,), min_value=-5.0, max_value=5.0, masked=False).map(lambda z: -z), "T": vt.temperatures(min_value=0.1, max_value=10.0)}
_GIBBS_MIN = methods.Minimisation(
    lambda theta, E, T: vfe.gibbs_free_energy(jax.nn.softmax(theta), E, T),
    init=lambda key, E, T: 3.0 * jax.random.normal(key, E.shape),
    point=lambda theta, E, T: jax.nn.softmax(theta), starts=4, iterations=60,
)

C5_GIBBS = Derivation(
    claim="C5",
    title="Gibbs variational principle: min_q E_q[E] − T H(q) = −T log Z",
    statement=r"\min_q\big(\mathbb{E}_q[E] - T H(q)\big) = -T\log Z",
    kind="variational", variables=_GIBBS_INPUTS, max_examples=8,
    steps=[
        Step(r"-T\log Z", "closed form; vfe.log_partition", lambda E, T: -T * vfe.log_partition(E, 1.0 / T)),
        Step(r"G_T(p),\ p = \mathrm{boltzmann}(E, 1/T)",
             r"$G_T(q) = -T\log Z + T\,\mathrm{KL}(q\,\|\,p)$, zero KL at $q = p$; vfe.gibbs_free_energy",
             lambda E, T: vfe.gibbs_free_energy(_boltzmann_at(E, T), E, T)),
        Step(r"\min_\theta G_T(\mathrm{softmax}\,\theta)", "optax L-BFGS over softmax-parametrised q, 4 starts × 60 iterations",
             _GIBBS_MIN.minimum, tol=1e-9),
    ],
)

C5_GIBBS_ARGMIN = Derivation(
    claim="C5",
    title="The Gibbs free energy is minimised by the Boltzmann distribution",
    statement=r"\arg\min_q\big(\mathbb{E}_q[E] - T H(q)\big) = e^{-E/T}/Z",
    kind="variational", variables=_GIBBS_INPUTS, max_examples=8,
    steps=[
        Step(r"\frac{e^{-E_i/T}}{Z}", "closed form; vfe.boltzmann", _boltzmann_at),
        Step(r"\arg\min_\theta G_T(\mathrm{softmax}\,\theta)", "optax L-BFGS over softmax-parametrised q, 4 starts × 60 iterations",
             _GIBBS_MIN.argmin, tol=1e-6),
    ],
)


# ----------------------------------------------------------------------------- C6: derivatives

_SMOOTH_E = _SMOOTH_Z.map(lambda z: -z)


def _lse_of(z):
    """``lse(z) = log Z`` at β = 1 of ``E = -z``: vfe.log_partition."""
    return vfe.log_partition(-z, 1.0)


def _log_z(E, beta):
    return vfe.log_partition(E, beta)


def _mean_energy(E, T):
    return mean_energy(E, T)


def _free_energy(E, T):
    return vfe.helmholtz_free_energy(E, T)


C6_GRAD = Derivation(
    claim="C6",
    title="∂ log Z/∂z_i = softmax_i",
    statement=r"\frac{\partial}{\partial z_i}\log\sum_j e^{z_j} = \mathrm{softmax}(z)_i",
    kind="derivative", variables={"z": _SMOOTH_Z},
    steps=[
        Step(r"\mathrm{softmax}(z)_i", "vfe.tempered_softmax at T = 1", lambda z: vfe.tempered_softmax(z, 1.0)),
        Step(r"\partial_{z_i}\operatorname{lse}(z)", "jax.grad of vfe.log_partition(-z, 1)", methods.grad(_lse_of, "z")),
        Step(r"\Delta_h \operatorname{lse}(z)", "central differences", methods.finite_difference(_lse_of, "z"), tol=1e-7),
    ],
)

C6_HESSIAN = Derivation(
    claim="C6",
    title="∇² lse = diag(p) − ppᵀ",
    statement=r"\nabla^2_z \operatorname{lse}(z) = \mathrm{diag}(p) - pp^\top,\quad p = \mathrm{softmax}(z)",
    kind="derivative", variables={"z": _SMOOTH_Z},
    steps=[
        Step(r"\mathrm{diag}(p) - pp^\top", "p = vfe.tempered_softmax at T = 1",
             lambda z: jnp.diag(vfe.tempered_softmax(z, 1.0)) - jnp.outer(vfe.tempered_softmax(z, 1.0), vfe.tempered_softmax(z, 1.0))),
        Step(r"\nabla^2 \operatorname{lse}(z)", "jax.hessian of vfe.log_partition(-z, 1)", methods.hessian(_lse_of, "z")),
        Step(r"\Delta^2_h \operatorname{lse}(z)", "second-order central differences",
             methods.finite_difference(_lse_of, "z", order=2), tol=1e-6),
    ],
)

_E_BETA = {"E": _SMOOTH_E, "beta": vt.temperatures(min_value=0.2, max_value=5.0)}

C6_MEAN = Derivation(
    claim="C6",
    title="⟨E⟩ = −∂ log Z/∂β",
    statement=r"\langle E\rangle_\beta = -\frac{\partial\log Z}{\partial\beta}",
    kind="derivative", variables=_E_BETA,
    steps=[
        Step(r"\langle E\rangle", "vfe.mean_energy at T = 1/β", lambda E, beta: mean_energy(E, 1.0 / beta)),
        Step(r"\sum_i E_i\, e^{-\beta E_i}/Z", "definition; p = vfe.boltzmann", lambda E, beta: _mean(vfe.boltzmann(E, beta), E)),
        Step(r"-\partial_\beta \log Z", "jax.grad in β of vfe.log_partition",
             lambda E, beta: -methods.grad(_log_z, "beta")(E=E, beta=beta)),
        Step(r"-\Delta_h \log Z", "central differences in β",
             lambda E, beta: -methods.finite_difference(_log_z, "beta")(E=E, beta=beta), tol=1e-7),
    ],
)

C6_VARIANCE = Derivation(
    claim="C6",
    title="Var(E) = ∂² log Z/∂β²",
    statement=r"\mathrm{Var}_\beta(E) = \frac{\partial^2\log Z}{\partial\beta^2}",
    kind="derivative", variables=_E_BETA,
    steps=[
        Step(r"\mathrm{Var}(E)", "vfe.energy_variance at T = 1/β", lambda E, beta: energy_variance(E, 1.0 / beta)),
        Step(r"\sum_i p_i (E_i - \langle E\rangle)^2", "definition; p = vfe.boltzmann",
             lambda E, beta: _var(vfe.boltzmann(E, beta), E)),
        Step(r"\partial^2_\beta \log Z", "jax.hessian in β of vfe.log_partition", methods.hessian(_log_z, "beta")),
        Step(r"\Delta^2_h \log Z", "second-order central differences in β",
             methods.finite_difference(_log_z, "beta", order=2), tol=1e-6),
    ],
)

_E_T = {"E": _SMOOTH_E, "T": _MODERATE_T}

C6_ENTROPY = Derivation(
    claim="C6",
    title="S = −∂F/∂T",
    statement=r"S(T) = -\sum_i p_i\log p_i = -\frac{\partial F}{\partial T}",
    kind="derivative", variables=_E_T,
    steps=[
        Step(r"S", "vfe.thermodynamic_entropy", lambda E, T: thermodynamic_entropy(E, T)),
        Step(r"-\sum_i p_i\log p_i", "definition; vfe.entropy of vfe.boltzmann", lambda E, T: vfe.entropy(_boltzmann_at(E, T))),
        Step(r"-\partial_T F", "jax.grad in T of vfe.helmholtz_free_energy", lambda E, T: -methods.grad(_free_energy, "T")(E=E, T=T)),
        Step(r"-\Delta_h F", "central differences in T",
             lambda E, T: -methods.finite_difference(_free_energy, "T")(E=E, T=T), tol=1e-7),
    ],
)

C6_CAPACITY = Derivation(
    claim="C6",
    title="Heat capacity C = ∂⟨E⟩/∂T = Var(E)/T²",
    statement=r"C(T) = \frac{\partial\langle E\rangle}{\partial T} = \frac{\mathrm{Var}(E)}{T^2}",
    kind="derivative", variables=_E_T,
    steps=[
        Step(r"\frac{\mathrm{Var}(E)}{T^2}", "vfe.energy_variance", lambda E, T: energy_variance(E, T) / T**2),
        Step(r"C", r"vfe.heat_capacity, computed as $\mathrm{Var}_p(E/T)$", lambda E, T: heat_capacity(E, T)),
        Step(r"\frac{\partial\langle E\rangle}{\partial\beta}\frac{d\beta}{dT}",
             r"chain rule, $\partial_\beta\langle E\rangle = -\mathrm{Var}(E)$ (C6), $d\beta/dT = -1/T^2$; jax.grad of vfe.log_partition",
             lambda E, T: -jax.hessian(lambda b: vfe.log_partition(E, b))(1.0 / T) * (-1.0 / T**2)),
        Step(r"\partial_T\langle E\rangle", "jax.grad in T of vfe.mean_energy", methods.grad(_mean_energy, "T")),
        Step(r"\Delta_h\langle E\rangle", "central differences in T", methods.finite_difference(_mean_energy, "T"), tol=1e-7),
    ],
)


# ----------------------------------------------------------------------------- C7: more mistakes

def _surprise(z, T):
    """``E_{p_T}[-log p_1] = H(p_T, p_1)``: vfe.cross_entropy_from_logits of the untempered logits."""
    return vfe.cross_entropy_from_logits(vfe.tempered_softmax(z, T), z)


C7 = Derivation(
    claim="C7",
    title="d/dT of the expected surprise E_{p_T}[−log p_1] is Var_{p_T}(z)/T²",
    statement=r"\frac{d}{dT}\,\mathbb{E}_{p_T}[-\log p_1] = \frac{\mathrm{Var}_{p_T}(z)}{T^2} \ge 0",
    kind="derivative",
    variables={"z": _SMOOTH_Z, "T": _MODERATE_T},
    steps=[
        Step(r"\frac{\mathrm{Var}_{p_T}(z)}{T^2}", "the claimed derivative; p_T = vfe.tempered_softmax",
             lambda z, T: _var(vfe.tempered_softmax(z, T), z) / T**2),
        Step(r"-\frac{d}{dT}\langle z\rangle_{p_T}",
             r"$-\langle z\rangle_{p_T} = \langle E\rangle$ with $E = -z$, whose T-derivative is the heat capacity"
             r" $C = \mathrm{Var}(E)/T^2$ (C6); vfe.heat_capacity",
             lambda z, T: heat_capacity(-z, T)),
        Step(r"\frac{\partial}{\partial T}\mathbb{E}_{p_T}[-\log p_1]",
             r"$\mathbb{E}_{p_T}[-\log p_1] = \operatorname{lse}(z) - \langle z\rangle_{p_T}$ ($\operatorname{lse}(z)$ does not depend"
             r" on T); jax.grad in T of vfe.cross_entropy_from_logits(vfe.tempered_softmax(z, T), z)",
             methods.grad(_surprise, "T")),
        Step(r"\Delta_h\,\mathbb{E}_{p_T}[-\log p_1]", "central differences in T", methods.finite_difference(_surprise, "T"),
             tol=1e-7),
    ],
)

C7_MONOTONE = Derivation(
    claim="C7",
    title="Higher temperature, more surprise under the untempered model",
    statement=r"T \le T' \implies \mathbb{E}_{p_T}[-\log p_1] \le \mathbb{E}_{p_{T'}}[-\log p_1]",
    inputs=_MONOTONE,
    steps=[
        Step(r"\mathbb{E}_{p_T}[-\log p_1]", "vfe.cross_entropy_from_logits", lambda z, T, r: _surprise(z, T)),
        Step(r"\operatorname{lse}(z) - \langle z\rangle_{p_T}", r"$-\log p_{1,i} = \operatorname{lse}(z) - z_i$, $\sum p_T = 1$",
             lambda z, T, r: Terms(_lse(z), -_mean(vfe.tempered_softmax(z, T), z))),
        Step(r"\operatorname{lse}(z) - \langle z\rangle_{p_{rT}},\ r \ge 1",
             r"derivative $\mathrm{Var}_{p_T}(z)/T^2 \ge 0$ (C7, previous derivation), integrated from $T$ to $rT$",
             lambda z, T, r: Terms(_lse(z), -_mean(vfe.tempered_softmax(z, r * T), z)), relation="<="),
        Step(r"\mathbb{E}_{p_{rT}}[-\log p_1]", "vfe.cross_entropy_from_logits", lambda z, T, r: _surprise(z, r * T)),
    ],
)


# ----------------------------------------------------------------------------- C8: sampling time only

_ETA = 0.5
_TOKENS = 16


def _training_loss(theta, tokens):
    """Mean next-token NLL at T = 1 of a categorical model with logits θ: vfe.cross_entropy_with_integer_labels."""
    return jnp.mean(vfe.cross_entropy_with_integer_labels(jnp.broadcast_to(theta, (tokens.size, theta.size)), tokens))


def _train_then_sample(theta, tokens, T):
    """The pipeline: one gradient step on the T = 1 loss, then one draw at temperature T.

    Returns the trained parameters and the token drawn (fixed key).
    """
    trained = theta - _ETA * jax.grad(_training_loss)(theta, tokens)
    return trained, vfe.sequences.sample_tempered(jax.random.key(0, impl="rbg"), trained, T)


@st.composite
def _model_and_data(draw):
    n = draw(st.sampled_from(_SMALL))
    theta = draw(hnp.arrays(np.float64, n, elements=st.floats(-5.0, 5.0)))
    tokens = draw(hnp.arrays(np.int32, _TOKENS, elements=st.integers(0, n - 1)))
    return {"theta": theta, "tokens": tokens, "T": draw(vt.temperatures())}


C8 = Derivation(
    claim="C8",
    title="Sampling temperature does not change the trained parameters",
    statement=r"\theta' = \theta - \eta\nabla_\theta \mathcal{L}_{T=1}(\theta)\ \text{whatever the sampling temperature } T",
    inputs=_model_and_data(),
    steps=[
        Step(r"\theta - \eta\nabla_\theta\mathcal{L}_1(\theta)",
             "a gradient step on the mean NLL at T = 1; jax.grad of vfe.cross_entropy_with_integer_labels",
             lambda theta, tokens, T: theta - _ETA * jax.grad(_training_loss)(theta, tokens)),
        Step(r"\theta - \eta\big(\mathrm{softmax}(\theta) - \hat f\big)",
             r"$\nabla_\theta(-\log\mathrm{softmax}(\theta)_x) = \mathrm{softmax}(\theta) - e_x$, averaged: $\hat f$ = token frequencies",
             lambda theta, tokens, T: theta - _ETA * (jax.nn.softmax(theta) - jnp.bincount(tokens, length=theta.size) / tokens.size)),
        Step(r"\theta'(T)", "the parameters out of the pipeline train-then-sample-at-T (T reaches only the sampler)",
             lambda theta, tokens, T: _train_then_sample(theta, tokens, T)[0]),
        Step(r"\theta'(T) + (1 - T)\,\partial_T\theta'(T)",
             r"$\partial_T\theta' = 0$: jax.jacfwd of the pipeline's parameters in T",
             lambda theta, tokens, T: Terms(_train_then_sample(theta, tokens, T)[0],
                                            (1.0 - T) * jax.jacfwd(lambda t: _train_then_sample(theta, tokens, t)[0])(T))),
        Step(r"\theta'(1)", "the same pipeline sampling at T = 1", lambda theta, tokens, T: _train_then_sample(theta, tokens, 1.0)[0]),
    ],
)

C8_ARGMAX = Derivation(
    claim="C8",
    title="Sampling temperature does not change the argmax token",
    # T in [1e-3, 1e3], |z| <= 1e3: two logits closer than the rounding of p_1 (1e-16 relative) are
    # then indistinguishable also in p_T, whichever of the two argmax p_1 returns.
    statement=r"\mathrm{softmax}(z/T)_{\arg\max_i \mathrm{softmax}(z)_i} = \max_i \mathrm{softmax}(z/T)_i",
    variables={"z": vt.logits(sizes=_SIZES, min_value=-1e3, max_value=1e3), "T": vt.temperatures(min_value=1e-3, max_value=1e3)},
    steps=[
        Step(r"\max_i \mathrm{softmax}(z/T)_i", "vfe.tempered_softmax", lambda z, T: jnp.max(vfe.tempered_softmax(z, T))),
        Step(r"\mathrm{softmax}(z/T)_{\arg\max_i z_i}", "temperature keeps the order of the tokens (C3)",
             lambda z, T: vfe.tempered_softmax(z, T)[jnp.argmax(z)]),
        Step(r"\mathrm{softmax}(z/T)_{\arg\max_i \mathrm{softmax}(z)_i}",
             r"the trained model's mode: softmax at T = 1 is increasing in $z$ (C3 at T = 1)",
             lambda z, T: vfe.tempered_softmax(z, T)[jnp.argmax(vfe.tempered_softmax(z, 1.0))]),
    ],
)


# ----------------------------------------------------------------------------- C9: samplers

SAMPLES = 100_000
_SAMPLER_INPUTS = {"z": vt.logits(sizes=_SMALL), "T": vt.temperatures()}


def _gumbel_samples(z, T):
    """SAMPLES draws of vfe.sequences.sample_tempered (Gumbel-max), fixed key."""
    return vfe.sequences.sample_tempered(jax.random.key(0, impl="rbg"), jnp.broadcast_to(z, (SAMPLES, z.size)), T)


def _inverse_cdf_samples(z, T):
    """SAMPLES draws of vfe.sequences.sample_categorical (inverse CDF) of vfe.tempered_softmax, fixed key."""
    p = vfe.tempered_softmax(z, T)
    return vfe.sequences.sample_categorical(jax.random.key(1, impl="rbg"), jnp.broadcast_to(p, (SAMPLES, z.size)))


C9_GUMBEL = Derivation(
    claim="C9",
    title="Gumbel-max argmax(z/T + G) samples softmax(z/T)",
    statement=r"P\big(\arg\max_i (z_i/T + G_i) = k\big) = \mathrm{softmax}(z/T)_k,\quad G_i \overset{iid}{\sim}\mathrm{Gumbel}(0,1)",
    kind="distributional", variables=_SAMPLER_INPUTS, max_examples=20,
    steps=[
        Step(r"F_{\mathrm{softmax}(z/T)}", "CDF of the Boltzmann law (C1); vfe.tempered_softmax",
             lambda z, T: methods.cdf(vfe.tempered_softmax(z, T))),
        Step(r"\hat F_n", f"empirical CDF of {SAMPLES} draws of vfe.sequences.sample_tempered (DKW band)",
             lambda z, T: methods.empirical_cdf(_gumbel_samples(z, T), z.size), tol=methods.dkw_tolerance(SAMPLES)),
    ],
)

C9_INVERSE_CDF = Derivation(
    claim="C9",
    title="Multinomial (inverse-CDF) sampling of softmax(z/T)",
    statement=r"P\big(\min\{k : F_k > U\} = k\big) = \mathrm{softmax}(z/T)_k,\quad U \sim \mathcal{U}[0,1)",
    kind="distributional", variables=_SAMPLER_INPUTS, max_examples=20,
    steps=[
        Step(r"F_{\mathrm{softmax}(z/T)}", "CDF of the Boltzmann law (C1); vfe.tempered_softmax",
             lambda z, T: methods.cdf(vfe.tempered_softmax(z, T))),
        Step(r"\hat F_n", f"empirical CDF of {SAMPLES} draws of vfe.sequences.sample_categorical (DKW band)",
             lambda z, T: methods.empirical_cdf(_inverse_cdf_samples(z, T), z.size), tol=methods.dkw_tolerance(SAMPLES)),
    ],
)
