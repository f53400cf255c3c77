"""Whose JIDs are ours, and the trust of a remote XMPP domain (see service/federation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from imserver.config import TRUSTS, Config
from imserver.domain.jids import domain_of
from imserver.store import domains
from imserver.store.db import Conn
from imserver.store.domains import DomainRecord

OPEN, INVITE_ONLY, BLOCKED = TRUSTS


def is_remote(jid: str, config: Config) -> bool:
    """Whether ``jid`` belongs to another XMPP server than ours."""
    return domain_of(jid) not in config.xmpp.member_domains


def trust_of(domain: str, record: DomainRecord | None, config: Config) -> str:
    """A remote domain's trust: an admin's, else the config's, else the default."""
    return effective_trust(domain, record.trust if record is not None else None, config)


def effective_trust(domain: str, stored: str | None, config: Config) -> str:
    """A remote domain's trust given the admin's (``stored``, None if none)."""
    if stored is not None:
        return stored
    return config.federation.trust.get(domain, config.federation.default_trust)


@dataclass(frozen=True)
class Earners:
    """What a payment asks of each earner's domain: is it remote (its earnings are held
    ``federation.hold_days``), is it blocked (its earnings go to the platform, as a
    vacancy). ``stored`` is the admins' trusts (``domains.stored_trusts``)."""

    config: Config
    stored: Mapping[str, str]

    def remote(self, jid: str) -> bool:
        """Whether ``jid`` belongs to another XMPP server than ours."""
        return is_remote(jid, self.config)

    def blocked(self, jid: str) -> bool:
        """Whether ``jid`` is of a remote domain that is blocked."""
        return blocked_by(jid, self.stored, self.config)


def blocked_by(jid: str, stored: Mapping[str, str | None], config: Config) -> bool:
    """Whether ``jid`` is of a remote domain that is blocked, given the admins' trusts
    (``stored``, by domain: one absent or None is the config's)."""
    if not is_remote(jid, config):
        return False
    domain = domain_of(jid)
    return effective_trust(domain, stored.get(domain), config) == BLOCKED


async def is_blocked(conn: Conn, jid: str, config: Config) -> bool:
    """Whether ``jid`` is of a remote domain that is blocked (read from the database)."""
    if not is_remote(jid, config):
        return False
    records = await domains.get_many(conn, [domain_of(jid)])
    return blocked_by(jid, {d: r.trust for d, r in records.items()}, config)
