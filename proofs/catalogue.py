"""The claims of the seeds, as data: what each claim says, where, and how it is checked.

Every id of ``CLAIMS.md`` (A1…E7) has one :class:`Claim`, declared in the topic module that
proves it (``proofs/information.py`` declares A1–A7, and so on) or, until its proofs exist,
in :data:`PENDING`. The seeds' statements without mathematical content are listed in
:data:`NOT_CHECKABLE` with the reason. ``python -m proofs`` reports all three, so the
catalogue accounts for every claim of the seeds; ``tests/test_catalogue.py`` checks that no
id of ``docs/CLAIMS.md`` is missing.
"""

from __future__ import annotations

import dataclasses

__all__ = ["SECTIONS", "Claim", "NotCheckable", "NOT_CHECKABLE", "PENDING"]

SECTIONS: dict[str, str] = {
    "A": "Information theory",
    "B": "Variational free energy",
    "C": "Temperature and the Boltzmann distribution",
    "D": "Autoregressive language models and maximum likelihood",
    "E": "Further results that the seeds name",
    "S": "Machinery: reductions over large vocabularies",
}
"""Catalogue sections, by the letter of their claim ids (``S`` is the library's own machinery)."""

SEEDS: dict[str, str] = {
    "000": "seeds/000 (variational free energy and LLMs, a conversation)",
    "001": "seeds/001 (slides: generative models, LLMs, diffusion, scaling laws, in-context learning)",
    "002": "seeds/002 (MLE and cross-entropy)",
    "003": "seeds/003 (temperature in RNN sampling)",
    "004": "seeds/004 (a latent-space theory of emergent abilities)",
}


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of ``CLAIMS.md``.

    Attributes:
        id: the claim id, e.g. ``"A4"``.
        title: a short title.
        seeds: the seed files that make the claim, e.g. ``("002",)``.
        wording: what the seed says: a short quote (with a translation) or a paraphrase.
        statement: the precise statement, in Markdown with LaTeX (``$...$``).
        verdict: ``"correct"``, or what is wrong or loose in the seed's wording
            (then some derivation of the claim has ``expect="refuted"``).
        functions: the functions of ``vfe`` that implement the claim's quantities.
    """

    id: str
    title: str
    seeds: tuple[str, ...]
    wording: str
    statement: str
    verdict: str = "correct"
    functions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Validates the id's section and the seed names."""
        if self.id[:1] not in SECTIONS:
            raise ValueError(f"Claim {self.id!r}: the id must start with a section letter {tuple(SECTIONS)}")
        unknown = [s for s in self.seeds if s not in SEEDS]
        if unknown:
            raise ValueError(f"Claim {self.id!r}: unknown seeds {unknown}; known: {tuple(SEEDS)}")


@dataclasses.dataclass(frozen=True)
class NotCheckable:
    """A statement of a seed with no mathematical content to check.

    Attributes:
        seed: the seed file, e.g. ``"001"``.
        wording: what the seed says (a short quote with a translation, or a paraphrase).
        reason: why it cannot be checked numerically.
    """

    seed: str
    wording: str
    reason: str


PENDING: dict[str, str] = {
    "E1": "diffusion models are trained by an ELBO (forward process, posterior, L_T + Σ L_{t-1} + L_0)",
    "E2": "score-based and diffusion models agree up to weights (Tweedie, optimal noise predictor)",
    "E3": "unadjusted Langevin on N(0, σ²) has stationary variance σ²/(1 - η/(4σ²))",
    "E4": "Kaplan and Chinchilla scaling laws, compute-optimal N and D",
    "E5": "emergence as a metric effect: exact match exp(-L·CE)",
    "E6": "in-context learning as one gradient-descent step by linear self-attention",
    "E7": "in-context learning as Bayesian inference over a latent intent",
}
"""Claims whose proofs are not written yet, id -> what they state (issue 4 writes them)."""

NOT_CHECKABLE: tuple[NotCheckable, ...] = ()
"""The seeds' statements without mathematical content (filled in by the catalogue issue)."""
