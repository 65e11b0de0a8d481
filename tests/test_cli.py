"""Tests of ``python -m proofs`` (proofs.cli.main) and of the registry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import proofs
from proofs.cli import main

USER_FILE = textwrap.dedent('''
    import jax.numpy as jnp
    from hypothesis import strategies as st
    from vfe.derivation import Derivation, Step

    x = {"x": st.floats(-3.0, 3.0)}

    good = Derivation(
        claim="U1", title="Square of a sum", statement=r"(x+1)^2 = x^2 + 2x + 1", variables=x,
        steps=[Step(r"(x+1)^2", "definition", lambda x: (x + 1) ** 2),
               Step(r"x^2 + 2x + 1", "expand", lambda x: x**2 + 2 * x + 1)])

    bad = Derivation(
        claim="U2", title="Wrong expansion", statement=r"(x+1)^2 = x^2 + 1", variables=x,
        steps=[Step(r"(x+1)^2", "definition", lambda x: (x + 1) ** 2),
               Step(r"x^2 + 1", "forgot the cross term", lambda x: x**2 + 1)])
''')


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_proofs.py"
    path.write_text(USER_FILE)
    return path


def test_file_with_a_wrong_derivation_exits_1(user_file, capsys):
    assert main(["--file", str(user_file), "-n", "10", "-j", "1"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("U")}
    assert "proved" in rows["U1"] and "Square of a sum" in rows["U1"]
    assert "FAILED" in rows["U2"]
    assert "step 2: = x^2 + 1" in out and "counterexample: x = " in out
    assert "2 derivations: 1 proved, 0 refuted as declared, 1 FAILED in" in out


def test_select_correct_one_exits_0(user_file, capsys):
    assert main(["--file", str(user_file), "-n", "5", "-k", "u1"]) == 0
    out = capsys.readouterr().out
    assert "U1" in out and "U2" not in out
    assert "1 derivation: 1 proved" in out


def test_select_by_title_substring(user_file, capsys):
    assert main(["--file", str(user_file), "--list", "-k", "expansion"]) == 0
    assert capsys.readouterr().out.split() == ["U2", "identity", "Wrong", "expansion"]


def test_list_lists_ids_without_checking(user_file, capsys):
    assert main(["--file", str(user_file), "--list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == ["U1", "U2"]
    assert "proved" not in out


def test_markdown_catalogue(user_file, tmp_path, capsys):
    md = tmp_path / "catalogue.md"
    assert main(["--file", str(user_file), "-n", "5", "-j", "1", "--markdown", str(md)]) == 1
    text = md.read_text()
    assert "### U1: Square of a sum" in text
    assert "1. $(x+1)^2$ — definition" in text and "2. $= x^2 + 2x + 1$ — expand" in text
    assert "**Result:** proved on" in text and "FAILED" in text


def test_worker_processes_report_what_one_process_reports(user_file, tmp_path, capsys, monkeypatch):
    """-j 2 checks in two spawned workers (each re-imports the file): same rows, statuses,
    counterexample and document as -j 1. This process cannot check anything during the -j 2 run."""
    import proofs.cli

    one, two = tmp_path / "one.md", tmp_path / "two.md"
    assert main(["--file", str(user_file), "-n", "10", "-j", "1", "--markdown", str(one)]) == 1
    rows_one = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("U")]
    monkeypatch.setattr(proofs.cli, "_check", lambda *a: pytest.fail("checked in the parent process"))
    assert main(["--file", str(user_file), "-n", "10", "-j", "2", "--markdown", str(two)]) == 1
    out = capsys.readouterr().out
    assert [line.split("  ")[0] for line in out.splitlines() if line.startswith("U")] == rows_one
    assert "counterexample: x = " in out
    assert two.read_text() == one.read_text()


def test_module_option(user_file, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(user_file.parent))
    monkeypatch.delitem(sys.modules, "my_proofs", raising=False)
    assert main(["--module", "my_proofs", "-n", "5", "-k", "U1"]) == 0
    assert "U1" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["-n", "-3"], "positive integer"),
    (["-n", "many"], "positive integer"),
    (["--module", "no_such_module_xyz"], "no module named"),
    (["--file", "no/such/file.py"], "no such file"),
    (["--select", "ZZZ-nothing"], "matches no derivation"),
    (["--bogus"], "unrecognized arguments"),
    (["--markdown", "/no/such/dir/out.md"], "no such directory"),
])
def test_bad_options_exit_2_with_one_line(argv, message, user_file, capsys):
    assert main(["--file", str(user_file), *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("python -m proofs: error:")
    assert "Traceback" not in captured.err + captured.out


def test_file_raising_at_import_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('oops')\n")
    assert main(["--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError: oops" in err and "Traceback" not in err


def test_file_without_derivations_exits_2(tmp_path, capsys):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    assert main(["--file", str(path)]) == 2
    assert "no Derivation found" in capsys.readouterr().err


def test_exception_in_a_step_is_a_failed_row(tmp_path, capsys):
    path = tmp_path / "raising.py"
    path.write_text(USER_FILE + textwrap.dedent('''
        def boom(x):
            raise KeyError("planted")

        raising = Derivation(claim="U3", title="Raises", statement="", variables=x,
                             steps=[Step("x", "", lambda x: x), Step("y", "", boom)])
    '''))
    assert main(["--file", str(path), "-n", "5", "-k", "U3"]) == 1
    out, err = capsys.readouterr()
    assert "FAILED" in out and "KeyError" in out and "Traceback" not in out + err


def test_registry_skips_missing_topics_only(tmp_path, monkeypatch, user_file):
    assert isinstance(proofs.all_derivations(), list)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_proofs", raising=False)
    found = proofs.all_derivations(("no_such_topic_xyz", "my_proofs"))
    assert [d.claim for d in found] == ["U1", "U2"]
    (tmp_path / "broken_topic.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError):
        proofs.all_derivations(("broken_topic",))


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "proofs", "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0
    assert "--markdown" in result.stdout and "--select" in result.stdout


def test_figures_are_drawn_into_a_directory(tmp_path, capsys):
    from proofs.figures import FIGURES

    out = tmp_path / "figures"
    assert main(["--figures", str(out), "-k", "A1", "-n", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(name for name, _ in FIGURES.values())
    assert f"wrote {len(FIGURES)} figures" in capsys.readouterr().out


def test_figures_without_matplotlib_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from proofs import figures

    def missing():
        raise figures.MissingDependency("--figures needs matplotlib: pip install -e '.[figures]'")

    monkeypatch.setattr(figures, "_pyplot", missing)
    assert main(["--figures", str(tmp_path), "-k", "A1", "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib" in err


def test_figures_with_user_derivations_is_a_usage_error(user_file, tmp_path, capsys):
    assert main(["--file", str(user_file), "--figures", str(tmp_path)]) == 2
    assert "--figures" in capsys.readouterr().err
