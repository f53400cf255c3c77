"""Whose JIDs are ours, and the trust of a remote XMPP domain (see service/federation)."""

from __future__ import annotations

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
    if record is not None and record.trust is not None:
        return record.trust
    return config.federation.trust.get(domain, config.federation.default_trust)


async def is_blocked(conn: Conn, jid: str, config: Config) -> bool:
    """Whether ``jid`` is of a remote domain that is blocked."""
    if not is_remote(jid, config):
        return False
    domain = domain_of(jid)
    stored = await domains.get_many(conn, [domain])
    return trust_of(domain, stored.get(domain), config) == BLOCKED
