"""The `.flow` runtime: runs a compiled flowlang Program on the public SDK (callflow.sdk.SipServer).

- dialplan.py: `Dialplan`, the program x the server's events: applies the declarations (users,
  lines, limits), decides each incoming call, transfer and chat message by the rules, and runs the
  observing handlers.
- reload.py: `Reloader`, hot reload: watches the files the program reads, compiles on a worker
  thread, swaps the program in one step or keeps the old one.

It is a client of `callflow.sdk` like any Python program (issue 12): it imports the SDK's public
names and flowlang, never `runtime` (tests/unit/test_flowrun_public.py specifies it). That is why it
lives in `callflow/` rather than in `runtime/`: the SDK imports the runtime, so a runtime module
built on the SDK would make the packages import each other.
"""

from .dialplan import RING_TIMEOUT, CallFacts, CallRecords, Dialplan
from .reload import FAILED, RELOADED, UNCHANGED, Reloader

__all__ = ["FAILED", "RELOADED", "RING_TIMEOUT", "UNCHANGED", "CallFacts", "CallRecords", "Dialplan", "Reloader"]
