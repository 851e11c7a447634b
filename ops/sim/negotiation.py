"""Content negotiation: what the client accepts (JSON, YAML, Table) and sends (JSON, YAML, patch
types), with the 406/415 answers kube-apiserver gives for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.sim import status

PROTOBUF = "application/vnd.kubernetes.protobuf"


@dataclass(frozen=True)
class Accept:
    table: bool = False
    yaml: bool = False


def _params(part: str) -> tuple[str, dict[str, str]]:
    pieces = [p.strip() for p in part.split(";")]
    params = {}
    for p in pieces[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip()] = v.strip()
    return pieces[0].lower(), params


def parse_accept(header: str) -> Accept:
    """The first acceptable representation in the client's order of preference."""
    if not header.strip():
        return Accept()
    for part in header.split(","):
        media, params = _params(part)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            if params.get("v") in ("v1", "v1beta1") and media in ("application/json", "*/*"):
                return Accept(table=True)
            continue
        if params.get("as"):
            continue  # other transformations (PartialObjectMetadata...) fall through to the next
        if media in ("application/json", "*/*", "application/*", "application/json-patch+json"):
            return Accept()
        if media == "application/yaml":
            return Accept(yaml=True)
    if any(_params(p)[0] in (PROTOBUF, "application/json") for p in header.split(",")):
        return Accept()
    raise status.not_acceptable(header)


def body_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def check_body_type(content_type: str, allowed: tuple[str, ...]) -> str:
    media = body_type(content_type) or "application/json"
    if media not in allowed:
        raise status.unsupported_media_type(media)
    return media
