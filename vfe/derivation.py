r"""Executable derivations: a chain of expressions, each step checked numerically.

A :class:`Derivation` reads like a Lean ``calc`` block: a claim, then one
:class:`Step` per line with its LaTeX, its one-line justification and a JAX
function computing its value. :func:`check` draws inputs with Hypothesis,
evaluates every step in float64 and checks each step against the previous one
with the step's relation (``"="``, ``"<="`` or ``">="``). A failed check is
never an exception: it is a :class:`Report` that names the first failing step
and the (shrunk) counterexample.

Example:
    >>> import jax.numpy as jnp
    >>> from hypothesis import strategies as st
    >>> d = Derivation(
    ...     claim="X1", title="Doubling", statement=r"x + x = 2x",
    ...     variables={"x": st.floats(-10, 10)},
    ...     steps=[Step(r"x + x", "definition", lambda x: x + x),
    ...            Step(r"2x", "collect terms", lambda x: 2 * x)])
    >>> d.check(max_examples=5).status
    'proved'

Tolerance model (one model for every derivation, never loosened per derivation):
    Consecutive step values ``a`` and ``b`` have scales ``s_a`` and ``s_b``: the
    scale is ``|value|``, or ``sum_k |t_k|`` when the step returned
    ``Terms(t_1, t_2, ...)`` (so that ``big - big = small`` is judged at the size
    of its terms). With ``scale = max(s_a, s_b, 1)`` (the floor 1 is one nat, the
    natural unit of these quantities) the *relative error* is

    * ``"="``:  ``|a - b| / scale``;
    * ``"<="``: ``max(0, a - b) / scale``;  ``">="``: ``max(0, b - a) / scale``;

    and the step passes iff the relative error is at most ``RTOL = 1e-9``.
    Infinities: equal infinities pass (error 0), as does any ordered pair of
    infinities for an inequality (``-inf <= x``, ``x <= +inf``); an infinity
    against a finite value or the opposite infinity otherwise fails (error
    ``inf``). Any NaN fails. Arrays are compared elementwise: every entry must
    pass, and the reported error is the largest entry's.

Precision:
    Importing this module switches JAX to 64-bit (``jax_enable_x64``), because
    ``RTOL = 1e-9`` is only meaningful in float64. Floating inputs are
    converted to float64 arrays; integer and boolean inputs keep an integer
    (or boolean) dtype so that they can index.

Compilation:
    All steps of a derivation are evaluated by one jitted function, compiled
    once per input shape/dtype signature and kept on the derivation, so
    examples of the same shapes (and later calls of :func:`check`) do not
    recompile. Step functions must therefore be traceable by ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings, target
from hypothesis import strategies as st

jax.config.update("jax_enable_x64", True)

__all__ = [
    "KINDS",
    "RTOL",
    "SETTLE",
    "Derivation",
    "DerivationFailed",
    "Failure",
    "Report",
    "Schedule",
    "Step",
    "Terms",
    "check",
    "collect",
    "geometric",
    "relative_error",
]

RTOL: float = 1e-9
"""Relative tolerance of every step (see the module docstring)."""

Relation = Literal["=", "<=", ">=", "->"]
RELATIONS: tuple[str, ...] = ("=", "<=", ">=", "->")

_LATEX_RELATION = {"=": "=", "<=": r"\le", ">=": r"\ge", "->": r"\to"}

KINDS: tuple[str, ...] = ("identity", "inequality", "limit", "variational", "derivative", "distributional")
"""Kinds of check (``CLAIMS.md``): a chain of equalities, of inequalities, a limit along a
schedule, a minimum or minimiser checked by optimisation, a derivative checked by autodiff and
finite differences, a law checked by sampling. See :mod:`vfe.methods` for the numerical methods
that compute the non-closed-form steps of the last four."""

SETTLE: int = 3
"""A ``"->"`` step must hold within its tolerance at the last ``SETTLE`` points of the schedule."""

PROVED = "proved"
REFUTED = "refuted as declared"
FAILED = "FAILED"


class Terms(tuple):
    """A step value given as a sum of terms: ``Terms(t1, t2, ...)``.

    The step's value is ``t1 + t2 + ...`` and its scale (for the tolerance) is
    ``|t1| + |t2| + ...``. A plain tuple returned by a step means the same.
    """

    def __new__(cls, *terms: Any) -> Terms:
        """Builds the sum of ``terms`` (at least one)."""
        if not terms:
            raise ValueError("Terms needs at least one term")
        return super().__new__(cls, terms)


@dataclasses.dataclass(frozen=True)
class Step:
    """One line of a derivation.

    Attributes:
        latex: the expression, in LaTeX (without surrounding ``$``).
        why: one-line justification of the step from the previous one.
        fn: JAX function of the inputs, called with keyword arguments (use
            ``**_`` to ignore some); returns a scalar, an array, or
            :class:`Terms` (a sum of terms).
        relation: relation to the previous step: ``"="``, ``"<="``, ``">="``,
            or ``"->"`` (the previous step tends to this one along the
            derivation's schedule). ``None`` (the default) means ``"="``,
            except for the first step, which has no relation.
        tol: the step's relative tolerance; ``None`` means :data:`RTOL`. A
            step computed by a numerical method (optimisation, finite
            differences, sampling, a limit) states the accuracy of that method
            here (see :mod:`vfe.methods`), and the documentation shows it.
    """

    latex: str
    why: str
    fn: Callable[..., Any]
    relation: Relation | None = None
    tol: float | None = None

    def __post_init__(self) -> None:
        """Validates the relation, the function and the tolerance."""
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"Step {self.latex!r}: relation must be one of {RELATIONS}, got {self.relation!r}")
        if not callable(self.fn):
            raise TypeError(f"Step {self.latex!r}: fn must be callable, got {type(self.fn).__name__}")
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and 0 < self.tol < 1):
            raise ValueError(f"Step {self.latex!r}: tol must be a number in (0, 1), got {self.tol!r}")

    @property
    def tolerance(self) -> float:
        """The tolerance this step is checked with."""
        return RTOL if self.tol is None else float(self.tol)


def chain_relation(relations: Sequence[str]) -> str:
    """Composes step relations into the relation between the first and last step.

    Args:
        relations: the relations of steps 2..n (each one of :data:`RELATIONS`).

    Returns:
        ``"="`` if all are ``"="``, else the single other relation used.

    Raises:
        ValueError: if both ``"<="`` and ``">="`` occur, or ``"->"`` with an inequality.
    """
    used = set(relations) - {"="}
    if {"<=", ">="} <= used:
        raise ValueError("a chain cannot mix '<=' and '>=' steps: the relation between its ends would be unknown")
    if len(used) > 1:
        raise ValueError("a chain cannot mix '->' (a limit) with an inequality")
    return used.pop() if used else "="


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The points along which a limit derivation is evaluated.

    Attributes:
        name: the input name the step functions receive (e.g. ``"T"``).
        values: the points, in the order of approach (the last is nearest the limit).
        latex: the limit in LaTeX, e.g. ``r"T \to 0"``.
    """

    name: str
    values: tuple[float, ...]
    latex: str

    def __post_init__(self) -> None:
        """Validates the schedule."""
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if len(self.values) < SETTLE + 1:
            raise ValueError(f"Schedule {self.name!r}: needs at least {SETTLE + 1} points, got {len(self.values)}")
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"Schedule {self.name!r}: the points must be finite")


def geometric(name: str, start: float, stop: float, num: int, latex: str) -> Schedule:
    """A geometric schedule ``start, start·r, ..., stop`` of ``num`` points.

    Example:
        >>> geometric("T", 1.0, 1e-3, 4, r"T \to 0").values
        (1.0, 0.1, 0.01, 0.001)
    """
    if start == 0 or stop == 0 or (start > 0) != (stop > 0):
        raise ValueError(f"geometric({name!r}): start and stop must be non-zero with the same sign")
    return Schedule(name, tuple(np.geomspace(start, stop, num).tolist()), latex)


def relative_error(
    a: Any, b: Any, relation: str = "=", scale_a: Any = None, scale_b: Any = None
) -> float:
    """Relative error of ``a <relation> b`` under the tolerance model.

    Args:
        a: previous step's value (scalar or array).
        b: this step's value, same shape as ``a``.
        relation: ``"="``, ``"<="`` or ``">="``.
        scale_a: scale of ``a``; ``|a|`` when None.
        scale_b: scale of ``b``; ``|b|`` when None.

    Returns:
        The largest elementwise relative error (``inf`` for NaN, or an infinity
        that the relation does not allow); the step passes iff it is ``<= RTOL``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if relation == ">=":
        a, b, scale_a, scale_b = b, a, scale_b, scale_a
    s_a = np.abs(a) if scale_a is None else np.asarray(scale_a, dtype=np.float64)
    s_b = np.abs(b) if scale_b is None else np.asarray(scale_b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.maximum(s_a, s_b), 1.0)
        diff = np.abs(a - b) if relation == "=" else np.maximum(a - b, 0.0)
        err = diff / scale
        allowed = (a == b) if relation == "=" else (a <= b)  # exact, covers the infinities
        finite = np.isfinite(a) & np.isfinite(b)
        err = np.where(allowed, 0.0, np.where(finite, err, np.inf))
        err = np.where(np.isnan(a) | np.isnan(b) | np.isnan(err), np.inf, err)
    return float(np.max(err)) if err.size else 0.0


@dataclasses.dataclass(frozen=True)
class Failure:
    """Where and how a derivation failed.

    Attributes:
        step_number: 1-based number of the failing step (the step whose relation
            to its predecessor fails, or whose function raised).
        latex: the failing step's LaTeX.
        why: the failing step's justification.
        relation: the failing step's relation to its predecessor (None for step 1).
        inputs: the counterexample, name -> numpy value.
        previous: value of the previous step (None if not computed).
        value: value of the failing step (None if not computed).
        error: relative error (see :func:`relative_error`); NaN for an exception.
        message: for an exception or a shape mismatch, what went wrong; else "".
        tol: the tolerance the step was checked with.
        at: for a limit, where along the schedule it failed (e.g. ``"T = 1e-30"``); else "".
    """

    step_number: int
    latex: str
    why: str
    relation: str | None
    inputs: dict[str, np.ndarray]
    previous: np.ndarray | None = None
    value: np.ndarray | None = None
    error: float = math.nan
    message: str = ""
    tol: float = RTOL
    at: str = ""

    @property
    def is_error(self) -> bool:
        """True when the step raised or had the wrong shape (not a refutation)."""
        return bool(self.message)

    def text(self) -> str:
        """Multi-line description of the failure."""
        rel = f" {self.relation}" if self.relation else ""
        lines = [f"step {self.step_number}:{rel} {self.latex}    [{self.why}]"]
        if self.message:
            lines.append(f"  {self.message}")
        else:
            at = f" at {self.at}" if self.at else ""
            lines.append(f"  previous value{at}: {_fmt(self.previous)}")
            lines.append(f"  this value{at}:     {_fmt(self.value)}")
            lines.append(f"  relative error {self.error:.3g} > tolerance {self.tol:g}")
        lines.append(f"  counterexample: {_fmt_inputs(self.inputs)}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Report:
    """The result of checking one derivation.

    Attributes:
        claim: claim id, e.g. ``"A1"``.
        title: claim title.
        statement: the claim in LaTeX.
        steps: the derivation's steps.
        relation: relation between the first and the last step.
        expect: ``"proved"`` or ``"refuted"``.
        n_examples: number of input examples evaluated.
        max_error: largest relative error seen over all steps and examples (for
            a ``"->"`` step, over the settled end of the schedule).
        status: ``"proved"``, ``"refuted as declared"`` or ``"FAILED"``.
        failure: the first failing step on the counterexample, if any.
        reason: why the status is FAILED (one line), else "".
        seconds: wall time of the check.
        kind: the kind of check (one of :data:`KINDS`).
        schedule: the schedule of a limit derivation, else None.
        notes: what the check measured besides pass/fail (a limit's rate of
            convergence), else "".
    """

    claim: str
    title: str
    statement: str
    steps: tuple[Step, ...]
    relation: str
    expect: str
    n_examples: int
    max_error: float
    status: str
    failure: Failure | None
    reason: str
    seconds: float
    kind: str = "identity"
    schedule: Schedule | None = None
    notes: str = ""

    @property
    def ok(self) -> bool:
        """True unless the status is FAILED."""
        return self.status != FAILED

    @staticmethod
    def header() -> str:
        """Header line matching :meth:`row`."""
        return (f"{'id':<6} {'claim':<44} {'kind':<14} {'steps':>5} {'examples':>8} {'max err':>9}  "
                f"{'status':<19} {'time':>7}")

    def row(self) -> str:
        """One-line table row: id, title, kind, steps, examples, largest error, status, time."""
        title = self.title if len(self.title) <= 44 else self.title[:43] + "…"
        err = "—" if math.isnan(self.max_error) else f"{self.max_error:.1e}"
        return (
            f"{self.claim:<6} {title:<44} {self.kind:<14} {len(self.steps):>5} {self.n_examples:>8} {err:>9}  "
            f"{self.status:<19} {self.seconds:>6.2f}s"
        )

    def text(self) -> str:
        """Multi-line text: the status line, the notes, then the failure (if any)."""
        head = f"{self.claim} {self.title}: {self.status}"
        if self.reason:
            head += f" ({self.reason})"
        lines = [head, f"  claim: {self.statement}"]
        if self.notes:
            lines.append(f"  {self.notes}")
        if self.failure is not None:
            lines += ["  " + line for line in self.failure.text().splitlines()]
        return "\n".join(lines)

    __str__ = text

    def markdown(self, heading: str = "###") -> str:
        """Markdown: title, kind, statement, numbered steps with justifications, result.

        The text depends only on the derivation and on what the check found
        (never on timings or on the last digits of rounding errors), so a
        committed rendering can be compared with a fresh one.
        """
        lines = [f"{heading} {self.claim}: {self.title}", "", f"*Check: {self.kind}.*", "",
                 f"$$ {self.statement} $$", ""]
        if self.schedule is not None:
            values = self.schedule.values
            lines += [f"Evaluated along ${self.schedule.latex}$: {self.schedule.name} = "
                      f"{_fmt_point(values[0])}, …, {_fmt_point(values[-1])} ({len(values)} points, geometric).", ""]
        for i, step in enumerate(self.steps):
            rel = "" if i == 0 else f"{_LATEX_RELATION[step.relation or '=']} "
            tol = "" if step.tol is None else f" *(tolerance {step.tol:.0e})*"
            lines.append(f"{i + 1}. ${rel}{step.latex}$ — {step.why}{tol}")
        lines += ["", f"**Result:** {self._result_sentence()}"]
        if self.notes:
            lines += ["", self.notes]
        if self.failure is not None:
            f = self.failure
            at = f" at {f.at}" if f.at else ""
            lines.append("")
            lines.append(f"Step {f.step_number} fails{at} on the counterexample `{_fmt_inputs(f.inputs, 6)}`: " + (
                f"{f.message}." if f.message else
                f"`{_fmt(f.previous, 6)}` vs `{_fmt(f.value, 6)}`."
            ))
        return "\n".join(lines) + "\n"

    def _result_sentence(self) -> str:
        """The result as one sentence (no measured figures: see :meth:`markdown`)."""
        if self.status == PROVED:
            return f"proved on {self.n_examples} examples (default tolerance {RTOL:g})."
        if self.status == REFUTED:
            return f"refuted as declared (counterexample found after {self.n_examples} example{'s' if self.n_examples != 1 else ''})."
        return f"FAILED: {self.reason}."


class DerivationFailed(AssertionError):
    """Raised by :meth:`Derivation.verify`; its message is the report text."""

    def __init__(self, report: Report) -> None:
        """Keeps the report (``.report``) and uses its text as the message."""
        super().__init__(report.text())
        self.report = report


@dataclasses.dataclass
class Derivation:
    """A claim with a chain of checked steps.

    Attributes:
        claim: claim id, e.g. ``"A1"``.
        title: short title of the claim.
        statement: the claim in LaTeX.
        steps: at least two :class:`Step`; the first has no relation.
        inputs: Hypothesis strategy drawing a dict name -> value (arrays or floats).
        variables: sugar for ``inputs=st.fixed_dictionaries(variables)``; give
            exactly one of ``inputs`` and ``variables``.
        examples: input dicts always checked first (e.g. a known counterexample).
        expect: ``"proved"`` (every step holds), or ``"refuted"`` (the checker
            must find a counterexample: a step that fails numerically).
        kind: one of :data:`KINDS`; by default ``"limit"`` for a chain with a
            ``"->"`` step, ``"inequality"`` for one with ``"<="``/``">="``,
            else ``"identity"``. Declare ``"variational"``, ``"derivative"``
            or ``"distributional"`` when steps use those methods of :mod:`vfe.methods`.
        schedule: for a limit: the step functions also receive
            ``schedule.name``, and the chain is evaluated at every point of the
            schedule. ``"="``/``"<="``/``">="`` steps must hold at every point; a
            ``"->"`` step must hold within its tolerance at the last
            :data:`SETTLE` points, and the report gives its observed rate.
        max_examples: an upper bound on the Hypothesis examples of any check of
            this derivation (for checks whose every example is costly, e.g. a
            training run); None for no bound.

    Raises:
        ValueError: on construction, for fewer than two steps, a relation on the
            first step, a chain mixing ``"<="`` and ``">="`` (or ``"->"`` and an
            inequality), a bad ``expect`` or ``kind``, a ``"->"`` step without a
            schedule (or a schedule whose name is also an input), or not exactly
            one of ``inputs``/``variables``.
    """

    claim: str
    title: str
    statement: str
    steps: Sequence[Step]
    inputs: st.SearchStrategy[dict[str, Any]] | None = None
    variables: Mapping[str, st.SearchStrategy[Any]] | None = None
    examples: Sequence[Mapping[str, Any]] = ()
    expect: Literal["proved", "refuted"] = "proved"
    kind: str | None = None
    schedule: Schedule | None = None
    max_examples: int | None = None
    _chain: Callable[..., Any] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validates the derivation and builds its jitted chain."""
        where = f"Derivation {self.claim!r}"
        self.steps = tuple(self.steps)
        self.examples = tuple(self.examples)
        if len(self.steps) < 2:
            raise ValueError(f"{where}: needs at least two steps, got {len(self.steps)}")
        if not all(isinstance(s, Step) for s in self.steps):
            raise TypeError(f"{where}: steps must be Step instances")
        if self.steps[0].relation is not None:
            raise ValueError(f"{where}: the first step has no relation (got {self.steps[0].relation!r})")
        try:
            relation = chain_relation([s.relation or "=" for s in self.steps[1:]])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if self.expect not in ("proved", "refuted"):
            raise ValueError(f"{where}: expect must be 'proved' or 'refuted', got {self.expect!r}")
        if self.kind is None:
            self.kind = {"->": "limit", "<=": "inequality", ">=": "inequality"}.get(relation, "identity")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        if relation == "->" and self.schedule is None:
            raise ValueError(f"{where}: a '->' step needs a schedule= to evaluate the limit along")
        if self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise TypeError(f"{where}: schedule must be a Schedule (see geometric())")
        if (self.inputs is None) == (self.variables is None):
            raise ValueError(f"{where}: give exactly one of inputs= (a strategy) and variables= (a dict of strategies)")
        if self.max_examples is not None and (not isinstance(self.max_examples, int) or self.max_examples < 1):
            raise ValueError(f"{where}: max_examples must be a positive int or None, got {self.max_examples!r}")
        if self.variables is not None:
            if self.schedule is not None and self.schedule.name in self.variables:
                raise ValueError(f"{where}: the schedule's name {self.schedule.name!r} is also an input")
            # kept as ``inputs`` only, so that dataclasses.replace(derivation, steps=...) works
            self.inputs, self.variables = st.fixed_dictionaries(dict(self.variables)), None
        self._chain = jax.jit(self._evaluate_all if self.schedule is None else self._evaluate_along)

    @property
    def relation(self) -> str:
        """Relation between the first and the last step (one of :data:`RELATIONS`)."""
        return chain_relation([s.relation or "=" for s in self.steps[1:]])

    def _evaluate_all(self, inputs: dict[str, jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
        """(value, scale) of every step; traced once per input signature."""
        return [_value_and_scale(step, inputs) for step in self.steps]

    def _evaluate_along(self, inputs: dict[str, jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
        """(value, scale) of every step at every schedule point (leading axis)."""
        points = jnp.asarray(self.schedule.values, dtype=jnp.float64)
        return jax.vmap(lambda t: self._evaluate_all({**inputs, self.schedule.name: t}))(points)

    def check(self, max_examples: int = 100, *, derandomize: bool = True) -> Report:
        """Checks the derivation; see :func:`check`."""
        return check(self, max_examples=max_examples, derandomize=derandomize)

    def verify(self, max_examples: int = 100, *, derandomize: bool = True) -> Report:
        """Checks the derivation and raises if it FAILED (for use in tests).

        Returns:
            The report, when its status is not FAILED.

        Raises:
            DerivationFailed: (an ``AssertionError``) with the report's text.
        """
        report = self.check(max_examples, derandomize=derandomize)
        if not report.ok:
            raise DerivationFailed(report)
        return report


def _value_and_scale(step: Step, inputs: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    """Value of a step and its scale (``sum |t|`` for Terms, else ``|value|``)."""
    out = step.fn(**inputs)
    if isinstance(out, tuple):
        terms = [jnp.asarray(t, dtype=jnp.float64) for t in out]
        return sum(terms[1:], terms[0]), sum((jnp.abs(t) for t in terms[1:]), jnp.abs(terms[0]))
    value = jnp.asarray(out, dtype=jnp.float64)
    return value, jnp.abs(value)


def _to_jax(value: Any) -> jax.Array:
    """Input conversion: integers/booleans keep their kind, everything else float64."""
    arr = np.asarray(value)
    if arr.dtype.kind in "biu":
        return jnp.asarray(arr)
    return jnp.asarray(arr, dtype=jnp.float64)


@dataclasses.dataclass
class _Outcome:
    """Result of evaluating a chain on one input."""

    max_error: float
    failure: Failure | None
    notes: str = ""


def _evaluate(derivation: Derivation, raw: Mapping[str, Any]) -> _Outcome:
    """Evaluates all steps on one input and returns the first failure, if any."""
    steps = derivation.steps
    shown = {k: np.asarray(v) for k, v in raw.items()}
    try:
        inputs = {k: _to_jax(v) for k, v in raw.items()}
        results = [(np.asarray(v), np.asarray(s)) for v, s in derivation._chain(inputs)]
    except Exception as exc:  # a step raised: locate it
        number = _raising_step(derivation, raw)
        step = steps[number - 1]
        rel = None if number == 1 else step.relation or "="
        return _Outcome(math.nan, Failure(number, step.latex, step.why, rel, shown,
                                          message=f"{type(exc).__name__}: {_first_line(exc)}"))
    worst, notes = 0.0, []
    for i in range(1, len(steps)):
        (a, s_a), (b, s_b) = results[i - 1], results[i]
        step, rel = steps[i], steps[i].relation or "="
        fail = functools.partial(Failure, i + 1, step.latex, step.why, rel, shown, tol=step.tolerance)
        if a.shape != b.shape:
            msg = f"shape {b.shape} differs from the previous step's shape {a.shape}"
            return _Outcome(math.nan, fail(a, b, message=msg))
        if derivation.schedule is None:
            err = relative_error(a, b, rel, s_a, s_b)
            worst = max(worst, err)
            if not err <= step.tolerance:
                return _Outcome(worst, fail(a, b, err))
            continue
        errors = [relative_error(a[k], b[k], "=" if rel == "->" else rel, s_a[k], s_b[k]) for k in range(len(a))]
        checked = range(len(errors) - SETTLE, len(errors)) if rel == "->" else range(len(errors))
        for k in checked:
            worst = max(worst, errors[k])
            if not errors[k] <= step.tolerance:
                at = f"{derivation.schedule.name} = {_fmt_point(derivation.schedule.values[k])}"
                return _Outcome(worst, fail(a[k], b[k], errors[k], at=at))
        if rel == "->":
            notes.append(_convergence_note(i + 1, derivation.schedule, errors, step.tolerance))
    return _Outcome(worst, None, " ".join(notes))


_ORDER = "observed order"
_ROUNDING = 1e-11  # errors at or below this are taken as rounding when estimating a rate


def _convergence_note(number: int, schedule: Schedule, errors: Sequence[float], tol: float) -> str:
    """How a ``"->"`` step converged: where it came within tolerance, and its observed order.

    The order is the slope of ``log error`` against ``log |t - t_∞|`` between the last two
    points whose errors are finite and well above rounding (``> 1e-11``, so that the rate does
    not depend on the last digits of a platform's arithmetic), with ``t_∞ = 0`` for a schedule
    tending to 0 and ``1/t`` used for one tending to infinity.
    """
    t = np.abs(np.asarray(schedule.values))
    distance = t if t[-1] < t[0] else 1.0 / t
    settled = len(errors)
    while settled > 0 and errors[settled - 1] <= tol:
        settled -= 1
    reached = f"within tolerance from {schedule.name} = {_fmt_point(schedule.values[settled])}"
    usable = [k for k, e in enumerate(errors) if math.isfinite(e) and e > _ROUNDING]
    if len(usable) < 2:
        return f"Step {number}: {reached} (error below {_ROUNDING:g} at all but {len(usable)} points)."
    k0, k1 = usable[-2], usable[-1]
    order = math.log(errors[k1] / errors[k0]) / math.log(distance[k1] / distance[k0])
    return f"Step {number}: {reached}; {_ORDER} {order:.2g} (error ∝ distance^{order:.2g} near the end)."


def _raising_step(derivation: Derivation, raw: Mapping[str, Any]) -> int:
    """1-based number of the first step whose tracing raises (1 if none does)."""
    try:
        inputs = {k: _to_jax(v) for k, v in raw.items()}
        if derivation.schedule is not None:
            inputs[derivation.schedule.name] = jnp.asarray(derivation.schedule.values[-1], dtype=jnp.float64)
    except Exception:
        return 1
    for number, step in enumerate(derivation.steps, start=1):
        try:
            jax.eval_shape(lambda d, step=step: _value_and_scale(step, d), inputs)
        except Exception:
            return number
    return 1


def _first_line(exc: BaseException) -> str:
    """First line of an exception's message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)  # no slow "explain"


class _Counterexample(Exception):
    """Raised inside the Hypothesis test so that it shrinks the failing input."""


def check(derivation: Derivation, *, max_examples: int = 100, derandomize: bool = True) -> Report:
    """Checks every step of a derivation on explicit examples, then with Hypothesis.

    Never raises for a failed derivation (an exception in a step is a FAILED
    report naming the exception). Hypothesis settings: no deadline, no example
    database, derandomised by default, ``target()`` on the largest relative
    error, and a numerically failing input shrunk to a minimal one (an input
    on which a step raises is reported as found, without shrinking).

    Args:
        derivation: the derivation to check.
        max_examples: Hypothesis examples to draw (at least 1; at most the derivation's own
            ``max_examples`` when it sets one), after the
            derivation's explicit examples.
        derandomize: use a fixed seed so that runs are reproducible.

    Returns:
        A :class:`Report` with status ``"proved"``, ``"refuted as declared"``
        or ``"FAILED"``.
    """
    if max_examples < 1:
        raise ValueError(f"max_examples must be at least 1, got {max_examples}")
    if derivation.max_examples is not None:
        max_examples = min(max_examples, derivation.max_examples)
    start = time.perf_counter()
    count, worst, notes = 0, 0.0, ""
    failure: Failure | None = None
    reason = ""

    def run(raw: Mapping[str, Any]) -> _Outcome:
        nonlocal count, worst, failure, notes
        if not isinstance(raw, Mapping):
            raise TypeError(f"inputs must be dicts name -> value, got {type(raw).__name__}")
        outcome = _evaluate(derivation, raw)
        count += 1
        if not math.isnan(outcome.max_error):
            worst = max(worst, outcome.max_error)
        if outcome.notes and (not notes or (_ORDER not in notes and _ORDER in outcome.notes)):
            # the first example that shows a rate: the same on every run and machine, whereas
            # "the example that came least close" is decided by rounding among near-equal ones
            notes = outcome.notes
        if outcome.failure is not None:
            failure = outcome.failure  # Hypothesis replays the minimal example last
        return outcome

    for example in derivation.examples:
        if run(example).failure is not None:
            break

    if failure is None:
        @settings(max_examples=max_examples, deadline=None, database=None, derandomize=derandomize,
                  print_blob=True, report_multiple_bugs=False, phases=_PHASES,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.filter_too_much, HealthCheck.nested_given])
        @given(derivation.inputs)
        def search(raw: Mapping[str, Any]) -> None:
            if failure is not None and failure.is_error:
                return  # a step raised: no shrinking, the first error is reported as it is
            outcome = run(raw)
            if math.isfinite(outcome.max_error):
                target(outcome.max_error, label="relative error")
            if outcome.failure is not None and not outcome.failure.is_error:
                raise _Counterexample

        try:
            search()
        except _Counterexample:
            pass
        except Exception as exc:  # Hypothesis itself failed (bad strategy, flaky, ...)
            reason = f"search failed: {type(exc).__name__}: {_first_line(exc)}"

    status = _status(derivation.expect, failure, reason)
    if status == FAILED and not reason:
        reason = _failed_reason(derivation.expect, failure)
    return Report(
        claim=derivation.claim, title=derivation.title, statement=derivation.statement,
        steps=tuple(derivation.steps), relation=derivation.relation, expect=derivation.expect,
        n_examples=count, max_error=worst, status=status, failure=failure, reason=reason,
        seconds=time.perf_counter() - start, kind=derivation.kind, schedule=derivation.schedule,
        notes=notes if failure is None else "",
    )


def _status(expect: str, failure: Failure | None, reason: str) -> str:
    """Status from what was expected and what was found."""
    if reason or (failure is not None and failure.is_error):
        return FAILED
    if expect == "refuted":
        return REFUTED if failure is not None else FAILED
    return PROVED if failure is None else FAILED


def _failed_reason(expect: str, failure: Failure | None) -> str:
    """One-line reason of a FAILED status."""
    if failure is None:
        return "declared refuted but no counterexample found"
    if failure.is_error:
        return f"step {failure.step_number}: {failure.message}"
    return f"step {failure.step_number} fails (relative error {failure.error:.3g})"


def collect(namespace: Any) -> list[Derivation]:
    """Every :class:`Derivation` bound at the top level of a module (or a dict), in order.

    Args:
        namespace: a module, or a dict such as ``vars(module)``.

    Returns:
        The derivations in definition order, each once.
    """
    items = namespace if isinstance(namespace, Mapping) else vars(namespace)
    seen: dict[int, Derivation] = {}
    for value in items.values():
        if isinstance(value, Derivation):
            seen.setdefault(id(value), value)
    return list(seen.values())


def _fmt(value: Any, digits: int | None = None) -> str:
    """Rendering of a value (scalar or array): shortest round-trip digits, or ``digits`` significant ones."""
    if value is None:
        return "—"
    arr = np.asarray(value)
    if digits is not None and arr.dtype.kind == "f":
        arr = np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(arr) if arr.size else arr
    return repr(arr.tolist())  # Python floats: no column padding


def _fmt_inputs(inputs: Mapping[str, Any], digits: int | None = None) -> str:
    """``name = value, ...`` for a counterexample."""
    return ", ".join(f"{k} = {_fmt(v, digits)}" for k, v in inputs.items())


def _fmt_point(value: float) -> str:
    """A schedule point, e.g. ``1e-30`` or ``0.5``."""
    return f"{value:g}"
