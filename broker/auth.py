"""Least-privilege NATS users for kubegate's roles, for the embedded server.

Roles and what they may do:
- `controlplane`: everything (writes commands, runs projections, manages streams).
- `edge`: send request frames to any cluster, receive frames addressed to edges, publish
  activity events (kubectl requests, recordings, break-glass use), follow KG_CONTROL.
- `relay` of cluster C: take request frames of C only (`kg.req.C`), receive frames addressed to
  C's relays only, send frames to edges, publish service-account and relay events, follow
  KG_CONTROL through consumers. It cannot write a grant, a user or a switch.

Credentials are user/password pairs in a small JSON file (`{"user": .., "password": ..}`),
given to `kubegate relay --creds FILE`; an external NATS in operator mode can be used with its
own `.creds` files instead (`broker.connection.connect` tells them apart).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from broker import subjects
from broker.errors import BrokerError


class CredentialsError(BrokerError):
    """A credentials file that cannot be read."""


@dataclass(frozen=True)
class Credential:
    user: str
    password: str
    role: str
    cluster: str = ""

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        return path


def new_credential(role: str, cluster: str = "") -> Credential:
    suffix = f"-{subjects.token(cluster)}" if cluster else ""
    return Credential(
        user=f"kg-{role}{suffix}-{secrets.token_hex(3)}",
        password=secrets.token_urlsafe(24),
        role=role,
        cluster=cluster,
    )


def connect_options(creds: str) -> dict[str, Any]:
    """`nats.connect` options for a credentials file: kubegate JSON or a NATS `.creds` file."""
    path = Path(creds).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise CredentialsError(f"cannot read NATS credentials {path}: {exc.strerror}") from exc
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            return {"user": data["user"], "password": data["password"]}
        except (ValueError, KeyError) as exc:
            raise CredentialsError(f"{path} is not a kubegate credentials file") from exc
    return {"user_credentials": str(path)}


_JS_READ_CONTROL = [
    "$JS.API.INFO",
    f"$JS.API.STREAM.INFO.{subjects.CONTROL_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{subjects.CONTROL_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{subjects.CONTROL_STREAM}.>",
    f"$JS.API.CONSUMER.MSG.NEXT.{subjects.CONTROL_STREAM}.>",
    f"$JS.API.CONSUMER.DELETE.{subjects.CONTROL_STREAM}.>",
    f"$JS.API.CONSUMER.INFO.{subjects.CONTROL_STREAM}.>",
    f"$JS.API.DIRECT.GET.{subjects.CONTROL_STREAM}",
    f"$JS.API.DIRECT.GET.{subjects.CONTROL_STREAM}.>",
]


def permissions(cred: Credential) -> dict[str, Any]:
    """The NATS `permissions` block of one role."""
    if cred.role == "controlplane":
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    if cred.role == "edge":
        return {
            "publish": {
                "allow": [
                    "kg.req.>",
                    "kg.s.r.>",
                    f"{subjects.ACTIVITY_PREFIX}.>",
                    *_JS_READ_CONTROL,
                    "_INBOX.>",
                ]
            },
            "subscribe": {"allow": [subjects.EDGES_WILDCARD, "_INBOX.>"]},
        }
    if cred.role == "relay":
        c = subjects.token(cred.cluster)
        return {
            "publish": {
                "allow": [
                    subjects.EDGES_WILDCARD,
                    f"{subjects.CONTROL_PREFIX}.serviceaccount.>",
                    f"{subjects.CONTROL_PREFIX}.cluster.{c}",
                    *_JS_READ_CONTROL,
                    "_INBOX.>",
                ]
            },
            "subscribe": {
                "allow": [
                    subjects.request_subject(cred.cluster),
                    subjects.cluster_relays_wildcard(cred.cluster),
                    "_INBOX.>",
                ]
            },
        }
    raise ValueError(f"unknown role {cred.role!r}")


def authorization_block(creds: list[Credential]) -> str:
    """A nats-server config `authorization` block (JSON is valid NATS config syntax)."""
    users = [{"user": c.user, "password": c.password, "permissions": permissions(c)} for c in creds]
    return "authorization: " + json.dumps({"users": users}, indent=2)


class UserBook:
    """The embedded server's users, kept in `<data-dir>/nats-users.json` across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users: list[Credential] = []
        if path.exists():
            try:
                self.users = [Credential(**u) for u in json.loads(path.read_text())]
            except (ValueError, TypeError) as exc:
                raise CredentialsError(f"unreadable NATS user book {path}: {exc}") from exc

    def find(self, role: str, cluster: str = "") -> Credential | None:
        for cred in self.users:
            if cred.role == role and cred.cluster == cluster:
                return cred
        return None

    def ensure(self, role: str, cluster: str = "") -> tuple[Credential, bool]:
        """The credential of a role (and cluster), made if missing; True if it was made."""
        found = self.find(role, cluster)
        if found is not None:
            return found, False
        made = new_credential(role, cluster)
        self.users.append(made)
        self.save()
        return made, True

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump([asdict(u) for u in self.users], f, indent=1)

    def authorization(self) -> str:
        return authorization_block(self.users)
