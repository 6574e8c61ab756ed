"""The template library (agent_library.yaml), part of the configuration format: seed 001's ten
starting points as ready flows.

A flow says `use_template: <name>` and overrides what it needs; the loader (schemas.agent_loader)
expands it before validation, so a template flow is checked like any other.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

LIBRARY_FILE = Path(__file__).with_name("agent_library.yaml")


@functools.cache
def _load() -> dict[str, dict[str, Any]]:
    data = YAML(typ="safe").load(LIBRARY_FILE.read_text())
    templates: dict[str, dict[str, Any]] = data["templates"]
    return templates


def library() -> dict[str, dict[str, Any]]:
    """name -> {title, description, flow}; callers get the shared copy and must not change it."""
    return _load()


def titles() -> dict[str, str]:
    return {name: str(t["title"]) for name, t in _load().items()}
