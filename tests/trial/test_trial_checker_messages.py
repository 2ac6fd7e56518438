"""What the checker tells an operator who puts `record call` in the wrong handler."""

from __future__ import annotations

import pytest

from flowlang import FlowError, compile_source

FLOW = '''user alice password "alice-pw-2026x"
on hangup record call "c/{call}.wav"
on incoming from user any accept to user alice
'''


def test_record_call_in_a_hangup_handler_names_every_handler_where_it_may_go() -> None:
    with pytest.raises(FlowError) as refused:
        compile_source(FLOW, "office.flow")
    message = str(refused.value)
    assert "office.flow:2:11" in message
    assert "`on created`" in message and "`on connecting`" in message and "`on connected`" in message
