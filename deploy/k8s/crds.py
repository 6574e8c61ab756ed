"""JSON Schemas for the custom resources we deploy, cut from the operators' published CRDs.

    python -m deploy.k8s.crds --source "kedacore/keda@<commit>" keda.sh_scaledobjects.yaml ...

kubernetes-validate ships schemas for the built-in kinds only. For KEDA, Strimzi and the Prometheus
Operator we keep each CRD's `openAPIV3Schema` (served versions) as JSON in deploy/k8s/crd-schemas/,
made strict the way `kubectl apply --validate=strict` is: an object that lists its properties rejects
others, unless the CRD says `x-kubernetes-preserve-unknown-fields`. Descriptions and CEL rules are
dropped (jsonschema cannot run CEL); `x-kubernetes-int-or-string` becomes integer-or-string.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

SCHEMA_DIR = Path(__file__).resolve().parent / "crd-schemas"
_DROP = {"description", "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys"}


def schema_file(kind: str, api_version: str) -> Path:
    """`ScaledObject`, `keda.sh/v1alpha1` -> crd-schemas/scaledobject-keda.sh-v1alpha1.json."""
    group, _, version = api_version.rpartition("/")
    return SCHEMA_DIR / f"{kind.lower()}-{group or 'core'}-{version}.json"


def strict(node: Any) -> Any:
    """The CRD schema as a strict JSON Schema (see the module docstring)."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items() if key not in _DROP}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def extract(crd: dict[str, Any], source: str) -> dict[Path, dict[str, Any]]:
    spec = crd["spec"]
    kind, group = spec["names"]["kind"], spec["group"]
    out: dict[Path, dict[str, Any]] = {}
    for version in spec["versions"]:
        if not version.get("served", False):
            continue
        schema = strict(version["schema"]["openAPIV3Schema"])
        schema["$comment"] = f"{kind} {group}/{version['name']}, from the CRD in {source}; strict, no descriptions."
        out[schema_file(kind, f"{group}/{version['name']}")] = schema
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="Where the CRDs came from: owner/repo@commit:path.")
    parser.add_argument("crds", nargs="+", type=Path, help="CustomResourceDefinition YAML files.")
    args = parser.parse_args(argv)
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path in args.crds:
        for doc in YAML(typ="safe").load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for target, schema in extract(doc, args.source).items():
                target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(f"wrote {target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
