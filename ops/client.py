"""A small synchronous client of the admin API for the CLI (stdlib HTTP, kubegate's CA)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from typing import Any

from domain.errors import KubegateError
from ops.config import AdminConfig


class ApiCallError(KubegateError):
    """The admin API refused or failed a call; `message` is one readable line."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class AdminClient:
    def __init__(self, config: AdminConfig, timeout: float = 30.0) -> None:
        self.config = config
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=config.ca_file)

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, idempotency: str = ""
    ) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.config.admin_url.rstrip("/") + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.config.token}",
                "Content-Type": "application/json",
                "Idempotency-Key": idempotency or uuid.uuid4().hex,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
                raise ApiCallError(exc.code, err.get("error", str(exc)), err.get("code", ""))
            except ValueError:
                raise ApiCallError(exc.code, f"HTTP {exc.code}: {raw[:200]!r}") from None
        except urllib.error.URLError as exc:
            raise ApiCallError(
                0, f"cannot reach the kubegate admin API at {self.config.admin_url}: {exc.reason}"
            ) from exc
        except (TimeoutError, OSError) as exc:
            raise ApiCallError(
                0, f"cannot reach the kubegate admin API at {self.config.admin_url}: {exc}"
            ) from exc
        return json.loads(payload) if payload else {}

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call("POST", path, body or {})

    def get(self, path: str) -> dict[str, Any]:
        return self.call("GET", path)
