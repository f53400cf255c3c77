"""The retry policy of bounced notifications, from the config; no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imserver.config import ConfigError, load_config
from imserver.domain.retries import RetryPolicy

CONFIG = Path(__file__).parents[2] / "config.toml"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_shipped_policy_is_5_s_doubling_to_10_min_for_7_days() -> None:
    policy = load_config(CONFIG, env={}).federation.retry_policy()
    assert policy == RetryPolicy(timedelta(seconds=5), timedelta(minutes=10), timedelta(days=7))
    waits = [policy.delay(n).total_seconds() for n in range(1, 10)]
    assert waits == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert policy.delay(10_000) == timedelta(minutes=10)  # no overflow however many


def test_policy_from_environment_and_its_deadline() -> None:
    policy = load_config(
        CONFIG,
        env={
            "IMSERVER_FEDERATION__RETRY_FIRST_SECONDS": "0.5",
            "IMSERVER_FEDERATION__RETRY_LONGEST_SECONDS": "2",
            "IMSERVER_FEDERATION__GIVE_UP_AFTER_SECONDS": "5",
        },
    ).federation.retry_policy()
    s = timedelta(seconds=1)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [s / 2, s, 2 * s, 2 * s]
    # After the first bounce, a wait of 0.5 s; later bounces wait longer...
    assert policy.next_try(T0, T0, 1) == T0 + s / 2
    assert policy.next_try(T0, T0 + 2 * s, 3) == T0 + 4 * s
    # ...but never past the deadline: the last try is at it, and a bounce then ends it.
    assert policy.next_try(T0, T0 + 4 * s, 4) == T0 + 5 * s
    assert policy.next_try(T0, T0 + 5 * s, 5) is None
    assert policy.next_try(T0, T0 + 9 * s, 6) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IMSERVER_FEDERATION__RETRY_FIRST_SECONDS": "0"}, "retry_first_seconds"),
        ({"IMSERVER_FEDERATION__RETRY_LONGEST_SECONDS": "1e9"}, "retry_longest_seconds"),
        ({"IMSERVER_FEDERATION__GIVE_UP_AFTER_SECONDS": "-1"}, "give_up_after_seconds"),
        (
            {"IMSERVER_FEDERATION__RETRY_FIRST_SECONDS": "60",
             "IMSERVER_FEDERATION__RETRY_LONGEST_SECONDS": "30"},
            "retry_longest_seconds must be at least retry_first_seconds",
        ),
        (
            {"IMSERVER_FEDERATION__GIVE_UP_AFTER_SECONDS": "1"},
            "give_up_after_seconds must be at least retry_first_seconds",
        ),
    ],
)  # fmt: skip
def test_bad_retry_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, env=env)
