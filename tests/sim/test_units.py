"""Pure pieces of the simulator, without a server: selectors, request attributes, patches,
server-side apply bookkeeping, RBAC rule matching, the AGE column, protobuf decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.sim import apply, naming, patches, protobuf, requestinfo, selectors
from ops.sim.authn import UserInfo
from ops.sim.errors import StatusError
from ops.sim.rbac import Attributes, rule_allows

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"


def test_label_selectors() -> None:
    sel = selectors.parse_label_selector("app=web,tier in (a, b),!canary,env!=prod")
    assert sel.matches({"app": "web", "tier": "a"})
    assert not sel.matches({"app": "web", "tier": "c"})
    assert not sel.matches({"app": "web", "tier": "a", "canary": "1"})
    assert not sel.matches({"app": "web", "tier": "b", "env": "prod"})
    assert selectors.parse_label_selector("").matches({})
    with pytest.raises(StatusError) as bad:
        selectors.parse_label_selector("a=b=c")
    assert bad.value.code == 400


def test_field_selectors_are_per_resource() -> None:
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    assert selectors.parse_field_selector("status.phase=Running", "/pods").matches(pod)
    assert not selectors.parse_field_selector("status.phase!=Running", "/pods").matches(pod)
    with pytest.raises(StatusError) as bad:
        selectors.parse_field_selector("status.phase=Running", "/configmaps")
    assert bad.value.message == "field label not supported: status.phase"


def test_request_info() -> None:
    info = requestinfo.parse("GET", "/apis/apps/v1/namespaces/ns/deployments/web/scale", {})
    assert (info.verb, info.group, info.namespace, info.resource, info.name, info.subresource) == (
        "get",
        "apps",
        "ns",
        "deployments",
        "web",
        "scale",
    )
    assert requestinfo.parse("GET", "/api/v1/pods", {"watch": "1"}).verb == "watch"
    assert requestinfo.parse("DELETE", "/api/v1/namespaces/ns/pods", {}).verb == "deletecollection"
    ns = requestinfo.parse("PUT", "/api/v1/namespaces/ns/finalize", {})
    assert (ns.resource, ns.name, ns.subresource, ns.namespace) == (
        "namespaces",
        "ns",
        "finalize",
        "ns",
    )
    pinned = requestinfo.parse(
        "GET", "/api/v1/namespaces/ns/pods", {"fieldSelector": "metadata.name=p"}
    )
    assert (pinned.verb, pinned.name, pinned.authz_name) == ("list", "", "p")
    assert not requestinfo.parse("GET", "/version", {}).is_resource


def test_strategic_merge_patch_merges_containers_by_name() -> None:
    live = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                        {"name": "b", "image": "b:1"},
                    ]
                }
            }
        }
    }
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "env": [{"name": "Y", "value": "2"}]},
                        {"name": "b", "$patch": "delete"},
                    ],
                }
            }
        }
    }
    out = patches.strategic_merge_patch(live, patch, DEPLOYMENT)
    (only,) = out["spec"]["template"]["spec"]["containers"]
    assert only["image"] == "a:1" and [e["name"] for e in only["env"]] == ["X", "Y"]
    assert live["spec"]["template"]["spec"]["containers"][1]["name"] == "b"  # input untouched


def test_merge_and_json_patch() -> None:
    assert patches.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {
        "a": {"c": 2, "d": 3}
    }
    assert patches.json_patch({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}]) == {
        "a": [1, 2]
    }
    with pytest.raises(StatusError) as bad:
        patches.json_patch({"a": 1}, [{"op": "replace", "path": "/missing/x", "value": 2}])
    assert bad.value.code == 422


def test_apply_owns_leaves_and_items_and_round_trips_fields_v1() -> None:
    config = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"a": "1"}},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    paths = apply.field_set(config, DEPLOYMENT)
    item = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"c"}')
    assert {
        ("f:metadata", "f:labels", "f:a"),
        ("f:spec", "f:replicas"),
        item,
        (*item, "f:image"),
    } <= paths
    assert apply.from_fields_v1(apply.to_fields_v1(paths)) == paths
    assert (
        apply.to_fields_v1(paths)["f:spec"]["f:template"]["f:spec"]["f:containers"][
            'k:{"name":"c"}'
        ]["."]
        == {}
    )


@given(
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.text("xyz", max_size=3), max_size=5)
)
def test_apply_of_labels_then_empty_removes_them(labels: dict[str, str]) -> None:
    cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": labels}}
    first = apply.apply(
        None, cfg, "io.k8s.api.core.v1.ConfigMap", "m", False, "v1", "t", "configmaps", "c"
    )
    assert first["metadata"].get("labels", {}) == labels
    second = apply.apply(
        first,
        {**cfg, "metadata": {"name": "c"}},
        "io.k8s.api.core.v1.ConfigMap",
        "m",
        False,
        "v1",
        "t",
        "configmaps",
        "c",
    )
    assert not second["metadata"].get("labels")


def test_rbac_rule_matching() -> None:
    user = UserInfo("u")
    rule = {
        "apiGroups": [""],
        "resources": ["pods", "*/log"],
        "verbs": ["get"],
        "resourceNames": ["p"],
    }
    assert rule_allows(rule, Attributes(user, "get", True, "ns", "", "pods", "", "p"))
    assert not rule_allows(rule, Attributes(user, "get", True, "ns", "", "pods", "", "q"))
    assert rule_allows(
        {**rule, "resourceNames": []}, Attributes(user, "get", True, "ns", "", "pods", "log", "")
    )
    assert not rule_allows(
        {**rule, "resourceNames": []}, Attributes(user, "get", True, "ns", "", "pods", "exec", "")
    )
    assert rule_allows(
        {"nonResourceURLs": ["/apis/*"], "verbs": ["get"]},
        Attributes(user, "get", False, path="/apis/apps"),
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (50 * 3600, "2d2h"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert naming.human_duration(seconds) == text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def test_protobuf_envelope_decodes_to_json() -> None:
    label = _field(1, b"team") + _field(2, b"blue")
    meta = _field(1, b"cfg") + _field(11, label)
    configmap = _field(1, meta) + _field(2, _field(1, b"k") + _field(2, b"v"))
    type_meta = _field(1, b"v1") + _field(2, b"ConfigMap")
    body = protobuf.MAGIC + _field(1, type_meta) + _field(2, configmap)
    assert protobuf.decode(body) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"team": "blue"}},
        "data": {"k": "v"},
    }
    with pytest.raises(StatusError) as bad:
        protobuf.decode(b"k8s\x00\x0a\xff")
    assert bad.value.code == 400
