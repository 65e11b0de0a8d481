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
from vfe import gaussian, methods, mixture

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


_DRAW: dict[str, Callable] = {
    "A6": _forward_vs_reverse_kl,
    "B7": _tempered_posterior,
    "B8": _em_free_energy,
    "C4": _entropy_vs_temperature,
}
