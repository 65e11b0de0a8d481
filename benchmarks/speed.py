"""CPU/GPU timing of vfe's reductions over a vocabulary against optax / jax.nn; prints a table.

Run: ``python benchmarks/speed.py [--batch B] [--vocab V] [--repeats R]``. Each function is
jitted, warmed up once, then timed over ``R`` calls in the same run as its peer. This is the
baseline before the one-pass kernels of the LLM-scale issue; times are milliseconds per call.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import vfe


def milliseconds(fn, *args, repeats: int) -> float:
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats * 1e3


def grad_of_sum(f):
    return jax.grad(lambda *a: jnp.sum(f(*a)))


def peer_entropy(z):
    return -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z), axis=-1)


def peer_kl(a, b):
    return optax.kl_divergence(jax.nn.log_softmax(b), jax.nn.softmax(a))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    k1, k2 = jax.random.split(jax.random.key(0))
    z = 3 * jax.random.normal(k1, (args.batch, args.vocab))
    z2 = 3 * jax.random.normal(k2, (args.batch, args.vocab))
    labels = jnp.arange(args.batch) % args.vocab
    cases = [
        ("integer cross-entropy", "optax", (vfe.cross_entropy_with_integer_labels,
                                            optax.softmax_cross_entropy_with_integer_labels), (z, labels)),
        ("  forward + gradient", "optax", (grad_of_sum(vfe.cross_entropy_with_integer_labels),
                                           grad_of_sum(optax.softmax_cross_entropy_with_integer_labels)), (z, labels)),
        ("entropy from logits", "jax.nn", (vfe.entropy_from_logits, peer_entropy), (z,)),
        ("  forward + gradient", "jax.nn", (grad_of_sum(vfe.entropy_from_logits), grad_of_sum(peer_entropy)), (z,)),
        ("KL from logits", "optax", (vfe.kl_divergence_from_logits, peer_kl), (z, z2)),
        ("  forward + gradient", "optax", (grad_of_sum(vfe.kl_divergence_from_logits), grad_of_sum(peer_kl)), (z, z2)),
    ]
    device = jax.devices()[0]
    print(f"[{args.batch}, {args.vocab}] float32 on {device.platform} ({device.device_kind}), jax {jax.__version__}, "
          f"optax {optax.__version__}; ms per call, {args.repeats} repeats")
    print(f"{'quantity':24} {'vfe':>9} {'peer':>9} {'peer is':>8} {'vfe / peer':>11}")
    for name, peer, (ours, theirs), inputs in cases:
        a = milliseconds(ours, *inputs, repeats=args.repeats)
        b = milliseconds(theirs, *inputs, repeats=args.repeats)
        print(f"{name:24} {a:9.1f} {b:9.1f} {peer:>8} {a / b:11.2f}")


if __name__ == "__main__":
    main()
