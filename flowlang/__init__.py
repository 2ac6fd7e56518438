"""The flow language: text in, a Program of plain frozen data out. No SIP, no asyncio."""

from .diagnostics import Diagnostic, FlowError, Position
from .explain import explain
from .fmt import format_source
from .graph import to_dot
from .loader import check_paths, compile_source, load_program
from .model import (
    Accept,
    Action,
    Attempt,
    CallInfo,
    Decision,
    Gather,
    GatherBranch,
    Handler,
    Hangup,
    Line,
    Listen,
    Log,
    Play,
    Program,
    Reject,
    ServerConfig,
    SetCallerId,
    SetHeader,
    Target,
    Template,
    User,
)

__all__ = [
    "Accept", "Action", "Attempt", "CallInfo", "Decision", "Diagnostic", "FlowError", "Gather", "GatherBranch",
    "Handler", "Hangup",
    "Line", "Listen", "Log", "Play", "Position", "Program", "Reject", "ServerConfig", "SetCallerId",
    "SetHeader", "Target", "Template", "User", "check_paths", "compile_source", "explain",
    "format_source", "load_program", "to_dot",
]
