"""The Lambda layer is what the functions run and nothing else; its requirements stay in step with pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from testsupport import REPO


def test_every_layer_requirement_is_a_project_dependency_with_the_same_specifier() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {Requirement(text).name: Requirement(text) for text in project["dependencies"]}
    layer_lines = (REPO / "layers/common/requirements.txt").read_text().splitlines()
    layer = [Requirement(text) for text in layer_lines if text.strip() and not text.startswith("#")]
    assert layer, "the layer requires nothing?"
    for requirement in layer:
        assert requirement.name in declared, requirement.name
        assert requirement.specifier == declared[requirement.name].specifier, requirement.name
        assert requirement.extras == declared[requirement.name].extras, requirement.name


def test_the_layer_leaves_out_what_only_the_cli_needs() -> None:
    layer = (REPO / "layers/common/requirements.txt").read_text()
    for local_only in ("moto", "werkzeug", "openai"):
        assert local_only not in layer


def test_the_handlers_import_nothing_the_layer_leaves_out() -> None:
    script = (
        "import sys; sys.path[:0] = ['functions/submit', 'functions/poll', 'functions/collect'];"
        "import submit_handler, poll_handler, collect_handler;"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('moto', 'werkzeug', 'openai', 'yaml')"
        " or m.startswith(('batchdrop_tools.emulator', 'batchdrop_tools.local')));"
        "print(leaked); sys.exit(1 if leaked else 0)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _build_layer_package(artifacts: Path) -> Path:
    make = shutil.which("make")
    assert make, "make is needed to build the layer"
    subprocess.run(
        [
            make,
            "--no-print-directory",
            "-C",
            str(REPO / "layers/common"),
            "layer-package",
            f"ARTIFACTS_DIR={artifacts}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return artifacts / "python"


def test_the_built_layer_holds_no_emulator_local_stack_or_cli(tmp_path: Path) -> None:
    # Given the layer's package part built as `sam build` builds it
    layer = _build_layer_package(tmp_path)
    # Then it is the batchdrop package and nothing of the tools beside it
    assert sorted(p.name for p in layer.iterdir()) == ["batchdrop"]
    files = {p.relative_to(layer).as_posix() for p in layer.rglob("*") if p.is_file()}
    assert files, "the layer is empty"
    for tool in ("emulator", "local", "cli", "jobs", "samples", "batchdrop_tools", "moto", "werkzeug"):
        assert not [f for f in files if tool in Path(f).parts or Path(f).stem == tool], tool
    compiled = {f for f in files if Path(f).parent.name == "__pycache__" and f.endswith(".pyc")}
    assert all(f.endswith(".py") for f in files - compiled), sorted(
        f for f in files - compiled if not f.endswith(".py")
    )
    # and every module comes compiled (Lambda's /opt is read-only: no cold start compiles it again)
    for source in (f for f in files if f.endswith(".py")):
        stem = Path(source)
        assert any(c.startswith(f"{stem.parent.as_posix()}/__pycache__/{stem.stem}.") for c in compiled), source


def test_the_built_layer_holds_only_what_the_functions_import(tmp_path: Path) -> None:
    # Given the built layer, and the three handlers imported from it alone
    layer = _build_layer_package(tmp_path)
    script = (
        f"import sys; sys.path[:0] = [{str(layer)!r}, 'functions/submit', 'functions/poll', 'functions/collect'];"
        "import submit_handler, poll_handler, collect_handler;"
        "print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items()"
        " if n.split('.')[0] == 'batchdrop' and getattr(m, '__file__', None))))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {Path(line).resolve() for line in result.stdout.splitlines()}
    # Then every module of the layer is one the functions load, and they load it from the layer
    shipped = {p.resolve() for p in (layer / "batchdrop").rglob("*.py")}
    assert imported <= shipped, sorted(str(p) for p in imported - shipped)
    assert shipped == imported, sorted(str(p.relative_to(layer)) for p in shipped - imported)
