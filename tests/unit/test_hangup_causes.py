"""callflow_call_hangups counts hang-ups by channel and by a fixed set of causes, not by the event's
free-text reason (which names codes, seconds and channels, so each new reason was a new series): at
most len(HANGUP_CAUSES) x len(HANGUP_CHANNELS) series, however many distinct reasons calls end with.
The reason itself stays in the event and the call record."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runtime.control.metrics import HANGUP_CAUSES, HANGUP_CHANNELS, Metrics, hangup_cause


def hangups(metrics: Metrics) -> dict[str, float]:
    return {k: v for k, v in metrics.snapshot().items() if k.startswith("callflow_call_hangups_total")}


@pytest.mark.parametrize(("reason", "cause"), [
    (None, "bye"),
    ("BYE", "bye"),
    ("cancelled", "cancelled"),
    ("no ACK", "no_ack"),
    ("maximum call duration (3600 s) reached", "max_duration"),
    ("no RTP either way for 60 s", "no_rtp"),
    ("session expired: no refresh on channel ZERO within 90 s", "session_timer"),
    ("session refresh failed: 481 from channel ONE", "session_timer"),
    ("transferred", "transferred"),
    ("transfer failed: 486 Busy Here", "transfer_failed"),
    ("503 Service Unavailable (line itsp1 is not registered)", "failed"),
    ("no media with channel ZERO: no port left", "failed"),
    ("something a later feature says", "other"),
])
def test_a_hangup_reason_counts_under_its_cause(reason: str | None, cause: str) -> None:
    assert hangup_cause(reason) == cause and cause in HANGUP_CAUSES


def test_distinct_free_text_reasons_stay_within_the_fixed_series() -> None:
    metrics = Metrics()
    for n in range(500):  # 500 calls ending with 500 different reasons, on every channel
        channel = ("ZERO", "ONE", None, "bogus")[n % 4]
        reason = (f"transfer failed: {400 + n % 200} x{n}", f"session expired: within {n} s",
                  f"{500 + n % 100} Failure {n}", f"a new reason {n}")[n % 4]
        metrics.on_event(SimpleNamespace(name="hangup", fields={"call": f"c{n}", "channel": channel,
                                                                 "reason": reason}))
    series = hangups(metrics)
    assert sum(series.values()) == 500
    assert len(series) <= len(HANGUP_CAUSES) * len(HANGUP_CHANNELS) == 33
    assert not any("x1" in key or "within" in key for key in series)


def test_the_metric_help_names_every_cause() -> None:
    text = Metrics().render().decode()
    assert all(cause in text for cause in HANGUP_CAUSES)
