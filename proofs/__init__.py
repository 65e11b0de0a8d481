"""The project's executable derivations, one topic module per part of the claims catalogue.

A topic module (``proofs/information.py``, ...) defines module-level
:class:`vfe.derivation.Derivation` instances and a ``CLAIMS`` tuple of
:class:`proofs.catalogue.Claim` (what each claim it proves says);
:func:`all_derivations` and :func:`all_claims` collect them in catalogue order. Run them all
with ``python -m proofs``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

from proofs.catalogue import Claim
from vfe.derivation import Derivation, collect

__all__ = ["TOPICS", "all_claims", "all_derivations"]

TOPICS: tuple[str, ...] = (
    "proofs.information",
    "proofs.variational",
    "proofs.thermodynamics",
    "proofs.sequences",
    "proofs.diffusion",
    "proofs.langevin",
    "proofs.scaling",
    "proofs.in_context",
    "proofs.streaming",
)
"""Topic modules, in catalogue order; a missing one is skipped."""


def _topic_modules(topics: Sequence[str]) -> list[ModuleType]:
    """The topic modules that exist (an import error inside one is raised)."""
    modules = []
    for name in topics:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def all_derivations(topics: Sequence[str] = TOPICS) -> list[Derivation]:
    """The registered derivations of every topic module that exists.

    Args:
        topics: dotted module names to collect from.

    Returns:
        The derivations, topic by topic, each once.

    Raises:
        Exception: whatever a topic module raises while importing (only a
            missing topic module itself is skipped).
    """
    found: dict[int, Derivation] = {}
    for module in _topic_modules(topics):
        for derivation in collect(module):
            found.setdefault(id(derivation), derivation)
    return list(found.values())


def all_claims(topics: Sequence[str] = TOPICS) -> list[Claim]:
    """The claims declared by the topic modules (their ``CLAIMS``), sorted by id.

    Raises:
        ValueError: if two modules declare the same id.
    """
    claims: dict[str, Claim] = {}
    for module in _topic_modules(topics):
        for claim in getattr(module, "CLAIMS", ()):
            if claim.id in claims:
                raise ValueError(f"claim {claim.id} is declared twice (again in {module.__name__})")
            claims[claim.id] = claim
    return sorted(claims.values(), key=lambda c: (c.id[0], int(c.id[1:])))
