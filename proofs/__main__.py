"""Entry point of ``python -m proofs`` (see :mod:`proofs.cli`).

The catalogue compiles a few hundred small XLA programs and runs each on a few kilobytes, so
compilation is most of its run time. Unless ``XLA_FLAGS`` is already set, ask XLA for cheaper
compilation (no expensive LLVM passes; the arithmetic is the same IEEE operations): about 15%
faster on a 2-core CPU. This must happen before jax starts its backend (in this process and in
the ``--jobs`` workers, which inherit the environment), hence here and not in :mod:`proofs.cli`,
which importers of the package may use inside their own programs.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

from proofs.cli import main  # noqa: E402

if __name__ == "__main__":  # not in the worker processes of ``--jobs``
    raise SystemExit(main())
