"""Configuration: pydantic models loaded from ``config.toml``, overridable by environment.

Every field can be overridden by ``IMSERVER_<SECTION>__<FIELD>`` (top-level fields:
``IMSERVER_<FIELD>``). Values are parsed as JSON when they look like JSON (lists, tables,
numbers, booleans), else taken as strings. A bad value fails at start with a message that
names the field.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imserver.domain.jids import normalize_jid
from imserver.domain.money import ISO_4217
from imserver.domain.policy import Policy
from imserver.domain.retries import RetryPolicy

ENV_PREFIX = "IMSERVER_"
DEFAULT_SECRET = "imserver-dev-secret"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class XmppConfig(_Strict):
    component: str = "dist.localhost"
    domain: str = "localhost"
    host: str = "127.0.0.1"
    component_port: int = Field(5347, ge=1, le=65535)
    client_port: int = Field(5222, ge=1, le=65535)
    secret: str = DEFAULT_SECRET
    member_domains: tuple[str, ...] = ("localhost",)
    reconnect_max_delay: float = Field(8.0, gt=0, le=300)

    @field_validator("member_domains")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.lower() for d in v)

    @property
    def on_loopback(self) -> bool:
        """Whether the XMPP server is on this machine's loopback."""
        return self.host in {"127.0.0.1", "::1", "localhost"} or self.host.startswith("127.")

    @model_validator(mode="after")
    def _secret_only_on_loopback(self) -> XmppConfig:
        if self.secret == DEFAULT_SECRET and not self.on_loopback:
            raise ValueError(
                "xmpp.secret: the repository's default secret is refused when the XMPP server "
                "is not on loopback; set IMSERVER_XMPP__SECRET"
            )
        return self


class DatabaseConfig(_Strict):
    url: str = "sqlite+aiosqlite:///var/imserver.sqlite3"
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _supported(cls, v: str) -> str:
        if not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB")
        return v


class ProsodyConfig(_Strict):
    data_dir: str = "var/prosody"


class PolicyConfig(_Strict):
    pool_bp: int = 1000
    referral_bp: tuple[int, ...] = (3000, 2000)
    agent_district_bp: int = 1500
    agent_city_bp: int = 1000
    agent_province_bp: int = 500
    allow_third_level: bool = False
    hold_days: int = Field(7, ge=0, le=365)

    def to_policy(self) -> Policy:
        """The domain policy these settings describe (validated by the domain)."""
        return Policy(
            pool_bp=self.pool_bp,
            referral_bp=self.referral_bp,
            agent_bp=(self.agent_district_bp, self.agent_city_bp, self.agent_province_bp),
            allow_third_level=self.allow_third_level,
        )

    @model_validator(mode="after")
    def _valid(self) -> PolicyConfig:
        self.to_policy().validate()
        return self


class MoneyConfig(_Strict):
    currencies: dict[str, int] = {"CNY": 100_000_000, "USD": 10_000_000, "EUR": 10_000_000}
    withdrawal_minimum: dict[str, int] = {"CNY": 1000, "USD": 100, "EUR": 100}

    @field_validator("currencies")
    @classmethod
    def _iso(cls, v: dict[str, int]) -> dict[str, int]:
        for code, cap in v.items():
            if code not in ISO_4217:
                raise ValueError(f"{code!r} is not an ISO 4217 currency code")
            if cap <= 0:
                raise ValueError(f"the upper bound for {code} must be positive")
        return v


class LimitsConfig(_Strict):
    # Requests per second per sender, with a burst; admins and bots get their own.
    rate: float = Field(20.0, gt=0)
    burst: int = Field(40, ge=1)
    privileged_rate: float = Field(500.0, gt=0)
    privileged_burst: int = Field(1000, ge=1)
    # Senders whose bucket is kept in memory (least recently seen evicted first), so a
    # flood of distinct JIDs cannot grow the limiter without bound.
    max_senders: int = Field(100_000, ge=100)
    # How long a sender's "is it a merchant's bot?" answer is trusted before asking again.
    privileged_recheck_seconds: float = Field(60.0, gt=0)
    # The largest stanza the component accepts from the XMPP server (Prosody's own cap on
    # component streams is 512 KiB) and the deepest element nesting inside one stanza.
    max_stanza_bytes: int = Field(512 * 1024, ge=4096, le=64 * 1024 * 1024)
    max_stanza_depth: int = Field(32, ge=8, le=200)


class GeoConfig(_Strict):
    """Location resolution: the nearest-district bound and an optional online geocoder."""

    # A point inside no district polygon (a pier, a coast, an island the boundary data
    # leaves out) goes to the nearest district within this many kilometres, else is refused.
    max_km: float = Field(5.0, ge=0, le=100, allow_inf_nan=False)
    # The uncertainty band: a point within this many kilometres of another district's
    # polygon may lie in either (the shipped outlines are generalised; data/README.md of
    # imserver.geo says how far off they measure), so a merchant placed there is not
    # placed silently: the admin chooses among the candidates.  0 turns the band off.
    band_km: float = Field(0.5, ge=0, le=20, allow_inf_nan=False)
    # How far the distance to the nearest other district is looked for (beyond it a
    # resolution reports none); at least band_km.
    reach_km: float = Field(10.0, ge=0, le=100, allow_inf_nan=False)
    # Online geocoder through geopy (a service name such as "nominatim", its base URL and a
    # timeout in seconds); an empty provider means addresses are matched offline only.
    geocoder_provider: str = ""
    geocoder_url: str = ""
    geocoder_timeout: float = Field(5.0, gt=0, le=60, allow_inf_nan=False)

    @field_validator("geocoder_provider")
    @classmethod
    def _provider(cls, v: str) -> str:
        v = v.strip().lower()
        if v and not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", v):
            raise ValueError(f"{v!r} is not a geopy service name (e.g. nominatim)")
        return v

    @model_validator(mode="after")
    def _geocoder_complete(self) -> GeoConfig:
        if self.geocoder_provider:
            parts = urlsplit(self.geocoder_url.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    "geocoder_url must be http(s)://host[:port][/path] when "
                    "geocoder_provider is set"
                )
        elif self.geocoder_url:
            raise ValueError("geocoder_url is set but geocoder_provider is empty")
        return self


class PaymentsConfig(_Strict):
    # Payments that arrive together are written in one transaction (group commit): the
    # writer takes whatever waits, up to batch_max, and never waits for more.
    batch_max: int = Field(256, ge=1, le=5000)
    # Payers whose chains are kept in memory (oldest dropped first); about 0.5 KB each.
    cached_payers: int = Field(50_000, ge=0, le=5_000_000)


class RegistrationsConfig(_Strict):
    # Registrations that arrive together are written in one transaction (group commit),
    # as payments are.
    batch_max: int = Field(256, ge=1, le=5000)


class NotificationsConfig(_Strict):
    # A member hears of its earnings at most once per window (seconds): one message lists
    # everything earned meanwhile, so the XMPP server stores messages per recipient, not
    # per payment.
    window: float = Field(2.0, ge=0.0, le=3600.0, allow_inf_nan=False)


class LogConfig(_Strict):
    """What the log looks like and what it may say (imserver/logs.py)."""

    # text: today's human lines; kv: key=value per line; json: one JSON object per line.
    format: Literal["text", "kv", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # One line per request (sender, operation, outcome, duration) at INFO; false: DEBUG.
    requests: bool = True
    # A member's JID in the log: full, a stable hash (keyed by the component secret, so
    # it cannot be looked up from a list of JIDs), or hidden.
    jids: Literal["full", "hash", "hidden"] = "hash"


class MetricsConfig(_Strict):
    """The loopback HTTP server of /metrics (Prometheus), /status and /invites/ (the
    posters, for a reverse proxy); off when empty."""

    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _loopback(cls, v: str) -> str:
        v = v.strip()
        if not v:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{v!r}: use HOST:PORT, e.g. 127.0.0.1:9464")
        if host.strip("[]") not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(
                f"{v!r}: the endpoint is unauthenticated and serves on loopback only; "
                "let Prometheus reach it through the machine (or a proxy)"
            )
        return v

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port), or None when the endpoint is off."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class InvitesConfig(_Strict):
    """Where members' invite posters are published, and the font they are drawn with."""

    # The public address of the component's HTTP endpoint (behind the operator's reverse
    # proxy), e.g. https://dist.example.org; empty: the invite answer gives no poster link.
    public_base_url: str = ""
    # A TrueType CJK font file for the posters; empty: Debian's fonts-wqy-zenhei.
    font: str = ""

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("public_base_url must be http(s)://host[:port][/path] or empty")
            if parts.query or parts.fragment:
                raise ValueError("public_base_url takes no query or fragment")
        return v


TRUSTS = ("open", "invite-only", "blocked")


class FederationConfig(_Strict):
    """Members from other XMPP servers: the trust of their domains, and their limits.

    A domain of ``xmpp.member_domains`` is ours; any other is remote. ``open``: anyone of
    that domain may join; ``invite-only``: only through an invite code or a referrer of
    our own domains; ``blocked``: nobody. An admin's ``trust`` command overrides these.
    """

    default_trust: str = "invite-only"
    trust: dict[str, str] = Field(default_factory=dict)  # domain -> trust
    # Per remote domain: registrations per clock hour, and members registered in all.
    hourly_registrations: int = Field(20, ge=0, le=1_000_000)
    max_members: int = Field(500, ge=0, le=100_000_000)
    # Earnings of a remote member stay pending this many days (a local member's: the
    # policy's hold_days; the longer of the two applies): a farm of accounts on a server
    # we do not run is found out before its earnings can be withdrawn.
    hold_days: int = Field(30, ge=0, le=365)
    # A notification that a remote server could not be reached for (our server bounced
    # it) goes again after retry_first_seconds, then after twice as long each time, at
    # most retry_longest_seconds apart; give_up_after_seconds after its first bounce, the
    # next bounce ends it (undeliverable: the ledger still has the earning). Long enough
    # to outlast a remote server's maintenance, short enough that a domain that is gone
    # does not keep its members' messages waiting for ever.
    retry_first_seconds: float = Field(5.0, gt=0, le=3600, allow_inf_nan=False)
    retry_longest_seconds: float = Field(600.0, gt=0, le=86_400, allow_inf_nan=False)
    give_up_after_seconds: float = Field(
        7 * 86_400.0, gt=0, le=90 * 86_400, allow_inf_nan=False
    )

    @field_validator("default_trust")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TRUSTS:
            raise ValueError(f"a trust is one of {', '.join(TRUSTS)}")
        return v

    @field_validator("trust")
    @classmethod
    def _known_each(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {d: t for d, t in v.items() if t not in TRUSTS}
        if bad:
            raise ValueError(f"a trust is one of {', '.join(TRUSTS)}: not {bad}")
        return {d.lower(): t for d, t in v.items()}

    @model_validator(mode="after")
    def _retries_in_order(self) -> FederationConfig:
        if self.retry_longest_seconds < self.retry_first_seconds:
            raise ValueError("retry_longest_seconds must be at least retry_first_seconds")
        if self.give_up_after_seconds < self.retry_first_seconds:
            raise ValueError("give_up_after_seconds must be at least retry_first_seconds")
        return self

    def retry_policy(self) -> RetryPolicy:
        """When bounced notifications go again, and when they are given up."""
        return RetryPolicy(
            first=timedelta(seconds=self.retry_first_seconds),
            longest=timedelta(seconds=self.retry_longest_seconds),
            give_up_after=timedelta(seconds=self.give_up_after_seconds),
        )


class Config(_Strict):
    admins: tuple[str, ...] = ("admin@localhost",)
    xmpp: XmppConfig = XmppConfig()
    database: DatabaseConfig = DatabaseConfig()
    prosody: ProsodyConfig = ProsodyConfig()
    policy: PolicyConfig = PolicyConfig()
    money: MoneyConfig = MoneyConfig()
    limits: LimitsConfig = LimitsConfig()
    geo: GeoConfig = GeoConfig()
    payments: PaymentsConfig = PaymentsConfig()
    registrations: RegistrationsConfig = RegistrationsConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    invites: InvitesConfig = InvitesConfig()
    federation: FederationConfig = FederationConfig()

    @field_validator("admins")
    @classmethod
    def _admins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalize_jid(a) for a in v)


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _overlay_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, raw in env.items():
        # IMSERVER_TEST_* belong to the test suite (IMSERVER_TEST_BACKENDS, …), not to us.
        if not key.startswith(ENV_PREFIX) or key.startswith(f"{ENV_PREFIX}TEST_"):
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[path[-1]] = _parse_env_value(raw)
    return merged


def load_config(
    path: str | Path | None = "config.toml", env: Mapping[str, str] | None = None
) -> Config:
    """Load the config file (if it exists) and apply environment overrides.

    Raises ConfigError with the failing field's dotted name.
    """
    data: dict[str, Any] = {}
    if path is not None and Path(path).exists():
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    data = _overlay_env(data, os.environ if env is None else env)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "config"
            lines.append(f"{field}: {err['msg']}")
        raise ConfigError("bad configuration:\n  " + "\n  ".join(lines)) from None
