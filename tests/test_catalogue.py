"""The catalogue accounts for every claim of CLAIMS.md, and docs/PROOFS.md is its current rendering."""

import re
from pathlib import Path

import pytest

from proofs import all_claims, all_derivations, cli, document
from proofs.catalogue import NOT_CHECKABLE, PENDING, SEEDS
from vfe.derivation import REFUTED

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


def test_proofs_md_equals_a_fresh_rendering(checked):
    """docs/PROOFS.md is what `python -m proofs --markdown docs/PROOFS.md` writes today."""
    fresh = document.render([checked(d) for d in DERIVATIONS], all_claims())
    committed = (ROOT / "docs" / "PROOFS.md").read_text(encoding="utf-8")
    assert committed == fresh, "docs/PROOFS.md is stale: run `python -m proofs --markdown docs/PROOFS.md`"


def test_rendering_shows_each_claim_its_status_and_the_pending_ones(checked):
    pending = {"E9": "a claim whose proof is not written yet"}
    text = document.render([checked(d) for d in DERIVATIONS[:2]], all_claims(), pending=pending)
    for claim in CLAIMS.values():
        assert f"### {claim.id}: {claim.title}" in text
    assert "| E9 |" in text and "### E9: pending" in text
    assert "## Not checkable" in text


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


def test_refuted_claims_show_their_counterexample_in_the_document(checked):
    refuted = [d for d in DERIVATIONS if d.expect == "refuted"]
    assert refuted
    text = document.render([checked(d) for d in refuted], all_claims())
    assert text.count("on the counterexample") == len(refuted)
    assert all(checked(d).status == REFUTED for d in refuted)
