"""Members from other XMPP servers: the trust of their domains and their limits.

A JID of a domain in ``xmpp.member_domains`` is ours; any other is remote. A remote
domain's trust is an admin's (``remote_domains``, audited) or else the config's:
``open`` (anyone of it may join), ``invite-only`` (only through an invite code or a
referrer of our own domains) or ``blocked`` (nobody; its JIDs are foreign). Each remote
domain may register at most ``hourly_registrations`` members per clock hour and
``max_members`` in all: past either, a registration gets ``resource-constraint``
(``DomainLimited``, which the XMPP layer also tells the admins about in chat).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from imserver.config import TRUSTS, Config
from imserver.domain.jids import domain_of
from imserver.service.authz import Capability, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import ServiceError, bad_request, forbidden
from imserver.service.trust import BLOCKED, INVITE_ONLY, effective_trust, is_remote, trust_of
from imserver.store import audit, domains, epoch, members
from imserver.store.db import Conn
from imserver.store.domains import DomainRecord


class DomainLimited(ServiceError):
    """``resource-constraint``: a remote domain passed one of its limits."""

    def __init__(self, domain: str, text: str) -> None:
        super().__init__("resource-constraint", text)
        self.domain = domain


# What the audit log says of the earnings of a domain's members when it is blocked (True)
# or unblocked: their ledger stays as it is either way.
_EARNINGS = {
    True: "stop: their shares of new payments go to the platform, as vacancies",
    False: "resume with the next payment",
}


def _hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def _this_hour(start: datetime | None, count: int, now: datetime) -> int:
    """A stored hourly count as of ``now``: 0 when it was counted in another hour."""
    return count if start == _hour(now) else 0


@dataclass
class Gate:
    """The remote domains of one registration batch: their trust, and their counts as the
    batch goes (written with it, on rows locked for the batch)."""

    config: Config
    now: datetime
    records: dict[str, DomainRecord]
    # domain -> (members, hour start, that hour's registrations), once the batch counted
    counts: dict[str, tuple[int, datetime | None, int]] = field(default_factory=dict)

    def blocked(self, jid: str) -> bool:
        """Whether ``jid`` is of a blocked remote domain."""
        domain = domain_of(jid)
        return is_remote(jid, self.config) and self._trust(domain) == BLOCKED

    def _trust(self, domain: str) -> str:
        return trust_of(domain, self.records.get(domain), self.config)

    def admit(self, jid: str, referrer: str, by_invite: bool) -> None:
        """Check a remote newcomer against its domain's trust and limits, and count it
        (a local one passes untouched). Raises the refusal."""
        if not is_remote(jid, self.config):
            return
        domain = domain_of(jid)
        ours = ", ".join(self.config.xmpp.member_domains)
        if (
            self._trust(domain) == INVITE_ONLY
            and not by_invite
            and is_remote(referrer, self.config)
        ):
            raise forbidden(
                f"members of {domain} join by invite only: use an invite code, or a "
                f"referrer of {ours}"
            )
        record = self.records.get(domain)
        members, start, count = self.counts.get(domain) or (
            (record.members, record.hour_start, record.hour_count) if record else (0, None, 0)
        )
        start, count = _hour(self.now), _this_hour(start, count, self.now)
        fed = self.config.federation
        if count >= fed.hourly_registrations:
            raise DomainLimited(
                domain,
                f"{domain} has registered {count} members this hour, its limit: "
                "try again in the next hour",
            )
        if members >= fed.max_members:
            raise DomainLimited(
                domain,
                f"{domain} has {members} members, its limit: an admin may raise it "
                "(federation.max_members)",
            )
        self.counts[domain] = (members + 1, start, count + 1)

    async def save(self, conn: Conn) -> None:
        """Store the counts of the domains that registered members in the batch."""
        await domains.count_registrations(conn, self.counts)


async def gate(conn: Conn, senders: set[str], config: Config, now: datetime) -> Gate:
    """The gate of a registration batch: the rows of its remote domains, locked."""
    remote = {domain_of(s) for s in senders if is_remote(s, config)}
    return Gate(config, now, await domains.get_many(conn, remote, lock=True))


@dataclass(frozen=True)
class DomainView:
    """A remote domain as an admin sees it."""

    domain: str
    trust: str
    set_by: str | None  # None: the config's
    members: int
    this_hour: int
    # Set when the change blocked or unblocked the domain: what becomes of its earnings.
    earnings: str | None = None


class Federation:
    """The admins' view and control of remote domains."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def set_trust(
        self, sender: str, domain: str | None, trust: str | None, reason: str | None
    ) -> DomainView:
        """Set a remote domain's trust (``default``: back to the config's); audited."""
        name = (domain or "").strip().lower()
        if not name or "@" in name or "/" in name or len(name) > 255:
            raise bad_request("domain must be a server's domain, such as example.org")
        if name in self.ctx.config.xmpp.member_domains:
            raise bad_request(f"{name} is one of our own domains")
        if trust not in (*TRUSTS, "default"):
            raise bad_request(f"trust must be one of {', '.join(TRUSTS)} or default")
        stored = None if trust == "default" else trust
        now = self.ctx.clock()

        async def use_case(conn: Conn) -> DomainView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.DOMAIN_TRUST)
            before = await domains.get_many(conn, [name], lock=True)
            old = trust_of(name, before.get(name), self.ctx.config)
            await domains.set_trust(conn, name, stored, sender, now)
            new = effective_trust(name, stored, self.ctx.config)
            details: dict[str, object] = {"domain": name, "from": old, "to": trust}
            if (old == BLOCKED) != (new == BLOCKED):
                # Payments read trusts from their cache: every process drops it.
                await epoch.bump(conn)
                details["members"] = await members.count_of_domain(conn, name)
                details["earnings"] = _EARNINGS[new == BLOCKED]
            await audit.record(
                conn,
                at=now,
                actor=sender,
                action="domain.trust",
                target=None,
                details=details,
                reason=reason,
            )
            view = _view(name, (await domains.get_many(conn, [name]))[name], self.ctx.config, now)
            if "earnings" in details:
                earnings = f"the earnings of its {details['members']} members {details['earnings']}"
                view = replace(view, earnings=earnings)
            return view

        return await self.ctx.db.transaction(use_case)

    async def domains(self, sender: str) -> list[DomainView]:
        """Every remote domain that has a trust or members, by name."""
        now = self.ctx.clock()

        async def use_case(conn: Conn) -> list[DomainView]:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.DOMAIN_TRUST)
            return [_view(r.domain, r, self.ctx.config, now) for r in await domains.all_rows(conn)]

        return await self.ctx.db.transaction(use_case)


def _view(domain: str, record: DomainRecord, config: Config, now: datetime) -> DomainView:
    this_hour = _this_hour(record.hour_start, record.hour_count, now)
    return DomainView(
        domain,
        trust_of(domain, record, config),
        record.trust_set_by if record.trust is not None else None,
        record.members,
        this_hour,
    )
