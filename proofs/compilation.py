"""Cheaper XLA compilation for programs that compile many small programs (the catalogue, the tests).

``python -m proofs`` and the test suite compile a few thousand small XLA programs and run each
on a few kilobytes, so compilation is most of their run time. On XLA:CPU (jax 0.10.2, 2 cores)
these flags halve it (40 catalogue derivations: 32.6 → 16.4 CPU-seconds):

* ``--xla_backend_optimization_level=0`` and ``--xla_llvm_disable_expensive_passes=true``: LLVM
  does not optimise the generated code (about 15%);
* ``--xla_cpu_use_fusion_emitters=false``: fusions are emitted by XLA's elemental LLVM IR
  emitter instead of the MLIR fusion emitters, which build an MLIR context and pass pipelines
  per compilation (about 45%; only with the two flags above: the elemental emitter's output is
  expensive to optimise).

The arithmetic is the same IEEE operations; only the machine code is less tuned, which the
tiny inputs of proofs and tests do not notice. Never use these for benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

FLAGS: tuple[str, ...] = (
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false",
)


def use_cheap_compilation(environ: MutableMapping[str, str] = os.environ) -> None:
    """Puts :data:`FLAGS` in front of ``environ["XLA_FLAGS"]`` (a user's own flags come after
    them, so they win). Effective only before jax starts its backend in this process; worker
    processes started later inherit it."""
    environ["XLA_FLAGS"] = " ".join(filter(None, (*FLAGS, environ.get("XLA_FLAGS"))))
