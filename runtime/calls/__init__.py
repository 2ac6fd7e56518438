"""The call layer: the back-to-back user agent that joins the leg a call came in on (channel ZERO)
to the leg we dial (channel ONE), with media anchored on us.

- states.py: the states (Channel, CallState and its transition table, the per-leg sub-states)
- legs.py: a leg, the dialplan's Target and Failure, the narrow interface to the host (CallEnv)
- io.py: the machine's inputs (each with `now`) and its actions
- machine.py: CallMachine, sans-IO: inputs in, actions out; no asyncio, clock or socket. It keeps the
  dispatch, `_move` and the media step queue; each job is a mixin in its own module:
  setup_routing.py, in_dialog.py, session_refresh.py, play.py, transfer.py, ending.py, dtmf.py (names.py: the
  timer names and header lists they share)
- forks.py: ForkBuilder, the INVITEs that ring a target (CallEnv.build_forks) and the dialled number
- runner.py: CallRunner, the asyncio side for every call (actions, one timer heap, media steps),
  and CallSession, the call as the dialplan and the engine see it
"""

from .legs import CallEnv, Failure, Leg, Target
from .machine import CallMachine, IllegalMove
from .runner import CallRunner, CallSession
from .states import CALL_TRANSITIONS, CallState, Channel, InviteState

__all__ = ["CALL_TRANSITIONS", "CallEnv", "CallMachine", "CallRunner", "CallSession", "CallState", "Channel",
           "Failure", "IllegalMove", "InviteState", "Leg", "Target"]
