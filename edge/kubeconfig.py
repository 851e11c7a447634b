"""Kubeconfigs for users: one file, a context per cluster the user may reach.

Routing is by path prefix: cluster `prod` is `https://<edge>/k8s/prod`. kubectl, helm and
client-go append API paths to a server URL with a path, WebSocket and SPDY upgrades included,
and one certificate serves every cluster (SNI routing would need a name per cluster).
"""

from __future__ import annotations

import base64
from urllib.parse import quote

import yaml

from edge.ca import IssuedCertificate

CLUSTER_PREFIX = "/k8s/"


def cluster_path(cluster: str) -> str:
    return CLUSTER_PREFIX + quote(cluster, safe="")


def cluster_url(edge_url: str, cluster: str) -> str:
    return edge_url.rstrip("/") + cluster_path(cluster)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build(
    *,
    user: str,
    edge_url: str,
    ca_pem: bytes,
    cert: IssuedCertificate,
    clusters: list[str],
    current: str | None = None,
) -> dict:
    """The kubeconfig as a dict: a cluster and context per name, one user entry."""
    user_entry = f"kubegate-{user}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": f"kubegate-{name}",
                "cluster": {
                    "server": cluster_url(edge_url, name),
                    "certificate-authority-data": _b64(ca_pem),
                },
            }
            for name in clusters
        ],
        "users": [
            {
                "name": user_entry,
                "user": {
                    "client-certificate-data": _b64(cert.cert_pem),
                    "client-key-data": _b64(cert.key_pem),
                },
            }
        ],
        "contexts": [
            {"name": name, "context": {"cluster": f"kubegate-{name}", "user": user_entry}}
            for name in clusters
        ],
        "current-context": current or (clusters[0] if clusters else ""),
    }


def render(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)
