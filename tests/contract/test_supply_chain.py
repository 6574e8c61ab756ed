"""What the image is built from is pinned: the base by digest, every Python package by version and hash
(requirements/*.lock, installed with --require-hashes), the build backend too; the local broker of
docker-compose.yaml listens on loopback only."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def locked(name: str) -> dict[str, Version]:
    """name -> pinned version of a lock file; every pin must carry at least one sha256."""
    text = (LOCKS / name).read_text()
    pins: dict[str, Version] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.splitlines()[0]
        if first.startswith("#") or not first.strip():
            continue
        match = PIN.match(first)
        assert match, f"{name}: not a pinned requirement: {first!r}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), f"{name}: {match[1]} has no hash"
        pins[canonicalize_name(re.sub(r"\[.*\]", "", match[1]))] = Version(match[2])
    return pins


def test_every_runtime_dependency_is_locked_with_hashes_at_a_version_it_allows() -> None:
    """Run `make lock` when this fails after a dependency change in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked("runtime.lock")
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/runtime.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements/runtime.lock pins {req.name}=={pins[name]}, outside {req.specifier}: run `make lock`"
        )


def test_standardwebhooks_is_required_at_a_release_that_signs_the_body_as_sent() -> None:
    """Up to 1.1.0 `Webhook.sign` took a str and formatted it into the signed text: the dispatcher's
    bytes body was signed as b'...' (every webhook's signature wrong). 1.3.0 signs bytes as they are."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [spec] = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "standardwebhooks"]
    assert not spec.specifier.contains("1.1.0") and spec.specifier.contains("1.3.0")


def test_the_build_backend_is_locked_and_builds_pep_639_license_strings() -> None:
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    [setuptools] = [Requirement(r) for r in build["requires"] if Requirement(r).name == "setuptools"]
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0.0")
    assert locked("build.lock")["setuptools"] >= Version("77")
    assert "aiosmtpd" in locked("demo.lock")


def test_the_dockerfile_pins_its_base_by_digest_and_installs_only_locked_hashed_packages() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), base
    installs = re.findall(r"pip install ([^\n\\&]+)", dockerfile)
    assert installs
    for args in installs:
        from_lock = "--require-hashes" in args and "--no-deps" in args and ".lock" in args
        own_wheel = "--no-deps" in args and "--no-index" in args and "/wheels/postcall-" in args
        assert from_lock or own_wheel, f"an install that could resolve or skip hashes: pip install {args}"
    assert "--no-build-isolation" in dockerfile  # the wheel is built with the locked setuptools
    for lock in ("runtime.lock", "build.lock", "demo.lock"):
        assert f"requirements/{lock}" in dockerfile


def test_the_compose_broker_listens_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
