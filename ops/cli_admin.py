"""Admin commands of the CLI: they call the admin API of a running kubegate (see ops.config).

Each command prints one line on success (or the data asked for) and, on failure, one line on
stderr with a non-zero exit: 1 for a refusal, 2 for usage, 3 when kubegate is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domain.errors import KubegateError
from ops.client import AdminClient, ApiCallError
from ops.config import AdminConfig, ConfigError, resolve

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """Seconds in `90s`, `30m`, `2h`, `1h30m`, `7d`; a bare number is seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    pos, total = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or total <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 2h, 1h30m, 7d)")
    return total


def parse_time(text: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. {text}Z)")
    return moment.isoformat()


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"labels are key=value, not {text!r}")
    return key, value


def _client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(AdminConfig.load(resolve(args.config, args.data_dir)))


def _done(result: dict[str, Any], what: str) -> int:
    if result.get("duplicate"):
        print(f"{what} (already done)")
    elif result.get("changed", True):
        print(what)
    else:
        print(f"{what} (no change)")
    return 0


# --- commands -----------------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace) -> int:
    result = _client(args).post(
        "/v1/users",
        {
            "name": args.name,
            "groups": args.group or [],
            "display_name": args.display_name or "",
            "email": args.email or "",
        },
    )
    groups = f" in {', '.join(args.group)}" if args.group else ""
    return _done(result, f"user {args.name} added{groups}")


def cmd_user_switch(args: argparse.Namespace) -> int:
    result = _client(args).post(
        f"/v1/users/{args.name}/{args.action}", {"reason": args.reason or ""}
    )
    return _done(result, f"user {args.name} {args.action}d")


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from argon2 import PasswordHasher

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass(f"new password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise KubegateError("passwords differ")
    if len(password) < 8:
        raise KubegateError("a password needs at least 8 characters")
    hashed = PasswordHasher().hash(password)
    result = _client(args).post(f"/v1/users/{args.name}/password-hash", {"password_hash": hashed})
    return _done(result, f"password of {args.name} set")


def cmd_group_add(args: argparse.Namespace) -> int:
    result = _client(args).post(
        "/v1/groups", {"name": args.name, "description": args.description or ""}
    )
    return _done(result, f"group {args.name} added")


def cmd_group_member(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "add-member":
        result = client.post(f"/v1/groups/{args.group}/members", {"user": args.user})
        return _done(result, f"{args.user} added to {args.group}")
    result = client.call("DELETE", f"/v1/groups/{args.group}/members/{args.user}")
    return _done(result, f"{args.user} removed from {args.group}")


def cmd_cluster_add(args: argparse.Namespace) -> int:
    result = _client(args).post(
        "/v1/clusters", {"name": args.name, "labels": dict(args.label or [])}
    )
    return _done(result, f"cluster {args.name} registered")


def cmd_cluster_label(args: argparse.Namespace) -> int:
    result = _client(args).call(
        "PUT", f"/v1/clusters/{args.name}/labels", {"labels": dict(args.label)}
    )
    return _done(result, f"labels of cluster {args.name} set")


def cmd_cluster_creds(args: argparse.Namespace) -> int:
    cred = _client(args).post(f"/v1/clusters/{args.name}/relay-credentials")
    out = Path(args.output)
    out.write_text(json.dumps(cred) + "\n")
    out.chmod(0o600)
    print(f"NATS credentials for the relays of {args.name} written to {out} (user {cred['user']})")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    if bool(args.user) == bool(args.group):
        raise KubegateError("name exactly one of --user or --group")
    body: dict[str, Any] = {
        "subject_kind": "user" if args.user else "group",
        "subject": args.user or args.group,
        "role": args.role,
        "clusters": args.cluster or [],
        "cluster_selector": dict(args.cluster_selector or []),
        "namespaces": args.namespace or [],
        "mode": args.mode,
        "reason": args.reason or "",
    }
    if args.id:
        body["id"] = args.id
    if args.not_before:
        body["not_before"] = args.not_before
    if args.expires_at:
        body["expires_at"] = args.expires_at
    if args.for_:
        body["for_seconds"] = args.for_
    if args.rules:
        body["rules"] = json.loads(Path(args.rules).read_text())
    result = _client(args).post("/v1/grants", body)
    until = f" until {result['expires_at']}" if result.get("expires_at") else ""
    return _done(result, f"grant {result['grant_id']} issued{until}")


def cmd_revoke(args: argparse.Namespace) -> int:
    client = _client(args)
    if bool(args.user) == bool(args.grant):
        raise KubegateError("name exactly one of --user or --grant")
    if args.user:
        result = client.post(f"/v1/users/{args.user}/revoke", {"reason": args.reason or ""})
        return _done(result, f"access of {args.user} revoked everywhere")
    result = client.call("DELETE", f"/v1/grants/{args.grant}", {"reason": args.reason or ""})
    return _done(result, f"grant {args.grant} revoked")


def _scope(args: argparse.Namespace) -> tuple[str, str]:
    named = [(s, getattr(args, s)) for s in ("cluster", "user", "group") if getattr(args, s)]
    if len(named) > 1:
        raise KubegateError("name at most one of --cluster, --user, --group")
    return named[0] if named else ("global", "")


def cmd_kubectl(args: argparse.Namespace) -> int:
    scope, target = _scope(args)
    result = _client(args).post(
        f"/v1/kubectl/{args.action}",
        {"scope": scope, "target": target, "reason": args.reason or ""},
    )
    where = "everywhere" if scope == "global" else f"for {scope} {target}"
    return _done(result, f"kubectl {args.action}d {where}")


SWITCH_WORDS = {
    "browser-only": "kubeconfigs refused, browser shell only",
    "console-session-required": "kubeconfigs work only during a live console session",
}


def cmd_switch(args: argparse.Namespace) -> int:
    scope, target = _scope(args)
    enabled = not args.off
    result = _client(args).post(
        f"/v1/switches/{args.switch}",
        {"scope": scope, "target": target, "reason": args.reason or "", "enabled": enabled},
    )
    where = "everywhere" if scope == "global" else f"for {scope} {target}"
    state = "on" if enabled else "off"
    return _done(result, f"{args.switch} {state} {where} ({SWITCH_WORDS[args.switch]})")


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    result = _client(args).post(
        "/v1/kubeconfigs",
        {"user": args.user, "clusters": args.cluster or [], "ttl_seconds": args.ttl},
    )
    text = result["kubeconfig"]
    if args.output and args.output != "-":
        out = Path(args.output)
        out.write_text(text)
        out.chmod(0o600)
        print(
            f"kubeconfig for {args.user} ({', '.join(result['clusters'])}) written to {out}; "
            f"certificate {result['serial']} valid until {result['not_after']}"
        )
    else:
        sys.stdout.write(text)
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def print_table(columns: list[str], rows: list[list[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = min(max(widths[i], len(v)), 80)
    fmt = "  ".join(f"{{:{w}.{w}}}" for w in widths)
    print(fmt.format(*columns).rstrip())
    for row in cells:
        print(fmt.format(*row).rstrip())
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def cmd_breakglass_request(args: argparse.Namespace) -> int:
    result = _client(args).post(
        "/v1/breakglass",
        {
            "cluster": args.cluster,
            "reason": args.reason,
            "duration_seconds": args.for_,
            "role": args.role,
            "namespaces": args.namespace or [],
        },
    )
    who = ", ".join(result.get("approvers", [])) or "nobody yet"
    print(f"break-glass request {result['id']} is pending; approvers: {who}")
    return 0


def cmd_breakglass_decide(args: argparse.Namespace) -> int:
    result = _client(args).post(
        f"/v1/breakglass/{args.id}/{args.action}", {"reason": args.reason or ""}
    )
    if args.action == "approve":
        how = " (self-approved)" if result.get("self_approved") else ""
        until = f" until {result['expires_at']}" if result.get("expires_at") else ""
        print(f"break-glass request {args.id} approved{how}: grant {result['grant_id']}{until}")
    else:
        print(f"break-glass request {args.id} denied")
    return 0


def cmd_breakglass_list(args: argparse.Namespace) -> int:
    requests = _client(args).get("/v1/breakglass")["requests"]
    if args.json:
        for r in requests:
            print(json.dumps(r))
        return 0
    columns = ["id", "user", "cluster", "role", "status", "approver", "requested_at", "reason"]
    print_table(columns, [[r[c] for c in columns] for r in requests])
    return 0


def cmd_policy_show(args: argparse.Namespace) -> int:
    found = _client(args).get(f"/v1/policy/{args.user}")
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found["known"]:
        print(f"{args.user}: not a kubegate user")
        return 0
    groups = ", ".join(found["local_groups"] + [f"{g} (idp)" for g in found["idp_groups"]])
    print(f"{found['user']}: {found['status']}; groups: {groups or 'none'}")
    if found.get("live_console_session"):
        print(f"  live console session {found['live_console_session']}")
    for c in found["clusters"]:
        flags = ["sensitive"] if c["sensitive"] else []
        flags += ["kubeconfig ok" if c["kubeconfig_usable"] else "no kubeconfig use"]
        flags += ["browser ok" if c["browser_usable"] else "no browser use"]
        print(f"  cluster {c['cluster']} ({', '.join(flags)})")
        for g in c["grants"]:
            ns = ", ".join(g["namespaces"]) or "all namespaces"
            until = f" until {g['expires_at']}" if g.get("expires_at") else ""
            note = f" - {g['note']}" if g.get("note") else ""
            print(
                f"    grant {g['grant_id']}: {g['role']} in {ns} via {g['source']} "
                f"[{g['status']}, {g['effect']}]{until}{note}"
            )
        for sw in c["switches"]:
            print(
                f"    {sw['kind']} {sw['applies']}" + (f": {sw['reason']}" if sw["reason"] else "")
            )
        for req in c["requirements"]:
            print(f"    needs: {req}")
    return 0


def cmd_settings_set(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    for key, raw in args.setting:
        if raw.lower() in ("true", "false"):
            values[key] = raw.lower() == "true"
        elif raw.isdigit():
            values[key] = int(raw)
        else:
            values[key] = raw
    result = _client(args).post("/v1/settings", {"settings": values})
    return _done(result, "settings changed")


def cmd_audit_sql(args: argparse.Namespace) -> int:
    result = _client(args).post("/v1/audit/sql", {"sql": args.sql})
    if args.json:
        columns = result["columns"]
        for row in result["rows"]:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    else:
        print_table(result["columns"], result["rows"])
    return 0


def cmd_events_tail(args: argparse.Namespace) -> int:
    from ops.events_tail import tail

    config = AdminConfig.load(resolve(args.config, args.data_dir))
    if not config.nats_url:
        raise ConfigError("the admin config names no NATS URL")
    return asyncio.run(
        tail(
            config.nats_url,
            config.nats_creds or None,
            streams=args.stream,
            last=args.last,
            follow=args.follow,
            as_json=args.json,
        )
    )


# --- parser -------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="admin config file (default: $KUBEGATE_CONFIG)")
    p.add_argument("--data-dir", help="a kubegate data directory (uses its admin.conf)")


def _leaf(sub: Any, name: str, fn: Callable[[argparse.Namespace], int], **kw: Any) -> Any:
    p = sub.add_parser(name, **kw)
    _common(p)
    p.set_defaults(run=guarded(fn))
    return p


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn kubegate errors into one line on stderr and an exit code; never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ApiCallError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 3 if exc.status in (0, 502, 503, 504) else 1
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
        except KubegateError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


def add_parsers(subparsers: Any) -> None:
    user = subparsers.add_parser("user", help="local users").add_subparsers(
        dest="user_command", metavar="ACTION", required=True
    )
    p = _leaf(user, "add", cmd_user_add, help="register a local user")
    p.add_argument("name")
    p.add_argument("--group", action="append", help="initial group (repeatable)")
    p.add_argument("--display-name")
    p.add_argument("--email")
    for action in ("disable", "enable"):
        p = _leaf(user, action, cmd_user_switch, help=f"{action} a user")
        p.add_argument("name")
        p.add_argument("--reason")
        p.set_defaults(action=action)
    p = _leaf(user, "passwd", cmd_user_passwd, help="set a local user's password")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true")

    group = subparsers.add_parser("group", help="groups and members").add_subparsers(
        dest="group_command", metavar="ACTION", required=True
    )
    p = _leaf(group, "add", cmd_group_add, help="create a group")
    p.add_argument("name")
    p.add_argument("--description")
    for action in ("add-member", "remove-member"):
        p = _leaf(group, action, cmd_group_member, help=f"{action.replace('-', ' ')}")
        p.add_argument("group")
        p.add_argument("user")
        p.set_defaults(action=action)

    cluster = subparsers.add_parser("cluster", help="clusters").add_subparsers(
        dest="cluster_command", metavar="ACTION", required=True
    )
    p = _leaf(cluster, "add", cmd_cluster_add, help="register a cluster")
    p.add_argument("name")
    p.add_argument("--label", type=parse_label, action="append", metavar="K=V")
    p = _leaf(cluster, "creds", cmd_cluster_creds, help="NATS credentials for its relays")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True)
    p = _leaf(cluster, "label", cmd_cluster_label, help="replace a cluster's labels")
    p.add_argument("name")
    p.add_argument("label", type=parse_label, nargs="+", metavar="K=V")

    p = _leaf(subparsers, "grant", cmd_grant, help="grant access to a user or group")
    p.add_argument("--user")
    p.add_argument("--group")
    p.add_argument("--role", required=True, help="view, edit, admin, cluster-admin or custom")
    p.add_argument("--cluster", action="append", help="cluster name or * (repeatable)")
    p.add_argument("--cluster-selector", type=parse_label, action="append", metavar="K=V")
    p.add_argument("--namespace", action="append", help="namespace (repeatable; default all)")
    p.add_argument("--for", dest="for_", type=parse_duration, metavar="DURATION")
    p.add_argument("--expires-at", type=parse_time)
    p.add_argument("--not-before", type=parse_time)
    p.add_argument("--mode", choices=("cli", "browser", "both"), default="both")
    p.add_argument("--rules", help="JSON file with custom rules (role custom)")
    p.add_argument("--reason")
    p.add_argument("--id", help="grant id (default: generated)")

    p = _leaf(subparsers, "revoke", cmd_revoke, help="revoke a user's access or one grant")
    p.add_argument("--user")
    p.add_argument("--grant")
    p.add_argument("--reason")

    kubectl = subparsers.add_parser("kubectl", help="switch kubectl access").add_subparsers(
        dest="kubectl_command", metavar="ACTION", required=True
    )
    for action in ("disable", "enable"):
        p = _leaf(kubectl, action, cmd_kubectl, help=f"{action} kubectl access")
        p.add_argument("--cluster")
        p.add_argument("--user")
        p.add_argument("--group")
        p.add_argument("--reason")
        p.set_defaults(action=action)
    for switch, words in SWITCH_WORDS.items():
        p = _leaf(kubectl, switch, cmd_switch, help=f"{words} (--off to lift)")
        p.add_argument("--cluster")
        p.add_argument("--user")
        p.add_argument("--group")
        p.add_argument("--reason")
        p.add_argument("--off", action="store_true", help="lift the switch")
        p.set_defaults(switch=switch)

    p = _leaf(subparsers, "kubeconfig", cmd_kubeconfig, help="issue a kubeconfig for a user")
    p.add_argument("--user", required=True)
    p.add_argument("--cluster", action="append")
    p.add_argument("--ttl", type=parse_duration, default=8 * 3600, metavar="DURATION")
    p.add_argument("-o", "--output", default="-")

    glass = subparsers.add_parser("breakglass", help="emergency access to sensitive clusters")
    glass_sub = glass.add_subparsers(dest="breakglass_command", metavar="ACTION", required=True)
    p = _leaf(glass_sub, "request", cmd_breakglass_request, help="ask for emergency access")
    p.add_argument("--cluster", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--for", dest="for_", type=parse_duration, required=True, metavar="DURATION")
    p.add_argument("--role", default="cluster-admin")
    p.add_argument("--namespace", action="append")
    for action in ("approve", "deny"):
        p = _leaf(glass_sub, action, cmd_breakglass_decide, help=f"{action} a pending request")
        p.add_argument("id")
        p.add_argument("--reason", help="mandatory for a self-approval")
        p.set_defaults(action=action)
    p = _leaf(glass_sub, "list", cmd_breakglass_list, help="requests you may see")
    p.add_argument("--json", action="store_true")

    policy = subparsers.add_parser("policy", help="explain access")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    p = _leaf(policy_sub, "show", cmd_policy_show, help="what can a user do where, and why")
    p.add_argument("--user", required=True)
    p.add_argument("--json", action="store_true")

    settings = subparsers.add_parser("settings", help="fleet settings")
    settings_sub = settings.add_subparsers(dest="settings_command", metavar="ACTION", required=True)
    p = _leaf(settings_sub, "set", cmd_settings_set, help="change settings (key=value ...)")
    p.add_argument("setting", type=parse_label, nargs="+", metavar="KEY=VALUE")

    audit = subparsers.add_parser("audit", help="query the audit store").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True
    )
    p = _leaf(audit, "sql", cmd_audit_sql, help="run a read-only SQL query (DuckDB)")
    p.add_argument("sql")
    p.add_argument("--json", action="store_true", help="one JSON object per row")

    evts = subparsers.add_parser("events", help="read the event log").add_subparsers(
        dest="events_command", metavar="ACTION", required=True
    )
    p = _leaf(evts, "tail", cmd_events_tail, help="print the latest events")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--stream", choices=("control", "activity", "all"), default="all")
    p.add_argument("-n", "--last", type=int, default=20)

    p = _leaf(subparsers, "login", cmd_login, help="log in as a user (a console session)")
    p.add_argument("--user", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--print-token", action="store_true", help="print the token, store nothing")
    p.add_argument("--server", help="admin API URL (default: the admin config's)")
    p.add_argument("--ca-file", help="CA of the admin API (default: the admin config's)")
    _leaf(subparsers, "logout", cmd_logout, help="end the session `kubegate login` stored")


# --- login and logout ---------------------------------------------------------------------

SESSION_CONF = "session.conf"


def _login_target(args: argparse.Namespace) -> tuple[AdminConfig, Path]:
    """Where to log in (the admin config's API and CA, or --server/--ca-file) and where the
    session file goes (next to the admin config)."""
    path = resolve(args.config, args.data_dir)
    server, ca_file = args.server, args.ca_file
    if not (server and ca_file):
        known = AdminConfig.load(path)
        server, ca_file = server or known.admin_url, ca_file or known.ca_file
    ca = str(Path(ca_file).expanduser().resolve())
    return AdminConfig(admin_url=server, token="", ca_file=ca), path.parent / SESSION_CONF


def cmd_login(args: argparse.Namespace) -> int:
    target, session_path = _login_target(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass(f"password for {args.user}: ")
    answer = AdminClient(target).post("/v1/login", {"user": args.user, "password": password})
    if args.print_token:
        print(answer["token"])
        return 0
    session = AdminConfig(admin_url=target.admin_url, token=answer["token"], ca_file=target.ca_file)
    session.save(session_path)
    print(
        f"logged in as {answer['user']} until {answer['expires_at']}; "
        f"use --config {session_path} (or KUBEGATE_CONFIG) to act as {answer['user']}"
    )
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    path = resolve(args.config, args.data_dir)
    session_path = path if path.name == SESSION_CONF else path.parent / SESSION_CONF
    if not session_path.exists():
        raise KubegateError(f"no session stored at {session_path}: not logged in")
    session = AdminConfig.load(session_path)
    try:
        answer = AdminClient(session).post("/v1/logout")
        print(f"logged out {answer['user']}")
    except ApiCallError as exc:
        if exc.status != 401:
            raise
        print("the session had already ended")
    session_path.unlink()
    return 0
