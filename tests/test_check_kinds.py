"""The four check kinds beyond identities, each with a planted wrong variant that must be caught.

Each correct derivation here mirrors a claim of the catalogue (A4, C2, C6, C9); its planted
twin differs in one place — a wrong minimiser, a wrong limit, a wrong derivative, a wrong
sampler — and the checker must report FAILED at that step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vfe import methods
from vfe.derivation import FAILED, PROVED, Derivation, Schedule, Step, geometric

N = 8  # examples per check: each example runs an optimiser, a schedule or a sampler


def _simplex(n):
    return hnp.arrays(np.float64, n, elements=st.floats(0.05, 1.0)).map(lambda x: x / x.sum())


# --- variational: argmin_q H(p, q) = p, min = H(p) (claim A4) -------------------------------

def _cross_entropy(logits, p):
    return -jnp.sum(p * jax.nn.log_softmax(logits))


CE_MIN = methods.Minimisation(_cross_entropy, init=lambda key, p: 3.0 * jax.random.normal(key, p.shape),
                              point=lambda logits, p: jax.nn.softmax(logits))


def variational(claimed_minimiser=lambda p: p) -> tuple[Derivation, Derivation]:
    inputs = {"p": _simplex(4)}
    value = Derivation(
        claim="A4", title="min of cross-entropy", statement=r"\min_q H(p,q) = H(p)", kind="variational",
        variables=inputs,
        steps=[Step(r"H(p)", "closed form", lambda p: -jnp.sum(p * jnp.log(p))),
               Step(r"H(p, q^*)", "objective at the claimed minimiser",
                    lambda p: -jnp.sum(p * jnp.log(claimed_minimiser(p)))),
               Step(r"\min_q H(p,q)", "L-BFGS from 8 starts", CE_MIN.minimum, tol=1e-9)])
    point = Derivation(
        claim="A4", title="argmin of cross-entropy", statement=r"\arg\min_q H(p,q) = p", kind="variational",
        variables=inputs,
        steps=[Step(r"q^*", "claimed minimiser", lambda p: claimed_minimiser(p)),
               Step(r"\arg\min_q H(p,q)", "L-BFGS from 8 starts", CE_MIN.argmin, tol=1e-6)])
    return value, point


def test_variational_claim_is_proved():
    for derivation in variational():
        report = derivation.check(max_examples=N)
        assert report.status == PROVED and report.kind == "variational", report.text()


def test_variational_with_a_wrong_minimiser_fails():
    value, point = variational(claimed_minimiser=lambda p: jnp.full_like(p, 1 / p.size))
    report = value.check(max_examples=N)
    assert report.status == FAILED and report.failure.step_number == 2, report.text()
    report = point.check(max_examples=N)
    assert report.status == FAILED and report.failure.step_number == 2, report.text()


def test_variational_with_a_wrong_minimum_fails_at_the_optimiser():
    """Claim min = H(p) + 0.01 at a minimiser that attains it: only the optimiser can object."""
    d = Derivation(
        claim="A4", title="too high a minimum", statement="", kind="variational", variables={"p": _simplex(4)},
        steps=[Step("H(p) + 0.01", "planted", lambda p: 0.01 - jnp.sum(p * jnp.log(p))),
               Step(r"\min_q H(p,q)", "L-BFGS from 8 starts", CE_MIN.minimum, tol=1e-6)])
    report = d.check(max_examples=N)
    assert report.status == FAILED and report.failure.step_number == 2
    assert report.failure.value < report.failure.previous  # the optimiser undercut the claim


# --- limit: T -> 0 gives uniform mass on the argmax set (claim C2) ---------------------------

def _logits_with_ties():
    return hnp.arrays(np.float64, 5, elements=st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0]))


def _argmax_set(z):
    top = z == jnp.max(z)
    return top / jnp.sum(top)


def limit(claimed=_argmax_set) -> Derivation:
    return Derivation(
        claim="C2", title="T -> 0", statement=r"\mathrm{softmax}(z/T) \to \mathrm{uniform}(\arg\max z)",
        variables={"z": _logits_with_ties()}, schedule=geometric("T", 1.0, 1e-4, 13, r"T \to 0"),
        steps=[Step(r"\mathrm{softmax}(z/T)", "definition", lambda z, T: jax.nn.softmax(z / T)),
               Step(r"\mathrm{uniform}(\arg\max z)", "the limit", lambda z, T: claimed(z), "->")])


def test_limit_is_proved_with_its_rate():
    report = limit().check(max_examples=N)
    assert report.status == PROVED and report.kind == "limit", report.text()
    assert "within tolerance from T = " in report.notes
    assert "Evaluated along $T \\to 0$" in report.markdown()


def test_limit_with_a_wrong_limit_fails_at_the_end_of_the_schedule():
    report = limit(claimed=lambda z: jax.nn.one_hot(jnp.argmax(z), z.size)).check(max_examples=N)
    assert report.status == FAILED and report.failure.step_number == 2
    # ties: argmax takes one, the limit shares the mass; reported at the first settled point checked
    assert report.failure.at == "T = 0.000464159" and report.failure.error > 0.1


def test_limit_that_has_not_settled_fails():
    """sqrt(T) -> 0 along T = 1 ... 1e-4 is 1e-1 away at T = 1e-2, the first settled point checked."""
    d = Derivation(claim="L", title="", statement="", variables={"x": st.just(0.0)},
                   schedule=geometric("T", 1.0, 1e-4, 5, r"T \to 0"),
                   steps=[Step(r"\sqrt T", "", lambda x, T: jnp.sqrt(T)), Step("0", "", lambda x, T: x, "->")])
    report = d.check(max_examples=1)
    assert report.status == FAILED and report.failure.error == pytest.approx(1e-1)


def test_equalities_along_a_schedule_must_hold_at_every_point():
    d = Derivation(claim="L", title="", statement="", variables={"x": st.just(1.0)},
                   schedule=Schedule("T", (1.0, 0.5, 0.25, 0.125), r"T \to 0"),
                   steps=[Step("x T", "", lambda x, T: x * T),
                          Step("x T (planted)", "", lambda x, T: jnp.where(T == 0.5, 0.0, x * T))])
    report = d.check(max_examples=1)
    assert report.status == FAILED and report.failure.at == "T = 0.5"


def test_limit_needs_a_schedule():
    with pytest.raises(ValueError, match="schedule"):
        Derivation(claim="L", title="", statement="", variables={"x": st.just(0.0)},
                   steps=[Step("a", "", lambda x: x), Step("b", "", lambda x: x, "->")])


# --- derivative: grad lse = softmax, hessian lse = diag p - p p^T (claim C6) -----------------

def _lse(z):
    return jax.nn.logsumexp(z)


def derivative(claimed_hessian=lambda p: jnp.diag(p) - jnp.outer(p, p)) -> Derivation:
    return Derivation(
        claim="C6", title="Hessian of lse", statement=r"\nabla^2 \mathrm{lse} = \mathrm{diag}(p) - pp^\top",
        kind="derivative", variables={"z": hnp.arrays(np.float64, 4, elements=st.floats(-3, 3))},
        steps=[Step(r"\mathrm{diag}(p) - pp^\top", "claimed", lambda z: claimed_hessian(jax.nn.softmax(z))),
               Step(r"\nabla^2 \mathrm{lse}(z)", "jax.hessian", methods.hessian(_lse, "z")),
               Step(r"\Delta^2_h \mathrm{lse}(z)", "central differences", methods.finite_difference(_lse, "z", order=2),
                    tol=1e-7)])


def test_derivative_is_proved():
    report = derivative().check(max_examples=N)
    assert report.status == PROVED and report.kind == "derivative", report.text()


def test_derivative_with_a_wrong_expression_fails():
    report = derivative(claimed_hessian=lambda p: jnp.diag(p)).check(max_examples=N)
    assert report.status == FAILED and report.failure.step_number == 2


def test_finite_differences_catch_a_wrong_custom_derivative():
    """Autodiff agrees with a wrong custom_jvp; the finite differences do not."""
    @jax.custom_jvp
    def f(x):
        return jnp.sum(x ** 3)

    f.defjvp(lambda primals, tangents: (f(*primals), jnp.sum(2 * primals[0] ** 2 * tangents[0])))
    d = Derivation(
        claim="D", title="", statement="", kind="derivative",
        variables={"x": hnp.arrays(np.float64, 3, elements=st.floats(0.5, 2))},
        steps=[Step("2x^2", "the custom rule", lambda x: 2 * x ** 2), Step(r"\nabla f", "jax.grad", methods.grad(f, "x")),
               Step(r"\Delta_h f", "central differences", methods.finite_difference(f, "x"), tol=1e-7)])
    report = d.check(max_examples=N)
    assert report.status == FAILED and report.failure.step_number == 3


# --- distributional: Gumbel-max samples softmax(z/T) (claim C9) ------------------------------

SAMPLES = 200_000


def _gumbel_max(key, z, T):
    g = jax.random.gumbel(key, (SAMPLES, z.size))
    return jnp.argmax(z / T + g, axis=-1)


def distributional(sampler=_gumbel_max) -> Derivation:
    return Derivation(
        claim="C9", title="Gumbel-max", statement=r"\arg\max(z/T + G) \sim \mathrm{softmax}(z/T)",
        kind="distributional",
        variables={"z": hnp.arrays(np.float64, 4, elements=st.floats(-2, 2)), "T": st.floats(0.5, 2.0)},
        steps=[Step(r"F_{\mathrm{softmax}(z/T)}", "CDF of the claimed law", lambda z, T: methods.cdf(jax.nn.softmax(z / T))),
               Step(r"\hat F_n", f"empirical CDF of {SAMPLES} Gumbel-max samples",
                    lambda z, T: methods.empirical_cdf(sampler(jax.random.key(0), z, T), z.size),
                    tol=methods.dkw_tolerance(SAMPLES))])


def test_distributional_claim_is_proved():
    report = distributional().check(max_examples=N)
    assert report.status == PROVED and report.kind == "distributional", report.text()


def test_distributional_rejects_a_sampler_that_ignores_the_temperature():
    """The test's power: T ignored. Found on one of N examples (|F - F_n| well above the DKW ε)."""
    def untempered(key, z, T):
        return _gumbel_max(key, z, 1.0)

    report = distributional(untempered).check(max_examples=N)
    assert report.status == FAILED and report.failure.step_number == 2


def test_dkw_tolerance_matches_its_definition():
    eps = methods.dkw_tolerance(10_000, 1e-6)
    assert 2 * np.exp(-2 * 10_000 * eps**2) == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="n must be"):
        methods.dkw_tolerance(0)


def test_bad_tolerance_and_kind_are_rejected():
    with pytest.raises(ValueError, match="tol"):
        Step("a", "", lambda x: x, tol=2.0)
    with pytest.raises(ValueError, match="kind"):
        Derivation(claim="K", title="", statement="", kind="magic", variables={"x": st.just(0.0)},
                   steps=[Step("a", "", lambda x: x), Step("b", "", lambda x: x)])


def test_a_derivation_can_cap_its_examples():
    d = Derivation(claim="K", title="", statement="", variables={"x": st.floats(0, 1)}, max_examples=3,
                   steps=[Step("x", "", lambda x: x), Step("x", "", lambda x: x)])
    assert d.check(max_examples=100).n_examples == 3
    with pytest.raises(ValueError, match="max_examples"):
        Derivation(claim="K", title="", statement="", variables={"x": st.floats(0, 1)}, max_examples=0,
                   steps=[Step("x", "", lambda x: x), Step("x", "", lambda x: x)])


_CONVERGED_FIT = """
import jax, jax.numpy as jnp
import vfe.derivation
from vfe import methods
x = jnp.array({data})
def nll(z, x):
    return -jnp.mean(jax.nn.log_softmax(z)[x])
m = methods.Minimisation(nll, init=lambda key, x: 3.0 * jax.random.normal(key, (4,)), iterations=300)
p_hat = jnp.bincount(x, length=4) / x.size
print(float(m.minimum(x=x) + jnp.sum(p_hat * jnp.log(p_hat))))
"""


def test_minimisation_keeps_iterating_after_convergence_without_hanging():
    """Regression: batched L-BFGS line searches never ended once a start had converged to rounding.

    These data (observations of 4 categories) hung with 70+ iterations under vmap; run in a
    subprocess with a time limit so that a regression fails instead of hanging the suite.
    """
    import subprocess
    import sys

    data = [0, 1, 2, 3, 1, 3, 2, 0, 2, 1, 0, 1, 3, 3, 0, 2, 3, 1, 1, 0, 0, 3, 0, 0, 0,
            0, 3, 1, 3, 2, 3, 2, 3, 3, 0, 2, 1, 1, 1, 1, 1, 3, 3, 2, 2, 3, 2, 1, 0, 2]
    result = subprocess.run([sys.executable, "-c", _CONVERGED_FIT.format(data=data)],
                            capture_output=True, text=True, timeout=120, check=True)
    assert abs(float(result.stdout.strip().splitlines()[-1])) < 1e-12  # min NLL = H(p̂)
