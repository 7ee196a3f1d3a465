"""The Lambda layer's requirements stay in step with pyproject.toml."""

from __future__ import annotations

import tomllib

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
    import subprocess
    import sys

    script = (
        "import sys; sys.path[:0] = ['functions/submit', 'functions/poll', 'functions/collect'];"
        "import submit_handler, poll_handler, collect_handler;"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('moto', 'werkzeug', 'openai', 'yaml')"
        " or m.startswith(('batchdrop.emulator', 'batchdrop.local')));"
        "print(leaked); sys.exit(1 if leaked else 0)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
