"""Tables. Amounts are integers in minor units; no floats anywhere."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# What erasure (``store/repair.erase``) does with a column that may hold a person's data,
# declared on the column itself: erasure reads these, and tests/test_erasure_rules.py
# fails when a column that could hold a JID or free text declares nothing.
ERASURE = "erasure"
ERASURE_RULES = ("identity", "jid", "json", "text", "drop", "keep")


def erased(rule: str, why: str = "") -> dict[str, str]:
    """A column's erasure rule, for ``mapped_column(info=...)``.

    ``identity``: the member's own JID (becomes the pseudonym); ``jid``: a whole bare JID
    (a deleted member's becomes its pseudonym); ``json``: JSON text in which a deleted
    member's JID may appear as a whole string (rewritten to the pseudonym); ``text``: free
    text (an admin's reason) in which the JID is rewritten wherever it appears; ``drop``:
    the member's personal field (emptied); ``keep``: holds no JID (``why`` says so).
    """
    if rule not in ERASURE_RULES:
        raise ValueError(f"unknown erasure rule {rule!r}")
    if rule == "keep" and not why:
        raise ValueError("a column kept through erasure says why")
    return {ERASURE: rule, "why": why}


class Region(Base):
    """An administrative area. Centroids in micro-degrees (integers)."""

    __tablename__ = "regions"
    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), info=erased("keep", "a place name"))
    level: Mapped[int] = mapped_column(SmallInteger)  # 1 province, 2 city, 3 district
    parent_code: Mapped[str | None] = mapped_column(String(12), index=True)
    lat_e6: Mapped[int] = mapped_column(Integer)
    lon_e6: Mapped[int] = mapped_column(Integer)
    successor_code: Mapped[str | None] = mapped_column(String(12))


class Member(Base):
    """A member, indexed by its normalised bare JID (a pseudonym once deleted)."""

    __tablename__ = "members"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    jid: Mapped[str] = mapped_column(String(1023), unique=True, info=erased("identity"))
    rule_number: Mapped[str] = mapped_column(String(32), unique=True)
    role: Mapped[str] = mapped_column(String(8))  # user | merchant | agent
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    # The live parent (changes with repair and reassignment) and the binding at registration.
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    # Never changed after registration: the invite a member joined through (its statistics).
    original_referrer_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    status: Mapped[str] = mapped_column(String(12), default="active")
    # Keyed hash of an erased JID, so a deleted referrer is told apart from an unknown one.
    erased_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(200), info=erased("drop"))
    location: Mapped[str | None] = mapped_column(String(400), info=erased("drop"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RuleCounter(Base):
    """The last sequence issued per region and role letter: numbers are never reused."""

    __tablename__ = "rule_counters"
    region_code: Mapped[str] = mapped_column(String(12), primary_key=True)
    letter: Mapped[str] = mapped_column(String(1), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)


class Upline(Base):
    """The stored referral chain: one row per live ancestor level (1 = direct referrer)."""

    __tablename__ = "uplines"
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    ancestor_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)


class AgencyLink(Base):
    """The stored agency chain: one row per region level of the member's region."""

    __tablename__ = "agency_links"
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    scope_level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)  # 3 district
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)


class Agent(Base):
    """The active agent of a region (one per region)."""

    __tablename__ = "agents"
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Bot(Base):
    """A bot JID allowed to report payments for a merchant."""

    __tablename__ = "bots"
    jid: Mapped[str] = mapped_column(String(1023), primary_key=True, info=erased("jid"))
    merchant_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyVersion(Base):
    """Every distribution policy ever used, by version number."""

    __tablename__ = "policies"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(  # JSON of Policy.as_dict()
        String(2000), info=erased("keep", "the policy's terms: shares and levels")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(1023), info=erased("jid"))


class AuditEntry(Base):
    """Every admin action: who, when, what, on whom, why."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(1023), info=erased("jid"))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(String(1023), info=erased("jid"))
    details: Mapped[str | None] = mapped_column(String(2000), info=erased("json"))
    reason: Mapped[str | None] = mapped_column(String(500), info=erased("text"))


Index("ix_members_region_role", Member.region_code, Member.role)
Index("ix_agency_region_scope", AgencyLink.region_code, AgencyLink.scope_level)


# --- Payments, ledger, withdrawals and notifications -------------------------------


class Payment(Base):
    """A payment reported by a merchant; ``ref`` is the merchant's idempotency key."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("merchant_id", "ref", name="uq_payments_merchant_ref"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    ref: Mapped[str] = mapped_column(String(128), info=erased("keep", "a merchant's own key"))
    payer_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    policy_version: Mapped[int] = mapped_column(ForeignKey("policies.version"))
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Earnings move from pending to available at settle_at (the hold period's end).
    settle_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Held shares (earnings of remote members) move at held_until instead (None: the
    # payment holds none); held_settled_at records when they did.
    held_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    held_settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PaymentShare(Base):
    """The snapshot of one beneficiary's share of a payment, and how much was refunded."""

    __tablename__ = "payment_shares"
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    role: Mapped[str] = mapped_column(String(10))  # referrer | agent | platform | merchant
    level: Mapped[int | None] = mapped_column(SmallInteger)
    scope: Mapped[str | None] = mapped_column(String(10))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    # A remote member's earning: settles at the payment's held_until (migration 0009).
    held: Mapped[bool] = mapped_column(Boolean, server_default=false())


class Refund(Base):
    """A refund of (part of) a payment; ``ref`` is the merchant's idempotency key."""

    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("merchant_id", "ref", name="uq_refunds_merchant_ref"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    ref: Mapped[str] = mapped_column(String(128), info=erased("keep", "a merchant's own key"))
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RefundShare(Base):
    """How much of each payment share one refund reversed (positive)."""

    __tablename__ = "refund_shares"
    refund_id: Mapped[int] = mapped_column(ForeignKey("refunds.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)


class Account(Base):
    """A ledger account: (owner, bucket, currency); ``balance`` is the sum of its entries.

    owner is ``member:<id>`` (buckets pending, available, reserved, sales), ``platform``
    (bucket earnings) or ``system`` (buckets payments, payouts: the world outside).
    """

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("owner", "bucket", "currency", name="uq_accounts_owner_bucket_currency"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(40))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    bucket: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerTxn(Base):
    """One balanced movement (its entries sum to zero)."""

    __tablename__ = "ledger_txns"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # payment | refund | settlement | withdrawal.ask | withdrawal.approve | withdrawal.reject
    kind: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"))
    withdrawal_id: Mapped[int | None] = mapped_column(ForeignKey("withdrawals.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LedgerEntry(Base):
    """One side of a movement: a signed amount on one account."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    txn_id: Mapped[int] = mapped_column(ForeignKey("ledger_txns.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)


class Withdrawal(Base):
    """A member's request to take money out; reserved on asking, then approved or rejected."""

    __tablename__ = "withdrawals"
    __table_args__ = (UniqueConstraint("member_id", "ref", name="uq_withdrawals_member_ref"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    ref: Mapped[str | None] = mapped_column(  # the member's optional idempotency key
        String(128), info=erased("keep", "a member's own key")
    )
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(10))  # pending | approved | rejected
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(1023), info=erased("jid"))
    reason: Mapped[str | None] = mapped_column(String(500), info=erased("text"))


class OutboxMessage(Base):
    """A notification written in the transaction that caused it, sent after commit."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    recipient: Mapped[str] = mapped_column(String(1023), info=erased("jid"))
    payload: Mapped[str] = mapped_column(String(4000), info=erased("json"))  # the earning
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Taken by a sender at claimed_at (a claim older than the lease lapses), put in the
    # message message_id (kept when sent again), confirmed by the server at sent_at (or
    # ended unsent: given up, or its member erased; nothing more is sent either way).
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The round that claimed it: whichever process gets the server's answer to that
    # round's ping confirms it by this token (ejabberd may route the answer to another
    # process than the one that sent the round).
    claim_token: Mapped[str | None] = mapped_column(
        String(32), index=True, info=erased("keep", "a random round token")
    )
    # A remote server that could not be reached bounced it: unsent again, not claimed
    # before retry_at; the wait grows with the bounces.
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    bounces: Mapped[int] = mapped_column(Integer, server_default="0")
    # When it first bounced (the give-up time counts from it), and when a bounce past that
    # time ended it undelivered (sent_at then too: never claimed again).
    first_bounced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    given_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CommandSession(Base):
    """A command waiting for its next step (an ad-hoc form, a confirmation), kept in the
    database so that the step may reach any process, or the same one after a restart."""

    __tablename__ = "command_sessions"
    # adhoc:<session id>, or chat:<bare JID> for the question waiting for a member's yes.
    key: Mapped[str] = mapped_column(String(1100), primary_key=True, info=erased("text"))
    owner: Mapped[str] = mapped_column(String(1023), info=erased("jid"))  # bare JID
    # An ad-hoc session belongs to the full JID that started it.
    resource: Mapped[str] = mapped_column(
        String(1023), info=erased("keep", "a client's resource, only until the session ends")
    )
    node: Mapped[str] = mapped_column(String(100), info=erased("keep", "a command's name"))
    step: Mapped[str] = mapped_column(String(20))  # submit | confirm
    args: Mapped[str] = mapped_column(String(4000), info=erased("json"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


Index("ix_payments_due", Payment.settled_at, Payment.settle_at)
Index("ix_payments_held_due", Payment.held_settled_at, Payment.held_until)
Index("ix_ledger_entries_account", LedgerEntry.account_id, LedgerEntry.id)
Index("ix_outbox_unsent", OutboxMessage.sent_at, OutboxMessage.id)
Index("ix_outbox_pending", OutboxMessage.sent_at, OutboxMessage.recipient, OutboxMessage.id)
Index("ix_outbox_given_up", OutboxMessage.given_up_at)


class ChainEpoch(Base):
    """One row: a counter that triggers bump on every change of chains, member statuses,
    agents, bots or policies (migration 0003). Caches of those compare it per batch."""

    __tablename__ = "chain_epoch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class RemoteDomain(Base):
    """A remote XMPP domain (not one of ours): the trust an admin set for it, and the
    counts its limits are checked against (kept here so that a check reads one row)."""

    __tablename__ = "remote_domains"
    domain: Mapped[str] = mapped_column(
        String(255), primary_key=True, info=erased("keep", "a server's name, not a person's")
    )
    trust: Mapped[str | None] = mapped_column(String(12))  # None: the config's
    trust_set_by: Mapped[str | None] = mapped_column(String(1023), info=erased("jid"))
    trust_set_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    members: Mapped[int] = mapped_column(Integer, default=0)  # registered, in all
    hour_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hour_count: Mapped[int] = mapped_column(Integer, default=0)  # registered that hour

