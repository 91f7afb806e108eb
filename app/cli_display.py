"""How `lumi generate` and `lumi watch` show a request: a live progress bar on a
terminal, one plain line per event otherwise (logs, pipes, CI)."""

from __future__ import annotations

import shutil
import sys
from typing import Any, Protocol, TextIO

_SYMBOLS = {"PENDING": "·", "GENERATING": "…", "COMPLETED": "✓", "FAILED": "✗"}
_ASCII_SYMBOLS = {"PENDING": ".", "GENERATING": "~", "COMPLETED": "+", "FAILED": "x"}


class Display(Protocol):
    def event(self, event: dict[str, Any], images: list[dict[str, Any]]) -> None:
        """One event of the request, with its images as they are now."""

    def notice(self, text: str) -> None:
        """A line that stays: a saved file, a reconnect, the outcome."""

    def problem(self, text: str) -> None:
        """A line for stderr."""

    def pause(self) -> None:
        """Clears the live line before a question is asked."""

    def close(self) -> None:
        """Leaves the terminal on a fresh line."""


def display_for(stream: TextIO) -> Display:
    return TerminalDisplay(stream) if stream.isatty() else PlainDisplay(stream)


class PlainDisplay:
    """One line per event, no escapes: `#4 30% IMAGE_GENERATING | step | message | images`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def event(self, event: dict[str, Any], images: list[dict[str, Any]]) -> None:
        parts = [f"#{event['seq']} {event['progress']:.0f}% {event['status']}", event["step"]]
        if event.get("message"):
            parts.append(str(event["message"]))
        if event.get("errorCode"):
            parts.append(f"error {event['errorCode']}")
        if images:
            parts.append("images " + " ".join(f"{i['index'] + 1}:{i['status']}" for i in images))
        self.notice(" | ".join(parts))

    def notice(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def problem(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def pause(self) -> None:
        return None

    def close(self) -> None:
        self.stream.flush()


class TerminalDisplay:
    """A bar redrawn in place (carriage return, erase line), notices printed above it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        unicode = (stream.encoding or "").lower().replace("-", "").startswith("utf")
        self.symbols = _SYMBOLS if unicode else _ASCII_SYMBOLS
        self.fill, self.empty = ("█", "░") if unicode else ("#", "-")
        self.live = ""

    def event(self, event: dict[str, Any], images: list[dict[str, Any]]) -> None:
        progress = max(0.0, min(100.0, float(event["progress"])))
        done = round(progress / 100 * 24)
        bar = self.fill * done + self.empty * (24 - done)
        marks = " ".join(f"{i['index'] + 1}{self.symbols.get(i['status'], '?')}" for i in images)
        text = f"[{bar}] {progress:3.0f}%  {event['step']}"
        if marks:
            text += f"  images {marks}"
        if event.get("errorCode"):
            text += f"  ({event['errorCode']})"
        self.live = text[: shutil.get_terminal_size().columns - 1]
        self._draw()

    def notice(self, text: str) -> None:
        self.stream.write("\r\x1b[2K" + text + "\n")
        self._draw()

    def problem(self, text: str) -> None:
        self.pause()
        print(text, file=sys.stderr, flush=True)
        self._draw()

    def pause(self) -> None:
        self.stream.write("\r\x1b[2K")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
        self.live = ""
        self.stream.flush()

    def _draw(self) -> None:
        self.stream.write("\r\x1b[2K" + self.live)
        self.stream.flush()
