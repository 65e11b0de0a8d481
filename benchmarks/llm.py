"""LLM-scale speed and memory of vfe's streamed reductions against optax / jax.nn, in one run.

Run: ``python benchmarks/llm.py [--quick] [--repeats R] [--markdown PATH]``.

For each quantity (integer-label cross-entropy, soft-label cross-entropy, entropy, KL in both
formulas, log Z, the linear head + cross-entropy), forward and forward + gradient, it prints one
row per shape:

* time: median of ``R`` calls after one warm-up call (``block_until_ready``), in ms, for vfe and
  for its peer (optax or the ``jax.nn`` formula), the two called alternately (vfe, peer, vfe, …) so
  that both see the same machine load; ``vfe/peer`` is the median of the per-round ratios (< 1 is
  faster);
* temporaries: XLA's compiled memory analysis (``temp_size_in_bytes``) of each program, in MB:
  the memory a program needs beyond its inputs and outputs (on GPU also the device's peak
  ``bytes_in_use`` growth while the vfe program ran, from ``device.memory_stats()``);
* roofline: the bytes the quantity must move at least (read the logits once; with the gradient,
  also write it), over the copy bandwidth measured at the start of the run, divided by vfe's
  time: the fraction of memory bandwidth achieved.

Shapes: on CPU ``[2048, 32000]`` and ``[1024, 128256]`` float32, plus bfloat16 cross-entropy rows
at both (a few minutes on 2 cores; ``--quick``: ``[256, 32000]`` and ``[128, 128256]``, one repeat, about
half a minute); ``--current`` adds vfe.information's entropy and KL as a second peer; on GPU
``[8192, 128256]`` float32 and bfloat16, and every ``implementation`` of vfe.streaming. The linear
head uses ``d = 256`` on CPU (float32 and bfloat16) and ``d = 4096`` on GPU. A second table gives,
without running them, the linear head's compiled temporaries at the issue's shape (h [8192, 4096],
W [4096, 128256], bfloat16 and float32) against the naive ``h @ W`` + optax (the target: at most
1/8 of it).

On CPU every gradient program here is dominated by the first touch of its freshly allocated
``[N, V]`` output (page faults); ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/llm.py``
lets glibc back large allocations with transparent huge pages (where the kernel's setting is
``madvise`` or ``always``), which removes most of that cost for vfe and its peers alike. The
header records the variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import vfe
from vfe import streaming
from vfe.linear_cross_entropy import linear_cross_entropy

MB = 2**20


@dataclasses.dataclass
class Row:
    quantity: str
    shape: str
    variant: str
    ours_ms: float
    peer_ms: float
    peer: str
    ours_temp: float
    peer_temp: float
    roofline: float
    ratio: float
    peak: float | None = None

    def cells(self) -> list[str]:
        peak = "" if self.peak is None else f"{self.peak:.0f}"
        return [self.quantity, self.shape, self.variant, f"{self.ours_ms:.1f}", f"{self.peer_ms:.1f}", self.peer,
                f"{self.ratio:.2f}", f"{self.ours_temp:.1f}", f"{self.peer_temp:.1f}",
                f"{self.roofline:.0%}", peak]


HEADER = ["quantity", "shape", "vfe variant", "vfe ms", "peer ms", "peer", "vfe/peer", "vfe temp MB",
          "peer temp MB", "roofline", "peak MB"]


def compiled(fn: Callable, *args):
    return jax.jit(fn).lower(*args).compile()


def seconds(program, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(program(*args))
    return time.perf_counter() - start


def alternate(programs, args, repeats: int) -> list[list[float]]:
    """Seconds per call of each program, called in turn ``repeats`` times after one warm-up each:
    on a shared machine a load change then hits all of them alike."""
    for program in programs:
        jax.block_until_ready(program(*args))
    rounds = [[seconds(program, *args) for program in programs] for _ in range(repeats)]
    return [list(times) for times in zip(*rounds)]


def copy_bandwidth(n_bytes: int = 512 * MB) -> float:
    """Bytes per second of an in-place ``x + 1`` over a float32 buffer (read + write; the buffer is
    donated, so no fresh output memory is touched), best of 5."""
    f = jax.jit(lambda x: x + 1, donate_argnums=0)
    x = jax.block_until_ready(f(jnp.zeros((n_bytes // 4,), jnp.float32)))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        x = jax.block_until_ready(f(x))
        best = min(best, time.perf_counter() - start)
    return 2 * n_bytes / best


def peak_growth(program, *args) -> float | None:
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    before = stats["bytes_in_use"]
    jax.block_until_ready(program(*args))
    return max(0, jax.devices()[0].memory_stats()["peak_bytes_in_use"] - before) / MB


def grad_of_sum(f, argnums=0):
    return jax.grad(lambda *a: jnp.sum(f(*a)), argnums=argnums)


def measure(quantity, shape_label, variant, ours, peer, peer_name, args, bytes_needed, bandwidth, repeats,
            on_gpu) -> Row:
    prog_ours, prog_peer = compiled(ours, *args), compiled(peer, *args)
    ours_s, peer_s = alternate((prog_ours, prog_peer), args, repeats)
    temp = lambda p: p.memory_analysis().temp_size_in_bytes / MB
    row = Row(quantity, shape_label, variant, statistics.median(ours_s) * 1e3, statistics.median(peer_s) * 1e3,
              peer_name, temp(prog_ours), temp(prog_peer), bytes_needed / bandwidth / statistics.median(ours_s),
              ratio=statistics.median(o / p for o, p in zip(ours_s, peer_s)))
    if on_gpu:
        row.peak = peak_growth(prog_ours, *args)
    return row


# ----------------------------------------------------------------------------- peers


def peer_entropy(z):
    return -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z), axis=-1)


def peer_kl(a, b):
    return optax.kl_divergence(jax.nn.log_softmax(b), jax.nn.softmax(a))


def peer_soft_ce(p, z):
    return optax.softmax_cross_entropy(z, p)


def peer_log_z(e):
    return jax.nn.logsumexp(-e, axis=-1)


def peer_linear(h, w, y):
    return optax.softmax_cross_entropy_with_integer_labels(h @ w, y)


# ----------------------------------------------------------------------------- the run


def logits_cases(n, v, dtype, implementation):
    keys = jax.random.split(jax.random.key(0), 3)
    z = (3 * jax.random.normal(keys[0], (n, v))).astype(dtype)
    b = (z.astype(jnp.float32) + jax.random.normal(keys[1], (n, v))).astype(dtype)
    p = jax.nn.softmax(jax.random.normal(keys[2], (n, v))).astype(dtype)
    y = jnp.arange(n, dtype=jnp.int32) * 7919 % v
    kw = {"implementation": implementation}
    size = n * v * jnp.dtype(dtype).itemsize
    return [
        ("integer cross-entropy", lambda z, y: streaming.cross_entropy_with_integer_labels(z, y, **kw),
         optax.softmax_cross_entropy_with_integer_labels, "optax", (z, y), size),
        ("soft cross-entropy", lambda p, z: streaming.cross_entropy_from_logits(p, z, **kw), peer_soft_ce, "optax",
         (p, z), 2 * size),
        ("entropy", lambda z: streaming.entropy_from_logits(z, **kw), peer_entropy, "jax.nn", (z,), size),
        ("KL(p‖q) from logits", lambda a, b: streaming.kl_divergence_from_logits(a, b, **kw), peer_kl, "optax",
         (z, b), 2 * size),
        ("KL(p‖q) from logits, direct formula",
         lambda a, b: streaming.kl_divergence_from_logits(a, b, formula="direct", **kw), peer_kl, "optax", (z, b),
         2 * size),
        ("log Z (β = 1)", lambda e: streaming.log_partition(e, 1.0, **kw), peer_log_z, "jax.nn", (z,), size),
    ]


def run(shapes, linear_shapes, implementations, repeats, on_gpu, include_current) -> list[Row]:
    bandwidth = copy_bandwidth(512 * MB if on_gpu else 256 * MB)
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    rows = []
    for n, v, dtype, which in shapes:
        label = f"[{n}, {v}] {jnp.dtype(dtype).name}"
        for impl in implementations:
            for quantity, ours, peer, peer_name, args, size in logits_cases(n, v, dtype, impl):
                if which is not None and quantity not in which:
                    continue
                if impl == "onepass" and quantity not in ("integer cross-entropy", "entropy"):
                    continue  # the variadic one-pass reduction is offered for lse, integer CE, entropy
                variant = impl or f"default ({streaming.default_implementation()})"
                diff = tuple(i for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating))[-1:]
                for mode, o, p_, need in (("forward", ours, peer, size),
                                          ("fwd + grad", grad_of_sum(ours, diff), grad_of_sum(peer, diff), 2 * size)):
                    row = measure(f"{quantity}, {mode}", label, variant, o, p_, peer_name, args, need, bandwidth,
                                  repeats, on_gpu)
                    rows.append(row)
                    print(" | ".join(row.cells()), flush=True)
        if dtype == jnp.float32 and (which is None or "integer cross-entropy" in which):
            # one exponential pass as XLA compiles a plain row sum (no shift, no label), next to optax
            # (vfe's column sum of exp_sum, on XLA:CPU, takes less)
            z, y = logits_cases(n, v, dtype, None)[0][4]
            row = measure("Σ e^z alone (a plain row sum), forward", label, "jnp.sum(jnp.exp(z))",
                          lambda z, y: jnp.sum(jnp.exp(z), axis=-1), optax.softmax_cross_entropy_with_integer_labels,
                          "optax CE", (z, y), n * v * 4, bandwidth, repeats, on_gpu)
            rows.append(row)
            print(" | ".join(row.cells()), flush=True)
        if include_current and dtype == jnp.float32:
            z = 3 * jax.random.normal(jax.random.key(0), (n, v))
            b = z + jax.random.normal(jax.random.key(1), (n, v))
            for quantity, ours, current, args in (
                    ("entropy", streaming.entropy_from_logits, vfe.entropy_from_logits, (z,)),
                    ("KL(p‖q) from logits", streaming.kl_divergence_from_logits, vfe.kl_divergence_from_logits, (z, b))):
                for mode, o, c in (("forward", ours, current), ("fwd + grad", grad_of_sum(ours), grad_of_sum(current))):
                    row = measure(f"{quantity}, {mode}", label, "default", o, c, "vfe.information", args,
                                  n * v * 4 * len(args), bandwidth, repeats, on_gpu)
                    rows.append(row)
                    print(" | ".join(row.cells()), flush=True)
    for n, d, v, dtype in linear_shapes:
        keys = jax.random.split(jax.random.key(1), 2)
        h = jax.random.normal(keys[0], (n, d)).astype(dtype)
        w = (jax.random.normal(keys[1], (d, v)) / d**0.5).astype(dtype)
        y = jnp.arange(n, dtype=jnp.int32) * 7919 % v
        label = f"h [{n}, {d}], W [{d}, {v}] {jnp.dtype(dtype).name}"
        size = (n * d + d * v) * jnp.dtype(dtype).itemsize
        for mode, o, p_ in linear_modes():
            need = size if mode == "forward" else 2 * size
            variant = "row chunks, gradients in the forward" if mode.startswith("mean") else "default tiles"
            row = measure(f"linear + cross-entropy, {mode}", label, variant, o, p_, "h @ W + optax",
                          (h, w, y), need, bandwidth, repeats, on_gpu)
            rows.append(row)
            print(" | ".join(row.cells()), flush=True)
    return rows


def linear_modes():
    """``(mode, vfe program, naive program)`` of the linear head: forward, fwd + grad, mean fwd + grad."""
    return (("forward", linear_cross_entropy, peer_linear),
            ("fwd + grad", grad_of_sum(linear_cross_entropy, (0, 1)), grad_of_sum(peer_linear, (0, 1))),
            ("mean, fwd + grad", grad_of_sum(functools.partial(linear_cross_entropy, reduction="mean"), (0, 1)),
             grad_of_sum(lambda *a: jnp.mean(peer_linear(*a)), (0, 1))))


MEMORY_HEADER = ["quantity", "shape", "vfe temp MB", "h @ W + optax temp MB", "vfe/naive"]


def linear_memory(shapes) -> list[list[str]]:
    """The linear head's compiled temporaries (XLA's memory analysis of each program, nothing is run)
    against the naive ``h @ W`` + optax, at shapes too large to time here (the issue's target: at most
    1/8 of the naive at h [8192, 4096], W [4096, 128256] bfloat16)."""
    rows = []
    for n, d, v, dtype in shapes:
        args = (jax.ShapeDtypeStruct((n, d), dtype), jax.ShapeDtypeStruct((d, v), dtype),
                jax.ShapeDtypeStruct((n,), jnp.int32))
        for mode, ours, peer in linear_modes():
            temp = [compiled(f, *args).memory_analysis().temp_size_in_bytes / MB for f in (ours, peer)]
            rows.append([f"linear + cross-entropy, {mode}", f"h [{n}, {d}], W [{d}, {v}] {jnp.dtype(dtype).name}",
                         f"{temp[0]:.0f}", f"{temp[1]:.0f}", f"{temp[0] / temp[1]:.2f}"])
            print(" | ".join(rows[-1]), flush=True)
    return rows


def markdown(rows, header_lines, memory_rows=()) -> str:
    out = [*header_lines, "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    if memory_rows:
        out += ["", "| " + " | ".join(MEMORY_HEADER) + " |", "|" + "---|" * len(MEMORY_HEADER)]
        out += ["| " + " | ".join(r) + " |" for r in memory_rows]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, one repeat (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per program (default 3, quick 1)")
    parser.add_argument("--markdown", default=None, help="also write the table as Markdown to this path")
    parser.add_argument("--implementations", default=None,
                        help="comma-separated vfe.streaming implementations to time (default: the backend's "
                             "default on CPU, all three on GPU)")
    parser.add_argument("--current", action="store_true",
                        help="also time vfe.information's entropy and KL (the functions vfe.streaming may replace)")
    args = parser.parse_args()
    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    repeats = args.repeats or (1 if args.quick else 3)
    f32, bf16 = jnp.float32, jnp.bfloat16
    ce = ("integer cross-entropy",)
    # compiled only (the linear-head shape; its temporaries are the target, not its time here)
    linear_memory_shapes = [(8192, 4096, 128256, bf16), (8192, 4096, 128256, f32)]
    if args.quick:
        shapes = [(256, 32000, f32, None), (128, 128256, f32, None), (256, 32000, bf16, ce)]
        linear = [(256, 128, 32000, f32)]
        linear_memory_shapes = [(512, 256, 32000, bf16)]
        implementations = [None, "onepass"] if on_gpu else [None]
    elif on_gpu:
        shapes = [(8192, 128256, f32, None), (8192, 128256, bf16, None)]
        linear = [(8192, 4096, 128256, bf16)]
        implementations = ["fused", "blocked", "onepass"]
    else:
        shapes = [(2048, 32000, f32, None), (1024, 128256, f32, None), (2048, 32000, bf16, ce),
                  (1024, 128256, bf16, ce)]
        linear = [(1024, 256, 32000, f32), (1024, 256, 32000, bf16)]
        implementations = [None]
    if args.implementations:
        implementations = [None if i == "default" else i for i in args.implementations.split(",")]
    header = [(f"device: {device.platform} ({device.device_kind}), {jax.device_count()} device(s); "
               f"jax {jax.__version__}, optax {optax.__version__}; median of {repeats} call(s) after a warm-up"
               + ("" if on_gpu else f"; GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}"))]
    print(header[0])
    print(" | ".join(HEADER))
    rows = run(shapes, linear, implementations, repeats, on_gpu, include_current=args.current)
    print(" | ".join(MEMORY_HEADER))
    memory_rows = linear_memory(linear_memory_shapes)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(rows, header, memory_rows))


if __name__ == "__main__":
    main()
