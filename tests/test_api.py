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
    (lambda: vfe.point_mass_free_energy(Z, jnp.zeros((2, 1), jnp.int32)), ValueError, "theta_hat"),
    (lambda: vfe.gaussian_free_energy(lambda t: -t ** 2, 0.0, 1.0, num_points=0), ValueError, "num_points"),
])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as err:
        call()
    assert f"`{name}`" in str(err.value), str(err.value)


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
