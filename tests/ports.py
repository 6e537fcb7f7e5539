"""Free TCP ports on 127.0.0.1 for servers the tests start.

Each port is found by binding port 0, which the kernel may hand out again as
soon as its socket is closed: picking several one after another once gave the
inversion and editor containers the same port (test_containers). So
:func:`free_ports` keeps all its sockets bound until it has every port, and
the ports are distinct.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def free_port() -> int:
    """One port that was free a moment ago (also a dead endpoint: nothing listens on it)."""
    return free_ports(1)[0]
