"""Accuracy of vfe against its peers on the inputs where the peers fail; prints a table.

Run: ``python benchmarks/accuracy.py`` (needs the ``test`` extra for mpmath).

1. KL divergence for ``p ≈ q`` (entries differing by a relative ``1e-6``), against a 50-digit
   mpmath oracle computed on the exact (rounded) inputs: worst relative error and the share of
   negative results, for vfe (probabilities and logits; vfe.streaming in both of its formulas),
   optax, ``jax.scipy.special.rel_entr`` and the naive ``Σ p log(p/q)``.
2. KL from logits that differ (``b = a + 0.3·noise``, 64 classes) with an offset added to one or
   both tensors (softmax unchanged): worst relative error, for vfe and the ``log_softmax`` formula.
3. ``softmax(z/T)`` and ``-T log Σ exp(-E/T)`` for logits/energies near 1e4 and tiny ``T``
   under ``jit``: whether the result is the exact limit, for vfe and for ``jax.nn``.
"""

from __future__ import annotations

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import mpmath  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.scipy.special import rel_entr  # noqa: E402

import vfe  # noqa: E402
from vfe import streaming  # noqa: E402

mpmath.mp.dps = 50


def _oracle_kl(p: np.ndarray, q: np.ndarray) -> float:
    """Generalised KL ``Σ p log(p/q) - p + q`` of the exact input values (= KL when normalised)."""
    return float(mpmath.fsum(mpmath.mpf(float(a)) * mpmath.log(mpmath.mpf(float(a)) / mpmath.mpf(float(b)))
                             - mpmath.mpf(float(a)) + mpmath.mpf(float(b)) for a, b in zip(p, q)))


def _oracle_kl_logits(a: np.ndarray, b: np.ndarray) -> float:
    a = [mpmath.mpf(float(x)) for x in a]
    b = [mpmath.mpf(float(x)) for x in b]
    la = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in a))
    lb = mpmath.log(mpmath.fsum(mpmath.exp(x) for x in b))
    return float(mpmath.fsum(mpmath.exp(x - la) * ((x - la) - (y - lb)) for x, y in zip(a, b)))


def _near_pairs(n_pairs: int, n: int, rel: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n_pairs):
        p = rng.dirichlet(np.ones(n))
        q = p * (1 + rel * rng.standard_normal(n))
        yield p, q / q.sum()


def kl_table(n_pairs: int = 200, n: int = 16, rel: float = 1e-6) -> list[tuple]:
    implementations = {
        "vfe.kl_divergence": lambda p, q: vfe.kl_divergence(p, q),
        # (takes logits: it is given log p, log q rounded once, and the oracle sees the same logits)
        "vfe.kl_divergence_from_logits": vfe.kl_divergence_from_logits,
        "streaming KL from logits": streaming.kl_divergence_from_logits,
        "streaming KL from logits, direct": functools.partial(streaming.kl_divergence_from_logits, formula="direct"),
        "optax.kl_divergence": lambda p, q: optax.kl_divergence(jnp.log(q), p),
        "jax.scipy rel_entr sum": lambda p, q: jnp.sum(rel_entr(p, q)),
        "naive sum p log(p/q)": lambda p, q: jnp.sum(p * jnp.log(p / q)),
    }
    rows = []
    for dtype in (np.float32, np.float64):
        pairs = [(p.astype(dtype), q.astype(dtype)) for p, q in _near_pairs(n_pairs, n, rel)]
        truths = [_oracle_kl(p, q) for p, q in pairs]
        truths_logits = [_oracle_kl_logits(np.log(p), np.log(q)) for p, q in pairs]
        for name, fn in implementations.items():
            jitted = jax.jit(fn)
            ref = truths_logits if "logits" in name else truths
            errors, negative = [], 0
            for (p, q), t in zip(pairs, ref):
                args = (np.log(p), np.log(q)) if "logits" in name else (p, q)
                v = float(jitted(*map(jnp.asarray, args)))
                negative += v < 0
                errors.append(abs(v - t) / abs(t))
            rows.append((np.dtype(dtype).name, name, max(errors), negative / len(pairs)))
    return rows


def offset_table(n_pairs: int = 20, n: int = 64) -> list[tuple]:
    implementations = {
        "vfe.kl_divergence_from_logits": vfe.kl_divergence_from_logits,
        "streaming KL from logits": streaming.kl_divergence_from_logits,
        "streaming KL from logits, direct": functools.partial(streaming.kl_divergence_from_logits, formula="direct"),
        "naive log_softmax formula": lambda a, b: jnp.sum(jax.nn.softmax(a) * (jax.nn.log_softmax(a)
                                                                               - jax.nn.log_softmax(b))),
    }
    jitted = {name: jax.jit(fn) for name, fn in implementations.items()}
    rng = np.random.default_rng(1)
    bases = [(3 * rng.standard_normal(n), rng.standard_normal(n)) for _ in range(n_pairs)]
    rows = []
    for offsets in ((0.0, 0.0), (0.0, 1e4), (1e4, 1e4), (1e6, 0.0)):
        pairs = [((base + offsets[0]).astype(np.float32), (base + 0.3 * noise + offsets[1]).astype(np.float32))
                 for base, noise in bases]
        truths = [_oracle_kl_logits(a, b) for a, b in pairs]
        for name, fn in jitted.items():
            errors = [abs(float(fn(jnp.asarray(a), jnp.asarray(b))) - t) / t for (a, b), t in zip(pairs, truths)]
            rows.append((f"{offsets[0]:g}, {offsets[1]:g}", name, max(errors)))
    return rows


def limit_table() -> list[tuple]:
    z = jnp.array([1e4, 1e4 - 1.0, 1e4, -jnp.inf, 3.0], jnp.float32)
    exact_p = np.array([0.5, 0.0, 0.5, 0.0, 0.0])  # ties share the mass; F = min E - T log 2
    rows = []
    for temperature in (1e-8, 1e-30, 1e-36):
        t = jnp.float32(temperature)
        exact_f = -1e4 - temperature * np.log(2)
        cases = {
            "vfe.tempered_softmax": (jax.jit(vfe.tempered_softmax)(z, t), exact_p),
            "jax.nn.softmax(z / T)": (jax.jit(lambda z, t: jax.nn.softmax(z / t))(z, t), exact_p),
            "vfe.helmholtz_free_energy": (jax.jit(vfe.helmholtz_free_energy)(-z, t), exact_f),
            "-T logsumexp(-E / T)": (jax.jit(lambda e, t: -t * jax.nn.logsumexp(-e / t))(-z, t), exact_f),
        }
        for name, (got, want) in cases.items():
            got = np.asarray(got, np.float64)
            ok = bool(np.all(np.isfinite(got)) and np.allclose(got, want, rtol=1e-6, atol=1e-7))
            rows.append((f"{temperature:.0e}", name, np.array2string(got, precision=4), "exact limit" if ok else "WRONG"))
    return rows


def main() -> None:
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {jax.devices()[0].platform}\n")
    print("KL(p||q), p ~ q (relative 1e-6), n = 16, 200 pairs; relative error vs 50-digit mpmath")
    print(f"{'dtype':8} {'implementation':32} {'max rel. error':>15} {'negative':>9}")
    for dtype, name, err, neg in kl_table():
        print(f"{dtype:8} {name:32} {err:15.2e} {neg:9.0%}")
    print("\nKL(p||q) from float32 logits b = a + 0.3 noise (n = 64, 20 pairs), offsets added to (a, b);"
          " relative error vs 50-digit mpmath")
    print(f"{'offsets':12} {'implementation':32} {'max rel. error':>15}")
    for offsets, name, err in offset_table():
        print(f"{offsets:12} {name:32} {err:15.2e}")
    print("\nT -> 0 with logits/energies near 1e4 (float32, under jit)")
    print(f"{'T':7} {'implementation':28} {'result':42} verdict")
    for t, name, got, verdict in limit_table():
        print(f"{t:7} {name:28} {got:42} {verdict}")


if __name__ == "__main__":
    main()
