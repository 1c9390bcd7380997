"""One place per fact: where a fact is written twice (the README, pyproject.toml, the code), a test holds them equal."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

import moonxp
from moonxp.environment import dependencies, versions

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_readme_public_names_are_moonxp_all():
    paragraph = README.split("Public names (`moonxp.__all__`): ", 1)[1].split(". ", 1)[0]
    assert sorted(re.findall(r"`(\w+)`", paragraph)) == moonxp.__all__


def test_versions_list_the_packages_of_moonxps_own_metadata():
    try:
        requires = metadata.requires("moonxp")
    except metadata.PackageNotFoundError:
        pytest.skip("moonxp is not installed here (a source tree on PYTHONPATH)")
    assert "numpy" in dependencies() and "tqdm" in dependencies()
    assert len(dependencies()) == len([line for line in requires if "extra ==" not in line])
    assert set(dependencies()) <= set(versions())


def test_every_install_hint_names_an_extra_of_pyproject():
    extras = _pyproject()["project"]["optional-dependencies"]
    source = "\n".join(path.read_text() for path in (ROOT / "src" / "moonxp").rglob("*.py"))
    named = set(re.findall(r"install_hint\([\"'](.+?)[\"']\)", source))
    assert {"cuda12", "cluster", "parquet", "torch", "jax", "array-api-strict"} <= named
    assert named <= set(extras)


def test_readme_extras_are_extras_of_pyproject():
    extras = set(_pyproject()["project"]["optional-dependencies"])
    for group in re.findall(r'pip install -e "\.\[([\w,-]+)\]"', README):
        assert set(group.split(",")) <= extras, group


def test_ci_finds_the_readme_commands():
    """.ci/run runs the first README line with `pip install -e ".[test` and the first `.venv/bin/python -m moonxp`
    line without pytest: both must exist, and be the quick start's run and the contributor's tests."""
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line for line in README.splitlines() if not line.startswith("#")]
    assert "'pip install -e \".[test'" in ci and "'.venv/bin/python -m moonxp'" in ci
    tests = next(line for line in lines if 'pip install -e ".[test' in line)
    run = next(line for line in lines if ".venv/bin/python -m moonxp" in line and "pytest" not in line)
    assert "-m pytest" in tests and "pytest bench --benchmark-disable" in tests
    assert run.endswith(".venv/bin/python -m moonxp") and README.index(run) < README.index(tests)
