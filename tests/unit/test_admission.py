"""Admission control: new calls are shed when datagrams pile up unread, not on a busy moment."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

import pytest

from runtime.engine import OVERLOAD_BACKLOG, Engine
from runtime.transport import ListenSpec


def probes(backlogs: list[int | None], *, cpu_busy: bool = False) -> list[bool]:
    """Feed the lag probe these receive-queue readings (on-time probes); `overloaded` after each."""
    async def scenario() -> list[bool]:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(36700, 36799), admission_control=False)
        await engine.start()
        readings = iter(backlogs)
        engine.endpoint.receive_backlog = lambda: next(readings)  # type: ignore[method-assign]
        if cpu_busy:  # a window that says the process used the whole last second
            engine._cpu_window.append((engine.now() - 0.9, time.process_time() - 0.9))
        states = []
        for _ in backlogs:
            engine._probe_lag(engine.now())
            engine._lag_timer.cancel()  # type: ignore[union-attr]
            states.append(engine.overloaded)
        await engine.stop()
        return states

    return asyncio.run(scenario())


def test_a_queue_over_the_limit_and_growing_sheds_new_calls() -> None:
    assert probes([OVERLOAD_BACKLOG + 1, OVERLOAD_BACKLOG + 2]) == [False, True]


def test_a_full_queue_that_is_draining_is_a_burst_not_an_overload() -> None:
    full = OVERLOAD_BACKLOG * 3 // 2
    assert probes([full, full - 100_000, full - 300_000, 0]) == [False, False, False, False]


def test_one_full_reading_alone_is_a_burst_not_an_overload() -> None:
    assert probes([OVERLOAD_BACKLOG + 1, 0, OVERLOAD_BACKLOG + 1, 0]) == [False, False, False, False]


def test_a_queue_near_the_buffers_size_sheds_at_once() -> None:
    assert probes([OVERLOAD_BACKLOG * 2 + 1]) == [True]


def test_new_calls_are_taken_again_once_the_queue_has_drained() -> None:
    big = OVERLOAD_BACKLOG + 1
    assert probes([big, big, OVERLOAD_BACKLOG // 2, 0]) == [False, True, True, False]


def test_a_busy_cpu_with_an_empty_queue_takes_calls() -> None:
    assert probes([0, 0, 0], cpu_busy=True) == [False, False, False]


def test_without_a_measurable_queue_a_busy_cpu_sheds() -> None:
    assert probes([None, None], cpu_busy=True) == [True, True]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_MEMINFO is Linux's")
def test_the_receive_queue_is_measured_on_the_sip_socket() -> None:
    async def scenario() -> tuple[int | None, int | None]:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(36700, 36799), admission_control=False)
        await engine.start()
        idle = engine.endpoint.receive_backlog()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(20):
                s.sendto(b"\r\n\r\n" + b" " * 500, ("127.0.0.1", engine.ports["udp"]))
            time.sleep(0.05)  # the loop is blocked: the datagrams wait in the kernel
            queued = engine.endpoint.receive_backlog()
        await engine.stop()
        return idle, queued

    idle, queued = asyncio.run(scenario())
    assert idle == 0
    assert queued is not None and queued >= 20 * 500
