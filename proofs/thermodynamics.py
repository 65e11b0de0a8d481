"""Temperature and the Boltzmann distribution (claims C1–C9 of ``CLAIMS.md``; seeds 000, 003)."""

from __future__ import annotations

import jax.numpy as jnp
from hypothesis import strategies as st

import vfe
from vfe import testing as vt
from vfe.derivation import Derivation, Step

_LOGITS_AND_T = st.fixed_dictionaries({"z": vt.logits(), "T": vt.temperatures()})


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
