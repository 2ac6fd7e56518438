"""Lines: accounts at IP-telephony providers, registered by us and kept registered (RFC 3261 10.2).

`machine` is the sans-IO state machine (states, refresh, backoff, challenges, un-registration);
`client` runs it on asyncio for the engine; `trust` indexes which source addresses are a line's provider.
"""

from .client import LineClient
from .machine import LineConfig, LineMachine, LineState, LocalAddress

__all__ = ["LineClient", "LineConfig", "LineMachine", "LineState", "LocalAddress"]
