"""``python -m proofs``: check derivations and print a table (or write Markdown).

Examples:
    python -m proofs                      # every registered derivation
    python -m proofs -k A1 -k C -n 500    # select by id or title substring
    python -m proofs --file my_proofs.py  # a user's own derivations
    python -m proofs --markdown docs/PROOFS.md --figures docs/figures
    python -m proofs -j 1                 # in this process only (default: one worker per core)

Exit status: 0 when nothing FAILED, 1 when a derivation FAILED, 2 for a bad
option or value (a one-line message on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib
import importlib.util
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from proofs import document
from proofs.catalogue import NOT_CHECKABLE, PENDING
from vfe.derivation import Derivation, Report, collect

PROG = "python -m proofs"
DEFAULT_EXAMPLES = 100
"""Hypothesis examples per derivation unless ``-n`` says otherwise (docs/PROOFS.md uses it)."""


class UsageError(Exception):
    """A bad option or value; reported on one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raises UsageError(message)."""
        raise UsageError(message)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = _Parser(prog=PROG, description="Check the executable derivations and report each result.")
    parser.add_argument("-k", "--select", action="append", default=[], metavar="PATTERN",
                        help="claim id or substring of the id or title (case-insensitive); repeatable")
    parser.add_argument("-n", "--examples", type=_positive_int, default=DEFAULT_EXAMPLES, metavar="N",
                        help=f"Hypothesis examples per derivation (default: {DEFAULT_EXAMPLES})")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the catalogue as Markdown to PATH")
    source = parser.add_argument_group("derivations from elsewhere (instead of the project's)")
    source.add_argument("--module", action="append", default=[], metavar="DOTTED.NAME",
                        help="check every module-level Derivation of this module; repeatable")
    source.add_argument("--file", action="append", default=[], type=Path, metavar="PATH.py",
                        help="check every module-level Derivation of this Python file; repeatable")
    parser.add_argument("--figures", type=Path, metavar="DIR",
                        help="also draw the catalogue's figures into DIR (needs the [figures] extra: matplotlib)")
    parser.add_argument("-j", "--jobs", type=_positive_int, default=None, metavar="N",
                        help="check in N worker processes (default: one per core, at most 8; 1: in this process)")
    parser.add_argument("--list", action="store_true", help="list the selected ids and titles, check nothing")
    return parser


def load_module(name: str) -> list[Derivation]:
    """Derivations of an importable module.

    Raises:
        UsageError: when it cannot be imported or holds no derivation.
    """
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or name.startswith(f"{exc.name}."):
            raise UsageError(f"--module: no module named {name!r}") from None
        raise UsageError(f"--module {name}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise UsageError(f"--module {name}: {type(exc).__name__}: {_first_line(exc)}") from None
    return _nonempty(collect(module), name)


def load_file(path: Path) -> list[Derivation]:
    """Derivations of a Python file, imported as a fresh module.

    Raises:
        UsageError: when the file is missing, fails to import or holds no derivation.
    """
    if not path.is_file():
        raise UsageError(f"--file: no such file: {path}")
    name = f"_proofs_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--file: cannot import {path} (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UsageError(f"--file {path}: {type(exc).__name__}: {_first_line(exc)}") from None
    return _nonempty(collect(module), str(path))


def _nonempty(derivations: list[Derivation], where: str) -> list[Derivation]:
    """The derivations, or a UsageError when there are none."""
    if not derivations:
        raise UsageError(f"no Derivation found in {where}")
    return derivations


def _first_line(exc: BaseException) -> str:
    """First line of an exception's message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def select(derivations: Sequence[Derivation], patterns: Sequence[str]) -> list[Derivation]:
    """Derivations matching any pattern (all when there is none).

    A pattern matches a derivation whose claim id equals it, or whose
    ``"id title"`` contains it, ignoring case.

    Raises:
        UsageError: when a pattern matches nothing.
    """
    if not patterns:
        return list(derivations)
    chosen: list[Derivation] = []
    for pattern in patterns:
        p = pattern.lower()
        hits = [d for d in derivations if d.claim.lower() == p or p in f"{d.claim} {d.title}".lower()]
        if not hits:
            raise UsageError(f"--select {pattern!r} matches no derivation")
        chosen += [d for d in hits if all(d is not c for c in chosen)]
    return [d for d in derivations if any(d is c for c in chosen)]


def _crashed(derivation: Derivation, exc: Exception, seconds: float) -> Report:
    """A FAILED report for a checker crash (never a traceback)."""
    return Report(
        claim=derivation.claim, title=derivation.title, statement=derivation.statement,
        steps=tuple(derivation.steps), relation=derivation.relation, expect=derivation.expect,
        n_examples=0, max_error=float("nan"), status="FAILED", failure=None,
        reason=f"checker error: {type(exc).__name__}: {_first_line(exc)}", seconds=seconds,
    )


def run(derivations: Sequence[Derivation], examples: int, jobs: int = 1,
        source: tuple | None = None) -> list[Report]:
    """Checks each derivation, printing its table row (in order) as soon as it is done.

    With ``jobs > 1`` the checks run in that many fresh worker processes; each worker
    rebuilds the same list of derivations from ``source`` (see :func:`_derivations_of`)
    and sends back its reports, which get the parent's steps back (functions do not pickle).
    """
    print(Report.header())
    print("-" * len(Report.header()))
    reports = []
    if jobs > 1 and len(derivations) > 1 and source is not None:
        context = multiprocessing.get_context("spawn")  # jax is not fork-safe
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(derivations)), mp_context=context,
                                                    initializer=_worker_init, initargs=(source,)) as pool:
            done = pool.map(_worker_check, range(len(derivations)), [examples] * len(derivations))
            for derivation, report in zip(derivations, done):
                report = dataclasses.replace(report, steps=tuple(derivation.steps))
                print(report.row(), flush=True)
                reports.append(report)
        return reports
    for derivation in derivations:
        reports.append(_check(derivation, examples))
        print(reports[-1].row(), flush=True)
    return reports


def _check(derivation: Derivation, examples: int) -> Report:
    """The derivation's report; a checker crash is a FAILED report, never an exception."""
    start = time.perf_counter()
    try:
        return derivation.check(max_examples=examples)
    except Exception as exc:
        return _crashed(derivation, exc, time.perf_counter() - start)


_WORKER_DERIVATIONS: list[Derivation] = []


def _worker_init(source: tuple) -> None:
    """In a worker process: build the parent's list of derivations."""
    _WORKER_DERIVATIONS[:] = _derivations_of(*source)


def _worker_check(index: int, examples: int) -> Report:
    """In a worker process: the report of derivation ``index``, without its (unpicklable) steps."""
    return dataclasses.replace(_check(_WORKER_DERIVATIONS[index], examples), steps=())


def _derivations_of(modules: Sequence[str], files: Sequence[Path], patterns: Sequence[str]) -> list[Derivation]:
    """The selected derivations of the given modules and files, or of the project when there are none."""
    if modules or files:
        derivations = [d for name in modules for d in load_module(name)]
        derivations += [d for path in files for d in load_file(path)]
    else:
        from proofs import all_derivations

        derivations = all_derivations()
    return select(derivations, patterns)


def default_jobs() -> int:
    """One worker per core the process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def summary(reports: Sequence[Report], seconds: float) -> str:
    """E.g. ``4 derivations: 3 proved, 1 refuted as declared, 0 FAILED in 12.3 s``."""
    counts = {s: sum(r.status == s for r in reports) for s in ("proved", "refuted as declared", "FAILED")}
    noun = "derivation" if len(reports) == 1 else "derivations"
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    return f"{len(reports)} {noun}: {parts} in {seconds:.1f} s"


def markdown(reports: Sequence[Report], project: bool = True) -> str:
    """The catalogue document (``project``), or a user's derivations one after another."""
    if not project:
        return "# Derivations\n\n" + "\n".join(r.markdown() for r in reports)
    from proofs import all_claims

    return document.render(reports, all_claims())


def accounting(derivations: Sequence[Derivation]) -> str:
    """What the catalogue holds besides the checked derivations: pending and not checkable claims."""
    from proofs import all_claims

    claims = all_claims()
    proved = {d.claim for d in derivations}
    lines = [f"claims with derivations: {len([c for c in claims if c.id in proved])} of {len(claims)} declared"]
    missing = [c.id for c in claims if c.id not in proved]
    if missing:
        lines.append(f"declared without a derivation: {', '.join(missing)}")
    if PENDING:
        lines.append(f"pending (proofs not written yet): {', '.join(sorted(PENDING))}")
    for item in NOT_CHECKABLE:
        lines.append(f"not checkable (seeds/{item.seed}): {item.wording} — {item.reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 FAILED, 2 usage)."""
    try:
        args = build_parser().parse_args(argv)
        if args.markdown is not None and not args.markdown.parent.is_dir():
            raise UsageError(f"--markdown: no such directory: {args.markdown.parent}")
        project = not (args.module or args.file)
        if args.figures is not None and not args.figures.parent.is_dir():
            raise UsageError(f"--figures: no such directory: {args.figures.parent}")
        if args.figures is not None and not project:
            raise UsageError("--figures draws the project's catalogue; it cannot be combined with --module/--file")
        source = (tuple(args.module), tuple(path.resolve() for path in args.file), tuple(args.select))
        derivations = _derivations_of(*source)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0

    if args.list:
        for d in derivations:
            print(f"{d.claim:<6} {d.kind:<14} {d.title}")
        return 0

    if args.figures is not None:
        from proofs import figures

        try:
            written = figures.draw_all(args.figures)
        except figures.MissingDependency as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} figures to {args.figures}")

    start = time.perf_counter()
    reports = run(derivations, args.examples, args.jobs or default_jobs(), source)
    for report in reports:
        if not report.ok:
            print("\n" + report.text())
    print("\n" + summary(reports, time.perf_counter() - start))
    if project and not args.select:
        print(accounting(derivations))
    if args.markdown is not None:
        try:
            args.markdown.write_text(markdown(reports, project), encoding="utf-8")
        except OSError as exc:
            print(f"{PROG}: error: --markdown: {exc}", file=sys.stderr)
            return 2
    return 1 if any(not r.ok for r in reports) else 0
