"""Failures of the web console and its browser shell, rooted at `edge.errors.EdgeError`."""

from __future__ import annotations

from edge.errors import EdgeError


class ConsoleError(EdgeError):
    """Root of console and shell failures."""


class CommandRefusedError(ConsoleError):
    """A shell line the browser shell will not run; the message is the one line shown.
    `rule` is a stable word for what refused it (for metrics and tests)."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


class ShellUnavailableError(ConsoleError):
    """A shell cannot start or go on: no session, a cluster out of reach, a missing binary,
    too many shells. `code` is the WebSocket close code the shell ends with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
