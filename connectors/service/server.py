"""The service on uvicorn, in a background thread of this process.

A thread, not a process: an embedded (chDB) store can be opened by one process only, and
a flow that holds it must answer other processes' reads itself. The socket is bound
before the thread starts, so the port is known (``port: 0`` picks a free one) and a bind
error is raised to the caller, naming the address.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from operators.errors import PulseError

log = logging.getLogger("pulse.service")


class ServiceBindError(PulseError):
    """The service's address is taken or not ours to bind; the message names it."""


class ServiceThread:
    """`start()` serves `app` on host:port until `stop()`."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app = app
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
        # without it every response waits ~40 ms for a delayed ACK (Nagle).
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise ServiceBindError(
                f"the service cannot listen on {host}:{port}: {exc.strerror}; choose another "
                "service.port (0 picks a free one) or stop what holds it"
            ) from None
        self.host = host
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="pulse-service", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except Exception:  # the flow keeps running; the service's failure is logged
            log.exception("the HTTP service stopped")

    def start(self, timeout: float = 30.0) -> ServiceThread:
        """Serve, and return once uvicorn listens (so a URL handed out answers at once)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServiceBindError(f"the service did not start listening on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.socket.close()
