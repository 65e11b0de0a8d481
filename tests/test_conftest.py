"""The test configuration itself: the derandomised profiles are reproducible."""

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def _draws() -> list[float]:
    seen = []

    @settings(derandomize=True, max_examples=50, database=None)
    @given(st.floats(-1e6, 1e6))
    def record(x):
        seen.append(x)

    record()
    return seen


def test_derandomised_examples_do_not_depend_on_the_modules_imported(tmp_path, monkeypatch):
    """Importing a local module full of new constants between two runs of the same derandomised
    test leaves its examples unchanged (Hypothesis would otherwise mix those constants into its
    draws: see conftest._without_local_constants)."""
    if not settings().derandomize:
        pytest.skip("the randomised profile keeps Hypothesis's pool of local constants")
    before = _draws()
    constants = "\n".join(f"C{i} = {v!r}" for i, v in enumerate([123456.789, -98765.4321, 0.3141, 271828.0, -1e5]))
    (tmp_path / "vfe_constants_probe.py").write_text(constants + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("vfe_constants_probe")
    assert _draws() == before
