"""A free TCP port on the loopback interface: for a managed vLLM server (pipeline/servers.py) and
for accelerate's rendezvous when training starts one (stages/train)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (the OS picks it); another process may take it before the
    caller binds it, which the caller's own start-up then reports."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
