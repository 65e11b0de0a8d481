"""Test configuration: float64 available, Hypothesis profiles, strict shape checks.

Profiles (choose with ``VFE_HYPOTHESIS_PROFILE``):

* ``ci`` (default): derandomised, no example database, no deadline — the same examples on
  every run, so the suite is reproducible and never flaky.
* ``thorough``: ten times the examples (also for tests that set their own count, through
  ``strategies.examples``), randomised, for hunting counterexamples locally.
* ``dev``: few examples, for a quick edit-test loop.

Library functions are tested in float32 explicitly (``dtype`` parameters) and in float64;
x64 is enabled here so that float64 arrays are really float64.
"""

import os

# The suite compiles hundreds of small programs and runs each on a few kilobytes, so XLA's
# compile time is most of its run time: skip LLVM's expensive optimisations (the results are
# the same IEEE operations; only the generated machine code is less tuned). Set before jax
# starts its backend; a user's own XLA_FLAGS are appended, so they win.
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
                  os.environ.get("XLA_FLAGS"))))

import jax  # noqa: E402
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=400, derandomize=False, **_COMMON)
settings.register_profile("dev", max_examples=10, derandomize=True, **_COMMON)
settings.load_profile(os.environ.get("VFE_HYPOTHESIS_PROFILE", "ci"))
