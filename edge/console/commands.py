"""What the browser shell runs: one `kubectl ...` or `helm ...` line, vetted before anything
starts. Pure: no I/O beyond resolving paths.

The shell runs commands server-side, so everything a command could do on the server is a
hole: reading server files (`-f /etc/passwd`), borrowing another identity (`--kubeconfig`,
`--token`, `--as`), reading our own credentials (`kubectl config view --raw`), listening on
server ports (`kubectl proxy`, `port-forward`), starting other programs (an editor, a helm
post-renderer or plugin, a kubectl plugin) or fetching URLs from inside our network. So a
line is parsed like a shell would (shlex), but nothing a shell adds is honoured:

- no pipes, redirects, lists, subshells, variables, command substitution, env assignments;
- the program is `kubectl` or `helm`, nothing else (the REPL's own builtins aside);
- no flag that picks a kubeconfig, context, cluster, user, server, credential or impersonation;
- no `kubectl config|proxy|port-forward|edit|plugin|kustomize`, no `--edit`, no `-k`;
  no `helm plugin`, no `--post-renderer`;
- every file argument (`-f`, `--from-file`, `--values`, `cp` local paths, chart paths, ...)
  resolves inside the session's scratch directory; URLs only when remote fetching is allowed.

Flags are read the way pflag reads them (`--name=value`, `--name value`, `-n value`,
`-nvalue`, bool clusters like `-Rf x`); tokens after a bare `--` are not flags to the program,
but still count as paths where the program takes paths positionally (`cp`, helm charts).
Before the subcommand only the program's known global flags may appear, so a value can never
be mistaken for the subcommand.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from edge.console.errors import CommandRefusedError

PROGRAMS = ("kubectl", "helm")

_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = set("|&;<>()")
_EXPANSIONS = set("$`")


@dataclass(frozen=True)
class ShellCommand:
    """A vetted command: `program` is `kubectl` or `helm`, `args` what follows it."""

    program: str
    args: tuple[str, ...]
    subcommand: str = ""


@dataclass(frozen=True)
class ShellRules:
    allow_remote: bool = False
    """Whether URLs may be fetched (kubectl -f https://..., helm repositories and remote
    charts). Off by default: the server would fetch from inside its own network."""


# --- tokenizing ----------------------------------------------------------------------------


def _shell_syntax(line: str) -> None:
    """Refuse what a shell would interpret; quoting is honoured as a shell does."""
    quote = ""
    escaped = False
    for ch in line:
        if escaped:
            escaped = False
            continue
        if quote == "'":
            if ch == "'":
                quote = ""
            continue
        if ch == "\\":
            escaped = True
            continue
        if quote == '"':
            if ch == '"':
                quote = ""
            elif ch in _EXPANSIONS:
                _refuse_expansion()
            continue
        if ch in "'\"":
            quote = ch
        elif ch in _EXPANSIONS:
            _refuse_expansion()
        elif ch in _OPERATORS:
            raise CommandRefusedError(
                f"refused: `{ch}` - pipes, redirects and command lists are not supported "
                "in the browser shell",
                "shell-syntax",
            )


def _refuse_expansion() -> None:
    raise CommandRefusedError(
        "refused: `$` and backticks - variables and command substitution are not supported "
        "(quote them with '...' if you mean them literally)",
        "shell-syntax",
    )


def tokenize(line: str) -> list[str]:
    """Split a line as a POSIX shell would, refusing shell features."""
    _shell_syntax(line)
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError as exc:
        raise CommandRefusedError(f"refused: cannot parse the line ({exc})", "syntax") from exc


# --- flags ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Flag:
    name: str  # long name without dashes, or a shorthand letter
    value: str | None  # None: given without a value in the same token
    index: int  # token index of the flag


def _flags(args: list[str], value_shorts: str) -> tuple[list[_Flag], list[int], int]:
    """The flags (with inline values) and positional token indexes of `args`, and the index
    of a bare `--` (len(args) if none). A short cluster stops at the first letter that takes
    a value (`value_shorts`); the rest of the token is its value."""
    flags: list[_Flag] = []
    positional: list[int] = []
    for i, tok in enumerate(args):
        if tok == "--":
            return flags, positional, i
        if tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            flags.append(_Flag(name, value if eq else None, i))
        elif tok.startswith("-") and len(tok) > 1:
            body = tok[1:]
            for j, letter in enumerate(body):
                if letter in value_shorts:
                    rest = body[j + 1 :]
                    if rest.startswith("="):
                        rest = rest[1:]
                    flags.append(_Flag(letter, rest if rest else None, i))
                    break
                flags.append(_Flag(letter, "", i))  # a bool in a cluster
        else:
            positional.append(i)
    return flags, positional, len(args)


def _value(args: list[str], flag: _Flag) -> str | None:
    """The flag's value: inline, else the next token."""
    if flag.value is not None:
        return flag.value
    nxt = flag.index + 1
    return args[nxt] if nxt < len(args) else None


def _value_indexes(args: list[str], flags: list[_Flag], takes_value: set[str]) -> set[int]:
    """Token indexes that are separate values of value-taking flags."""
    return {f.index + 1 for f in flags if f.name in takes_value and f.value is None}


def _is_url(value: str) -> bool:
    return "://" in value


def inside(scratch: Path, value: str) -> bool:
    """Whether a path argument stays inside `scratch` (relative paths are taken from it,
    symlinks followed)."""
    root = os.path.realpath(scratch)
    path = value if os.path.isabs(value) else os.path.join(root, value)
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def _check_path(
    value: str | None, what: str, scratch: Path, rules: ShellRules, stdin_ok: bool = False
) -> None:
    if value is None or value == "":
        return  # the program itself complains about a missing value
    if stdin_ok and value == "-":
        return
    if _is_url(value):
        if rules.allow_remote and value.split("://", 1)[0].lower() in ("https", "http", "oci"):
            return
        raise CommandRefusedError(
            f"refused: {what} {value!r} is a URL - fetching from the server is off; "
            "upload the file and name it instead",
            "remote",
        )
    if not inside(scratch, value):
        raise CommandRefusedError(
            f"refused: {what} {value!r} is outside your scratch directory - "
            "upload files to the shell and use relative names",
            "path",
        )


# --- kubectl -------------------------------------------------------------------------------

KUBECTL_GLOBAL_VALUE = {
    "as", "as-group", "as-uid", "cache-dir", "certificate-authority", "client-certificate",
    "client-key", "cluster", "context", "kubeconfig", "log-flush-frequency", "namespace", "n",
    "password", "profile", "profile-output", "request-timeout", "server", "s",
    "tls-server-name", "token", "user", "username", "v", "vmodule", "kuberc",
}  # fmt: skip
KUBECTL_GLOBAL_BOOL = {
    "disable-compression", "insecure-skip-tls-verify", "match-server-version",
    "warnings-as-errors", "help", "h",
}  # fmt: skip
KUBECTL_REFUSED_FLAGS = {
    "kubeconfig": "the shell always uses your session's kubeconfig",
    "context": "the shell's context is the cluster you picked",
    "cluster": "the shell's cluster is the one you picked",
    "user": "the shell always acts as you",
    "server": "the shell always goes through kubegate",
    "s": "the shell always goes through kubegate",
    "token": "the shell always acts as you",
    "username": "the shell always acts as you",
    "password": "the shell always acts as you",
    "as": "impersonation is not available",
    "as-group": "impersonation is not available",
    "as-uid": "impersonation is not available",
    "certificate-authority": "the shell always goes through kubegate",
    "client-certificate": "the shell always acts as you",
    "client-key": "the shell always acts as you",
    "tls-server-name": "the shell always goes through kubegate",
    "insecure-skip-tls-verify": "the shell always verifies kubegate",
    "cache-dir": "the shell keeps its own cache",
    "kuberc": "kubectl preferences files are not available",
    "edit": "editors do not run in the browser shell; upload a file and use apply -f",
    "kustomize": "kustomize is not available in the browser shell",
    "k": "kustomize is not available in the browser shell",
}
KUBECTL_REFUSED_SUBCOMMANDS = {
    "config": "your kubeconfig is managed by kubegate",
    "proxy": "it would listen on the server",
    "port-forward": "it would listen on the server; use kubectl port-forward from a "
    "kubeconfig if you may",
    "edit": "editors do not run in the browser shell; upload a file and use apply -f",
    "plugin": "plugins are not available",
    "kustomize": "kustomize is not available in the browser shell",
    "kuberc": "kubectl preferences files are not available",
}
KUBECTL_PATH_FLAGS = {
    "filename": "-f",
    "f": "-f",
    "from-file": "--from-file",
    "from-env-file": "--from-env-file",
    "env-file": "--env-file",
    "patch-file": "--patch-file",
    "output-directory": "--output-directory",
    "profile-output": "--profile-output",
    "cert": "--cert",
    "key": "--key",
    "custom": "--custom",
}
KUBECTL_VALUE_SHORTS = "nfkoslcpLver"
"""kubectl shorthands that take a value (-n, -f, -o, -l, -c, -p, -L, -v, -e, -r, ...)."""


def _kubectl(args: list[str], scratch: Path, rules: ShellRules) -> str:
    flags, positional, dashdash = _flags(args, KUBECTL_VALUE_SHORTS)
    # the subcommand: the first positional before which only known global flags appear
    values = _value_indexes(args, flags, KUBECTL_GLOBAL_VALUE)
    subcommand = ""
    sub_index = dashdash
    for i in positional:
        if i in values:
            continue
        subcommand, sub_index = args[i], i
        break
    for f in flags:
        if f.index >= sub_index:
            break
        if f.name not in KUBECTL_GLOBAL_VALUE and f.name not in KUBECTL_GLOBAL_BOOL:
            raise CommandRefusedError(
                f"refused: unknown option {args[f.index]!r} before the kubectl command - "
                "put options after it",
                "flag",
            )
    if subcommand in KUBECTL_REFUSED_SUBCOMMANDS:
        raise CommandRefusedError(
            f"refused: `kubectl {subcommand}` - {KUBECTL_REFUSED_SUBCOMMANDS[subcommand]}",
            "subcommand",
        )
    positional_words = [args[i] for i in positional if i not in values]
    binding = subcommand == "create" and any(
        w in ("rolebinding", "clusterrolebinding") for w in positional_words[1:2]
    )
    outputs: list[str] = []
    for f in flags:
        if f.name in ("user",) and binding:
            continue  # `kubectl create rolebinding --user`: the subject, not an identity
        if f.name in KUBECTL_REFUSED_FLAGS:
            shown = ("--" if len(f.name) > 1 else "-") + f.name
            raise CommandRefusedError(
                f"refused: `{shown}` - {KUBECTL_REFUSED_FLAGS[f.name]}", "flag"
            )
        if f.name in ("o", "output"):
            outputs.append(_value(args, f) or "")
    for f in flags:
        if f.name in KUBECTL_PATH_FLAGS:
            value = _value(args, f)
            if f.name in ("from-file",) and value and "=" in value:
                value = value.split("=", 1)[1]
            _check_path(value, KUBECTL_PATH_FLAGS[f.name], scratch, rules, stdin_ok=True)
        elif f.name == "template" and any("-file" in o for o in outputs):
            _check_path(_value(args, f), "--template", scratch, rules)
    for out in outputs:
        kind, eq, value = out.partition("=")
        if eq and kind.endswith("-file"):
            _check_path(value, f"-o {kind}", scratch, rules)
    if subcommand == "cp":
        _kubectl_cp_paths(args, positional, dashdash, sub_index, values, scratch, rules)
    return subcommand


def _kubectl_cp_paths(
    args: list[str],
    positional: list[int],
    dashdash: int,
    sub_index: int,
    values: set[int],
    scratch: Path,
    rules: ShellRules,
) -> None:
    """`kubectl cp SRC DEST`: the side without `pod:` is a local path, in scratch."""
    candidates = [i for i in positional if i > sub_index and i not in values]
    candidates += list(range(dashdash + 1, len(args)))
    for i in candidates:
        word = args[i]
        if ":" in word and not os.path.isabs(word) and not word.startswith("."):
            continue  # [namespace/]pod:path - inside the container
        _check_path(word, "local path", scratch, rules)


# --- helm ----------------------------------------------------------------------------------

HELM_GLOBAL_VALUE = {
    "burst-limit", "color", "colour", "content-cache", "kube-apiserver", "kube-as-group",
    "kube-as-user", "kube-ca-file", "kube-context", "kube-tls-server-name", "kube-token",
    "kubeconfig", "namespace", "n", "qps", "registry-config", "repository-cache",
    "repository-config",
}  # fmt: skip
HELM_GLOBAL_BOOL = {"debug", "help", "h", "kube-insecure-skip-tls-verify"}
HELM_REFUSED_FLAGS = {
    "kubeconfig": "the shell always uses your session's kubeconfig",
    "kube-apiserver": "the shell always goes through kubegate",
    "kube-as-group": "impersonation is not available",
    "kube-as-user": "impersonation is not available",
    "kube-ca-file": "the shell always goes through kubegate",
    "kube-context": "the shell's context is the cluster you picked",
    "kube-insecure-skip-tls-verify": "the shell always verifies kubegate",
    "kube-tls-server-name": "the shell always goes through kubegate",
    "kube-token": "the shell always acts as you",
    "post-renderer": "it would run a program on the server",
    "post-renderer-args": "it would run a program on the server",
    "content-cache": "the shell keeps its own helm directories",
    "registry-config": "the shell keeps its own helm directories",
    "repository-cache": "the shell keeps its own helm directories",
    "repository-config": "the shell keeps its own helm directories",
}
HELM_REFUSED_SUBCOMMANDS = {"plugin": "helm plugins are not available"}
HELM_PATH_FLAGS = {
    "values": "--values",
    "f": "--values",
    "ca-file": "--ca-file",
    "cert-file": "--cert-file",
    "key-file": "--key-file",
    "keyring": "--keyring",
    "output-dir": "--output-dir",
    "destination": "--destination",
    "d": "--destination",
    "untardir": "--untardir",
}
HELM_VALUE_SHORTS = "nfdo"


def _helm(args: list[str], scratch: Path, rules: ShellRules) -> str:
    flags, positional, dashdash = _flags(args, HELM_VALUE_SHORTS)
    values = _value_indexes(args, flags, HELM_GLOBAL_VALUE | set(HELM_PATH_FLAGS) | {"repo"})
    words = [i for i in positional if i not in values]
    sub_index = words[0] if words else dashdash
    subcommand = args[sub_index] if words else ""
    for f in flags:
        if f.index >= sub_index:
            break
        if f.name not in HELM_GLOBAL_VALUE and f.name not in HELM_GLOBAL_BOOL:
            raise CommandRefusedError(
                f"refused: unknown option {args[f.index]!r} before the helm command - "
                "put options after it",
                "flag",
            )
    if subcommand in HELM_REFUSED_SUBCOMMANDS:
        raise CommandRefusedError(
            f"refused: `helm {subcommand}` - {HELM_REFUSED_SUBCOMMANDS[subcommand]}",
            "subcommand",
        )
    for f in flags:
        if f.name in HELM_REFUSED_FLAGS:
            raise CommandRefusedError(
                f"refused: `--{f.name}` - {HELM_REFUSED_FLAGS[f.name]}", "flag"
            )
        if f.name in HELM_PATH_FLAGS:
            _check_path(_value(args, f), HELM_PATH_FLAGS[f.name], scratch, rules, stdin_ok=True)
        elif f.name == "set-file":
            for item in (_value(args, f) or "").split(","):
                _check_path(item.partition("=")[2] or None, "--set-file", scratch, rules)
        elif f.name == "repo":
            _check_url(_value(args, f), rules)
    # chart references, paths and repository URLs are positional
    for i in [*words[1:], *range(dashdash + 1, len(args))]:
        _check_path(args[i], "argument", scratch, rules)
    return subcommand


def _check_url(value: str | None, rules: ShellRules) -> None:
    if value and not rules.allow_remote:
        raise CommandRefusedError(
            f"refused: --repo {value!r} - fetching from the server is off", "remote"
        )


# --- the entry point -----------------------------------------------------------------------


def parse(line: str, scratch: Path, rules: ShellRules | None = None) -> ShellCommand | None:
    """Vet one shell line; None for a blank line. Raises `CommandRefusedError` with the one
    line to show when the line may not run."""
    rules = rules or ShellRules()
    tokens = tokenize(line)
    if not tokens:
        return None
    first = tokens[0]
    if _ENV_ASSIGNMENT.match(first):
        raise CommandRefusedError(
            "refused: environment assignments are not supported in the browser shell", "env"
        )
    if first not in PROGRAMS:
        raise CommandRefusedError(
            f"refused: `{first}` - only kubectl and helm run here (type `help`)", "program"
        )
    args = tokens[1:]
    check = _kubectl if first == "kubectl" else _helm
    subcommand = check(args, scratch, rules)
    return ShellCommand(program=first, args=tuple(args), subcommand=subcommand)
