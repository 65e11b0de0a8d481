"""The catalogue accounts for every claim of CLAIMS.md, and docs/PROOFS.md is its current rendering."""

import re
from pathlib import Path

import pytest

from proofs import all_claims, all_derivations, cli, document
from proofs.catalogue import NOT_CHECKABLE, PENDING, SEEDS
from vfe.derivation import PROVED, REFUTED

ROOT = Path(__file__).resolve().parent.parent
CLAIM_IDS = re.findall(r"^\| ([A-E]\d+) \|", (ROOT / "docs" / "CLAIMS.md").read_text(encoding="utf-8"), re.M)
CLAIMS = {c.id: c for c in all_claims()}
DERIVATIONS = all_derivations()


def test_claims_md_lists_the_36_claims():
    assert len(CLAIM_IDS) == len(set(CLAIM_IDS)) == 36


@pytest.mark.parametrize("claim_id", CLAIM_IDS)
def test_every_claim_is_declared_or_pending_never_both(claim_id):
    assert (claim_id in CLAIMS) != (claim_id in PENDING), f"{claim_id}: declared {claim_id in CLAIMS}, pending {claim_id in PENDING}"


def test_every_claim_is_declared_and_none_is_pending():
    assert set(CLAIM_IDS) <= set(CLAIMS) and not PENDING


def test_every_declared_claim_has_a_derivation_and_every_derivation_a_claim():
    with_derivations = {d.claim for d in DERIVATIONS}
    assert set(CLAIMS) <= with_derivations
    assert with_derivations <= set(CLAIMS)


def test_a_loose_or_wrong_seed_wording_is_refuted_by_some_derivation():
    for claim in CLAIMS.values():
        if not claim.verdict.startswith("correct"):  # "loose: ...", "wrong: ..." or an ambiguity
            assert any(d.claim == claim.id and d.expect == "refuted" for d in DERIVATIONS), claim.id


def test_not_checkable_statements_name_their_seed_and_reason():
    assert NOT_CHECKABLE
    for item in NOT_CHECKABLE:
        assert item.seed in SEEDS and item.wording and item.reason


COMMITTED = (ROOT / "docs" / "PROOFS.md").read_text(encoding="utf-8")
STALE = "docs/PROOFS.md is stale: run `python -m proofs --markdown docs/PROOFS.md --figures docs/figures`"


def _committed_row(claim_id):
    rows = [line for line in COMMITTED.splitlines() if line.startswith(f"| [{claim_id}](")]
    assert len(rows) == 1, (claim_id, rows, STALE)
    return rows[0]


def _committed_block(claim):
    """The text from the claim's heading to the next ``##``/``###`` heading."""
    start = COMMITTED.find(f"\n### {claim.id}: {claim.title}\n")
    assert start >= 0, (claim.id, STALE)
    ends = [i for i in (COMMITTED.find("\n## ", start + 1), COMMITTED.find("\n### ", start + 1)) if i >= 0]
    return COMMITTED[start + 1:min(ends, default=len(COMMITTED))]


# Each claim's derivations are checked by one test (so by one test worker, once per session):
# their statuses against what the catalogue declares, and the claim's row and block of
# docs/PROOFS.md against a rendering of those very reports. The rest of the document is
# compared with a report-free rendering below.


@pytest.mark.parametrize("claim_id", sorted(CLAIMS))
def test_claim_is_proved_or_refuted_as_declared_and_documented_as_checked_today(claim_id):
    claim = CLAIMS[claim_id]
    derivations = [d for d in DERIVATIONS if d.claim == claim_id]
    reports = [d.check(max_examples=cli.DEFAULT_EXAMPLES) for d in derivations]
    unexpected = [f"{d.title!r} is {r.status}, declared {d.expect}:\n{r.text()}"
                  for d, r in zip(derivations, reports) if r.status != (REFUTED if d.expect == "refuted" else PROVED)]
    assert not unexpected, "\n\n".join(unexpected)
    for report in reports:
        if report.status == REFUTED:
            assert report.failure.inputs and "on the counterexample" in report.markdown(), report.text()
    assert _committed_row(claim_id) == document.summary_row(claim, reports), STALE
    assert _committed_block(claim) == "\n".join(document.claim_block(claim, reports)), STALE


def test_document_outside_the_claims_is_a_fresh_rendering():
    """With every claim's row and block put back to their report-free rendering, the committed
    document is the report-free rendering: intro, order of claims, sections, not-checkable table."""
    text = COMMITTED
    for claim in all_claims():
        text = text.replace(_committed_row(claim.id), document.summary_row(claim, []), 1)
        text = text.replace(_committed_block(claim), "\n".join(document.claim_block(claim, [])), 1)
    assert text == document.render([], all_claims()), STALE


def test_rendering_shows_each_claim_its_status_and_the_pending_ones():
    pending = {"E9": "a claim whose proof is not written yet"}
    text = document.render([], all_claims(), pending=pending)
    for claim in CLAIMS.values():
        assert f"### {claim.id}: {claim.title}" in text
    assert "| E9 |" in text and "### E9: pending" in text


def test_derivation_texts_have_no_control_characters():
    """A LaTeX command in a string that is not raw loses its backslash to an escape ("\\text" becomes a
    tab and "ext", "\\frac" a form feed, "\\beta" a backspace): no title, statement or step has one."""
    bad = []
    for derivation in DERIVATIONS:
        texts = [derivation.title, derivation.statement] + [t for step in derivation.steps for t in (step.latex, step.why)]
        bad += [(derivation.claim, text[:60]) for text in texts if any(ord(ch) < 32 or ord(ch) == 127 for ch in text)]
    assert not bad, bad


def test_figures_of_the_document_are_committed():
    from proofs.figures import FIGURES

    for name, _ in FIGURES.values():
        assert (ROOT / "docs" / "figures" / name).is_file(), name


def test_command_line_accounts_for_pending_and_not_checkable(capsys):
    print(cli.accounting(DERIVATIONS))
    out = capsys.readouterr().out
    assert f"of {len(CLAIMS)} declared" in out
    assert all(cid in out for cid in PENDING)
    assert out.count("not checkable") == len(NOT_CHECKABLE)


def test_some_derivations_refute_a_seed_wording():
    assert any(d.expect == "refuted" for d in DERIVATIONS)
