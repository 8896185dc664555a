"""The files that describe the course's environments agree with each other and install.

- pyproject.toml, environment.yml (conda) and binder/requirements.txt (Binder)
  name the same packages with the same floors;
- every pip line of environment.yml and binder/ passes pip's own requirements
  parser (conda hands an environment's pip section to pip as a requirements
  file, so a line pip refuses, such as ``--no-deps``, breaks ``conda env create``
  and every Binder launch);
- the constraint files pin versions inside the floors, and the floors file pins
  exactly the floors (CI installs it, so every floor is a tested version);
- the supported Python range is stated once in pyproject.toml and repeated
  truthfully in the README, the classifiers, environment.yml and CI;
- the licences are where the README says.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
CONDA_TO_PYPI = {"pytorch": "torch"}
SUPPORTED = ["3.11", "3.12", "3.13"]


def _canonical(name: str) -> str:
    name = name.lower().replace("_", "-")
    return CONDA_TO_PYPI.get(name, name)


def _split(requirement: str) -> tuple[str, str]:
    """``"numpy>=1.24"`` -> ``("numpy", ">=1.24")``, specifiers sorted (conda and PyPI spellings)."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    spec = ",".join(sorted(s.strip() for s in m.group(2).split(",") if s.strip()))
    return _canonical(m.group(1)), spec


def _floors() -> dict[str, str]:
    """Runtime requirements of the package: name -> specifier."""
    return dict(_split(r) for r in PROJECT["dependencies"])


def _extras(*names: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:  # an extra that this edition lacks (`instructor` in the student edition) adds nothing
        out.update(_split(r) for r in PROJECT["optional-dependencies"].get(name, []))
    return out


def _conda() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _conda_packages() -> dict[str, str]:
    deps = [d for d in _conda()["dependencies"] if isinstance(d, str)]
    return dict(_split(d) for d in deps if _split(d)[0] not in ("python", "pip"))


def _conda_pip_lines() -> list[str]:
    return next(d["pip"] for d in _conda()["dependencies"] if isinstance(d, dict))


_PARSE = """
import json, sys
from pip._internal.network.session import PipSession
from pip._internal.req.req_file import parse_requirements
print(json.dumps([r.requirement for r in parse_requirements(sys.argv[1], session=PipSession())]))
"""


def _pip_parse(lines: list[str], tmp_path: Path, name: str = "requirements.txt") -> list[str]:
    """Parse ``lines`` as a requirements file with pip's own parser; return the requirement strings.

    pip refuses (``InstallationError`` "Invalid requirement", ``RequirementsFileParseError``)
    exactly what ``pip install -r`` would refuse; that error is raised here as ``ValueError``.
    The parser runs in a child process: importing pip's internals can import the
    standard library's ``distutils`` (Debian's Python does), after which setuptools
    (imported by nbgrader in later tests) refuses to load in this process.
    """
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-c", _PARSE, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"pip refuses {path.name}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout)


def _binder_lines() -> list[str]:
    return (ROOT / "binder" / "requirements.txt").read_text().splitlines()


# --- pip's parser -------------------------------------------------------------------------

def test_the_parser_refuses_what_pip_refuses(tmp_path):
    """The check below can fail: pip refuses --no-deps in a requirements file (the bug this guards)."""
    with pytest.raises(ValueError, match="no-deps|Invalid requirement"):
        _pip_parse(["--no-deps", "-e ."], tmp_path)


def test_conda_pip_section_passes_pips_parser(tmp_path):
    requirements = _pip_parse(_conda_pip_lines(), tmp_path)
    assert requirements, "environment.yml's pip section installs nothing"


def test_binder_requirements_pass_pips_parser(tmp_path):
    requirements = _pip_parse(_binder_lines(), tmp_path)
    assert requirements


# --- the same packages everywhere ---------------------------------------------------------

def test_conda_has_the_package_book_and_labs_with_the_same_floors():
    expected = _floors() | _extras("book", "labs")
    assert _conda_packages() == expected


def test_conda_installs_the_package_itself_with_its_test_tools(tmp_path):
    requirements = _pip_parse(_conda_pip_lines(), tmp_path)
    assert any(re.fullmatch(r"\.(\[.*test.*\])?", r) for r in requirements), requirements


def test_binder_is_slim_and_uses_the_same_torch_floor(tmp_path):
    requirements = _pip_parse(_binder_lines(), tmp_path)
    names = {_split(r)[0]: _split(r)[1] for r in requirements if r != "."}
    assert "." in requirements, "binder/requirements.txt must install the package itself"
    assert names["torch"] == _floors()["torch"]
    assert names["jupyterlab"] == _extras("labs")["jupyterlab"]
    book_and_tests = set(_extras("book", "test")) - {"jupyterlab"}
    assert not book_and_tests & set(names), "Binder's environment is for the labs: no book or test tools"
    assert any("download.pytorch.org/whl/cpu" in line for line in _binder_lines()), "CPU build of torch"
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert runtime.removeprefix("python-") in SUPPORTED


# --- constraints --------------------------------------------------------------------------

def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            pins[_canonical(req.name)] = Version(spec.version)
    return pins


@pytest.mark.parametrize("name", ["constraints.txt", "constraints-floors.txt"])
def test_constraints_respect_the_floors(name):
    floors = _floors() | _extras("book", "labs", "test", "instructor")
    for package, version in _pins(ROOT / name).items():
        if package in floors:
            assert version in SpecifierSet(floors[package]), f"{name}: {package} {version} violates {floors[package]}"


def test_the_floors_file_pins_exactly_the_floors():
    """CI installs constraints-floors.txt: each runtime floor is then a version a test has installed."""
    pins = _pins(ROOT / "constraints-floors.txt")
    for package, spec in _floors().items():
        lower = [s.version for s in SpecifierSet(spec) if s.operator == ">="]
        assert lower, f"{package} has no floor"
        assert pins.get(package) == Version(lower[0]), f"constraints-floors.txt must pin {package}=={lower[0]}"


# --- the Python range ---------------------------------------------------------------------

def test_one_python_range_everywhere():
    spec = SpecifierSet(PROJECT["requires-python"])
    assert [v for v in SUPPORTED if Version(v) in spec] == SUPPORTED
    assert Version("3.10") not in spec and Version("3.14") not in spec, "claim only what CI tests"
    classifiers = {c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if re.search(r"Python :: 3\.\d+$", c)}
    assert classifiers == set(SUPPORTED)
    readme = (ROOT / "README.md").read_text()
    assert f"Python {SUPPORTED[0]} to {SUPPORTED[-1]}" in readme
    conda_python = next(d for d in _conda()["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert SpecifierSet(conda_python.removeprefix("python")) == spec
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"python{SUPPORTED[-1]}" in ci or f"versions/{SUPPORTED[-1]}" in ci, "CI tests the highest version"


def test_version_is_the_same_in_pyproject_and_package():
    init = (ROOT / "course_utils" / "__init__.py").read_text()
    assert f'__version__ = "{PROJECT["version"]}"' in init


# --- licences -----------------------------------------------------------------------------

def test_licences_are_stated():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "LICENSE" in PROJECT["license-files"]
    assert "MIT" in PROJECT["license"]
    requires = PYPROJECT["build-system"]["requires"]
    setuptools = next(Requirement(r) for r in requires if r.startswith("setuptools"))
    assert Version("77") in setuptools.specifier and Version("76") not in setuptools.specifier, \
        "SPDX licence expressions need setuptools 77 or newer"
    book = (ROOT / "LICENSE-BOOK.md").read_text()
    assert "CC BY 4.0" in book
    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert "CC BY 4.0" in footer and "MIT" in footer
    readme = (ROOT / "README.md").read_text()
    assert "CC BY 4.0" in readme and "MIT" in readme
