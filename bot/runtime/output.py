"""What `patronbot run` shows: its own steps in the terminal; every process's whole output in a log file."""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

LOG_FILE = "patronbot.log"
# A log past this size is moved aside (to NAME.1, replacing the one before) when patronbot starts.
ROTATE_BYTES = 20 * 1024 * 1024
TAIL_LINES = 20

# A log record as patronbot's processes print it: patronbot's format ("... INFO bot.x: message") or
# Rasa's and rasa-sdk's ("... INFO     rasa.x  - message").
_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s+"
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(?P<logger>[\w.]+)(?::|\s+-)\s+(?P<message>.*)$"
)
# patronbot's own code: its steps are shown; other libraries' only when something is wrong.
OWN_LOGGERS = ("bot.", "actions.", "connectors.", "nlu.", "rasa_server.")


def terminal_line(source: str, line: str) -> str | None:
    """What the terminal shows of one line a child printed: patronbot's own steps and anyone's warnings
    and errors, as `source: message`; None for the rest (library notices, deprecation warnings)."""
    record = _RECORD.match(line.rstrip())
    if record is None:
        return None
    level, logger, message = record.group("level", "logger", "message")
    if level == "DEBUG" or (level == "INFO" and not logger.startswith(OWN_LOGGERS)):
        return None
    return f"{source}: {message}" if level == "INFO" else f"{source}: {level.lower()}: {message}"


def open_log(path: Path) -> IO[str]:
    """The log file, appended to; moved aside first when it has grown past ROTATE_BYTES."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size > ROTATE_BYTES:
        path.replace(path.with_name(path.name + ".1"))
    return path.open("a", encoding="utf-8", errors="replace")


class ProcessOutput:
    """Copies each child's output, line by line, into one log file (each line marked with the child's
    name), passes what `terminal_line` keeps to `show`, and keeps each child's last lines for when it
    exits unexpectedly."""

    def __init__(self, path: Path, *, show: Callable[[str], None]) -> None:
        self.path = path
        self.show = show
        self._file = open_log(path)
        self._lock = threading.Lock()
        self._tails: dict[str, deque[str]] = {}

    def write(self, source: str, line: str) -> None:
        self.keep(source, line)
        shown = terminal_line(source, line)
        if shown is not None:
            self.show(shown)

    def keep(self, source: str, line: str) -> None:
        """Into the log file only."""
        with self._lock:
            if not self._file.closed:  # a child may still print while patronbot stops
                self._file.write(f"[{source}] {line.rstrip()}\n")
                self._file.flush()
            self._tails.setdefault(source, deque(maxlen=TAIL_LINES)).append(line.rstrip())

    def follow(self, source: str, stream: IO[bytes]) -> threading.Thread:
        """Read `stream` until it closes, on a thread of its own."""

        def pump() -> None:
            for raw in stream:
                self.write(source, raw.decode("utf-8", errors="replace"))
            stream.close()

        thread = threading.Thread(target=pump, name=f"output of {source}", daemon=True)
        thread.start()
        return thread

    def tail(self, source: str) -> list[str]:
        with self._lock:
            return list(self._tails.get(source, ()))

    def close(self) -> None:
        with self._lock:
            self._file.close()


class OutputHandler(logging.Handler):
    """Puts the supervisor's own log records into the log file beside its children's output."""

    def __init__(self, output: ProcessOutput) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.output.keep("patronbot", self.format(record))
        except Exception:
            self.handleError(record)
