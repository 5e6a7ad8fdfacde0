"""systemd's notify protocol (Type=notify): READY, STATUS, WATCHDOG, STOPPING.

Ten lines of our own: systemd-python has no wheel and cysystemd needs glibc >= 2.34.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable


def sd_notify(state: str) -> bool:
    """Tell systemd about our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        return False
    return True


async def notify_loop(status: Callable[[], str], stop: asyncio.Event) -> None:
    """STATUS= now and then, and WATCHDOG=1 sent from the event loop itself, so systemd
    restarts a node whose loop is stuck."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    usec = os.environ.get("WATCHDOG_USEC")
    interval = min(5.0, int(usec) / 2e6) if usec else 5.0
    while not stop.is_set():
        sd_notify(f"STATUS={status()}" + ("\nWATCHDOG=1" if usec else ""))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
