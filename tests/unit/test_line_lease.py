"""Specs of a line's lease (runtime/lines/lease.py), on a fake clock: which node registers a line when
several share one database, when it starts and stops, and what it tells the operator."""

from __future__ import annotations

import pytest

from runtime.lines.lease import (
    MIN_PERIOD,
    RENEW_SHARE,
    RETRY_SHARE,
    Emit,
    LeaseMachine,
    LeaseState,
    Release,
    Renew,
    StartRegistering,
    StopRegistering,
    StoreAnswer,
    TryAcquire,
    Wake,
)

PERIOD = 30.0
OURS = StoreAnswer(True, "node-a", 1_800_000_030.0)
THEIRS = StoreAnswer(False, "node-b", 1_800_000_030.0)
AWAY = StoreAnswer(False, error="connection refused")


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def holding(now: float = 0.0) -> LeaseMachine:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    machine.start(now)
    machine.result("acquire", OURS, now)
    return machine


def test_a_node_asks_for_the_lease_as_it_starts_and_registers_only_once_granted() -> None:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    asked = machine.start(0.0)
    assert asked == [TryAcquire("itsp1", PERIOD)]
    granted = machine.result("acquire", OURS, 0.1)
    assert of(granted, StartRegistering) == [StartRegistering("itsp1")]
    assert [e.name for e in of(granted, Emit)] == ["line_lease_acquired"]
    assert of(granted, Emit)[0].fields["node"] == "node-a"
    assert machine.held


def test_a_node_whose_lease_another_holds_does_not_register_and_asks_again_later() -> None:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    machine.start(0.0)
    refused = machine.result("acquire", THEIRS, 0.1)
    assert not of(refused, StartRegistering) and not machine.held
    assert machine.holder == "node-b"
    assert not of(machine.tick(0.1 + PERIOD * RETRY_SHARE - 0.01), TryAcquire)
    assert of(machine.tick(0.1 + PERIOD * RETRY_SHARE), TryAcquire)


def test_the_holder_renews_after_a_share_of_the_period_and_keeps_registering() -> None:
    machine = holding()
    assert not of(machine.tick(PERIOD * RENEW_SHARE - 0.01), Renew)
    renew = machine.tick(PERIOD * RENEW_SHARE)
    assert of(renew, Renew) == [Renew("itsp1", PERIOD)]
    after = machine.result("renew", OURS, PERIOD * RENEW_SHARE + 0.05)
    assert not of(after, StopRegistering) and machine.held
    assert machine.held_until == pytest.approx(PERIOD * RENEW_SHARE + PERIOD)


def test_renewals_failing_while_the_database_is_away_keep_the_line_until_the_lease_runs_out_then_stop_it() -> None:
    machine = holding()
    now = PERIOD * RENEW_SHARE
    events: list = []
    for _ in range(100):  # bounded: the lease runs out within the period
        for action in machine.tick(now):
            events.append(action)
            if isinstance(action, Renew):
                events.extend(machine.result("renew", AWAY, now))
        if not machine.held:
            break
        now += 1.0
    stops = of(events, StopRegistering)
    assert stops == [StopRegistering("itsp1", unregister=False)]
    assert now >= PERIOD  # registered up to the end of the lease, not after
    lost = [e for e in of(events, Emit) if e.name == "line_lease_lost"]
    assert len(lost) == 1 and lost[0].fields["line"] == "itsp1" and "connection refused" in lost[0].fields["reason"]


def test_a_renewal_that_finds_another_node_holding_the_lease_stops_registering_at_once_without_unregistering() -> None:
    machine = holding()
    machine.tick(PERIOD * RENEW_SHARE)
    lost = machine.result("renew", THEIRS, PERIOD * RENEW_SHARE + 0.1)
    assert of(lost, StopRegistering) == [StopRegistering("itsp1", unregister=False)]
    assert [e.fields["reason"] for e in of(lost, Emit)] == ["the lease is held by node-b"]
    assert machine.state is LeaseState.WAITING


def test_the_lease_counts_from_when_the_request_was_sent_so_the_holder_stops_before_the_database_frees_it() -> None:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    machine.start(10.0)
    machine.result("acquire", OURS, 12.5)  # a slow answer: the database dated the row after 10.0
    assert machine.held_until == 10.0 + PERIOD


def test_a_node_that_lost_the_lease_takes_it_again_when_it_is_free_and_registers_again() -> None:
    machine = holding()
    machine.tick(PERIOD * RENEW_SHARE)
    machine.result("renew", THEIRS, PERIOD * RENEW_SHARE)
    retry_at = PERIOD * RENEW_SHARE + PERIOD * RETRY_SHARE
    assert of(machine.tick(retry_at), TryAcquire)
    again = machine.result("acquire", OURS, retry_at)
    assert of(again, StartRegistering) and machine.held


def test_a_clean_stop_unregisters_the_line_then_releases_the_lease() -> None:
    machine = holding()
    stop = machine.stop(5.0)
    assert stop == [StopRegistering("itsp1", unregister=True), Release("itsp1")]
    machine.result("release", StoreAnswer(True), 5.2)
    assert machine.state is LeaseState.STOPPED
    assert machine.tick(100.0) == []


def test_a_stop_without_the_lease_neither_unregisters_nor_releases() -> None:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    machine.start(0.0)
    machine.result("acquire", THEIRS, 0.1)
    assert machine.stop(1.0) == []
    assert machine.state is LeaseState.STOPPED


def test_an_answer_arriving_after_the_lease_ran_out_changes_nothing() -> None:
    machine = holding()
    machine.tick(PERIOD * RENEW_SHARE)
    machine.tick(PERIOD + 1.0)  # renewal unanswered for the whole period: lost
    assert machine.result("renew", OURS, PERIOD + 2.0) == []
    assert not machine.held


def test_every_wait_is_asked_for_as_a_wake_up() -> None:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    machine.start(0.0)
    wakes = of(machine.result("acquire", OURS, 0.0), Wake)
    assert wakes == [Wake(PERIOD * RENEW_SHARE)]


def test_a_lease_shorter_than_a_database_round_trip_allows_is_refused_with_the_minimum() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_PERIOD:g}s"):
        LeaseMachine("itsp1", "node-a", 1.0)


# ---- the line's side of a lost lease (runtime/lines/machine.py) --------------------------------------
def test_a_registered_line_whose_lease_is_lost_stops_without_an_unregister_and_without_carrying_calls() -> None:
    from tests.unit.test_lines_machine import Run, registrar

    run = Run(registrar()).start()
    assert run.state.value == "registered"
    sent = len(run.sent)
    run.apply(run.machine.stop(run.now, unregister=False))
    assert len(run.sent) == sent  # no REGISTER Expires: 0: the provider's binding is the new holder's too
    assert run.machine.done and not run.machine.carries_calls
    assert not [name for name in run.timers if not name.startswith("txn")]
    assert run.named("line_state")[-1]["state"] == "unregistered"


def test_a_node_waiting_for_the_lease_asks_again_just_as_the_holders_row_runs_out() -> None:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    machine.start(0.0)
    machine.result("acquire", StoreAnswer(False, "node-b", 1_800_000_030.0, remaining=1.5), 0.1)
    assert not of(machine.tick(1.5), TryAcquire)
    assert of(machine.tick(1.7), TryAcquire)  # not a whole retry interval (5 s) later


def test_a_wake_up_the_event_loop_runs_a_clock_tick_early_still_acts() -> None:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    machine.start(0.0)
    [wake] = of(machine.result("acquire", THEIRS, 0.0), Wake)
    assert of(machine.tick(wake.at - 1e-9), TryAcquire)


def test_a_wake_up_too_early_to_act_arms_the_next_one_again() -> None:
    machine = LeaseMachine("itsp1", "node-a", PERIOD)
    machine.start(0.0)
    [wake] = of(machine.result("acquire", THEIRS, 0.0), Wake)
    assert of(machine.tick(wake.at - 0.5), Wake) == [wake]
