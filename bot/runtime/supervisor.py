"""Running patronbot's processes (Rasa, the action server, the ingester) as supervised children."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from bot.runtime.output import ProcessOutput

log = logging.getLogger(__name__)


class PortTakenError(Exception):
    """A port patronbot needs is used by another program."""


def ensure_port_free(*, host: str, port: int, setting: str) -> None:
    """Fail with a clear message when `port` cannot be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortTakenError(
                    f"port {port} on {host} is already in use ({setting}): stop the program using it "
                    f"or set {setting} to a free port"
                ) from None
            raise PortTakenError(f"cannot listen on {host}:{port} ({setting}): {error.strerror}") from None


@dataclass
class Child:
    """One supervised process: how to start it and how to tell it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str | None = None
    output: ProcessOutput | None = None  # where its output goes; None: the supervisor's own
    process: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)

    def start(self) -> None:
        # A session of its own, so a Ctrl-C in the terminal reaches only the supervisor, which then
        # stops every child in order.
        if self.output is None:
            self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        else:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                start_new_session=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert self.process.stdout is not None
            self.output.follow(self.name, self.process.stdout)
        log.info("started %s (pid %s)", self.name, self.process.pid)

    def last_lines(self) -> str:
        """The end of its output, for an operator told that it exited."""
        lines = self.output.tail(self.name) if self.output is not None else []
        return "".join(f"\n  | {line}" for line in lines)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        if self.ready_url is None:
            return self.alive()
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as reply:  # noqa: S310 (our own URL)
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, *, grace: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.name, grace)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


class Supervisor:
    """Starts children, waits until they are ready, restarts a crashed one, stops all on a signal."""

    def __init__(self, children: list[Child], *, max_restarts: int = 3, window: float = 60.0) -> None:
        self.children = children
        self.max_restarts = max_restarts
        self.window = window
        self.stopping = threading.Event()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.stopping.set())

    def start(self) -> None:
        for child in self.children:
            child.start()

    def wait_ready(self, *, timeout: float) -> bool:
        """True once every child answers; False if one exits or the timeout passes first."""
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        while pending and time.monotonic() < deadline and not self.stopping.is_set():
            for child in list(pending):
                if not child.alive():
                    log.error(
                        "%s exited during start-up; the end of its output:%s", child.name, child.last_lines()
                    )
                    return False
                if child.is_ready():
                    pending.remove(child)
            if pending:
                self.stopping.wait(0.5)
        return not pending

    def supervise(self) -> int:
        """Watch the children until a stop signal; return the exit code for the supervisor."""
        while not self.stopping.is_set():
            for child in self.children:
                if child.alive():
                    continue
                code = child.process.returncode if child.process else None
                now = time.monotonic()
                while child.restarts and now - child.restarts[0] > self.window:
                    child.restarts.popleft()
                if len(child.restarts) >= self.max_restarts:
                    log.error(
                        "%s keeps exiting (last exit code %s); stopping patronbot; the end of its output:%s",
                        child.name,
                        code,
                        child.last_lines(),
                    )
                    return 1
                child.restarts.append(now)
                log.warning("%s exited with code %s; restarting it", child.name, code)
                child.start()
            self.stopping.wait(0.5)
        return 0

    def stop(self, *, grace: float = 15.0) -> None:
        """Stop the children in reverse order of starting (the channel first, the ingester last)."""
        for child in reversed(self.children):
            child.stop(grace=grace)
