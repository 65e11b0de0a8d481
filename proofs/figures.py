"""Figures of the catalogue (``python -m proofs --figures docs/figures``).

Each figure plots quantities computed by ``vfe`` for a claim whose content a reader would
rather see than read. matplotlib is an optional dependency (``pip install -e '.[figures]'``);
only :func:`draw_all` needs it. :data:`FIGURES` (claim id -> file name and caption) is used
by the document renderer to place each figure under its claim.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import vfe
from proofs import information
from vfe import diffusion, emergence, gaussian, in_context, methods, mixture, scaling

__all__ = ["FIGURES", "MissingDependency", "draw_all"]

FIGURES: dict[str, tuple[str, str]] = {
    "A6": ("forward_vs_reverse_kl.svg",
           "Forward KL(p‖q) fitted over Gaussians q matches the mean and variance of the bimodal p "
           "(mass-covering); reverse KL(q‖p), minimised by L-BFGS from a start on each side, locks onto one mode."),
    "B7": ("tempered_posterior.svg",
           "The tempered posterior q_β ∝ p(x,θ)^β: uniform at β = 0, the posterior at β = 1, "
           "concentrated on the MAP estimate as β grows."),
    "B8": ("em_free_energy.svg",
           "EM on a two-component Gaussian mixture (log scale, excess over the final value): the free energy "
           "after each half-step never increases and touches −log p(x|θ) after every E-step."),
    "C4": ("entropy_vs_temperature.svg",
           "Entropy of softmax(z/T) against T for three logit vectors: non-decreasing, from 0 (or log of the "
           "number of tied maxima) at T → 0 to log V at T → ∞."),
    "E1": ("diffusion_forward_marginals.svg",
           "Left: the forward marginals p_t of a 1-D two-component Gaussian mixture under the cosine schedule "
           "(T = 1000), computed in closed form (each is again a mixture, with means √ᾱ_t m_k and variances "
           "ᾱ_t s_k² + 1 − ᾱ_t): the modes merge and p_T is N(0, 1). Right: ᾱ_t against t/T for the linear "
           "(Ho et al. 2020) and cosine (Nichol & Dhariwal 2021) schedules, as in Nichol & Dhariwal's Fig. 5: "
           "the linear ᾱ_t is 0.079 at t/T = 0.5 and below 0.004 from t/T = 0.75, the cosine one 0.49 and 0.14."),
    "E5": ("emergence.svg",
           "A per-token loss that falls as a smooth power law, CE = (N_c/N)^α (left; α = 0.5, N_c = 1e8, "
           "illustrative), gives an exact-match accuracy exp(−L·CE) over L tokens (right) that sits near 0 and then "
           "rises abruptly, later for longer targets: the rise from 10% to 90% costs a loss drop of only log 9/L nats. "
           "Shaded: where each curve goes from 10% to 90%. In log N the three curves are one Gumbel curve shifted by "
           "log(L)/α (same width, 3.08/α); the L = 1 curve is also the linear metric 1 − ED/L = e^{−CE} "
           "(Schaeffer et al.'s token edit distance), the same for every L."),
    "E7": ("intent_posterior.svg",
           "In-context learning as Bayesian inference (E7): two intents with equal prior emit one of two "
           "messages, p_θ*(1) = 0.5 against p_θ(1) = b. Solid: the exact expected posterior mass left off the "
           "true intent after k examples (a sum over the k + 1 message counts); dashed: the same at the typical "
           "prompt (counts k·p_θ*), where the log odds are exactly k·KL(p_θ*‖p_θ), i.e. a slope of −KL. The "
           "expectation falls more slowly, at the Chernoff rate, but also exponentially."),
}
"""Claim id -> (file name, caption)."""


class MissingDependency(RuntimeError):
    """matplotlib is not installed."""


def _pyplot():
    """matplotlib.pyplot with a non-interactive backend, or MissingDependency."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ModuleNotFoundError:
        raise MissingDependency(
            "--figures needs matplotlib: pip install -e '.[figures]'") from None
    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "vfe", "figure.figsize": (6.4, 3.6)})
    return importlib.import_module("matplotlib.pyplot")


def draw_all(directory: Path) -> list[Path]:
    """Draws every figure of :data:`FIGURES` into ``directory`` (created if missing).

    Returns:
        The written paths.

    Raises:
        MissingDependency: when matplotlib is not installed.
    """
    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for claim, draw in _DRAW.items():
        name, _ = FIGURES[claim]
        fig = draw(plt)
        fig.tight_layout()
        path = directory / name
        fig.savefig(path, metadata={"Date": None})
        plt.close(fig)
        written.append(path)
    return written


def _entropy_vs_temperature(plt):
    temperatures = np.geomspace(1e-2, 1e2, 200)
    rows = {"z = (2, 1, 0, −1)": [2.0, 1.0, 0.0, -1.0],
            "z = (1, 1, 0, −3): two tied maxima": [1.0, 1.0, 0.0, -3.0],
            "z = (5, 0, 0, 0)": [5.0, 0.0, 0.0, 0.0]}
    fig, ax = plt.subplots()
    for label, z in rows.items():
        probs = vfe.tempered_softmax(jnp.asarray(z)[None, :], jnp.asarray(temperatures))
        ax.plot(temperatures, vfe.entropy(probs), label=label)
    ax.axhline(np.log(4), color="grey", ls=":", label="log V")
    ax.axhline(np.log(2), color="grey", ls="--", lw=0.8, label="log 2 (ties)")
    ax.set(xscale="log", xlabel="temperature T", ylabel="H(softmax(z/T)) [nats]")
    ax.legend(fontsize=8)
    return fig


def _forward_vs_reverse_kl(plt):
    weights, means, stds = jnp.array([0.5, 0.5]), jnp.array([-3.0, 3.0]), jnp.array([0.8, 0.8])
    grid = np.linspace(-7, 7, 600)
    fig, ax = plt.subplots()
    ax.plot(grid, np.exp(gaussian.gaussian_mixture_log_density(jnp.asarray(grid), weights, means, stds)),
            color="black", label="target p (mixture)")
    m, s = gaussian.moment_match(weights, means, stds)
    ax.plot(grid, np.exp(gaussian.gaussian_log_density(jnp.asarray(grid), m, s)), label="argmin KL(p‖q): moment match")
    for side in (-1.0, 1.0):
        fit = methods.Minimisation(lambda params: information._reverse_kl(params, weights, means, stds),
                                   starts=1, iterations=100,
                                   init=lambda key, side=side: jnp.array([side, 0.0]))
        m_r, log_s_r = fit.argmin()
        label = "argmin KL(q‖p), from either side" if side < 0 else None
        ax.plot(grid, np.exp(gaussian.gaussian_log_density(jnp.asarray(grid), m_r, jnp.exp(log_s_r))),
                ls="--", color="C1", label=label)
    ax.set(xlabel="θ", ylabel="density")
    ax.legend(fontsize=8)
    return fig


def _tempered_posterior(plt):
    log_joint = jnp.log(jnp.array([0.05, 0.2, 0.35, 0.3, 0.1]) * 0.01)
    betas = [0.0, 0.5, 1.0, 3.0, 30.0]
    fig, ax = plt.subplots()
    width = 0.8 / len(betas)
    for i, beta in enumerate(betas):
        q = vfe.boltzmann(-log_joint, beta)
        label = f"β = {beta:g}" + (" (posterior)" if beta == 1.0 else " (uniform)" if beta == 0 else "")
        ax.bar(np.arange(5) + (i - len(betas) / 2 + 0.5) * width, q, width, label=label)
    ax.set(xlabel="θ", ylabel="q_β(θ)", xticks=range(5))
    ax.legend(fontsize=8)
    return fig


def _em_free_energy(plt):
    key_a, key_b = jax.random.split(jax.random.key(0))
    x = jnp.concatenate([jax.random.normal(key_a, (60,)) - 1.0, 0.7 * jax.random.normal(key_b, (40,)) + 1.2])
    init = mixture.MixtureParams(weights=jnp.array([0.5, 0.5]), means=jnp.array([-0.1, 0.1]), stds=jnp.array([2.0, 2.0]))
    trace = mixture.em(x, init, 25)
    free_energy, surprise = np.asarray(trace.free_energy), -np.asarray(trace.log_likelihood)
    floor = free_energy[-1] - 1e-6  # the plot shows the excess over (just below) the final value
    half_steps = np.arange(1, free_energy.size + 1) / 2
    fig, ax = plt.subplots()
    ax.plot(half_steps, free_energy - floor, "o-", ms=3, label="F(q, θ) after each half-step")
    ax.plot(half_steps, surprise - floor, "x", ms=5, label="−log p(x|θ) for the θ in force")
    ax.set(yscale="log", xlabel="EM step (E-step at t − ½, M-step at t)",
           ylabel=f"nats above {floor:.4f}")
    ax.legend(fontsize=8)
    return fig


def _diffusion_marginals(plt):
    """The two panels: noisy marginals of a bimodal density, and ᾱ_t of the two schedules."""
    T = 1000
    cosine = diffusion.noise_schedule("cosine", T)
    linear = diffusion.noise_schedule("linear", T)
    weights, means, stds = jnp.array([0.3, 0.7]), jnp.array([[-2.0], [1.5]]), jnp.array([0.3, 0.5])
    grid = np.linspace(-4.5, 4.5, 500)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    for t, color in zip((0, 200, 400, 600, 800, 1000), plt.cm.viridis(np.linspace(0.0, 0.9, 6))):
        log_p = diffusion.mixture_data_log_density(cosine, jnp.asarray(grid)[:, None], jnp.asarray(t, jnp.int32),
                                                   weights, means, stds)
        label = f"t = {t}" + (" (data)" if t == 0 else "")
        left.plot(grid, np.exp(np.asarray(log_p)), color=color, label=label)
    left.set(xlabel="x", ylabel="p_t(x)", title="forward marginals, cosine schedule")
    left.legend(fontsize=8)
    frac = np.arange(T + 1) / T
    right.plot(frac, np.asarray(linear.alpha_bars), label="linear (β from 1e-4 to 0.02)")
    right.plot(frac, np.asarray(cosine.alpha_bars), label="cosine (s = 0.008)")
    right.set(xlabel="t / T", ylabel="ᾱ_t", title="ᾱ_t at T = 1000")
    right.legend(fontsize=8)
    return fig


def _emergence(plt):
    alpha, n_c = 0.5, 1e8
    n = np.geomspace(1e6, 1e14, 400)
    ce = np.asarray(scaling.power_law(n, n_c, alpha))
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.4))
    left.plot(n, ce, color="black")
    left.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="per-token cross-entropy [nats]",
             title="loss: a straight line in log-log")
    for i, length in enumerate((1, 10, 50)):
        acc = np.asarray(emergence.exact_match(ce, float(length)))
        label = f"L = {length}" + (r" (= per-token accuracy $e^{-\mathrm{CE}}$)" if length == 1 else "")
        right.plot(n, acc, color=f"C{i}", label=label)
        lo, hi = np.exp(np.asarray(emergence.log_scale_at_exact_match(np.array([0.1, 0.9]), float(length),
                                                                           alpha=alpha, n_c=n_c)))
        right.axvspan(lo, hi, color=f"C{i}", alpha=0.08)
    right.set(xscale="log", xlabel="parameters N", ylabel="accuracy", ylim=(-0.02, 1.02),
              title="exact match over L tokens")
    right.legend(fontsize=7, loc="lower right")
    return fig


def _intent_posterior(plt):
    ks = np.arange(0, 301)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, ks[-1] + 1)))])
    log_prior = jnp.log(jnp.array([0.5, 0.5]))
    star = jnp.asarray(0)
    fig, ax = plt.subplots()
    for colour, b in zip(("C0", "C1", "C2"), (0.8, 0.7, 0.6)):
        log_emissions = jnp.log(jnp.array([[0.5, 0.5], [1.0 - b, b]]))
        kl = float(in_context.expected_log_posterior_odds(log_prior, log_emissions, star, 1.0)[1])
        n = ks[None, :]                                               # (k, n): all counts, padded
        valid = n <= ks[:, None]
        log_w = np.where(valid, log_fact[ks][:, None] - log_fact[np.minimum(n, ks[:, None])]
                         - log_fact[np.maximum(ks[:, None] - n, 0)] + ks[:, None] * np.log(0.5), -np.inf)
        counts = np.stack(np.broadcast_arrays(np.maximum(ks[:, None] - n, 0), n), axis=-1).astype(float)
        post = np.asarray(in_context.intent_posterior(log_prior, log_emissions, jnp.asarray(counts)))
        expected = np.sum(np.exp(log_w) * post[..., 1], axis=-1)
        typical_counts = jnp.asarray(np.stack([ks / 2, ks / 2], axis=-1).astype(float))
        typical = np.asarray(in_context.intent_posterior(log_prior, log_emissions, typical_counts))[:, 1]
        ax.plot(ks, expected, color=colour, label=f"b = {b}: E[1 − p(θ*|x₁…ₖ)]")
        ax.plot(ks, typical, color=colour, ls="--", label=f"b = {b}: typical prompt, slope −KL = −{kl:.3f}")
    ax.set(yscale="log", ylim=(1e-12, 1.0), xlabel="number of in-context examples k",
           ylabel="posterior mass off the true intent")
    ax.legend(fontsize=7)
    return fig


_DRAW: dict[str, Callable] = {
    "A6": _forward_vs_reverse_kl,
    "B7": _tempered_posterior,
    "B8": _em_free_energy,
    "C4": _entropy_vs_temperature,
    "E1": _diffusion_marginals,
    "E5": _emergence,
    "E7": _intent_posterior,
}
