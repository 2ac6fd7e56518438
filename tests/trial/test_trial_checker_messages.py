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


def test_a_wrong_option_after_record_call_names_the_options_not_every_top_level_keyword() -> None:
    flow = 'user alice password "alice-pw-2026x"\non connected record call "c/{call}.wav" stereo\n'
    with pytest.raises(FlowError) as refused:
        compile_source(flow, "office.flow")
    message = str(refused.value)
    assert "office.flow:2:41: error: unexpected 'stereo'; expected one of 'both', 'mixed', 'per'" in message, message
    assert "'server'" not in message and "'include'" not in message, message
