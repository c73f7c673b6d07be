"""Synthetic traffic written at wall-clock pace (the demo behind `pulse up`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from connectors.event_writer import EventWriter
from operators.synthetic import GeneratedEvent

log = logging.getLogger("pulse.traffic")


def write_paced(
    events: Iterator[GeneratedEvent],
    writer: EventWriter,
    stop: threading.Event,
    tick: float = 0.1,
) -> int:
    """Write each event when the wall clock reaches its emission time; returns the count."""
    written = 0
    batch: list[GeneratedEvent] = []
    for event in events:
        while event.emit_ms > time.time() * 1000:
            if batch:
                written += writer.write((e.stream, e.key, e.line) for e in batch)
                batch = []
            if stop.wait(tick):
                writer.close()
                return written
        batch.append(event)
        if len(batch) >= 5000:
            written += writer.write((e.stream, e.key, e.line) for e in batch)
            batch = []
    written += writer.write((e.stream, e.key, e.line) for e in batch)
    writer.close()
    return written


class TrafficThread(threading.Thread):
    def __init__(self, events: Iterator[GeneratedEvent], writer: EventWriter) -> None:
        super().__init__(name="traffic", daemon=True)
        self.events = events
        self.writer = writer
        self.stop_event = threading.Event()
        self.written = 0

    def run(self) -> None:
        try:
            self.written = write_paced(self.events, self.writer, self.stop_event)
        except Exception:
            log.exception("synthetic traffic stopped")

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
