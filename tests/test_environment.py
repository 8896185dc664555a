"""pyproject.toml and environment.yml describe the same environment."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch": "torch", "playwright-python": "playwright"}


def _split(requirement: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    name = m.group(1).lower().replace("_", "-")
    spec = ",".join(sorted(s.strip() for s in m.group(2).split(",") if s.strip()))
    return CONDA_TO_PYPI.get(name, name), spec


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    return dict(_split(d) for d in deps if _split(d)[0] not in ("python", "pip"))


def test_same_packages_and_floors():
    assert conda_requirements() == pyproject_requirements()


def test_environment_installs_the_package_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip


def test_constraints_respect_the_floors():
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    floors = pyproject_requirements()
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, spec = _split(line)
        if name in floors:
            version = Version(spec.removeprefix("=="))
            assert version in SpecifierSet(floors[name]), f"{name} {version} violates {floors[name]}"
