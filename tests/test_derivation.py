"""Tests of vfe.derivation: correct chains pass, planted errors are caught at the right step."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vfe.derivation import (
    RTOL,
    Derivation,
    DerivationFailed,
    Step,
    Terms,
    check,
    collect,
    relative_error,
)

N = 25  # Hypothesis examples per check: small, so that the file runs fast


# --- strategies and formulas (plain jnp, independent of the library) -------------------------

def _probs(n: int) -> st.SearchStrategy[np.ndarray]:
    """Strictly positive probability vectors of size n."""
    return hnp.arrays(np.float64, n, elements=st.floats(1e-3, 1.0)).map(lambda x: x / x.sum())


@st.composite
def two_dists(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """{p, q}: two strictly positive distributions on 2, 3 or 5 points."""
    n = draw(st.sampled_from([2, 3, 5]))
    return {"p": draw(_probs(n)), "q": draw(_probs(n))}


@st.composite
def logits_temperature(draw: st.DrawFn) -> dict[str, object]:
    """{z, T}: logits on 3 or 4 points and a temperature in [0.1, 10]."""
    n = draw(st.sampled_from([3, 4]))
    z = draw(hnp.arrays(np.float64, n, elements=st.floats(-5.0, 5.0)))
    return {"z": z, "T": draw(st.floats(0.1, 10.0))}


def H(p):
    return -jnp.sum(p * jnp.log(p))


def CE(p, q):
    return -jnp.sum(p * jnp.log(q))


def KL(p, q):
    return jnp.sum(p * jnp.log(p / q))


def cross_entropy_split(second=None, third=None, expect="proved") -> Derivation:
    """A1: H(p,q) = H(p) + KL(p||q), with optional planted steps 2 and 3."""
    second = second or (lambda p, q: Terms(-jnp.sum(p * jnp.log(p)), jnp.sum(p * jnp.log(p / q))))
    third = third or (lambda p, q: H(p) + KL(p, q))
    return Derivation(
        claim="A1", title="Cross-entropy splits into entropy plus KL",
        statement=r"H(p,q) = H(p) + \mathrm{KL}(p\,\|\,q)", inputs=two_dists(), expect=expect,
        steps=[
            Step(r"H(p,q)", "definition", CE),
            Step(r"-\sum_i p_i\log p_i + \sum_i p_i\log\frac{p_i}{q_i}", "add and subtract sum p log p", second),
            Step(r"H(p) + \mathrm{KL}(p\|q)", "definitions of H and KL", third),
        ])


def gibbs(last_relation=">=") -> Derivation:
    """A3: H(p,q) >= H(p)."""
    return Derivation(
        claim="A3", title="Gibbs: cross-entropy bounds entropy", statement=r"H(p,q) \ge H(p)",
        inputs=two_dists(),
        steps=[
            Step(r"H(p,q)", "definition", CE),
            Step(r"H(p) + \mathrm{KL}(p\|q)", "A1", lambda p, q: H(p) + KL(p, q)),
            Step(r"H(p)", r"\mathrm{KL} \ge 0", lambda p, **_: H(p), last_relation),
        ])


def tempered_boltzmann(beta=lambda T: 1.0 / T) -> Derivation:
    """C1: softmax(z/T) is the Boltzmann distribution with E = -z, beta = 1/T (vectors)."""
    return Derivation(
        claim="C1", title="Tempered softmax is Boltzmann", statement=r"\mathrm{softmax}(z/T) = e^{-\beta E}/Z",
        inputs=logits_temperature(),
        steps=[
            Step(r"\mathrm{softmax}(z/T)", "definition", lambda z, T: jax.nn.softmax(z / T)),
            Step(r"e^{z/T - \mathrm{lse}(z/T)}", "softmax in log space",
                 lambda z, T: jnp.exp(z / T - jax.nn.logsumexp(z / T))),
            Step(r"e^{-\beta E}/Z", r"E = -z,\ \beta = 1/T",
                 lambda z, T: jnp.exp(-beta(T) * -z) / jnp.sum(jnp.exp(-beta(T) * -z))),
        ])


# --- correct derivations ---------------------------------------------------------------------

@pytest.mark.parametrize("make", [cross_entropy_split, gibbs, tempered_boltzmann])
def test_correct_derivations_are_proved(make):
    report = make().check(max_examples=N)
    assert report.status == "proved", report.text()
    assert report.failure is None
    assert report.n_examples >= N
    assert 0.0 <= report.max_error <= RTOL


def test_verify_returns_report_when_proved():
    assert gibbs().verify(max_examples=5).ok


# --- planted errors: each caught, at the right step --------------------------------------------

PLANTED = {
    "sign flip": (lambda: cross_entropy_split(
        second=lambda p, q: Terms(+jnp.sum(p * jnp.log(p)), jnp.sum(p * jnp.log(p / q)))), 2),
    "swapped KL": (lambda: cross_entropy_split(third=lambda p, q: H(p) + KL(q, p)), 3),
    "dropped term": (lambda: cross_entropy_split(third=lambda p, q: KL(p, q)), 3),
    "T for 1/T": (lambda: tempered_boltzmann(beta=lambda T: T), 3),
    "wrong inequality": (lambda: gibbs("<="), 3),
}


@pytest.mark.parametrize("derandomize", [True, False])
@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_error_is_caught_at_its_step(name, derandomize):
    make, number = PLANTED[name]
    derivation = make()
    report = derivation.check(max_examples=N, derandomize=derandomize)
    assert report.status == "FAILED"
    failure = report.failure
    assert failure is not None and not failure.is_error
    assert failure.step_number == number
    assert failure.latex == derivation.steps[number - 1].latex
    assert failure.error > RTOL
    assert set(failure.inputs) == {"p", "q"} or set(failure.inputs) == {"z", "T"}
    assert f"step {number}" in report.text()


def test_verify_raises_assertion_with_report_text():
    with pytest.raises(AssertionError, match="step 3") as info:
        cross_entropy_split(third=lambda p, q: KL(p, q)).verify(max_examples=N)
    assert isinstance(info.value, DerivationFailed)
    assert info.value.report.failure.step_number == 3
    assert "counterexample: p = [" in str(info.value)


def test_counterexample_is_shrunk():
    """The reported counterexample is Hypothesis's minimal one, not the first found."""
    report = cross_entropy_split(third=lambda p, q: H(p) + KL(q, p)).check(max_examples=N)
    assert report.failure.inputs["p"].shape == (2,)
    bound = Derivation(claim="N", title="", statement="n <= 1000", variables={"n": st.integers(0, 10**6)},
                       steps=[Step("n", "", lambda n: n), Step("1000", "", lambda n: 1000.0, "<=")])
    report = bound.check(max_examples=N)
    assert report.status == "FAILED" and int(report.failure.inputs["n"]) == 1001


def test_elementwise_steps_compare_every_entry():
    def last_entry_off(x):
        return x.at[-1].add(1e-6)

    d = Derivation(
        claim="E", title="entries", statement="x = x", variables={"x": hnp.arrays(np.float64, 4, elements=st.floats(-1, 1))},
        steps=[Step("x", "id", lambda x: x), Step("x'", "planted", last_entry_off)])
    report = d.check(max_examples=5)
    assert report.status == "FAILED"
    assert report.failure.step_number == 2
    assert report.failure.value.shape == (4,)


# --- tolerance model -------------------------------------------------------------------------

def test_equal_infinities_pass():
    assert relative_error(math.inf, math.inf) == 0.0
    assert relative_error(-math.inf, -math.inf) == 0.0
    assert relative_error(1.0, math.inf, "<=") == 0.0
    assert relative_error(-math.inf, 3.0, "<=") == 0.0


@pytest.mark.parametrize("a, b, rel", [
    (math.inf, 1.0, "="), (1.0, -math.inf, "="), (math.inf, -math.inf, "="),
    (math.inf, 1.0, "<="), (1.0, math.inf, ">="), (math.inf, -math.inf, "<="),
])
def test_infinity_against_other_value_fails(a, b, rel):
    assert relative_error(a, b, rel) == math.inf


@pytest.mark.parametrize("rel", ["=", "<=", ">="])
def test_nan_fails(rel):
    assert relative_error(math.nan, math.nan, rel) == math.inf
    assert relative_error(1.0, math.nan, rel) == math.inf
    assert relative_error([1.0, math.nan], [1.0, 2.0], rel) == math.inf


def test_floor_of_one_nat_and_relative_scale():
    assert relative_error(0.0, 1e-10) == pytest.approx(1e-10)  # absolute below one nat
    assert relative_error(1e6, 1e6 + 1.0) == pytest.approx(1e-6)  # relative above it
    assert relative_error(2.0, 1.0, "<=") == pytest.approx(0.5)
    assert relative_error(1.0, 2.0, "<=") == 0.0
    assert relative_error(1.0, 2.0, ">=") == pytest.approx(0.5)


def test_terms_scale_in_relative_error():
    assert relative_error(0.1, 0.1 + 1e-8, scale_b=2e10) <= RTOL
    assert relative_error(0.1, 0.1 + 1e-8) > RTOL


def _cancellation(step_value) -> Derivation:
    return Derivation(
        claim="T", title="big minus big", statement="x = (x + B) - B",
        variables={"x": st.just(0.1), "B": st.just(1e10)},
        steps=[Step("x", "", lambda x, **_: x), Step("(x + B) - B", "add and subtract B", step_value)])


def test_terms_scale_admits_cancellation_error():
    assert (0.1 + 1e10) - 1e10 != 0.1  # the rounding error is ~1e-6, far above RTOL at one nat
    assert _cancellation(lambda x, B: (x + B) - B).check(max_examples=1).status == "FAILED"
    assert _cancellation(lambda x, B: Terms(x + B, -B)).check(max_examples=1).status == "proved"
    assert _cancellation(lambda x, B: (x + B, -B)).check(max_examples=1).status == "proved"


def test_infinite_values_through_a_derivation():
    d = Derivation(
        claim="I", title="inf", statement="-log 0 = inf", variables={"x": st.just(0.0)},
        steps=[Step(r"-\log x", "", lambda x: -jnp.log(x)), Step(r"\infty", "", lambda x: jnp.inf + x)])
    assert d.check(max_examples=1).status == "proved"


# --- refuted, relations, examples, exceptions --------------------------------------------------

def test_refuted_as_declared_shows_counterexample():
    report = cross_entropy_split(third=lambda p, q: H(p) + KL(q, p), expect="refuted").check(max_examples=N)
    assert report.status == "refuted as declared" and report.ok
    assert report.failure.step_number == 3
    assert "counterexample" in report.markdown()


def test_declared_refuted_but_true_is_failed():
    report = cross_entropy_split(expect="refuted").check(max_examples=N)
    assert report.status == "FAILED"
    assert "no counterexample" in report.reason


@pytest.mark.parametrize("relations, overall", [
    (["=", "="], "="), (["=", "<="], "<="), (["<=", "=", "<="], "<="), ([">=", "="], ">="),
])
def test_chain_relation_composition(relations, overall):
    steps = [Step("x", "", lambda x: x)] + [Step("x", "", lambda x: x, r) for r in relations]
    d = Derivation(claim="R", title="", statement="", variables={"x": st.just(1.0)}, steps=steps)
    assert d.relation == overall
    assert d.check(max_examples=1).status == "proved"


def test_mixing_inequalities_is_a_construction_error():
    with pytest.raises(ValueError, match=r"mix '<=' and '>='"):
        Derivation(claim="M", title="", statement="", variables={"x": st.just(1.0)}, steps=[
            Step("a", "", lambda x: x), Step("b", "", lambda x: x, "<="), Step("c", "", lambda x: x, ">=")])


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": [Step("a", "", lambda x: x)]}, "at least two steps"),
    ({"steps": [Step("a", "", lambda x: x, "="), Step("b", "", lambda x: x)]}, "first step"),
    ({"expect": "maybe"}, "expect"),
    ({"inputs": st.just({"x": 1.0})}, "exactly one"),
])
def test_construction_errors(kwargs, match):
    base = dict(claim="C", title="", statement="", variables={"x": st.just(1.0)},
                steps=[Step("a", "", lambda x: x), Step("b", "", lambda x: x)])
    with pytest.raises(ValueError, match=match):
        Derivation(**{**base, **kwargs})


def test_bad_step_relation_is_rejected():
    with pytest.raises(ValueError, match="relation"):
        Step("a", "", lambda x: x, "<")


def _abs_is_identity(expect="proved") -> Derivation:
    return Derivation(
        claim="X", title="|x| = x", statement="|x| = x", expect=expect,
        variables={"x": st.floats(0.0, 10.0)}, examples=[{"x": -1.5}],
        steps=[Step("|x|", "", lambda x: jnp.abs(x)), Step("x", "x >= 0", lambda x: x)])


def test_explicit_examples_are_checked_first():
    report = _abs_is_identity().check(max_examples=N)
    assert report.status == "FAILED"
    assert float(report.failure.inputs["x"]) == -1.5
    refuted = _abs_is_identity("refuted").check(max_examples=N)
    assert refuted.status == "refuted as declared"
    assert refuted.n_examples == 1  # the explicit counterexample sufficed


def test_exception_in_a_step_is_a_failed_report():
    def broken(p, q):
        raise ZeroDivisionError("planted")

    report = cross_entropy_split(third=broken).check(max_examples=N)
    assert report.status == "FAILED"
    assert report.failure.step_number == 3
    assert "ZeroDivisionError" in report.failure.message and "planted" in report.text()


def test_exception_is_not_a_refutation():
    def broken(p, q):
        raise ValueError("planted")

    report = cross_entropy_split(second=broken, expect="refuted").check(max_examples=N)
    assert report.status == "FAILED"
    assert report.failure.step_number == 2


def test_shape_mismatch_is_failed():
    d = Derivation(claim="S", title="", statement="", variables={"p": _probs(3)},
                   steps=[Step("p", "", lambda p: p), Step("sum p", "", lambda p: jnp.sum(p))])
    report = d.check(max_examples=3)
    assert report.status == "FAILED" and "shape" in report.failure.message


def test_chain_compiles_once_per_shape_and_is_cached():
    traces = []

    def traced(x):
        traces.append(x.shape)
        return 2 * x

    d = Derivation(claim="J", title="", statement="2x = x + x",
                   variables={"x": hnp.arrays(np.float64, 3, elements=st.floats(-1, 1))},
                   steps=[Step("2x", "", traced), Step("x + x", "", lambda x: x + x)])
    d.check(max_examples=10)
    d.check(max_examples=10)
    assert traces == [(3,)]


# --- rendering and collection ------------------------------------------------------------------

def test_report_renderings():
    proved = gibbs().check(max_examples=5)
    assert "\n" not in proved.row() and "A3" in proved.row() and "proved" in proved.row()
    md = proved.markdown()
    assert r"$H(p,q)$ — definition" in md and r"$\ge H(p)$" in md and "proved on" in md
    failed = cross_entropy_split(third=lambda p, q: KL(p, q)).check(max_examples=5)
    text = failed.text()
    assert "FAILED" in text and r"H(p) + \mathrm{KL}(p\|q)" in text and "tolerance" in text


def test_module_level_check_and_collect():
    d = gibbs()
    assert check(d, max_examples=3).status == "proved"
    assert collect({"a": d, "b": d, "c": 1}) == [d]


def test_replace_works_on_a_derivation_built_from_variables():
    import dataclasses

    d = Derivation(claim="V", title="", statement="", variables={"x": st.floats(0, 1)},
                   steps=[Step("x", "", lambda x: x), Step("x", "", lambda x: x)])
    planted = dataclasses.replace(d, steps=[d.steps[0], Step("x + 1", "planted", lambda x: x + 1)])
    assert planted.check(max_examples=3).status == "FAILED"
