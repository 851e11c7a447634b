"""The browser kubectl shell: `GET /v1/shell?cluster=C` upgraded to a WebSocket.

Identity. The shell belongs to one console session. It authenticates with the session token,
either as `Authorization: Bearer <token>` on the upgrade request (programs) or, since browsers
cannot set headers on a WebSocket, as the first message `{"type": "auth", "token": "..."}`
within `auth_timeout_s`. Admin tokens open no shell: a shell acts as a person. Each shell gets
a private directory and a client certificate for its session (`edge.identity`; recorded as
CertificateIssued with the session id), and every command runs with a kubeconfig holding that
certificate, pointed at the edge. So the shell's kubectl goes through the same edge, policy and
audit as any kubectl, marked `via=browser` and tied to the session: when the session ends the
edge refuses and cuts the shell's requests, and the shell itself closes.

Protocol (subprotocol `kubegate.shell.v1`, optional):
- client -> server: binary frames are keystrokes; text frames are JSON:
  `{"type": "auth", "token": T}` (first, when no header), `{"type": "resize", "cols": C,
  "rows": R}`, `{"type": "upload", "name": N, "data": BASE64}` (a file into the scratch
  directory), `{"type": "download", "name": N}`;
- server -> client: binary frames are terminal output; text frames are JSON:
  `{"type": "ready", "user", "cluster", "session_id", "shell_id"}`, `{"type": "uploaded",
  "name", "bytes"}`, `{"type": "file", "name", "data"}`, `{"type": "error", "message"}`,
  `{"type": "closed", "reason"}` (then the close frame).
- close codes: 4400 bad request, 4401 unauthenticated, 4403 cluster out of reach, 4408 idle,
  4410 console session over, 4429 too many shells, 4503 shell unavailable, 1000 `exit`,
  1001 server shutting down.

The REPL. A prompt with a line editor (`lineedit`); each line is vetted (`commands`): only
`kubectl` and `helm`, no shell features, no identity overrides, files only inside the scratch
directory; a refused line answers one line and runs nothing. Builtins: `help`, `files`,
`clear`, `exit`. A command runs under a pty (`pty_process`) with the session's kubeconfig and a
private HOME, PATH and helm directories; keystrokes go to it, ^C interrupts it.

Lifetime. Each command re-authenticates the session token (which counts as activity on the
session), as does typing, at most every `touch_interval_s`. A shell closes on `exit`, after
`idle_timeout_s` without input, when the session is over (logout, idle, expiry, revocation,
user disabled: judged from the policy projection whenever policy changes), and at shutdown.
Its directory is removed when it closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import os
import shutil
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, Counter, Gauge

from edge import kubeconfig as kcfg
from edge.admin_api import CONTEXT, AdminContext, ApiError, Principal
from edge.ca import IssuedCertificate
from edge.console import commands, lineedit
from edge.console.errors import CommandRefusedError, ShellUnavailableError
from edge.console.pty_process import PtyProcess
from edge.identity import BROWSER_CERT_MAX_TTL, issue_browser_certificate

log = logging.getLogger("kubegate.edge.console.shell")

SUBPROTOCOL = "kubegate.shell.v1"
CLOSE_EXIT = 1000
CLOSE_SHUTDOWN = 1001
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_IDLE = 4408
CLOSE_SESSION_OVER = 4410
CLOSE_BUSY = 4429
CLOSE_UNAVAILABLE = 4503

SESSION_COOKIE = "kg_session"
"""The console session cookie the OIDC browser login sets (HttpOnly, SameSite=Strict)."""
CERT_RENEW_MARGIN = dt.timedelta(minutes=2)
NO_EDITOR = "kubegate-shell-has-no-editor"

HELP = (
    "kubegate browser shell: kubectl and helm, as you, through kubegate.\r\n"
    "  kubectl ...   helm ...   run against the cluster you picked (no pipes, redirects or\r\n"
    "                variables; files only from this shell's scratch directory)\r\n"
    "  files         list the scratch directory (upload files from the console)\r\n"
    "  clear         clear the screen\r\n"
    "  exit          close the shell\r\n"
    "  ^C interrupts a command; ^D ends input to `kubectl apply -f -`.\r\n"
)


@dataclass
class ShellSettings:
    kubectl: str | None = field(default_factory=lambda: shutil.which("kubectl"))
    helm: str | None = field(default_factory=lambda: shutil.which("helm"))
    scratch_root: Path | None = None
    """Where shells get their private directories (default: <tmp>/kubegate-shells)."""
    rules: commands.ShellRules = field(default_factory=commands.ShellRules)
    idle_timeout_s: float = 15 * 60
    auth_timeout_s: float = 10.0
    session_wait_s: float = 10.0
    """How long a new session may take to reach the policy projection."""
    touch_interval_s: float = 30.0
    max_shells: int = 64
    max_shells_per_session: int = 4
    max_file_bytes: int = 64 * 1024 * 1024
    max_transfer_bytes: int = 8 * 1024 * 1024
    cert_max_ttl: dt.timedelta = BROWSER_CERT_MAX_TTL
    allowed_origins: tuple[str, ...] = ()
    """Origins (scheme://host:port) besides the admin API's own that may open shells."""


class ShellMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge("kubegate_console_shells_open", "Open browser shells", registry=registry)
        self.commands = Counter(
            "kubegate_console_shell_commands",
            "Browser-shell lines by program and outcome (run, refused, builtin)",
            ["program", "outcome"],
            registry=registry,
        )
        self.closed = Counter(
            "kubegate_console_shells_closed",
            "Browser shells closed, by reason",
            ["reason"],
            registry=registry,
        )


def _json(data: Any) -> str:
    return msgspec.json.encode(data).decode()


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def session_over(policy: Any, session_id: str, user: str, now: dt.datetime) -> str | None:
    """Why this console session no longer carries a shell (one line), or None if it does."""
    state = policy.state
    record = state.users.get(user)
    if record is None:
        return f"user {user} is not known"
    if not record.enabled:
        return f"user {user} is disabled"
    session = state.sessions.get(session_id)
    if session is None or session.user != user:
        return "the console session is unknown"
    if session.ended_at is not None:
        return f"the console session ended ({session.end_reason or 'logout'})"
    if record.revoked_at is not None and session.started_at < record.revoked_at:
        return "access was revoked after the console session started"
    if now >= session.expires_at:
        return "the console session expired"
    if now >= session.idle_deadline:
        return "the console session went idle"
    return None


class Shell:
    """One open shell: its WebSocket, directory, certificate, prompt and current command."""

    def __init__(
        self,
        manager: ShellManager,
        ctx: AdminContext,
        ws: web.WebSocketResponse,
        principal: Principal,
        token: str,
        cluster: str,
    ) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.ctx = ctx
        self.ws = ws
        self.user = principal.name
        self.session_id = principal.session_id
        self.token = token
        self.cluster = cluster
        self.shell_id = f"sh-{uuid.uuid4().hex[:12]}"
        self.editor = lineedit.LineEditor()
        self.cols, self.rows = 80, 24
        self.proc: PtyProcess | None = None
        self.cert: IssuedCertificate | None = None
        self.closing: str | None = None
        self.last_input = time.monotonic()
        self.last_touch = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._command_task: asyncio.Task[None] | None = None
        self._close_requested = asyncio.Event()
        self._close_code = CLOSE_EXIT
        self._receiving = False
        root = manager.scratch_root()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.shell_id}-", dir=root))
        self.work = self.dir / "work"
        self.home = self.dir / "home"
        self.bin = self.dir / "bin"
        self.plugins = self.dir / "helm-plugins"
        self.kubeconfig = self.dir / "kubeconfig"
        for d in (self.work, self.home, self.bin, self.plugins):
            d.mkdir(mode=0o700)
        diff = shutil.which("diff")
        if diff:
            os.symlink(diff, self.bin / "diff")  # `kubectl diff` runs it; nothing else is here
        self.plugins.chmod(0o500)

    # -- plumbing -----------------------------------------------------------------------

    def _spawn_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.shell_id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def send(self, data: bytes | str) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data)

    async def term(self, text: str) -> None:
        await self.send(text.encode())

    async def prompt(self) -> None:
        await self.term(f"\x1b[1;36m{self.cluster}\x1b[0m $ " + self.editor.pending())

    def now(self) -> dt.datetime:
        return self.ctx.clock()

    # -- lifetime -------------------------------------------------------------------------

    async def run(self) -> None:
        await self.ensure_certificate()
        await self.send(
            _json(
                {
                    "type": "ready",
                    "user": self.user,
                    "cluster": self.cluster,
                    "session_id": self.session_id,
                    "shell_id": self.shell_id,
                }
            )
        )
        await self.term(
            f"kubegate shell for \x1b[1m{self.user}\x1b[0m on cluster "
            f"\x1b[1m{self.cluster}\x1b[0m - type `help`.\r\n"
        )
        await self.prompt()
        self.last_input = time.monotonic()
        self._spawn_task(self._idle_watch(), "idle")
        reader = asyncio.create_task(self._read_loop(), name=f"{self.shell_id}-read")
        wake = asyncio.create_task(self._close_requested.wait())
        try:
            await asyncio.wait({reader, wake}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done() and self._receiving:
                reader.cancel()  # waiting for a message: safe to stop (see _read_loop)
        finally:
            wake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if self.closing is not None:
            await self._finish(self.closing, self._close_code)

    async def _read_loop(self) -> None:
        """Messages in, one at a time. A close request cancels this only while it waits for
        a message; a message being handled (a command starting, say) is finished first, and
        then the loop sees the request and stops."""
        while self.closing is None:
            self._receiving = True
            try:
                msg = await self.ws.receive()
            finally:
                self._receiving = False
            if msg.type == WSMsgType.BINARY:
                await self.on_input(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await self.on_control(msg.data)
            else:  # close, closing, closed, error: the browser went away
                return

    def close_soon(self, reason: str, code: int) -> None:
        """Ask the shell to close (from a policy listener, the idle watch, `exit`): sync and
        idempotent; the shell's own task does the closing."""
        if self.closing is None:
            self.closing, self._close_code = reason, code
            self._close_requested.set()

    async def _finish(self, reason: str, code: int) -> None:
        self.manager.metrics.closed.labels(reason=_reason_word(code)).inc()
        log.info(
            "shell closing",
            extra={"shell_id": self.shell_id, "user": self.user, "reason": reason, "code": code},
        )
        await self.stop_command()
        await self.term(f"\r\n\x1b[33m[kubegate] shell closed: {reason}\x1b[0m\r\n")
        await self.send(_json({"type": "closed", "reason": reason}))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode()[:120])

    async def cleanup(self) -> None:
        await self.stop_command()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(OSError):
            self.plugins.chmod(0o700)
        await asyncio.to_thread(shutil.rmtree, self.dir, True)

    async def _idle_watch(self) -> None:
        idle = self.settings.idle_timeout_s
        while self.closing is None:
            remaining = self.last_input + idle - time.monotonic()
            if remaining <= 0:
                self.close_soon(f"idle for {idle:.0f}s", CLOSE_IDLE)
                return
            await asyncio.sleep(remaining)

    def check_session(self) -> bool:
        """Close the shell if its session is over; True while it is live."""
        if self.closing is not None:
            return False
        why = session_over(self.ctx.policy, self.session_id, self.user, self.now())
        if why is not None:
            self.close_soon(why, CLOSE_SESSION_OVER)
            return False
        return True

    def reauthenticate(self) -> bool:
        """Present the session token again: activity on the session, and a check that the
        identity service still honours it."""
        self.last_touch = time.monotonic()
        assert self.ctx.authenticate_session is not None
        principal = self.ctx.authenticate_session(self.token)
        if principal is None or principal.session_id != self.session_id:
            self.close_soon("the console session is over", CLOSE_SESSION_OVER)
            return False
        return self.check_session()

    # -- input ----------------------------------------------------------------------------

    async def on_input(self, data: bytes) -> None:
        self.last_input = time.monotonic()
        if self.last_input - self.last_touch >= self.settings.touch_interval_s:
            if not self.reauthenticate():
                return
        while data and self.closing is None:
            if self.proc is not None:
                if self.proc.write(data):
                    await self.term("^C\r\n")
                return
            # feed the editor up to the end of one line; the rest may belong to the command
            cut = min((i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0), default=-1)
            head, data = (data, b"") if cut < 0 else (data[: cut + 1], data[cut + 1 :])
            if head.endswith(b"\r") and data.startswith(b"\n"):
                head, data = head + b"\n", data[1:]
            for action in self.editor.feed(head):
                await self.on_action(action)

    async def on_action(self, action: lineedit.Action) -> None:
        match action:
            case lineedit.Echo(data=data):
                await self.send(data)
            case lineedit.Line(text=text):
                await self.on_line(text)
            case lineedit.Interrupt():
                await self.prompt()
            case lineedit.EndOfInput():
                await self.term("\r\n(use `exit` to close the shell)\r\n")
                await self.prompt()
            case lineedit.ClearScreen():
                await self.term("\x1b[H\x1b[2J")
                await self.prompt()

    async def on_line(self, text: str) -> None:
        word = text.strip()
        metrics = self.manager.metrics.commands
        if word in ("", "help", "files", "clear", "exit"):
            if word:
                metrics.labels(program="builtin", outcome="builtin").inc()
            if word == "exit":
                self.close_soon("exit", CLOSE_EXIT)
                return
            if word == "help":
                await self.term(HELP)
            elif word == "files":
                await self.term(self._files())
            elif word == "clear":
                await self.term("\x1b[H\x1b[2J")
            await self.prompt()
            return
        try:
            command = commands.parse(text, self.work, self.settings.rules)
        except CommandRefusedError as refused:
            metrics.labels(program="-", outcome="refused").inc()
            log.info(
                "shell line refused",
                extra={"shell_id": self.shell_id, "user": self.user, "rule": refused.rule},
            )
            await self.term(f"\x1b[31m{refused.message}\x1b[0m\r\n")
            await self.prompt()
            return
        assert command is not None
        binary = self.settings.kubectl if command.program == "kubectl" else self.settings.helm
        if not binary:
            metrics.labels(program=command.program, outcome="refused").inc()
            await self.term(f"\x1b[31m{command.program} is not installed on this server\x1b[0m\r\n")
            await self.prompt()
            return
        if not self.reauthenticate():
            return
        await self.ensure_certificate()
        metrics.labels(program=command.program, outcome="run").inc()
        log.info(
            "shell command",
            extra={
                "shell_id": self.shell_id,
                "user": self.user,
                "session_id": self.session_id,
                "cluster": self.cluster,
                "program": command.program,
                "subcommand": command.subcommand,
            },
        )
        self.proc = await PtyProcess.spawn(
            [binary, *command.args],
            env=self.environment(),
            cwd=self.work,
            cols=self.cols,
            rows=self.rows,
            max_file_bytes=self.settings.max_file_bytes,
        )
        self._command_task = self._spawn_task(self._pump(self.proc), "command")

    async def _pump(self, proc: PtyProcess) -> None:
        async def output() -> None:
            while chunk := await proc.read():
                await self.send(chunk)

        reader = asyncio.create_task(output())
        try:
            code = await proc.wait()
            try:  # what the command wrote before it exited; a stray child may hold the pty
                await asyncio.wait_for(asyncio.shield(reader), 5.0)
            except TimeoutError:
                reader.cancel()
        finally:
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            proc.close()
            if self.proc is proc:
                self.proc = None
        if self.closing is None:
            if code > 0:
                await self.term(f"\x1b[2m[exit {code}]\x1b[0m\r\n")
            elif code < 0 and proc.interrupts == 0:
                await self.term(f"\x1b[2m[killed by signal {-code}]\x1b[0m\r\n")
            await self.prompt()

    async def stop_command(self) -> None:
        proc, task = self.proc, self._command_task
        if proc is not None:
            await proc.terminate()
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10.0)

    # -- control messages ---------------------------------------------------------------

    async def on_control(self, raw: str) -> None:
        try:
            msg = msgspec.json.decode(raw)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except msgspec.DecodeError:
            kind, msg = None, {}
        if kind == "resize":
            self.on_resize(msg)
        elif kind == "upload":
            self.last_input = time.monotonic()
            await self.send(_json(self._upload(msg)))
        elif kind == "download":
            self.last_input = time.monotonic()
            await self.send(_json(self._download(msg)))
        elif kind == "auth":
            pass  # a repeated auth message changes nothing
        else:
            await self.send(_json({"type": "error", "message": "unknown message"}))

    def on_resize(self, msg: dict) -> None:
        cols, rows = msg.get("cols"), msg.get("rows")
        if not (isinstance(cols, int) and isinstance(rows, int) and cols > 0 and rows > 0):
            return
        self.cols, self.rows = min(cols, 1000), min(rows, 1000)
        if self.proc is not None:
            self.proc.resize(self.cols, self.rows)

    def _scratch_file(self, name: Any) -> Path | None:
        if not isinstance(name, str) or not name or "/" in name or "\0" in name:
            return None
        if name in (".", ".."):
            return None
        return self.work / name

    def _upload(self, msg: dict) -> dict:
        path = self._scratch_file(msg.get("name"))
        if path is None:
            return {"type": "error", "message": "upload: give a plain file name"}
        data = msg.get("data")
        if not isinstance(data, str) or len(data) > self.settings.max_transfer_bytes * 4 // 3 + 4:
            return {"type": "error", "message": "upload: file too large or missing"}
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return {"type": "error", "message": "upload: data is not base64"}
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        except OSError as exc:
            return {"type": "error", "message": f"upload: {exc.strerror}"}
        return {"type": "uploaded", "name": path.name, "bytes": len(content)}

    def _download(self, msg: dict) -> dict:
        path = self._scratch_file(msg.get("name"))
        if path is None:
            return {"type": "error", "message": "download: give a plain file name"}
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            return {"type": "error", "message": f"download: {exc.strerror}"}
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > self.settings.max_transfer_bytes:
                return {"type": "error", "message": "download: not a file, or too large"}
            content = f.read(self.settings.max_transfer_bytes + 1)
        return {"type": "file", "name": path.name, "data": base64.b64encode(content).decode()}

    def _files(self) -> str:
        entries = sorted(self.work.iterdir(), key=lambda p: p.name)
        if not entries:
            return "(no files: upload some from the console)\r\n"
        lines = []
        for entry in entries:
            info = entry.lstat()
            kind = "/" if stat.S_ISDIR(info.st_mode) else ""
            lines.append(f"{info.st_size:>10}  {entry.name}{kind}")
        return "\r\n".join(lines) + "\r\n"

    # -- identity -------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        home = self.home
        return {
            "PATH": str(self.bin),
            "HOME": str(home),
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(home / ".kube" / "cache"),
            "KUBECTL_KUBERC": "false",
            "KUBE_EDITOR": NO_EDITOR,
            "EDITOR": NO_EDITOR,
            "VISUAL": NO_EDITOR,
            "HELM_CONFIG_HOME": str(home / "helm" / "config"),
            "HELM_CACHE_HOME": str(home / "helm" / "cache"),
            "HELM_DATA_HOME": str(home / "helm" / "data"),
            "HELM_PLUGINS": str(self.plugins),
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
        }

    async def ensure_certificate(self) -> None:
        """A certificate for this session that is good for a while yet, and its kubeconfig."""
        now = self.now()
        if self.cert is not None and self.cert.not_after - now > CERT_RENEW_MARGIN:
            return
        session = self.ctx.policy.state.sessions.get(self.session_id)
        if session is None:
            raise ShellUnavailableError("the console session is unknown", CLOSE_SESSION_OVER)
        issued = issue_browser_certificate(
            self.ctx.ca,
            user=self.user,
            session_id=self.session_id,
            session_expires_at=session.expires_at,
            now=now,
            max_ttl=self.settings.cert_max_ttl,
        )
        await asyncio.to_thread(
            self.ctx.control.issue_certificate,
            issued.serial,
            actor=self.user,
            command_id=f"shell-cert-{issued.serial}",
            user=self.user,
            not_before=issued.not_before,
            not_after=issued.not_after,
            fingerprint=issued.fingerprint,
            clusters=[self.cluster],
            session_id=self.session_id,
        )
        config = kcfg.build(
            user=self.user,
            edge_url=self.ctx.edge_url,
            ca_pem=self.ctx.ca.cert_pem,
            cert=issued,
            clusters=[self.cluster],
            current=self.cluster,
        )
        tmp = self.dir / "kubeconfig.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(kcfg.render(config))
        tmp.replace(self.kubeconfig)
        self.cert = issued


async def _refuse(ws: web.WebSocketResponse, message: str, code: int) -> None:
    if not ws.closed:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(_json({"type": "error", "message": message}))
            await ws.close(code=code, message=message.encode()[:120])


def _reason_word(code: int) -> str:
    return {
        CLOSE_EXIT: "exit",
        CLOSE_SHUTDOWN: "shutdown",
        CLOSE_IDLE: "idle",
        CLOSE_SESSION_OVER: "session",
    }.get(code, "error")


class ShellManager:
    """Every open shell of this admin API; owns their tasks and the policy listener."""

    def __init__(
        self, settings: ShellSettings | None = None, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings or ShellSettings()
        self.metrics = ShellMetrics(registry or CollectorRegistry())
        self.shells: dict[str, Shell] = {}
        self._watched: set[int] = set()
        self._closed = False
        self._none_open = asyncio.Event()
        self._none_open.set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/shell", self.handle)]

    def scratch_root(self) -> Path:
        root = self.settings.scratch_root or Path(tempfile.gettempdir()) / "kubegate-shells"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return root

    def _watch(self, policy: Any) -> None:
        if id(policy) not in self._watched:
            self._watched.add(id(policy))
            policy.on_change(self._policy_changed)

    def _policy_changed(self, users: frozenset[str] | None) -> None:
        for shell in list(self.shells.values()):
            if users is None or shell.user in users:
                shell.check_session()

    def of_session(self, session_id: str) -> list[Shell]:
        return [s for s in self.shells.values() if s.session_id == session_id]

    async def close(self) -> None:
        """Close every shell (server shutdown) and wait for them to go."""
        self._closed = True
        for shell in list(self.shells.values()):
            shell.close_soon("the server is shutting down", CLOSE_SHUTDOWN)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_open.wait(), 15)

    # -- the handler ------------------------------------------------------------------------

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if not origin:
            return
        if origin in self.settings.allowed_origins:
            return
        parts = urlsplit(origin)
        if parts.netloc != request.host:
            raise ApiError(403, f"origin {origin} may not open a shell here")

    def _authenticate(self, ctx: AdminContext, token: str) -> Principal:
        assert ctx.authenticate_session is not None
        principal = ctx.authenticate_session(token) if token else None
        if principal is None:
            raise ShellUnavailableError(
                "invalid or expired session token: log in again", CLOSE_UNAUTHENTICATED
            )
        if not principal.session_id:
            raise ShellUnavailableError(
                "a shell needs a console session (log in to the console)", CLOSE_UNAUTHENTICATED
            )
        return principal

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ctx = request.app[CONTEXT]
        cluster = request.query.get("cluster", "")
        if not cluster:
            raise ApiError(400, "name a cluster: /v1/shell?cluster=NAME")
        self._check_origin(request)
        if ctx.authenticate_session is None or ctx.policy is None or self._closed:
            raise ApiError(503, "the browser shell is not available on this instance")
        token = _bearer(request)
        principal: Principal | None = None
        if token:
            try:
                principal = self._authenticate(ctx, token)
            except ShellUnavailableError as exc:
                raise ApiError(401, exc.message) from exc
        else:  # a browser after an OIDC login holds the session in a cookie
            token = request.cookies.get(SESSION_COOKIE, "")
            with contextlib.suppress(ShellUnavailableError):
                principal = self._authenticate(ctx, token) if token else None
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            heartbeat=30.0,
            max_msg_size=self.settings.max_transfer_bytes * 4 // 3 + 1024,
        )
        await ws.prepare(request)
        shell: Shell | None = None
        try:
            if principal is None:
                token, principal = await self._first_message(ws, ctx)
            shell = await self._open(ctx, ws, principal, token, cluster)
            self.shells[shell.shell_id] = shell
            self._none_open.clear()
            self.metrics.open.inc()
            await shell.run()
        except ShellUnavailableError as exc:
            await _refuse(ws, exc.message, exc.code)
        except Exception:
            log.exception("shell failed", extra={"cluster": cluster})
            await _refuse(ws, "the shell failed (see the server's log)", CLOSE_UNAVAILABLE)
        finally:
            if shell is not None:
                self.metrics.open.dec()
                try:
                    await shell.cleanup()
                    if not ws.closed:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await ws.close()
                finally:
                    self.shells.pop(shell.shell_id, None)
                    if not self.shells:
                        self._none_open.set()
        return ws

    async def _first_message(
        self, ws: web.WebSocketResponse, ctx: AdminContext
    ) -> tuple[str, Principal]:
        try:
            msg = await ws.receive(timeout=self.settings.auth_timeout_s)
        except TimeoutError as exc:
            raise ShellUnavailableError(
                "authenticate first: send {type: auth, token}", CLOSE_UNAUTHENTICATED
            ) from exc
        token = ""
        if msg.type == WSMsgType.TEXT:
            with contextlib.suppress(msgspec.DecodeError):
                body = msgspec.json.decode(msg.data)
                if isinstance(body, dict) and body.get("type") == "auth":
                    token = body.get("token") if isinstance(body.get("token"), str) else ""
        if not token:
            raise ShellUnavailableError(
                "authenticate first: send {type: auth, token}", CLOSE_UNAUTHENTICATED
            )
        return token, self._authenticate(ctx, token)

    async def _open(
        self,
        ctx: AdminContext,
        ws: web.WebSocketResponse,
        principal: Principal,
        token: str,
        cluster: str,
    ) -> Shell:
        if len(self.shells) >= self.settings.max_shells:
            raise ShellUnavailableError("too many shells are open on this server", CLOSE_BUSY)
        if len(self.of_session(principal.session_id)) >= self.settings.max_shells_per_session:
            raise ShellUnavailableError(
                f"this session already has {self.settings.max_shells_per_session} shells open",
                CLOSE_BUSY,
            )
        if not self.settings.kubectl:
            raise ShellUnavailableError(
                "kubectl is not installed on this server", CLOSE_UNAVAILABLE
            )
        self._watch(ctx.policy)
        await self._session_known(ctx.policy, principal.session_id)
        why = session_over(ctx.policy, principal.session_id, principal.name, ctx.clock())
        if why is not None:
            raise ShellUnavailableError(why, CLOSE_SESSION_OVER)
        if cluster not in ctx.policy.clusters_for(principal.name):
            raise ShellUnavailableError(
                f"cluster {cluster} is not one you may reach", CLOSE_FORBIDDEN
            )
        return Shell(self, ctx, ws, principal, token, cluster)

    async def _session_known(self, policy: Any, session_id: str) -> None:
        """A session just started may not have reached this policy projection yet."""
        deadline = time.monotonic() + self.settings.session_wait_s
        while session_id not in policy.state.sessions:
            if time.monotonic() > deadline:
                raise ShellUnavailableError(
                    "the console session is unknown to this server", CLOSE_SESSION_OVER
                )
            await asyncio.sleep(0.05)
