"""The small shared pieces: URLs with IPv6 brackets, bounded waits, terminal escaping."""

from __future__ import annotations

import pytest

from fleetkit.clients.urls import http_url, nats_url, without_userinfo
from fleetkit.foundation.polling import wait_until
from fleetkit.foundation.terminal import terminal_safe


@pytest.mark.parametrize(
    ("address", "http", "nats"),
    [
        ("10.0.0.1", "http://10.0.0.1:1234", "nats://10.0.0.1:4222"),
        ("orch.example", "http://orch.example:1234", "nats://orch.example:4222"),
        ("fd00::1", "http://[fd00::1]:1234", "nats://[fd00::1]:4222"),
    ],
)
def test_urls_bracket_ipv6_everywhere(address: str, http: str, nats: str) -> None:
    assert http_url(address, 1234) == http
    assert nats_url(address, 4222) == nats


def test_urls_never_show_credentials() -> None:
    assert without_userinfo("http://user:secret@orch:1234/x") == "http://orch:1234/x"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_until_stops_at_the_answer() -> None:
    clock = FakeClock()
    answers = iter([1, 2, 3, 4])
    waited = wait_until(
        lambda: next(answers),
        lambda v: v == 3,
        timeout=10,
        interval=1,
        clock=clock,
        sleep=clock.sleep,
    )
    assert (waited.value, waited.done, waited.attempts) == (3, True, 3)
    assert clock.now == 2


def test_wait_until_never_sleeps_past_the_deadline() -> None:
    clock = FakeClock()
    waited = wait_until(
        lambda: 0, lambda v: False, timeout=2.5, interval=1, clock=clock, sleep=clock.sleep
    )
    assert not waited.done
    assert clock.now == 2.5
    assert waited.attempts == 4


def test_wait_until_zero_timeout_looks_once() -> None:
    clock = FakeClock()
    waited = wait_until(
        lambda: 0, lambda v: False, timeout=0, interval=1, clock=clock, sleep=clock.sleep
    )
    assert waited.attempts == 1 and clock.now == 0


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("node-1", "node-1"),
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("a\nb\r", "a\\nb\\r"),
        ("\x9b31m", "\\x9b31m"),
        ("evil\u202etxt", "evil\\u202etxt"),
        ("ünïcode ok", "ünïcode ok"),
    ],
)
def test_terminal_safe_escapes_controls(raw: str, shown: str) -> None:
    assert terminal_safe(raw) == shown


def test_terminal_safe_keeps_fleetkits_own_line_breaks() -> None:
    assert terminal_safe("line \x1b[2J\nnext", keep_newlines=True) == "line \\x1b[2J\nnext"


def test_table_aligns_and_escapes_every_cell() -> None:
    from fleetkit.foundation.table import render_table

    text = render_table(["HOST", "STATE"], [["node-1", "ok"], ["evil\x1b[2J", "x" * 80]], rule=True)
    lines = text.splitlines()
    assert lines[0] == "HOST         STATE"
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "\x1b" not in text and "evil\\x1b[2J" in text
    assert lines[3].endswith("x" * 57 + "...")


def test_table_refuses_ragged_rows() -> None:
    from fleetkit.foundation.table import make_table

    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        make_table(["A", "B"], [["only"]])
