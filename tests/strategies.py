"""Small local Hypothesis strategies for the core tests.

Shapes come from fixed buckets (``BATCH`` rows of ``n ∈ SIZES`` entries) so that the jitted
library functions compile once per bucket and dtype, not once per example. Every strategy
returns float64 NumPy arrays (or Python floats); a test casts them to the dtype under test with
:func:`cast` and hands the *cast* values to both vfe and the oracle. Scalars such as
temperatures are drawn per row (shape ``(BATCH,)``) and passed as arrays, so they are traced
arguments rather than constants baked into a compilation.

Examples shrink towards small ``n``, unit-scale logits, no masks, no ties and ``T = 1``.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SIZES = (2, 5, 16)
DERIV_SIZE = 5  # derivative tests use one bucket: each jitted grad/jacfwd compiles once per dtype
BATCH = 2
# |w| <= 1, all different: weights so that grad(sum_rows w f) is not trivially 0 and mixes rows
ROW_WEIGHTS = np.cos(np.arange(1, BATCH + 1))
FLOATS = (np.float32, np.float64)

# Examples per property test: the numbers written in the tests are for the default ``ci``
# profile; ``VFE_HYPOTHESIS_PROFILE=thorough`` multiplies them by 10 (``dev`` divides by 4).
# (conftest.py registers the profiles and rejects an unknown name.)
_EXAMPLE_FACTOR = {"thorough": 10.0, "dev": 0.25}.get(os.environ.get("VFE_HYPOTHESIS_PROFILE", "ci"), 1.0)


def examples(n: int) -> int:
    """``n`` examples scaled by the active Hypothesis profile (at least 1)."""
    return max(1, round(n * _EXAMPLE_FACTOR))

LOGIT_SCALES = (1.0, 30.0, 1e4)


def cast(x, dtype):
    """``x`` as a NumPy array of ``dtype`` (the exact inputs both vfe and the oracle see).

    Subnormal values of ``dtype`` are flushed to zero, as XLA on CPU does to its inputs: the
    oracle must see what the library computes with.
    """
    x = np.asarray(x, dtype=np.float64).astype(dtype)
    return np.where(np.abs(x) < np.finfo(dtype).tiny, np.zeros_like(x), x)


def sizes() -> st.SearchStrategy[int]:
    return st.sampled_from(SIZES)


def _unit(n: int, batch: int = BATCH):
    return hnp.arrays(np.float64, (batch, n), elements=st.floats(-1.0, 1.0, allow_subnormal=False))


def _row_masks(draw, n: int, batch: int, allowed: bool):
    """A boolean ``(batch, n)`` mask with at least one ``False`` per row."""
    if not allowed or n < 2:
        return np.zeros((batch, n), dtype=bool)
    mask = draw(hnp.arrays(np.bool_, (batch, n), elements=st.booleans()))
    keep = draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, n - 1)))
    mask[np.arange(batch), keep] = False
    return mask


@st.composite
def probs(draw, n: int | None = None, *, zeros: bool = True, min_log: float = -40.0, batch: int = BATCH):
    """Probability rows (float64, summing to 1) with entries ``exp(u)``, ``u ∈ [min_log, 0]``,
    normalised, and optionally some entries exactly 0 (never a whole row)."""
    n = draw(sizes()) if n is None else n
    u = draw(_unit(n, batch))
    w = np.exp(min_log * (u + 1.0) / 2.0)
    w[_row_masks(draw, n, batch, zeros)] = 0.0
    return w / w.sum(axis=-1, keepdims=True)


@st.composite
def logits(draw, n: int | None = None, *, masks: bool = True, ties: bool = True,
           scales=LOGIT_SCALES, batch: int = BATCH):
    """Logit rows with magnitude up to ``max(scales)`` (1e4 by default), some entries ``-inf``
    (never a whole row) and some rows whose maximum is attained several times."""
    n = draw(sizes()) if n is None else n
    scale = draw(st.sampled_from(scales))
    z = scale * draw(_unit(n, batch))
    if ties and n > 1 and draw(st.booleans()):
        tied = draw(hnp.arrays(np.bool_, (batch, n), elements=st.booleans()))
        z = np.where(tied, z.max(axis=-1, keepdims=True), z)
    z[_row_masks(draw, n, batch, masks)] = -np.inf
    return z


def energies(n: int | None = None, **kwargs):
    """``-logits``: ``+inf`` for forbidden states."""
    return logits(n, **kwargs).map(lambda z: -z)


def log_uniform(lo: float, hi: float, *, batch: int = BATCH):
    """``batch`` values ``10**u``, ``u`` uniform in ``[log10 lo, log10 hi]`` (shrinks to 1)."""
    a, b = np.log10(lo), np.log10(hi)
    return hnp.arrays(np.float64, (batch,), elements=st.floats(a, b)).map(lambda u: 10.0 ** u)


def temperatures(lo: float = 1e-30, hi: float = 1e30, *, batch: int = BATCH):
    return log_uniform(lo, hi, batch=batch)


def betas(lo: float = 1e-30, hi: float = 1e30, *, zero: bool = True, batch: int = BATCH):
    """Inverse temperatures, log-uniform in ``[lo, hi]``, each possibly exactly 0."""
    s = log_uniform(lo, hi, batch=batch)
    if not zero:
        return s
    return st.tuples(s, hnp.arrays(np.bool_, (batch,), elements=st.booleans())).map(
        lambda t: np.where(t[1], 0.0, t[0]))


@st.composite
def labels(draw, n: int, *, batch: int = BATCH):
    return draw(hnp.arrays(np.int32, (batch,), elements=st.integers(0, n - 1)))


@st.composite
def close_pair(draw, n: int | None = None, *, rel: float = 1e-6, batch: int = BATCH):
    """``(p, q)`` float64 probability rows with ``q_i = p_i (1 + rel·u_i)``, ``|u| ≤ 1``, renormalised."""
    p = draw(probs(n, zeros=False, min_log=-10.0, batch=batch))
    u = draw(_unit(p.shape[-1], batch))
    q = p * (1.0 + rel * u)
    return p, q / q.sum(axis=-1, keepdims=True)
