"""The lab holds the ports of late-binding daemons so no other lab on the machine takes them."""

from __future__ import annotations

import io
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from lab.hosts import reserve_ports
from lab.standins.bacalhau.bacalhau_standin.httpapi import JsonServer, Router
from lab.standins.bacalhau.bacalhau_standin.logs import Log


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    sockets = reserve_ports(3)
    yield sockets
    for s in sockets:
        s.close()


def ports(held: list[socket.socket]) -> list[int]:
    return [s.getsockname()[1] for s in held]


def test_reserved_ports_are_distinct_and_refuse_other_binders(held: list[socket.socket]) -> None:
    assert len(set(ports(held))) == 3
    for port in ports(held):
        for address, reuse in (("", False), ("127.0.0.1", True), ("127.77.1.2", True)):
            other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if reuse:  # what sshd and Python's HTTP servers set
                other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with other, pytest.raises(OSError):
                other.bind((address, port))


def test_reserved_ports_are_skipped_by_the_next_reservation(held: list[socket.socket]) -> None:
    more = reserve_ports(20)
    try:
        assert not set(ports(more)) & set(ports(held))
    finally:
        for s in more:
            s.close()


def test_the_standin_agent_binds_a_held_port_and_gets_every_connection(
    held: list[socket.socket],
) -> None:
    router = Router()
    router.add("GET", "/api/v1/agent/alive", lambda request: {"Status": "OK"})
    port = ports(held)[0]
    server = JsonServer("0.0.0.0", port, router, Log(stream=io.StringIO()), "api")
    server.start()
    try:
        for _ in range(5):
            url = f"http://127.0.0.1:{port}/api/v1/agent/alive"
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert b"OK" in answer.read()
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
