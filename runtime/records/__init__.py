"""What a server keeps and shows of its calls: call records (CDRs) in SQLite or PostgreSQL, the state
folder they live in, and the SIP trace (debug log and HEP v3 to Homer or sngrep).

    state.py   the state folder's default and checks          cdr.py     events -> one CallRecord per call
    store.py   SQLite / PostgreSQL `call_record` table         writer.py  the writer thread (bounded queue)
    trace.py   SIP messages -> debug lines and HEP packets      hep.py     the HEP v3 encoding and sender
    setup.py   the `run` arguments, the `cdr` command

Nothing here is imported by the SIP layers; the engine is reached only through its EventBus and the
endpoint's `add_observer`.
"""

from .cdr import COLUMNS, OUTCOMES, CallRecord, CallRecorder
from .store import Filters, RecordStoreError, open_store
from .writer import RecordWriter

__all__ = ["COLUMNS", "OUTCOMES", "CallRecord", "CallRecorder", "Filters", "RecordStoreError", "RecordWriter",
           "open_store"]
