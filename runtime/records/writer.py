"""The records writer: call records leave the event loop through a bounded queue to one thread that
writes them in batches, so a slow disk or a remote PostgreSQL never delays a SIP message.

    event loop:  CallRecorder -> RecordWriter.submit(record)   (a deque append and a notify, no I/O)
    thread:      waits for records, takes up to BATCH at once, writes them in one transaction

A batch that cannot be written (the database went away) is kept and retried with a growing pause;
while it waits, new records queue up to MAX_QUEUE and beyond that are counted as lost and logged,
since holding the event loop for the database would stop every call. `stop()` writes everything
still queued before it returns (bounded by a timeout), so a normal shutdown loses no record.

The last RECENT records are also kept in memory for the live page (`recent`), which must answer
without touching the database from the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from .cdr import CallRecord
from .store import Filters, RecordStore, RecordStoreError, readable

log = logging.getLogger("callflow.cdr")

MAX_QUEUE = 20_000   # records waiting to be written (at 600 calls/s, half a minute of database outage)
BATCH = 500          # records per transaction
LINGER = 0.05        # seconds the thread waits for more records before writing a partial batch
RETRY_MAX = 5.0      # seconds, the longest pause between attempts at a failing database
RECENT = 500         # records kept in memory for `recent`


class RecordWriter:
    """Owns `store` from `start()` on: only the writer thread uses it until `stop()` returns.

    `sink`-compatible: pass `writer.submit` to CallRecorder. Thread-safe `submit`, `recent`.
    """

    def __init__(self, store: RecordStore, *, max_queue: int = MAX_QUEUE, batch: int = BATCH,
                 linger: float = LINGER, preload: bool = True) -> None:
        self.store = store
        self.max_queue = max_queue
        self.batch = batch
        self.linger = linger
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._queue: deque[CallRecord] = deque()
        self._recent: deque[dict[str, object]] = deque(maxlen=RECENT)
        self._cond = threading.Condition()
        self._stopping = False
        self._failing = False
        self._thread: threading.Thread | None = None
        if preload:
            try:  # the page shows the calls before a restart too; read once, before the thread owns the store
                self._recent.extend(reversed(store.query(RECENT)))
            except RecordStoreError as exc:
                log.warning("event=cdr_error store=%s error=%r", store.name, str(exc))

    # ---- the event loop's side ----------------------------------------------------------------------
    def submit(self, record: CallRecord) -> None:
        """Queue one finished record; never blocks on I/O. A full queue loses the record, logged."""
        row = record.as_dict()
        with self._cond:
            self._recent.append(row)
            if len(self._queue) >= self.max_queue:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.error("event=cdr_dropped store=%s dropped=%d queued=%d reason=%s", self.store.name,
                              self.dropped, len(self._queue), '"the database is not keeping up or is down"')
                return
            self._queue.append(record)
            if len(self._queue) == 1 or len(self._queue) >= self.batch:
                self._cond.notify()

    def recent(self, limit: int = 50, **filters: object) -> list[dict[str, object]]:
        """The newest records (at most RECENT are kept), newest first, times in ISO 8601 UTC.

        filters: number, peer, since, until (epoch seconds), outcome; see store.Filters. Raises
        ValueError for an unknown outcome.
        """
        test = Filters(**filters)  # type: ignore[arg-type]
        with self._cond:
            rows = list(self._recent)
        out = []
        for row in reversed(rows):
            if test.matches(row):
                out.append(readable(row))
                if len(out) >= limit:
                    break
        return out

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="callflow-cdr-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then close the store. Returns within about `timeout` seconds; records
        still unwritten then are logged as lost."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("event=cdr_lost store=%s records=%d reason=%s", self.store.name, len(self._queue),
                          '"the database did not take them before shutdown"')
                return
        self.store.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far is written (tests, shutdown). True when done."""
        with self._cond:
            self._cond.notify()
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    # ---- the writer thread ---------------------------------------------------------------------------
    _busy = False

    def _run(self) -> None:
        pause = 0.0
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    self._cond.notify_all()
                    return
                if len(self._queue) < self.batch and not self._stopping and pause == 0.0:
                    # more records are likely on their way: one transaction for them all
                    self._cond.wait(self.linger)
                batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
                self._busy = True
            ok = self._write(batch)
            with self._cond:
                self._busy = False
                if not ok:
                    self._queue.extendleft(reversed(batch))  # keep their order; try again after a pause
                self._cond.notify_all()
                if ok:
                    pause = 0.0
                    continue
                if self._stopping and self.failures >= 3:
                    log.error("event=cdr_lost store=%s records=%d reason=%s", self.store.name, len(self._queue),
                              '"the database refused them at shutdown"')
                    self._queue.clear()
                    self._cond.notify_all()
                    return
                pause = min(RETRY_MAX, max(0.2, pause * 2))
                # sleep the whole pause: new records notify, and must not turn the retries into a spin
                deadline = time.monotonic() + pause
                for _ in range(1000):
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stopping:
                        break
                    self._cond.wait(left)

    def _write(self, batch: list[CallRecord]) -> bool:
        if not batch:
            return True
        try:
            self.store.write(batch)
        except RecordStoreError as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.error("event=cdr_error store=%s error=%r action=%s", self.store.name, str(exc),
                          '"records kept in memory and retried"')
            return False
        except Exception:  # a bug must not kill the thread and silently stop the records
            self.failures += 1
            log.exception("event=cdr_error store=%s", self.store.name)
            return False
        self.written += len(batch)
        if self._failing:
            self._failing = False
            log.warning("event=cdr_recovered store=%s", self.store.name)
        return True
