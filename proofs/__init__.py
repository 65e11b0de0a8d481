"""The project's executable derivations, one topic module per part of the claims catalogue.

A topic module (``proofs/information.py``, ...) defines module-level
:class:`vfe.derivation.Derivation` instances; :func:`all_derivations` collects
them in definition order. Run them all with ``python -m proofs``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from vfe.derivation import Derivation, collect

__all__ = ["TOPICS", "all_derivations"]

TOPICS: tuple[str, ...] = (
    "proofs.information",
    "proofs.thermodynamics",
    "proofs.variational",
)
"""Topic modules, in catalogue order; a missing one is skipped."""


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
    for name in topics:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        for derivation in collect(module):
            found.setdefault(id(derivation), derivation)
    return list(found.values())
