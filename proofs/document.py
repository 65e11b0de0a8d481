"""The catalogue as one Markdown document (``python -m proofs --markdown docs/PROOFS.md``).

Per claim: the seed's wording, the precise statement, the verdict, the functions of ``vfe``
that implement it, its figure (drawn by ``--figures docs/figures``), then each derivation with
its steps, justifications, kind and result.
The text depends only on the code and on what the checks found — never on timings or the
last digits of rounding errors — so the committed document can be compared with a fresh
rendering (``tests/test_catalogue.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from proofs.catalogue import NOT_CHECKABLE, PENDING, SECTIONS, SEEDS, Claim, NotCheckable
from proofs.figures import FIGURES
from vfe.derivation import FAILED, REFUTED, RTOL, Report

__all__ = ["claim_block", "claim_status", "render", "summary_row"]

_INTRO = f"""\
Every claim of the seed documents, as numbered in `CLAIMS.md`, with its executable proof.
Each derivation is a chain of steps; each step is a JAX function, checked numerically against
the previous step on inputs drawn by Hypothesis (float64). Consecutive steps agree when
`|a − b| ≤ tol · max(scale_a, scale_b, 1)`, with `tol = {RTOL:g}` unless the step states
its own: steps computed by a numerical method (optimisation, finite differences, sampling,
a limit along a schedule) state that method's accuracy. A seed's wording that is wrong or
loose is *refuted as declared*: the checker must find a counterexample, shown below.

This file is written by `python -m proofs --markdown docs/PROOFS.md`; a test checks that it
equals a fresh rendering, so it cannot drift from the code. Do not edit it by hand.
"""


def claim_status(reports: Sequence[Report]) -> str:
    """One word for a claim's derivations: FAILED, proved (+ refuted wording), or unchecked."""
    if not reports:
        return "no derivation"
    if any(r.status == FAILED for r in reports):
        return FAILED
    if any(r.status == REFUTED for r in reports):
        return "proved; seed wording refuted"
    return "proved"


def render(
    reports: Sequence[Report],
    claims: Sequence[Claim],
    pending: dict[str, str] = PENDING,
    not_checkable: Sequence[NotCheckable] = NOT_CHECKABLE,
) -> str:
    """The catalogue document.

    Args:
        reports: the checked derivations (any order); grouped here by claim id.
        claims: the declared claims.
        pending: claims without derivations yet, id -> statement.
        not_checkable: the seeds' statements with nothing to check.

    Returns:
        Markdown text.
    """
    by_claim: dict[str, list[Report]] = {}
    for report in reports:
        by_claim.setdefault(report.claim, []).append(report)
    known = {c.id for c in claims}
    orphans = [r for r in reports if r.claim not in known]

    lines = ["# The catalogue: every claim of the seeds, checked", "", _INTRO, "## Summary", "",
             "| id | claim | kinds | derivations | result |", "|---|---|---|---|---|"]
    lines += [summary_row(claim, by_claim.get(claim.id, [])) for claim in claims]
    for cid, statement in sorted(pending.items()):
        lines.append(f"| {cid} | {statement} | — | 0 | pending |")
    lines.append("")

    for letter, section in SECTIONS.items():
        in_section = [c for c in claims if c.id.startswith(letter)]
        waiting = sorted(cid for cid in pending if cid.startswith(letter))
        if not in_section and not waiting:
            continue
        lines += [f"## {letter}. {section}", ""]
        for claim in in_section:
            lines += claim_block(claim, by_claim.get(claim.id, []))
        for cid in waiting:
            lines += [f"### {cid}: pending", "", f"{pending[cid]}. Its proofs are not written yet.", ""]

    if orphans:
        lines += ["## Derivations of undeclared claims", ""]
        lines += [r.markdown(heading="###") for r in orphans]
    if not_checkable:
        lines += ["## Not checkable", "", "Statements of the seeds with no mathematical content to check.", "",
                  "| seed | statement | why not checkable |", "|---|---|---|"]
        lines += [f"| {SEEDS[n.seed].split(' ')[0]} | {n.wording} | {n.reason} |" for n in not_checkable]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def summary_row(claim: Claim, reports: Sequence[Report]) -> str:
    """The claim's row of the summary table (its derivations' kinds, count and status)."""
    kinds = ", ".join(dict.fromkeys(r.kind for r in reports)) or "—"
    return f"| [{claim.id}](#{_anchor(claim)}) | {claim.title} | {kinds} | {len(reports)} | {claim_status(reports)} |"


def claim_block(claim: Claim, reports: Sequence[Report]) -> list[str]:
    """The claim's lines: heading, seed wording, statement, verdict, functions, then each derivation.

    The document is its intro, one :func:`summary_row` and one block per claim, and the
    not-checkable table; a claim's row and block depend only on that claim's reports.
    """
    seeds = "; ".join(SEEDS[s] for s in claim.seeds)
    lines = [f"### {claim.id}: {claim.title}", "",
             f"- **Seed** ({seeds}): {claim.wording}",
             f"- **Statement:** {claim.statement}",
             f"- **Verdict:** {claim.verdict}"]
    if claim.functions:
        lines.append("- **Implemented by:** " + ", ".join(f"`{f}`" for f in claim.functions))
    lines += [f"- **Result:** {claim_status(reports)}", ""]
    if claim.id in FIGURES:
        name, caption = FIGURES[claim.id]
        lines += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
    for report in reports:
        lines.append(report.markdown(heading="####"))
    return lines


def _anchor(claim: Claim) -> str:
    """GitHub's anchor for the claim's heading ``### A1: title``."""
    text = f"{claim.id}: {claim.title}".lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")
