"""Checks every test gets for free."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


class _InvalidEvents(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("event=event_invalid"):
            self.seen.append(message)


@pytest.fixture(autouse=True)
def no_event_outside_the_table_of_events(request: pytest.FixtureRequest) -> Iterator[None]:
    """An event whose name or fields flowlang/events.py does not define is a bug in its emitter
    (the bus still delivers it, but handlers and docs would not know its fields): fail the test
    that produced it, naming the event. Tests of that very check opt out with
    `@pytest.mark.invalid_events`."""
    if request.node.get_closest_marker("invalid_events") is not None:
        yield
        return
    handler = _InvalidEvents()
    logger = logging.getLogger("callflow.events")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.seen, f"events outside flowlang/events.py: {handler.seen}"
