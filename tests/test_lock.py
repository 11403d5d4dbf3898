"""The lock files: exact pins that satisfy pyproject.toml, and the venv running the tests
installed from them (scripts/bootstrap.sh's default)."""

from __future__ import annotations

import os
import tomllib
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{name}: {line!r} is not an exact pin"
        if req.marker is None or req.marker.evaluate():
            pins[canonicalize_name(req.name)] = spec.version
    return pins


@pytest.mark.parametrize("lock,extras", [("requirements.lock", ()),
                                         ("requirements-test.lock", ("test", "lint"))])
def test_locks_pin_every_dependency_within_its_bounds(lock, extras):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    extras = list(extras)
    while extras:  # an extra may name others of this project ("vidablate[cluster]")
        for text in project["optional-dependencies"][extras.pop()]:
            req = Requirement(text)
            if canonicalize_name(req.name) == canonicalize_name(project["name"]):
                extras += sorted(req.extras)
            else:
                wanted.append(text)
    pins = _pins(lock)
    env = default_environment()
    for text in wanted:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock} has no pin for {text}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{lock}: {name}=={pins[name]} is outside {text}"


def test_runtime_lock_is_within_the_test_lock():
    runtime, full = _pins("requirements.lock"), _pins("requirements-test.lock")
    assert {k: full.get(k) for k in runtime} == runtime


@pytest.mark.skipif(bool(os.environ.get("VIDABLATE_UNLOCKED")), reason="unlocked install")
def test_this_venv_is_the_locked_one():
    differ = {}
    for name, version in _pins("requirements-test.lock").items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            differ[name] = (version, None)
            continue
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"installed versions differ from requirements-test.lock: {differ}"
