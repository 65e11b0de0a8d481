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


PENDING: dict[str, str] = {}
"""Claims whose proofs are not written yet, id -> what they state (none since issue 4)."""

NOT_CHECKABLE: tuple[NotCheckable, ...] = (
    NotCheckable(
        "000", "「自由エネルギー原理との対応は → 理論的アナロジー」 (the correspondence with the free-energy "
               "principle is a theoretical analogy)",
        "a judgement about how to interpret the formulas; the formulas it relates are B2–B6",
    ),
    NotCheckable(
        "000", "「決定論的NNは「暗黙的な事後平均」を学習している…と見なせる」 (a deterministic network can be "
               "seen as learning an implicit posterior mean; marked as the author's guess)",
        "an interpretation, not a statement about given distributions; what is checkable is B5: a point "
               "mass minimises the free energy at the MAP, not at a posterior mean",
    ),
    NotCheckable(
        "001", "\u201cWhat I cannot create, I do not understand\u201d [Feynman]",
        "a maxim about understanding",
    ),
    NotCheckable(
        "001", "「次の単語をうまく予測するために文やその背後の情報を理解する必要に駆られる」 (to predict the next "
               "word well, a model is pushed to understand the sentence and what lies behind it)",
        "'understanding' has no definition here to compute; the checkable part, that the training loss is "
               "the cross-entropy to the data, is D2",
    ),
    NotCheckable(
        "001", "「ハルシネーション（嘘回答）の根本的な解決は現在の枠組みでは難しく」 (hallucination is hard to "
               "solve at its root within the current framework)",
        "a forecast about research, not a property of a formula",
    ),
    NotCheckable(
        "001", "「拡散モデルは実際の世界の生成過程を模倣していないので、究極的な因果関係の理解はできない」 "
               "(diffusion models do not imitate the world's real generative process, so they cannot "
               "understand ultimate causal relations)",
        "a claim about causality in the world, with no model given to check it on",
    ),
    NotCheckable(
        "003", "「低い温度は冷静で予測可能に保ち、高い温度は混沌を解き放ちます」 (low temperature keeps the "
               "output calm and predictable, high temperature unleashes chaos)",
        "a description of generated text; its mathematical content is C2, C4 and C7",
    ),
    NotCheckable(
        "004", "「まず自社データの言語的特性を可視化することから始めるべきである」 (practitioners should begin by "
               "visualising the linguistic properties of their own data)",
        "advice to practitioners",
    ),
)
"""The seeds' statements without mathematical content, with the reason."""
