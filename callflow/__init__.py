"""Callflow's public Python package: the SIP server SDK (`callflow.sdk`), for programs that drive the
server from Python instead of (or beside) a `.flow` script. See docs/sdk.md."""

from .sdk import CallSession, Channel, ChatMessage, Event, EventStream, Failure, SipServer, Target, setup_logging

__all__ = ["CallSession", "Channel", "ChatMessage", "Event", "EventStream", "Failure", "SipServer", "Target",
           "setup_logging"]
