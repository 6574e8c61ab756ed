"""The ingress's OpenAPI document, generated from the app: `python -m services.ingress.openapi [--check]`.

services/ingress/openapi.json is committed beside the code, as the query API's; a contract test fails
when it differs from what the code generates, so the published document is the one served at
/openapi.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.common.settings import KafkaSettings
from services.ingress.app import create_app
from services.ingress.publisher import Publisher
from services.ingress.settings import IngressHttpSettings, IngressSettings

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = Path(__file__).resolve().parent / "openapi.json"


def document() -> dict[str, Any]:
    settings = IngressSettings(ingress=IngressHttpSettings(endpoints_file=Path("unused.yaml")))
    return create_app(settings, {}, Publisher(KafkaSettings())).openapi()


def text() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 if the document is out of date.")
    args = parser.parse_args(argv)
    wanted = text()
    current = DOCUMENT.read_text() if DOCUMENT.exists() else None
    if current == wanted:
        print("up to date")
        return 0
    if args.check:
        print(f"out of date: {DOCUMENT.relative_to(ROOT)}; run `python -m services.ingress.openapi`", file=sys.stderr)
        return 1
    DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
    DOCUMENT.write_text(wanted)
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
