"""The query API's OpenAPI document, committed beside the code (`make schemas` writes it; a contract test
fails when the routes or models change without it).

    python -m services.api.openapi            # write services/api/openapi.json
    python -m services.api.openapi --check    # exit 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from services.api.app import create_app
from services.api.settings import ApiSettings

PATH = Path(__file__).resolve().parent / "openapi.json"


def document() -> dict[str, Any]:
    return create_app(ApiSettings.model_validate({"database": {"url": "sqlite://"}})).openapi()


def render() -> bytes:
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api.openapi", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = parser.parse_args(argv)
    fresh = render()
    if args.check:
        if not PATH.exists() or PATH.read_bytes() != fresh:
            print(f"{PATH} is out of date: run `python -m services.api.openapi`", file=sys.stderr)
            return 1
        return 0
    PATH.write_bytes(fresh)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
