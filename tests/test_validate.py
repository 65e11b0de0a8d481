"""vfe.validate: each check raises ValueError naming the argument, and returns valid input unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vfe
from vfe import streaming
from vfe.linear_cross_entropy import linear_cross_entropy

GOOD_P = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
GOOD_Z = np.array([[0.0, -np.inf, 1e4], [1.0, 2.0, 3.0]])


def test_valid_input_is_returned_unchanged():
    assert vfe.validate.probs(GOOD_P) is GOOD_P
    assert vfe.validate.logits(GOOD_Z) is GOOD_Z
    t = np.array([1e-30, 1.0, 1e30])
    assert vfe.validate.temperature(t) is t
    y = np.array([0, 2, 1])
    assert vfe.validate.labels(y, 3) is y


@pytest.mark.parametrize("bad, what", [
    (np.array([[0.5, 0.6, -0.1]]), "negative"),
    (np.array([[0.5, np.nan, 0.5]]), "NaN"),
    (np.array([[0.5, 0.4, 0.0]]), "sums"),
    (np.array([[0.5, np.inf, 0.5]]), "infinite"),
])
def test_probs_rejects(bad, what):
    with pytest.raises(ValueError, match="my_probs") as err:
        vfe.validate.probs(bad, name="my_probs")
    assert what in str(err.value)


@pytest.mark.parametrize("bad", [np.array([[-np.inf, -np.inf]]), np.array([[0.0, np.inf]]), np.array([[np.nan, 0.0]])])
def test_logits_rejects(bad):
    with pytest.raises(ValueError, match="my_logits"):
        vfe.validate.logits(bad, name="my_logits")


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf, np.array([1.0, 0.0])])
def test_temperature_rejects(bad):
    with pytest.raises(ValueError, match="temperature"):
        vfe.validate.temperature(bad)


@pytest.mark.parametrize("bad", [np.array([0, 3]), np.array([-1, 0]), np.array([0.0, 1.0])])
def test_labels_rejects(bad):
    with pytest.raises(ValueError, match="labels"):
        vfe.validate.labels(bad, 3)


@pytest.mark.parametrize("loss", [vfe.cross_entropy_with_integer_labels, streaming.cross_entropy_with_integer_labels,
                                  lambda z, y: linear_cross_entropy(jnp.eye(2), z, y)], ids=["information", "streaming",
                                                                                             "linear head"])
def test_unchecked_labels_out_of_range_give_nan_not_a_plausible_loss(loss):
    """What the docstrings promise where labels are not checked (under jit): an out-of-range label's
    loss is NaN, the valid tokens' unaffected, and vfe.validate.labels rejects the labels eagerly."""
    z = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    y = jnp.array([-100, 2], jnp.int32)
    got = np.asarray(jax.jit(loss)(z, y))
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1], np.log(2 + np.exp(5.0)) - 5.0, rtol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        vfe.validate.labels(np.asarray(y), 3)
