"""Entry point of ``python -m proofs`` (see :mod:`proofs.cli`).

Compilation is most of the catalogue's run time: ask XLA for cheaper compilation
(:mod:`proofs.compilation`). This must happen before jax starts its backend (in this process and
in the ``--jobs`` workers, which inherit the environment), hence here and not in
:mod:`proofs.cli`, which importers of the package may use inside their own programs.
"""

from proofs.compilation import use_cheap_compilation

use_cheap_compilation()

from proofs.cli import main  # noqa: E402

if __name__ == "__main__":  # not in the worker processes of ``--jobs``
    raise SystemExit(main())
