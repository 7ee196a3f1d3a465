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
