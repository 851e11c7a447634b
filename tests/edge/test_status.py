"""Status bodies carry what client-go needs to recognise them and print the message."""

from __future__ import annotations

import json

from edge.status import status_body


def test_status_has_the_fields_client_go_checks() -> None:
    body = json.loads(
        status_body(403, "no grant allows bob", name="web", group="apps", kind="deployments")
    )
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["reason"] == "Forbidden"
    assert body["code"] == 403 and body["message"] == "no grant allows bob"
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    assert "details" not in json.loads(status_body(503, "not ready"))
