"""The shell prompt's line editor: keystrokes from the browser terminal in, echo and whole
lines out. Pure (no I/O), so every key is testable without a terminal.

Between commands nothing runs on the server, so the prompt cannot lean on a pty's line
discipline: this is it. It keeps one line with a cursor, a bounded history (up/down), the
usual keys (backspace, delete, left/right, home/end, ^A ^E ^U ^K ^W ^L ^C ^D) and ignores
anything else. Output uses CR LF and plain VT100 sequences that xterm.js understands.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

MAX_LINE = 16 * 1024


@dataclass(frozen=True)
class Echo:
    data: bytes


@dataclass(frozen=True)
class Line:
    text: str


@dataclass(frozen=True)
class Interrupt:
    """^C at the prompt: the line is dropped."""


@dataclass(frozen=True)
class EndOfInput:
    """^D on an empty line."""


@dataclass(frozen=True)
class ClearScreen:
    """^L: the caller clears the screen and redraws the prompt with `pending()`."""


Action = Echo | Line | Interrupt | EndOfInput | ClearScreen

_CSI_KEYS = {
    "A": "up",
    "B": "down",
    "C": "right",
    "D": "left",
    "H": "home",
    "F": "end",
    "1~": "home",
    "7~": "home",
    "4~": "end",
    "8~": "end",
    "3~": "delete",
}


def _left(n: int) -> bytes:
    return f"\x1b[{n}D".encode() if n > 0 else b""


class LineEditor:
    """Feed bytes with `feed`; act on what it returns, in order."""

    def __init__(self, history_limit: int = 200) -> None:
        self.history: list[str] = []
        self.history_limit = history_limit
        self._buf: list[str] = []
        self._cur = 0
        self._hist_pos = 0
        self._draft = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._esc = ""  # an escape sequence in progress ("\x1b", "\x1b[", "\x1b[3", ...)
        self._after_cr = False

    def pending(self) -> str:
        """The line as typed so far."""
        return "".join(self._buf)

    def reset(self) -> None:
        self._buf, self._cur, self._esc = [], 0, ""
        self._hist_pos = len(self.history)

    def feed(self, data: bytes) -> list[Action]:
        out: list[Action] = []
        echo = bytearray()

        def flush() -> None:
            if echo:
                out.append(Echo(bytes(echo)))
                echo.clear()

        for ch in self._decoder.decode(data):
            if self._esc:
                self._escape(ch, echo)
                continue
            after_cr, self._after_cr = self._after_cr, False
            if ch in "\r\n":
                if ch == "\n" and after_cr:
                    continue
                self._after_cr = ch == "\r"
                echo += b"\r\n"
                flush()
                out.append(Line(self._submit()))
            elif ch == "\x1b":
                self._esc = ch
            elif ch in "\x7f\x08":
                self._backspace(echo)
            elif ch == "\x03":
                echo += b"^C\r\n"
                flush()
                self.reset()
                out.append(Interrupt())
            elif ch == "\x04":
                if not self._buf:
                    flush()
                    out.append(EndOfInput())
                else:
                    self._delete(echo)
            elif ch == "\x0c":
                flush()
                out.append(ClearScreen())
            elif ch == "\x15":  # ^U: kill to start
                self._kill(0, self._cur, echo)
            elif ch == "\x0b":  # ^K: kill to end
                self._kill(self._cur, len(self._buf), echo)
            elif ch == "\x17":  # ^W: kill the word before the cursor
                start = self._cur
                while start > 0 and self._buf[start - 1] == " ":
                    start -= 1
                while start > 0 and self._buf[start - 1] != " ":
                    start -= 1
                self._kill(start, self._cur, echo)
            elif ch == "\x01":
                echo += _left(self._cur)
                self._cur = 0
            elif ch == "\x05":
                echo += "".join(self._buf[self._cur :]).encode()
                self._cur = len(self._buf)
            elif ch >= " ":
                self._insert(ch, echo)
            # any other control character is ignored
        flush()
        return out

    # -- editing ------------------------------------------------------------------------

    def _submit(self) -> str:
        text = self.pending()
        if text.strip() and (not self.history or self.history[-1] != text):
            self.history.append(text)
            del self.history[: -self.history_limit]
        self.reset()
        return text

    def _insert(self, ch: str, echo: bytearray) -> None:
        if len(self._buf) >= MAX_LINE:
            echo += b"\x07"
            return
        self._buf.insert(self._cur, ch)
        self._cur += 1
        tail = "".join(self._buf[self._cur :])
        echo += (ch + tail).encode() + _left(len(tail))

    def _backspace(self, echo: bytearray) -> None:
        if self._cur == 0:
            return
        self._cur -= 1
        del self._buf[self._cur]
        tail = "".join(self._buf[self._cur :])
        echo += b"\b" + tail.encode() + b" " + _left(len(tail) + 1)

    def _delete(self, echo: bytearray) -> None:
        if self._cur >= len(self._buf):
            return
        del self._buf[self._cur]
        tail = "".join(self._buf[self._cur :])
        echo += tail.encode() + b" " + _left(len(tail) + 1)

    def _kill(self, start: int, end: int, echo: bytearray) -> None:
        if start >= end:
            return
        del self._buf[start:end]
        echo += _left(self._cur - start)
        self._cur = start
        tail = "".join(self._buf[start:])
        echo += tail.encode() + b" " * (end - start) + _left(len(tail) + end - start)

    def _replace(self, text: str, echo: bytearray) -> None:
        echo += _left(self._cur) + b"\x1b[K" + text.encode()
        self._buf = list(text)
        self._cur = len(self._buf)

    # -- escape sequences ---------------------------------------------------------------

    def _escape(self, ch: str, echo: bytearray) -> None:
        seq = self._esc + ch
        if seq in ("\x1b[", "\x1bO"):
            self._esc = seq
            return
        if len(seq) == 2:  # ESC + something we do not know: drop both
            self._esc = ""
            return
        if ch.isdigit() or ch == ";":
            self._esc = seq if len(seq) < 16 else ""
            return
        self._esc = ""
        key = _CSI_KEYS.get(seq[2:])
        if key == "left" and self._cur > 0:
            self._cur -= 1
            echo += _left(1)
        elif key == "right" and self._cur < len(self._buf):
            echo += self._buf[self._cur].encode()
            self._cur += 1
        elif key == "home":
            echo += _left(self._cur)
            self._cur = 0
        elif key == "end":
            echo += "".join(self._buf[self._cur :]).encode()
            self._cur = len(self._buf)
        elif key == "delete":
            self._delete(echo)
        elif key == "up" and self._hist_pos > 0:
            if self._hist_pos == len(self.history):
                self._draft = self.pending()
            self._hist_pos -= 1
            self._replace(self.history[self._hist_pos], echo)
        elif key == "down" and self._hist_pos < len(self.history):
            self._hist_pos += 1
            text = (
                self._draft if self._hist_pos == len(self.history) else self.history[self._hist_pos]
            )
            self._replace(text, echo)
