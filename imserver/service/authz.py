"""Authorization in one place: who the sender is, and what each kind of sender may do.

The same table filters the command lists that disco and ``help`` show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from imserver.config import Config
from imserver.domain.jids import domain_of
from imserver.service import trust
from imserver.service.errors import ServiceError, forbidden, registration_required
from imserver.store import bots, members
from imserver.store.db import Conn
from imserver.store.records import MemberRecord

# Kinds of sender. A sender can be several (an admin who is also a user).
FOREIGN = "foreign"  # a JID of a remote domain that is blocked: it may not be a member
NONMEMBER = "nonmember"
USER = "user"
MERCHANT = "merchant"
BOT = "bot"
AGENT = "agent"
ADMIN = "admin"
MEMBER_KINDS = frozenset({USER, MERCHANT, AGENT})


class Capability(StrEnum):
    """What a use case requires of its sender; the value is the name used in logs and docs.

    A ``StrEnum``: a member equals its value, so a capability still reads as its text.
    """

    REGISTER = "register"
    CHAIN_OWN = "chain.own"
    CHAIN_ANY = "chain.any"
    CHAIN_REGION = "chain.region"
    MERCHANT_CREATE = "merchant.create"
    AGENT_ASSIGN = "agent.assign"
    MEMBER_TERMINATE = "member.terminate"
    MEMBER_DELETE = "member.delete"
    MEMBER_REASSIGN = "member.reassign"
    AUDIT_READ = "audit.read"
    MEMBER_FIND = "member.find"
    REGION_VIEW = "region.view"
    REGION_MEMBERS = "region.members"
    STATS = "stats"
    MERCHANT_SALES = "merchant.sales"
    PAYMENT_SEND = "payment.send"
    BOT_MANAGE = "bot.manage"
    POLICY_READ = "policy.read"
    POLICY_SET = "policy.set"
    BALANCE_OWN = "balance.own"
    BALANCE_ANY = "balance.any"
    WITHDRAWAL_ASK = "withdrawal.ask"
    WITHDRAWAL_DECIDE = "withdrawal.decide"
    INVITE_OWN = "invite.own"
    INVITE_ANY = "invite.any"
    INVITE_STATS = "invite.stats"
    DOMAIN_TRUST = "domain.trust"


# capability -> kinds that may use it
PERMISSIONS: dict[Capability, frozenset[str]] = {
    Capability.REGISTER: frozenset({NONMEMBER}),
    Capability.CHAIN_OWN: frozenset(MEMBER_KINDS),
    Capability.CHAIN_ANY: frozenset({ADMIN}),
    Capability.CHAIN_REGION: frozenset({AGENT}),
    Capability.MERCHANT_CREATE: frozenset({ADMIN}),
    Capability.AGENT_ASSIGN: frozenset({ADMIN}),
    # Chain repair and the audit log (imserver.service.repair).
    Capability.MEMBER_TERMINATE: frozenset({ADMIN}),
    Capability.MEMBER_DELETE: frozenset({ADMIN}),
    Capability.MEMBER_REASSIGN: frozenset({ADMIN}),
    Capability.AUDIT_READ: frozenset({ADMIN}),
    # Read-only queries of the human interface (imserver.service.queries).
    Capability.MEMBER_FIND: frozenset({ADMIN}),
    Capability.REGION_VIEW: frozenset({ADMIN}),
    Capability.REGION_MEMBERS: frozenset({ADMIN, AGENT}),
    Capability.STATS: frozenset({ADMIN}),
    Capability.MERCHANT_SALES: frozenset({MERCHANT, BOT, ADMIN}),
    # Payments, ledger and withdrawals (imserver.service.payments and neighbours).
    Capability.PAYMENT_SEND: frozenset({MERCHANT, BOT}),
    Capability.BOT_MANAGE: frozenset({ADMIN, MERCHANT}),
    Capability.POLICY_READ: frozenset({*MEMBER_KINDS, ADMIN, BOT}),
    Capability.POLICY_SET: frozenset({ADMIN}),
    Capability.BALANCE_OWN: frozenset(MEMBER_KINDS),
    Capability.BALANCE_ANY: frozenset({ADMIN}),
    Capability.WITHDRAWAL_ASK: frozenset(MEMBER_KINDS),
    Capability.WITHDRAWAL_DECIDE: frozenset({ADMIN}),
    # Invites and their statistics (imserver.service.invites).
    Capability.INVITE_OWN: frozenset(MEMBER_KINDS),
    Capability.INVITE_ANY: frozenset({ADMIN}),
    Capability.INVITE_STATS: frozenset({ADMIN}),
    # Members from other XMPP servers (imserver.service.federation).
    Capability.DOMAIN_TRUST: frozenset({ADMIN}),
}


# Who a kind of sender is, in a refusal's words ("only admins may do that").
WHO = {
    NONMEMBER: "people who are not members yet",
    USER: "users",
    MERCHANT: "merchants",
    AGENT: "agents",
    BOT: "merchants' bots",
    ADMIN: "admins",
}


def who_may(capability: Capability) -> str:
    """The kinds of sender that have ``capability``, as a person reads them."""
    names = [WHO[k] for k in WHO if k in PERMISSIONS[capability]]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def capabilities_of(kinds: frozenset[str]) -> frozenset[Capability]:
    """Every capability that one of these kinds of sender has (filters command lists)."""
    return frozenset(cap for cap, allowed in PERMISSIONS.items() if kinds & allowed)


@dataclass(frozen=True)
class Actor:
    """The sender of a request, as the service sees it."""

    jid: str
    kinds: frozenset[str]
    member: MemberRecord | None = None
    bot_of: int | None = None  # the merchant a bot JID reports for
    agent_regions: tuple[str, ...] = field(default=())

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.kinds

    def may(self, capability: Capability) -> bool:
        """True when one of the sender's kinds has the capability."""
        return bool(self.kinds & PERMISSIONS[capability])

    def require(self, capability: Capability) -> None:
        """Raise the stanza error a sender without the capability gets."""
        if self.may(capability):
            return
        allowed = PERMISSIONS[capability]
        if (
            FOREIGN not in self.kinds
            and self.member is None
            and allowed & MEMBER_KINDS
            and not allowed & {ADMIN, BOT}
        ):
            raise registration_required()
        raise forbidden(f"{self.jid} may not do that: only {who_may(capability)} may")

    def require_any(self, capabilities: frozenset[Capability]) -> None:
        """Raise unless the sender has one of the capabilities.

        A non-member that joining would entitle gets registration-required, else forbidden.
        """
        if any(self.may(c) for c in capabilities):
            return
        if NONMEMBER in self.kinds and any(PERMISSIONS[c] & MEMBER_KINDS for c in capabilities):
            raise registration_required()
        refusals: list[ServiceError] = []
        for capability in sorted(capabilities):
            try:
                self.require(capability)
            except ServiceError as exc:
                refusals.append(exc)
        for refusal in refusals:
            if refusal.condition == "registration-required":
                raise refusal
        raise refusals[0] if refusals else forbidden(f"{self.jid} may not do that")

    def not_a_member(self) -> ServiceError:
        """The refusal for a sender that is no member: registration-required, except for
        a JID of a domain whose users may not join (telling it to register would lie)."""
        if FOREIGN in self.kinds:
            return forbidden(f"members of {domain_of(self.jid)} may not join this network")
        return registration_required()

    def require_member(self) -> MemberRecord:
        """The sender's active membership, or registration-required."""
        if self.member is None:
            raise self.not_a_member()
        if not self.member.active:
            raise ServiceError("not-acceptable", "your membership has ended")
        return self.member


async def resolve_actor(conn: Conn, jid: str, config: Config) -> Actor:
    """Work out every kind the sender is, from the config and the database."""
    kinds: set[str] = set()
    if jid in config.admins:
        kinds.add(ADMIN)
    if await trust.is_blocked(conn, jid, config):
        kinds.add(FOREIGN)
    member = await members.get_by_jid(conn, jid)
    bot_of = await bots.merchant_of(conn, jid)
    if bot_of is not None:
        kinds.add(BOT)
    regions: tuple[str, ...] = ()
    if member is not None and member.active:
        kinds.add(member.role)
        regions = tuple(await members.agent_regions_of(conn, member.id))
        if regions:
            kinds.add(AGENT)
    elif member is None and FOREIGN not in kinds and bot_of is None:
        kinds.add(NONMEMBER)
    return Actor(jid, frozenset(kinds), member, bot_of, regions)
