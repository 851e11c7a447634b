"""Regenerate ops/sim/protobuf_fields.json: field numbers of the Kubernetes protobuf messages
the simulator decodes (request bodies kubectl's and helm's typed clients send as protobuf).

Usage: python -m ops.sim.devtools.gen_protobuf_fields API_CHECKOUT APIMACHINERY_CHECKOUT
(checkouts of k8s.io/api and k8s.io/apimachinery). Only the wire facts are kept: for each
message, field number -> (name, kind, type), where kind is "opt", "rep" or "map".
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PROTOS = {
    "k8s.io.api.core.v1": "core/v1/generated.proto",
    "k8s.io.api.apps.v1": "apps/v1/generated.proto",
    "k8s.io.api.rbac.v1": "rbac/v1/generated.proto",
    "k8s.io.api.authorization.v1": "authorization/v1/generated.proto",
    "k8s.io.api.authentication.v1": "authentication/v1/generated.proto",
    "k8s.io.api.autoscaling.v1": "autoscaling/v1/generated.proto",
}
MACHINERY = {
    "k8s.io.apimachinery.pkg.apis.meta.v1": "pkg/apis/meta/v1/generated.proto",
    "k8s.io.apimachinery.pkg.runtime": "pkg/runtime/generated.proto",
    "k8s.io.apimachinery.pkg.util.intstr": "pkg/util/intstr/generated.proto",
    "k8s.io.apimachinery.pkg.api.resource": "pkg/api/resource/generated.proto",
}
SCALARS = {"string", "int32", "int64", "bool", "bytes", "double", "float", "uint32", "uint64"}
FIELD = re.compile(r"^\s*(optional|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)")
MAP = re.compile(r"^\s*map<\s*(\w+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)")
MESSAGE = re.compile(r"^message\s+(\w+)\s*\{")


def _qualify(package: str, typ: str) -> str:
    if typ in SCALARS:
        return typ
    if typ.startswith("."):
        return typ[1:]
    return f"{package}.{typ}"


def parse(package: str, text: str) -> dict[str, dict[str, list[str]]]:
    messages: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if m := MESSAGE.match(line):
            current = messages.setdefault(f"{package}.{m.group(1)}", {})
        elif line.startswith("}"):
            current = None
        elif current is not None:
            if m := MAP.match(line):
                current[m.group(4)] = [m.group(3), "map", _qualify(package, m.group(2))]
            elif m := FIELD.match(line):
                kind = "rep" if m.group(1) == "repeated" else "opt"
                current[m.group(4)] = [m.group(3), kind, _qualify(package, m.group(2))]
    return messages


def main() -> None:
    api, machinery = Path(sys.argv[1]), Path(sys.argv[2])
    messages: dict[str, dict[str, list[str]]] = {}
    for package, rel in PROTOS.items():
        messages.update(parse(package, (api / rel).read_text()))
    for package, rel in MACHINERY.items():
        messages.update(parse(package, (machinery / rel).read_text()))
    out = Path(__file__).resolve().parent.parent / "protobuf_fields.json"
    out.write_text(json.dumps(messages, separators=(",", ":"), sort_keys=True))
    print(out, len(messages))


if __name__ == "__main__":
    main()
