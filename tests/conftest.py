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

from proofs.compilation import use_cheap_compilation

# The suite compiles a few thousand small programs: compilation is most of its run time. Cheaper
# compilation (see proofs.compilation) must be asked for before jax starts its backend.
use_cheap_compilation()

import jax  # noqa: E402
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=400, derandomize=False, **_COMMON)
settings.register_profile("dev", max_examples=10, derandomize=True, **_COMMON)
settings.load_profile(os.environ.get("VFE_HYPOTHESIS_PROFILE", "ci"))


def _without_local_constants() -> None:
    """Make the derandomised profiles draw the same examples in every process.

    Hypothesis mixes into its draws constants read from the *local* modules already imported
    (``hypothesis.internal.conjecture.providers._get_local_constants``). Which of vfe's, proofs'
    and the tests' modules a pytest-xdist worker has imported depends on which tests it ran before,
    so a derandomised test drew different examples from run to run (a test of this suite failed
    in two full runs and never alone). With the pool empty, a test's examples depend only on its
    seed. The ``thorough`` profile keeps the pool: it explores at random anyway.
    """
    from hypothesis.internal.conjecture import providers

    if settings().derandomize and hasattr(providers, "_get_local_constants"):
        empty = providers.Constants()
        providers._get_local_constants = lambda: empty


_without_local_constants()
