"""The shell prompt's line editor, key by key."""

from __future__ import annotations

from edge.console.lineedit import (
    ClearScreen,
    Echo,
    EndOfInput,
    Interrupt,
    Line,
    LineEditor,
)


def lines(actions: list) -> list[str]:
    return [a.text for a in actions if isinstance(a, Line)]


def echoed(actions: list) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Echo))


def test_typing_echoes_and_enter_gives_the_line() -> None:
    ed = LineEditor()
    actions = ed.feed(b"kubectl get pods\r")
    assert lines(actions) == ["kubectl get pods"]
    assert echoed(actions) == b"kubectl get pods\r\n"


def test_crlf_and_lf_are_one_enter_and_pastes_split() -> None:
    ed = LineEditor()
    assert lines(ed.feed(b"a\r\nb\nc\r")) == ["a", "b", "c"]
    assert lines(ed.feed(b"\n")) == []  # the LF of a CR LF split over two reads


def test_backspace_and_cursor_editing() -> None:
    ed = LineEditor()
    assert lines(ed.feed(b"kubectl gte\x7f\x7fet pods\r")) == ["kubectl get pods"]
    # left twice, insert, home, insert, end
    assert lines(ed.feed(b"get pod\x1b[D\x1b[Dx\x1b[Hk \x1b[F!\r")) == ["k get pxod!"]
    assert lines(ed.feed(b"abc\x1b[D\x1b[D\x1b[3~\r")) == ["ac"]


def test_kill_keys() -> None:
    ed = LineEditor()
    assert lines(ed.feed(b"kubectl get pods\x17\x17svc\r")) == ["kubectl svc"]
    assert lines(ed.feed(b"junk\x15kubectl\r")) == ["kubectl"]
    assert lines(ed.feed(b"abcdef\x01\x1b[C\x1b[C\x0b\r")) == ["ab"]


def test_history_up_down_keeps_the_draft() -> None:
    ed = LineEditor()
    ed.feed(b"first\rsecond\r")
    actions = ed.feed(b"dra\x1b[A\x1b[A")
    assert ed.pending() == "first"
    assert b"\x1b[K" in echoed(actions)
    ed.feed(b"\x1b[B")
    assert ed.pending() == "second"
    ed.feed(b"\x1b[B")
    assert ed.pending() == "dra"
    assert lines(ed.feed(b"\x1bOA\r")) == ["second"]  # application cursor keys


def test_ctrl_c_drops_the_line_and_ctrl_d_ends_on_empty() -> None:
    ed = LineEditor()
    actions = ed.feed(b"kubectl delete ns prod\x03")
    assert isinstance(actions[-1], Interrupt) and ed.pending() == ""
    assert echoed(actions).endswith(b"^C\r\n")
    ed.feed(b"x")
    assert not any(isinstance(a, EndOfInput) for a in ed.feed(b"\x04"))  # deletes at cursor
    ed.feed(b"\x15")
    assert isinstance(ed.feed(b"\x04")[-1], EndOfInput)
    assert isinstance(ed.feed(b"\x0c")[-1], ClearScreen)


def test_utf8_split_across_reads_and_unknown_controls_ignored() -> None:
    ed = LineEditor()
    snow = "☃".encode()
    ed.feed(snow[:1])
    assert lines(ed.feed(snow[1:] + b"\x07\x02\x1bx\t!\r")) == ["☃!"]


def test_line_length_is_bounded() -> None:
    ed = LineEditor()
    from edge.console import lineedit

    actions = ed.feed(b"a" * (lineedit.MAX_LINE + 5))
    assert len(ed.pending()) == lineedit.MAX_LINE
    assert b"\x07" in echoed(actions)
