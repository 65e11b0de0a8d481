"""vfe.linear_cross_entropy: the loss and both gradients of a linear head equal those of the
materialised logits, for every tiling (dividing or not, single rows and columns), in float32,
float64 and bfloat16; its temporary memory does not grow with the vocabulary.

Tolerances: the reference is vfe.cross_entropy_with_integer_labels(h @ W, y) evaluated in float64
on the same (cast) inputs. The float32 errors are those of forming each logit (a d-term dot
product, relative ``d·eps`` of ``|h||W|``) plus those of the log-sum-exp over V classes
(``oracle.rtol(dtype, V)`` of ``1 + |loss| + log V``); gradients likewise relative to their largest entry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import oracle as O
import pytest
import strategies as S
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vfe
import vfe.linear_cross_entropy as lce_module
from vfe.linear_cross_entropy import linear_cross_entropy

T, D, V = 7, 3, 11  # tokens, hidden size, classes: primes, so that most tilings leave a partial block
TILINGS = [(7, 11), (2, 3), (3, 4), (1, 1), (6, 10), (None, None)]
WEIGHTS = np.cos(np.arange(1, T + 1))


@st.composite
def heads(draw, dtype, tokens=T):
    """``(h, W, y)``: hidden states and weights of magnitude up to ``scale``, labels anywhere."""
    scale = draw(st.sampled_from((0.1, 1.0, 10.0)))
    unit = lambda shape: draw(hnp.arrays(np.float64, shape, elements=st.floats(-1, 1)))
    h = S.cast(scale * unit((tokens, D)), dtype)
    w = S.cast(scale * unit((D, V)), dtype)
    y = draw(hnp.arrays(np.int32, (tokens,), elements=st.integers(0, V - 1)))
    return h, w, y


def _reference(h, w, y):
    h64, w64 = np.asarray(h, np.float64), np.asarray(w, np.float64)
    return vfe.cross_entropy_with_integer_labels(h64 @ w64, y)


def _reference_grads(h, w, y):
    h64, w64 = np.asarray(h, np.float64), np.asarray(w, np.float64)
    return jax.grad(lambda h, w: jnp.sum(WEIGHTS * vfe.cross_entropy_with_integer_labels(h @ w, y)), (0, 1))(h64, w64)


def _grads(h, w, y, tiling):
    bt, bv = tiling
    return jax.grad(lambda h, w: jnp.sum(WEIGHTS * linear_cross_entropy(h, w, y, block_tokens=bt, block_vocab=bv)),
                    (0, 1))(h, w)


def _scale(h, w, loss):
    logit = D * np.max(np.abs(np.asarray(h, np.float64))) * np.max(np.abs(np.asarray(w, np.float64)))
    return 1 + np.abs(np.asarray(loss, np.float64)) + np.log(V) + logit


def check_value(got, h, w, y, dtype, what):
    exact = np.asarray(_reference(h, w, y))
    O.assert_close(got, exact, O.rtol(dtype, V + D) * _scale(h, w, exact), what)


@pytest.mark.parametrize("dtype", S.FLOATS)
@pytest.mark.parametrize("tiling", TILINGS, ids=str)
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_loss_and_gradients_equal_those_of_the_materialised_logits(tiling, dtype, data):
    h, w, y = data.draw(heads(dtype))
    bt, bv = tiling
    got = linear_cross_entropy(h, w, y, block_tokens=bt, block_vocab=bv)
    assert got.shape == (T,) and got.dtype == dtype
    check_value(got, h, w, y, dtype, f"loss {tiling}")
    exact = _reference_grads(h, w, y)
    big = 1 + max(np.max(np.abs(np.asarray(e))) for e in exact)
    for g, e, arg, name in zip(_grads(h, w, y, tiling), exact, (h, w), ("dh", "dW")):
        assert g.dtype == arg.dtype and g.shape == arg.shape
        O.assert_close(g, e, O.rtol(dtype, V + D) * big * _scale(h, w, 0).max(), f"{name} {tiling}")


# reduction="sum"/"mean": chunks of (block_tokens · block_vocab) // V whole rows — here 1, 3 (the last
# chunk starts early, at token 4, and must not count tokens 4 and 5 twice) and all 7 tokens. The
# chunks' products with W take columns in tiles of 1 (11 of them), 9 (the second starts early, at
# column 2, and must not count columns 2-8 twice) and all 11.
REDUCED_TILINGS = [(1, 1), (3, 11), (7, 11), (1, 9)]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("dtype", S.FLOATS)
@pytest.mark.parametrize("tiling", REDUCED_TILINGS, ids=str)
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_reduced_loss_and_its_gradients_from_the_forward_pass_equal_the_materialised_ones(tiling, dtype,
                                                                                           reduction, data):
    h, w, y = data.draw(heads(dtype))
    bt, bv = tiling
    k = 1.0 if reduction == "sum" else 1.0 / T
    f = lambda h, w: linear_cross_entropy(h, w, y, reduction=reduction, block_tokens=bt, block_vocab=bv)
    exact = np.asarray(_reference(h, w, y))
    tol = O.rtol(dtype, V + D) * k * np.sum(_scale(h, w, exact))
    value, grads = jax.value_and_grad(f, (0, 1))(h, w)
    for got, path in ((value, "with the gradients"), (f(h, w), "alone")):
        assert got.shape == () and got.dtype == dtype
        O.assert_close(got, k * np.sum(exact), tol, f"{reduction} {path} {tiling}")
    h64, w64 = np.asarray(h, np.float64), np.asarray(w, np.float64)
    exact_grads = jax.grad(lambda h, w: k * jnp.sum(vfe.cross_entropy_with_integer_labels(h @ w, y)), (0, 1))(h64, w64)
    big = 1 + max(np.max(np.abs(np.asarray(e))) for e in exact_grads)
    for g, e, arg, name in zip(grads, exact_grads, (h, w), ("dh", "dW")):
        assert g.dtype == arg.dtype and g.shape == arg.shape
        O.assert_close(g, e, O.rtol(dtype, V + D) * big * _scale(h, w, 0).max(), f"{reduction} {name} {tiling}")


@pytest.mark.parametrize("tiling", REDUCED_TILINGS, ids=str)
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_reduced_loss_with_bfloat16_weights_takes_the_same_tiles(tiling, data):
    """bfloat16 ``h`` and ``W``, multiplied a tile of columns at a time on XLA:CPU (see the check)."""
    _check_bfloat16_reduced_gradients(tiling, data.draw(heads(jnp.bfloat16)))


@pytest.mark.parametrize("tiling", REDUCED_TILINGS, ids=str)
def test_reduced_loss_with_bfloat16_weights_as_on_backends_with_native_bfloat16_dots(tiling, monkeypatch):
    """The path taken where bfloat16 products need no conversion (GPU, TPU): whole-``W`` products in
    bfloat16, checked here on the CPU. Its own token count (5) keeps its programs apart from the
    other tests' in JAX's caches, so the patched predicate is the one traced."""
    monkeypatch.setattr(lce_module, "_native_low_precision_dots", lambda: True)
    rng = np.random.default_rng(5)
    for scale in (0.1, 1.0, 10.0):
        h = jnp.asarray(scale * rng.uniform(-1, 1, (5, D)), jnp.bfloat16)
        w = jnp.asarray(scale * rng.uniform(-1, 1, (D, V)), jnp.bfloat16)
        y = jnp.asarray(rng.integers(0, V, 5), jnp.int32)
        assert not lce_module._converted_by_tiles(h, w, jnp.float32)
        _check_bfloat16_reduced_gradients(tiling, (h, w, y))


def _check_bfloat16_reduced_gradients(tiling, head):
    """bfloat16 ``h`` and ``W`` (multiplied a tile of columns at a time, converted as they are used):
    the gradients of the summed loss are those of the float64 head on the same inputs, to the
    bfloat16 roundings (unit roundoff ``2^-8``) that the materialised head makes too — of ``G`` before its
    products (``2^-8`` of ``|G| |W|ᵀ`` and ``|h|ᵀ |G|``, ``G = softmax - onehot``) and of the result — plus
    the float32 error."""
    h, w, y = head
    bt, bv = tiling
    grads = jax.grad(lambda h, w: linear_cross_entropy(h, w, y, reduction="sum", block_tokens=bt, block_vocab=bv),
                     (0, 1))(h, w)
    h64, w64 = np.asarray(h, np.float64), np.asarray(w, np.float64)
    exact = jax.grad(lambda h, w: jnp.sum(vfe.cross_entropy_with_integer_labels(h @ w, y)), (0, 1))(h64, w64)
    g64 = np.asarray(jax.nn.softmax(h64 @ w64)) - np.eye(V)[y]
    magnitudes = (np.abs(g64) @ np.abs(w64).T, np.abs(h64).T @ np.abs(g64))
    for g, e, size, name in zip(grads, exact, magnitudes, ("dh", "dW")):
        assert g.dtype == jnp.bfloat16
        e = np.asarray(e)
        tol = 2.0**-8 * (np.abs(e) + size) * 1.01 + O.rtol(np.float32, V + D) * (1 + np.max(size))
        O.assert_close(g, e, tol, f"{name} {tiling}")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("tiling", [(1, 1), (3, 11), (2, 3)], ids=str)
@settings(max_examples=S.examples(8))
@given(data=st.data())
def test_uncounted_tokens_add_nothing_whatever_their_labels(tiling, reduction, data):
    """``where``: the loss and gradients equal those of the materialised logits over the counted
    tokens only (mean: divided by their number; none counted: 0), with the uncounted tokens' labels
    made invalid (-100, V, V + 7)."""
    h, w, y = data.draw(heads(np.float64))
    counted = data.draw(hnp.arrays(np.bool_, (T,)))
    junk = np.where(counted, y, data.draw(hnp.arrays(np.int32, (T,), elements=st.sampled_from((-100, V, V + 7)))))
    bt, bv = tiling
    k = 1.0 / max(counted.sum(), 1) if reduction == "mean" else 1.0
    weights = WEIGHTS if reduction == "none" else 1.0

    def ours(h, w):
        loss = linear_cross_entropy(h, w, junk, where=counted, reduction=reduction, block_tokens=bt, block_vocab=bv)
        return jnp.sum(weights * loss), loss

    def exact(h, w):
        loss = jnp.where(counted, vfe.cross_entropy_with_integer_labels(h @ w, y), 0.0)
        return jnp.sum(weights * loss), loss if reduction == "none" else k * jnp.sum(loss)

    (_, got), grads = jax.value_and_grad(ours, (0, 1), has_aux=True)(h, w)
    (_, want), exact_grads = jax.value_and_grad(exact, (0, 1), has_aux=True)(h, w)
    scale = _scale(h, w, np.asarray(_reference(h, w, y)))
    tol = O.rtol(np.float64, V + D) * (scale if reduction == "none" else k * np.sum(scale))
    O.assert_close(got, want, tol, f"{reduction} loss {tiling}")
    big = 1 + max(np.max(np.abs(np.asarray(e))) for e in exact_grads)
    for g, e, name in zip(grads, exact_grads, ("dh", "dW")):
        O.assert_close(g, k * e if reduction != "none" else e, O.rtol(np.float64, V + D) * big * scale.max(),
                       f"{reduction} {name} {tiling}")
    if reduction == "none":
        assert not np.any(np.asarray(got)[~counted])


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_second_derivatives_by_reverse_over_reverse_equal_those_of_the_materialised_logits(reduction):
    """Hessian-vector products in ``(h, W)`` (a jax.grad of a jax.grad) through the tiled loss — for
    ``"sum"``/``"mean"`` through the gradients formed in the forward pass — equal those of
    ``h @ W`` and the reference cross-entropy: tiles of (2, 4) over 5 tokens and 11 classes, both
    overlapping; float64."""
    rng = np.random.default_rng(5)
    h, w = jnp.asarray(rng.standard_normal((5, 3))), jnp.asarray(rng.standard_normal((3, 11)))
    y = jnp.asarray(rng.integers(0, 11, 5).astype(np.int32))
    v = (jnp.asarray(rng.standard_normal(h.shape)), jnp.asarray(rng.standard_normal(w.shape)))
    k = 1 / 5 if reduction == "mean" else 1.0

    def ours(h, w):
        return jnp.sum(linear_cross_entropy(h, w, y, reduction=reduction, block_tokens=2, block_vocab=4))

    def exact(h, w):
        return k * jnp.sum(vfe.cross_entropy_with_integer_labels(h @ w, y))

    def hvp(f):
        return jax.grad(lambda h, w: sum(jnp.vdot(a, b) for a, b in zip(jax.grad(f, (0, 1))(h, w), v)), (0, 1))(h, w)

    for got, want, name in zip(hvp(ours), hvp(exact), ("h", "W")):
        O.assert_close(got, want, O.rtol(np.float64, 11) * (1 + np.max(np.abs(np.asarray(want)))), f"{reduction} {name}")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_a_counted_label_out_of_range_gives_nan_with_or_without_gradients(reduction):
    """A counted token whose label lies outside ``[0, V)`` has a NaN loss (as the materialised logits'
    gather gives), in the value returned with the gradients too — the reduced loss's gradient pass
    returned a plausible loss without the label term; ``where`` excluding the token gives the loss of
    the others."""
    h, w = jnp.eye(2), jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    y = jnp.array([-100, 2], jnp.int32)
    second = np.log(2 + np.exp(5.0)) - 5.0

    def loss(w, where=None):
        return jnp.sum(linear_cross_entropy(h, w, y, where=where, reduction=reduction))

    for value in (loss(w), jax.value_and_grad(loss)(w)[0]):
        assert np.isnan(value), reduction
    value, grad = jax.value_and_grad(loss)(w, y >= 0)
    np.testing.assert_allclose(value, second, rtol=1e-6)
    assert np.all(np.isfinite(grad))


def test_no_tokens_give_an_empty_loss_and_zero_sum_and_mean():
    h, w, y = jnp.zeros((0, D)), jnp.ones((D, V)), jnp.zeros((0,), jnp.int32)
    assert linear_cross_entropy(h, w, y).shape == (0,)
    for reduction in ("sum", "mean"):
        assert float(linear_cross_entropy(h, w, y, reduction=reduction)) == 0.0
        dh, dw = jax.grad(lambda h, w: linear_cross_entropy(h, w, y, reduction=reduction), (0, 1))(h, w)
        assert dh.shape == (0, D) and not np.any(np.asarray(dw))


def test_batch_dimensions_are_flattened_and_restored():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 3, D))
    w = rng.standard_normal((D, V))
    y = rng.integers(0, V, (2, 3)).astype(np.int32)
    got = linear_cross_entropy(h, w, y, block_tokens=2, block_vocab=4)
    assert got.shape == (2, 3)
    O.assert_close(got, np.asarray(vfe.cross_entropy_with_integer_labels(h @ w, y)),
                   O.rtol(np.float64, V) * 10, "batched")


def test_bfloat16_accumulates_in_float32_and_beats_the_naive_head():
    """bfloat16 h and W: float32 loss, bfloat16 gradients, and an error against the float64 truth
    no worse than optax on bfloat16 logits (the naive head in the same dtype)."""
    rng = np.random.default_rng(1)
    tokens, d, v = 64, 32, 1000
    h = jnp.asarray(rng.standard_normal((tokens, d)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((d, v)) / np.sqrt(d), jnp.bfloat16)
    y = jnp.asarray(rng.integers(0, v, tokens), jnp.int32)
    got = linear_cross_entropy(h, w, y, block_tokens=16, block_vocab=300)
    assert got.dtype == jnp.float32
    truth = np.asarray(vfe.cross_entropy_with_integer_labels(np.asarray(h, np.float64) @ np.asarray(w, np.float64), y))
    naive = np.asarray(optax.softmax_cross_entropy_with_integer_labels(h @ w, y), np.float64)
    assert np.max(np.abs(np.asarray(got, np.float64) - truth)) <= np.max(np.abs(naive - truth))
    dh, dw = jax.grad(lambda h, w: jnp.sum(linear_cross_entropy(h, w, y, block_tokens=16, block_vocab=300)),
                      (0, 1))(h, w)
    assert dh.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(dh, np.float32)).all() and np.isfinite(np.asarray(dw, np.float32)).all()
    mean, (dh, dw) = jax.value_and_grad(lambda h, w: linear_cross_entropy(h, w, y, reduction="mean"), (0, 1))(h, w)
    assert mean.dtype == jnp.float32 and abs(float(mean) - truth.mean()) <= np.max(np.abs(naive - truth))
    assert dh.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(dh, np.float32)).all() and np.isfinite(np.asarray(dw, np.float32)).all()


def test_temporary_memory_does_not_grow_with_the_vocabulary():
    """XLA's compiled memory analysis: with tiles of 128 × 1024, the forward and forward+gradient
    programs' temporaries are the same for V = 8192 and V = 32768 and far below the logits
    (N·V floats); the naive head's grow with V."""
    tokens, d = 256, 64

    def temps(v, f):
        args = (jax.ShapeDtypeStruct((tokens, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
                jax.ShapeDtypeStruct((tokens,), jnp.int32))
        fwd = jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes
        grad = jax.jit(jax.grad(lambda h, w, y: jnp.sum(f(h, w, y)), (0, 1))).lower(*args).compile()
        return fwd, grad.memory_analysis().temp_size_in_bytes

    ours = lambda h, w, y: linear_cross_entropy(h, w, y, block_tokens=128, block_vocab=1024)
    naive = lambda h, w, y: optax.softmax_cross_entropy_with_integer_labels(h @ w, y)
    small, large = temps(8192, ours), temps(32768, ours)
    tile = 128 * 1024 * 4
    for s, g in (small, large):
        assert s <= 4 * tile and g <= 8 * tile + tokens * d * 4, (small, large)
    assert large[0] <= small[0] + tile and large[1] <= small[1] + tile, (small, large)
    naive_small, naive_large = temps(8192, naive), temps(32768, naive)
    assert naive_large[0] >= tokens * 32768 * 4 and naive_large[0] > 3 * naive_small[0]
    # reduction="mean": one chunk of 131072 // V whole rows (a few tile-sized arrays), never the
    # N × V logits, and no W-sized array: ∂W is accumulated in the gradient's own buffer, a tile of
    # columns at a time (with the whole product h_chunkᵀ G formed at once: 5 and 17 tiles)
    mean = lambda h, w, y: linear_cross_entropy(h, w, y, reduction="mean", block_tokens=128, block_vocab=1024)
    for v in (8192, 32768):
        fwd, grad = temps(v, mean)
        assert fwd <= 4 * tile and grad <= 4 * tile, (v, fwd, grad)


def test_bfloat16_weights_are_not_converted_whole():
    """bfloat16 ``h`` and ``W``: XLA:CPU computes bfloat16 dots in float32 and, given the chance,
    converts all of ``W`` once before the tile loop (a float32 copy of ``W``: 2.1 GB at
    d = 4096, V = 128256). The forward's and the forward+gradient program's temporaries stay the
    same for V = 8192 and 32768 — a float32 copy of ``W`` (d·V·4) fails both checks (before this
    test: 2.7 → 8.7 MB forward, 3.8 → 12.6 MB with the gradient), and so does the bfloat16 copy of
    ``∂W`` that XLA:CPU made when the last vocabulary block selected which of its columns to write
    (1.4 → 4.5 MB). The reduced loss holds half of ``∂W``'s accumulator (its other half is the
    gradient's own buffer) and nothing else of ``W``'s size."""
    tokens, d = 256, 64

    def temps(v, reduction="none"):
        args = (jax.ShapeDtypeStruct((tokens, d), jnp.bfloat16), jax.ShapeDtypeStruct((d, v), jnp.bfloat16),
                jax.ShapeDtypeStruct((tokens,), jnp.int32))
        f = lambda h, w, y: linear_cross_entropy(h, w, y, reduction=reduction, block_tokens=128, block_vocab=1024)
        fwd = jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes
        grad = jax.jit(jax.grad(lambda h, w, y: jnp.sum(f(h, w, y)), (0, 1))).lower(*args).compile()
        return fwd, grad.memory_analysis().temp_size_in_bytes

    (fwd_small, grad_small), (fwd_large, grad_large) = temps(8192), temps(32768)
    tile = 128 * 1024 * 4
    assert fwd_large <= fwd_small + tile // 4 and fwd_large <= 4 * tile, (fwd_small, fwd_large)
    assert grad_large <= grad_small + tile // 4, (grad_small, grad_large)
    # reduction="mean": the chunks' products with W a tile of columns at a time, W converted as it is
    # used; the only W-sized temporary is the low half of ∂W's bfloat16 pair accumulator, d·V·2 bytes
    # (with a float32 copy of W and the whole h_chunkᵀ G: 12 and 48 tiles; with a float32
    # accumulator 6.3 and 18.1, which fails at V = 32768; now 6.3 and 12.1)
    for v in (8192, 32768):
        grad = temps(v, "mean")[1]
        assert grad <= 5 * tile + d * v * 2, (v, grad)


def test_arguments_are_checked():
    h, w, y = jnp.zeros((4, 3)), jnp.zeros((3, 5)), jnp.zeros(4, jnp.int32)
    with pytest.raises(ValueError, match="last axis"):
        linear_cross_entropy(h, jnp.zeros((2, 5)), y)
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(h, w, jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match="integer"):
        linear_cross_entropy(h, w, jnp.zeros(4))
    with pytest.raises(ValueError, match="block_vocab"):
        linear_cross_entropy(h, w, y, block_vocab=0)
    with pytest.raises(ValueError, match="reduction.*'max'"):
        linear_cross_entropy(h, w, y, reduction="max")
    with pytest.raises(TypeError, match="where"):
        linear_cross_entropy(h, w, y, where=jnp.ones(4))
    with pytest.raises(ValueError, match="where"):
        linear_cross_entropy(h, w, y, where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="`weight` has no classes"):  # was an IndexError
        linear_cross_entropy(h, jnp.zeros((3, 0)), y)


# --- the check can fail ----------------------------------------------------------------------


def _overlap_counted_twice(h, w, y, bv):
    """The tiled log-sum-exp with the last (early-starting) block's overlap *not* masked."""
    v = w.shape[1]
    z = h @ w
    starts = [min(j * bv, v - bv) for j in range(-(-v // bv))]
    top = jnp.max(z, axis=-1)
    total = sum(jnp.sum(jnp.exp(z[:, s:s + bv] - top[:, None]), axis=-1) for s in starts)
    return jnp.log(total) - (jnp.take_along_axis(z, y[:, None], -1)[:, 0] - top)


def test_a_planted_double_count_of_the_overlap_is_rejected():
    """The value check above rejects a tiling that counts the last block's overlap twice (logits
    near 0, so that the three overlapping classes carry 3/11 of the mass); it accepts the library."""
    rng = np.random.default_rng(2)
    h, w = 0.1 * rng.standard_normal((T, D)), 0.1 * rng.standard_normal((D, V))
    y = rng.integers(0, V, T).astype(np.int32)
    check_value(linear_cross_entropy(h, w, y, block_vocab=4), h, w, y, np.float64, "library")
    with pytest.raises(AssertionError):
        check_value(_overlap_counted_twice(h, w, y, 4), h, w, y, np.float64, "planted")


def test_bfloat16_pair_keeps_sixteen_bits_of_a_running_sum():
    """The reduced loss's bfloat16 ``∂W`` accumulator ``(hi, lo)`` (:func:`_accumulated`): over 300
    additions of float32 arrays of mixed signs and magnitudes, ``hi + lo`` follows the float64 running
    sum to within ``Σ_k (2^-16 + 2^-23)|s_k|`` (each addition's split and float32 rounding); ``hi``
    alone (a bfloat16 accumulator) errs by up to ``2^-7`` of the sum per addition and fails this."""
    rng = np.random.default_rng(3)
    parts = (jnp.zeros(4000, jnp.bfloat16),) * 2
    exact, bound = np.zeros(4000), np.zeros(4000)
    for k in range(300):
        x = (rng.standard_normal(4000) * 10.0 ** rng.uniform(-3, 3, 4000)).astype(np.float32)
        parts = lce_module._accumulated(parts, jnp.asarray(x))
        exact += x
        bound += (2.0**-16 + 2.0**-23) * np.abs(exact)
    got = np.asarray(parts[0], np.float64) + np.asarray(parts[1], np.float64)
    assert np.all(np.abs(got - exact) <= bound)
    assert np.any(np.abs(np.asarray(parts[0], np.float64) - exact) > bound)


def test_bfloat16_bit_conversions_match_the_dtype_conversions():
    """The accumulator's bit-level conversions: widening is exact, the leading half truncates towards
    zero (and leaves an exact remainder of at most 16 bits), rounding is to nearest, ties to even."""
    rng = np.random.default_rng(4)
    f = (rng.standard_normal(100_000) * 10.0 ** rng.uniform(-30, 30, 100_000)).astype(np.float32)
    ties = (np.arange(1, 1001, dtype=np.uint32) << 16 | np.uint32(0x8000)).view(np.float32)  # halfway cases
    f = jnp.asarray(np.concatenate([f, ties, -ties, [0.0, -0.0]]).astype(np.float32))
    assert np.array_equal(np.asarray(lce_module._rounded_half(f)).view(np.uint16),
                          np.asarray(f.astype(jnp.bfloat16)).view(np.uint16))
    b = f.astype(jnp.bfloat16)
    assert np.array_equal(np.asarray(lce_module._widened(b)), np.asarray(b.astype(jnp.float32)))
    lead = np.asarray(lce_module._widened(lce_module._leading_half(f)), np.float64)
    f64 = np.asarray(f, np.float64)
    assert np.all(np.abs(lead) <= np.abs(f64)) and np.all(np.sign(lead) * np.sign(f64) >= 0)
    assert np.all(np.abs(f64 - lead) < 2.0**-7 * np.abs(f64) + 2.0**-133)  # (bfloat16 subnormals: 2^-133 apart)


def test_bfloat16_reduced_gradient_beats_the_naive_head():
    """bfloat16 ``h`` and ``W``, the summed loss's ``∂W`` formed over 64 chunks of 16 tokens (its
    bfloat16 pair accumulator updated 64 times): its median relative error against the float64
    truth is no worse than that of the naive head in bfloat16 (optax on ``h @ W``; measured 1.6e-3
    against 3.3e-3). A bfloat16 accumulator without ``lo`` fails."""
    rng = np.random.default_rng(6)
    tokens, d, v = 1024, 64, 4000
    h = jnp.asarray(rng.standard_normal((tokens, d)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((d, v)) / 4, jnp.bfloat16)
    y = jnp.asarray(rng.integers(0, v, tokens), jnp.int32)
    h64, w64 = np.asarray(h, np.float64), np.asarray(w, np.float64)
    exact = np.asarray(jax.grad(lambda w: jnp.sum(vfe.cross_entropy_with_integer_labels(h64 @ w, y)))(w64))
    ours = jax.grad(lambda w: linear_cross_entropy(h, w, y, reduction="sum", block_tokens=16, block_vocab=v))(w)
    naive = jax.grad(lambda w: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
        (h @ w).astype(jnp.float32), y)))(w)
    error = [np.median(np.abs(np.asarray(g, np.float64) - exact) / np.abs(exact)) for g in (ours, naive)]
    assert error[0] <= error[1], error
