"""Planting errors in derivations, for the tests that show the checker catches them."""

from __future__ import annotations

import dataclasses

from strategies import examples
from vfe.derivation import FAILED, Derivation, Report


def planted(derivation: Derivation, number: int, fn=None, **changes) -> Derivation:
    """``derivation`` with step ``number`` (1-based) computing ``fn`` instead (and/or other changes
    to that :class:`vfe.derivation.Step`)."""
    steps = list(derivation.steps)
    if fn is not None:
        changes["fn"] = fn
    steps[number - 1] = dataclasses.replace(steps[number - 1], **changes)
    # a derivation built with variables= also holds them as inputs=: keep only the latter
    return dataclasses.replace(derivation, steps=steps, variables=None)


def assert_caught_at_its_step(derivation: Derivation, number: int, fn, max_examples: int = examples(20)) -> Report:
    """Checks ``derivation`` with ``fn`` planted at step ``number``: FAILED at that step (at step 2
    when planted in the first step, whose value the second is the first to be compared with)."""
    report = planted(derivation, number, fn).check(max_examples=max_examples)
    assert report.status == FAILED, report.text()
    assert report.failure is not None and report.failure.step_number == max(number, 2), report.text()
    return report
