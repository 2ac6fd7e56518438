"""The example flows under flows/examples/ load cleanly and route as their comments say."""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flowspec import call

from flowlang import Accept, Gather, Reject, load_program

EXAMPLES = Path(__file__).resolve().parents[2] / "flows" / "examples"
ENV = {name: f"{name.lower()}-secret" for name in (
    "RECEPTION_PASSWORD", "ALICE_PASSWORD", "BOB_PASSWORD", "SALES_TRUNK_PASSWORD", "TILL1_PASSWORD",
    "TILL2_PASSWORD", "OFFICE_PASSWORD", "DESK_PASSWORD", "ITSP_PASSWORD")}
BERLIN = ZoneInfo("Europe/Berlin")


def example(name: str):
    return load_program(EXAMPLES / name, env=ENV)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.flow")), ids=lambda p: p.name)
def test_every_example_loads_without_warnings(path):
    assert load_program(path, env=ENV).warnings == ()


def test_hunt_group_rings_reception_then_the_back_office_then_refuses():
    d = example("hunt-group.flow").decide(call("line:sales", "+15551230000"))
    assert [type(a.terminal) for a in d.plan] == [Accept, Accept, Reject]
    assert [t.name for t in d.plan[1].terminal.targets] == ["alice", "bob"]


def test_parallel_ringing_rings_three_phones_at_once():
    d = example("parallel-ringing.flow").decide(call("user:till1", "200"))
    assert len(d.plan[0].terminal.targets) == 3


def test_time_of_day_sends_a_weekday_afternoon_to_the_desk_and_a_sunday_to_the_mobile():
    p = example("time-of-day.flow")
    weekday = p.decide(call("line:itsp", "4930123456", at=datetime(2026, 11, 25, 15, 0, tzinfo=BERLIN)))
    sunday = p.decide(call("line:itsp", "4930123456", at=datetime(2026, 11, 29, 15, 0, tzinfo=BERLIN)))
    assert weekday.plan[0].terminal.targets[0].name == "desk"
    assert sunday.plan[0].terminal.targets[0].number == "+491701234567"
    [closed] = sunday.plan[1].actions
    assert closed.answered and closed.file == str(EXAMPLES / "closed.wav")


def test_number_rewriting_turns_local_dialling_into_e164():
    p = example("number-rewriting.flow")
    assert p.decide(call(to="92125551234")).plan[0].terminal.targets[0].number == "+12125551234"
    assert p.decide(call(to="011442071234567")).plan[0].terminal.targets[0].number == "+442071234567"
    hidden = p.decide(call(to="*67+15559876543"))
    assert hidden.plan[0].terminal.targets[0].number == "+15559876543"


def test_the_attendant_answers_the_main_number_with_a_menu_1_sales_2_support_0_or_nothing_operator():
    d = example("attendant.flow").decide(call("line:itsp", "+15551230000"))
    menu = d.plan[0].terminal
    assert isinstance(menu, Gather) and menu.prompt.endswith("menu.wav") and menu.retries == 2
    first = {key: menu.branch(key).plan[0].terminal.targets[0].name for key in ("1", "2", "0", "", "7")}
    assert first == {"1": "sales", "2": "support", "0": "operator", "": "operator", "7": "operator"}
