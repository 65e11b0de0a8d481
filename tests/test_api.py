"""Bad input raises the documented exception naming the argument, before any computation
(shape/dtype errors on huge inputs come back at once: checks look only at static information);
__all__ and docstrings."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vfe

P = jnp.full((2, 3), 1 / 3)
Z = jnp.zeros((2, 3))
HUGE = jax.ShapeDtypeStruct((10**6, 10**5), jnp.float32)  # never materialised


@pytest.mark.parametrize("call, exc, name", [
    (lambda: vfe.cross_entropy(P, jnp.zeros((2, 4))), ValueError, "q"),
    (lambda: vfe.kl_divergence(P, jnp.zeros((3, 3))), ValueError, "q"),
    (lambda: vfe.kl_divergence_from_logits(Z, jnp.zeros((2,))), ValueError, "q_logits"),
    (lambda: vfe.cross_entropy_from_logits(P, jnp.zeros((2, 4))), ValueError, "logits"),
    (lambda: vfe.gibbs_free_energy(P, jnp.zeros((2, 4)), 1.0), ValueError, "energies"),
    (lambda: vfe.free_energy(Z, jnp.zeros((2, 4))), ValueError, "log_joint"),
    (lambda: vfe.entropy(jnp.ones((2, 3), jnp.int32)), TypeError, "probs"),
    (lambda: vfe.entropy(jnp.ones((2, 3), bool)), TypeError, "probs"),
    (lambda: vfe.entropy_from_logits(np.ones(3, np.int64)), TypeError, "logits"),
    (lambda: vfe.tempered_softmax(np.ones(3, np.int32), 1.0), TypeError, "logits"),
    (lambda: vfe.entropy(P, axis=2), ValueError, "axis"),
    (lambda: vfe.entropy(P, axis=-3), ValueError, "axis"),
    (lambda: vfe.entropy(P, axis=1.0), TypeError, "axis"),
    (lambda: vfe.entropy(P, axis=True), TypeError, "axis"),
    (lambda: vfe.tempered_softmax(Z, 0.0), ValueError, "temperature"),
    (lambda: vfe.tempered_softmax(Z, -1.0), ValueError, "temperature"),
    (lambda: vfe.tempered_softmax(Z, float("nan")), ValueError, "temperature"),
    (lambda: vfe.tempered_softmax(Z, float("inf")), ValueError, "temperature"),
    (lambda: vfe.helmholtz_free_energy(Z, 0.0), ValueError, "temperature"),
    (lambda: vfe.gibbs_free_energy(P, Z, -2.0), ValueError, "temperature"),
    (lambda: vfe.boltzmann(Z, -1.0), ValueError, "beta"),
    (lambda: vfe.log_partition(Z, float("nan")), ValueError, "beta"),
    (lambda: vfe.tempered_softmax(Z, jnp.ones((3,))), ValueError, "temperature"),
    (lambda: vfe.cross_entropy_with_integer_labels(Z, jnp.zeros((3,), jnp.int32)), ValueError, "labels"),
    (lambda: vfe.cross_entropy_with_integer_labels(Z, jnp.zeros((2,), jnp.float32)), TypeError, "labels"),
    (lambda: vfe.cross_entropy_with_integer_labels(Z, [[0], [1, 2]]), TypeError, "labels"),
    (lambda: vfe.cross_entropy_with_integer_labels(Z, [True, False]), TypeError, "labels"),
    (lambda: vfe.point_mass_free_energy(Z, jnp.zeros((2, 1), jnp.int32)), ValueError, "theta_hat"),
    (lambda: vfe.gaussian_free_energy(lambda t: -t ** 2, 0.0, 1.0, num_points=0), ValueError, "num_points"),
    (lambda: vfe.gaussian_free_energy(lambda t: -t ** 2, 0.0, -1.0), ValueError, "std"),
    (lambda: vfe.gaussian_entropy(-2.0), ValueError, "std"),
    (lambda: vfe.gaussian_entropy([1.0, -2.0]), ValueError, "std"),
    (lambda: vfe.tempered_softmax(Z, [0.5, -1.0]), ValueError, "temperature"),
    (lambda: vfe.helmholtz_free_energy(Z, [float("nan"), 1.0]), ValueError, "temperature"),
    (lambda: vfe.tempered_softmax(Z, "hot"), TypeError, "temperature"),
])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as err:
        call()
    assert f"`{name}`" in str(err.value), str(err.value)


E = jnp.zeros((2, 0))  # rows with no classes
NO_CLASSES = {
    "entropy": (E,), "entropy_from_logits": (E,), "cross_entropy": (E, E), "cross_entropy_from_logits": (E, E),
    "kl_divergence": (E, E), "kl_divergence_from_logits": (E, E),
    "cross_entropy_with_integer_labels": (E, jnp.zeros(2, jnp.int32)), "expected_code_length": (E, E),
    "boltzmann": (E, 1.0), "log_partition": (E, 1.0), "helmholtz_free_energy": (E, 1.0), "mean_energy": (E, 1.0),
    "thermodynamic_entropy": (E, 1.0), "heat_capacity": (E, 1.0), "energy_variance": (E, 1.0),
    "gibbs_free_energy": (E, E, 1.0), "tempered_softmax": (E, 0.5), "tempered_log_softmax": (E, 0.5),
    "free_energy": (E, E), "elbo": (E, E), "log_evidence": (E,), "posterior": (E,), "log_posterior": (E,),
    "map_estimate": (E,), "mle_estimate": (E,), "point_mass_free_energy": (E, jnp.zeros(2, jnp.int32)),
    "sample_categorical": (jax.random.key(0), E), "sample_tempered": (jax.random.key(0), E, 0.5),
    "gaussian_mixture_log_density": (jnp.zeros(2), E, E, jnp.ones((2, 0))), "moment_match": (E, E, jnp.ones((2, 0))),
    "token_log_probs": (E, jnp.zeros(2, jnp.int32)),
}


@pytest.mark.parametrize("name", sorted(NO_CLASSES))
def test_a_distribution_over_no_classes_is_refused_naming_the_argument(name):
    """Rows with no classes along the distribution's axis raise a ValueError naming the function and
    its first distribution argument (before: a bare JAX "zero-size array to reduction" error, a math
    domain error, or silently 0 / -0 / an empty result, depending on the function)."""
    with pytest.raises(ValueError, match=rf"^{name}: argument `\w+` has no classes along axis 1"):
        getattr(vfe, name)(*NO_CLASSES[name])
    from vfe import streaming
    if hasattr(streaming, name):
        with pytest.raises(ValueError, match="has no classes"):
            getattr(streaming, name)(*NO_CLASSES[name])


def test_integer_arguments_may_be_python_lists_like_the_floating_ones():
    """Labels given as a list (or a Python int) are taken as the integer array they spell, as lists of
    floats are for probabilities (before: "Cannot determine dtype of [1, 0]", naming no argument)."""
    logits = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    expected = vfe.cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.array([1, 0]))
    np.testing.assert_array_equal(vfe.cross_entropy_with_integer_labels(logits, [1, 0]), expected)
    assert vfe.point_mass_free_energy(jnp.array([0.0, -2.0]), 1) == 2.0


def test_checks_run_before_computation_on_huge_inputs():
    """Shape errors come from static information: under eval_shape no array is ever allocated."""
    with pytest.raises(ValueError, match="`q`"):
        jax.eval_shape(lambda a: vfe.kl_divergence(a, jnp.zeros((3,))), HUGE)
    with pytest.raises(ValueError, match="`axis`"):
        jax.eval_shape(lambda a: vfe.entropy(a, axis=5), HUGE)
    with pytest.raises(ValueError, match="`labels`"):
        jax.eval_shape(lambda a: vfe.cross_entropy_with_integer_labels(a, jnp.zeros((3,), jnp.int32)), HUGE)


def test_all_names_exist_and_public_functions_document_a_formula():
    for name in vfe.__all__:
        assert hasattr(vfe, name), name
        obj = getattr(vfe, name)
        if inspect.isfunction(obj):
            doc = obj.__doc__ or ""
            assert ".. math::" in doc or ":math:" in doc or "\\" in doc, f"{name} has no formula"
