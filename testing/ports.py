"""
Loopback ports for servers started as child processes, without the pick-then-bind race.

A port picked free (bound to port 0 and released) can be taken by another process before the child
binds it: on this shared machine other test runs start servers too. The child cannot bind port 0 and
report back (the Airflow api-server, moto and Milvus take a fixed port), so ``start_on_free_port``
starts it on a fresh port and, when the child failed because the port was taken, starts it again on
another one, a few times, before giving up.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# What the servers started here say when their port is taken: uvicorn and moto/werkzeug ("[Errno 98] Address
# already in use"), Milvus's launcher ("set proxy_port=..., but bind failed"), Milvus itself (Go's
# "bind: address already in use"), the Milvus bootstrap's own check ("metrics port ... is in use").
PORT_TAKEN = re.compile(r"address already in use|Errno 98|EADDRINUSE|but bind failed|port \d+ is in use", re.I)
ATTEMPTS = 3


class PortTaken(RuntimeError):
    """The server could not bind its port: another process took it after it was picked."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` right now (the caller's server binds it later: use ``start_on_free_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_taken(log: str) -> bool:
    """True when a server's output says its port was in use."""
    return bool(PORT_TAKEN.search(log))


def start_on_free_port(start: Callable[[int], T], *, attempts: int = ATTEMPTS, host: str = "127.0.0.1") -> T:
    """
    ``start(port)`` on a free port; when it raises ``PortTaken``, again on another free port.

    ``start`` must clean up after itself before raising ``PortTaken`` (stop its child). Any other error,
    or ``PortTaken`` on the last attempt, propagates.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start(free_port(host))
        except PortTaken:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
