"""Config validation, policy rules, JIDs and money text; no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from imserver.config import ConfigError, load_config
from imserver.domain.jids import InvalidJid, normalize_jid
from imserver.domain.money import format_amount, parse_minor_units
from imserver.domain.policy import Policy, PolicyError

CONFIG = Path(__file__).parents[2] / "config.toml"


def test_shipped_config_loads_with_the_design_defaults() -> None:
    config = load_config(CONFIG, env={})
    policy = config.policy.to_policy()
    assert policy == Policy(1000, (3000, 2000), (1500, 1000, 500))
    assert config.xmpp.component == "dist.localhost"


def test_environment_overrides_any_field() -> None:
    config = load_config(
        CONFIG,
        env={
            "IMSERVER_XMPP__COMPONENT_PORT": "6000",
            "IMSERVER_ADMINS": '["Boss@Example.org/phone"]',
            "IMSERVER_POLICY__REFERRAL_BP": "[2000]",
        },
    )
    assert config.xmpp.component_port == 6000
    assert config.admins == ("boss@example.org",)
    assert config.policy.referral_bp == (2000,)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"IMSERVER_XMPP__COMPONENT_PORT": "70000"}, "xmpp.component_port"),
        ({"IMSERVER_POLICY__REFERRAL_BP": "[3000, 2000, 1000]"}, "policy"),
        ({"IMSERVER_POLICY__POOL_BP": "20000"}, "policy"),
        ({"IMSERVER_MONEY__CURRENCIES": '{"XYZ": 5}'}, "money.currencies"),
        ({"IMSERVER_DATABASE__URL": "mysql://x"}, "database.url"),
        ({"IMSERVER_XMPP__HOST": "xmpp.example.org"}, "xmpp"),
        ({"IMSERVER_XMPP__NOPE": "1"}, "xmpp.nope"),
    ],
)
def test_bad_config_names_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, env=env)
    assert field in str(err.value)


def test_third_level_only_with_override_and_never_a_fourth() -> None:
    Policy(1000, (3000, 2000, 1000), allow_third_level=True).validate()
    with pytest.raises(PolicyError):
        Policy(1000, (3000, 2000, 1000)).validate()
    with pytest.raises(PolicyError):
        Policy(1000, (3000, 2000, 1000, 500), allow_third_level=True).validate()
    with pytest.raises(PolicyError):
        Policy(1000, (6000, 2000), (1500, 1000, 500)).validate()


@pytest.mark.parametrize(
    ("raw", "bare"),
    [("Bob@Example.ORG/phone", "bob@example.org"), (" alice@localhost ", "alice@localhost")],
)
def test_jids_normalise(raw: str, bare: str) -> None:
    assert normalize_jid(raw) == bare


@pytest.mark.parametrize(
    "raw", ["", "@x", "a@", "a b@x", "a@b@c", "a\x00@x", "a@-x-", "x" * 1100 + "@x"]
)
def test_bad_jids(raw: str) -> None:
    with pytest.raises(InvalidJid):
        normalize_jid(raw)


def test_money_text() -> None:
    assert format_amount(300, "CNY") == "¥3.00"
    assert format_amount(-123456, "USD") == "-$1,234.56"
    assert format_amount(500, "JPY") == "¥500"
    assert format_amount(1234, "BHD") == "1.234 BHD"


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "1e3", " 10", "", "abc", "9" * 30, "１０"])
def test_amounts_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_minor_units(raw, cap=10**8)


def test_amount_cap() -> None:
    assert parse_minor_units("100000000", cap=10**8) == 10**8
    with pytest.raises(ValueError):
        parse_minor_units("100000001", cap=10**8)
