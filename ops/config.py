"""Where the CLI finds a running kubegate: the admin config file and the data directory.

`kubegate up` writes `<data-dir>/admin.conf` (admin API URL, CA, admin token, NATS URL) and
`<data-dir>/ready.json` once serving. Other commands take `--config FILE`, or the
`KUBEGATE_CONFIG` variable, or `--data-dir D` (then `D/admin.conf`), in that order.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from domain.errors import KubegateError

DEFAULT_DATA_DIR = Path(os.environ.get("KUBEGATE_DATA_DIR", "~/.kubegate")).expanduser()
ADMIN_CONF = "admin.conf"
READY_JSON = "ready.json"


class ConfigError(KubegateError):
    """No usable admin config: the message says where we looked and what to do."""


@dataclass(frozen=True)
class AdminConfig:
    admin_url: str
    token: str
    ca_file: str
    nats_url: str = ""
    nats_creds: str = ""
    edge_url: str = ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: Path) -> AdminConfig:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"no admin config at {path}: is `kubegate up` running?") from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"unreadable admin config {path}: {exc}") from exc
        try:
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            config = cls(**known)
        except TypeError as exc:
            raise ConfigError(f"admin config {path} lacks a field: {exc}") from exc
        ca = Path(config.ca_file)
        if not ca.is_absolute():
            config = cls(**{**known, "ca_file": str(path.parent / ca)})
        return config


def resolve(config: str | None, data_dir: str | None) -> Path:
    """The admin config path from flags and environment, in precedence order."""
    if config:
        return Path(config).expanduser()
    env = os.environ.get("KUBEGATE_CONFIG")
    if env:
        return Path(env).expanduser()
    if data_dir:
        return Path(data_dir).expanduser() / ADMIN_CONF
    return DEFAULT_DATA_DIR / ADMIN_CONF
