"""Payments and refunds: exactly-once distribution into the double-entry ledger."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from imserver.domain import allocation
from imserver.domain.chains import SCOPES
from imserver.domain.money import parse_minor_units
from imserver.service.authz import MERCHANT, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import bad_request, conflict, forbidden, not_acceptable, not_found
from imserver.service.membership import parse_jid
from imserver.service.money_views import DistributionView, share_views
from imserver.service.policies import current_policy
from imserver.store import ledger, members, outbox
from imserver.store import payments as store
from imserver.store.ledger import AccountKey
from imserver.store.models import Member
from imserver.store.payments import PaymentRecord, ShareRecord
from imserver.store.records import MemberRecord

MAX_REF = 128
EARNER_ROLES = ("referrer", "agent")


def parse_ref(raw: str | None, what: str) -> str:
    """A merchant's idempotency key: 1 to 128 printable characters."""
    if not raw or len(raw) > MAX_REF or not raw.isprintable() or raw != raw.strip():
        raise bad_request(f"{what} must be 1 to {MAX_REF} printable characters")
    return raw


class Payments:
    """``payment`` and ``refund`` for a merchant (its own JID or one of its bots)."""

    def __init__(self, ctx: Context, *, notify: bool = True) -> None:
        self.ctx = ctx
        # Notifications can be switched off (benchmarks measure the difference).
        self.notify = notify

    def _currency(self, raw: str | None) -> str:
        code = (raw or "").strip()
        if code not in self.ctx.config.money.currencies:
            accepted = ", ".join(sorted(self.ctx.config.money.currencies))
            raise bad_request(f"currency {code[:8]!r} is not accepted (use one of {accepted})")
        return code

    async def _merchant_of_sender(
        self, conn: AsyncConnection, sender: str, named: str | None
    ) -> MemberRecord:
        """The merchant the sender reports for: itself, or the merchant of its bot JID.

        ``named`` is the optional ``merchant`` attribute: a sender naming a merchant it
        may not report for is refused (forbidden), whoever it is.
        """
        actor = await resolve_actor(conn, sender, self.ctx.config)
        actor.require("payment.send")
        if MERCHANT in actor.kinds and actor.member is not None:
            merchant: MemberRecord | None = actor.member
        elif actor.bot_of is not None:
            merchant = await members.get_by_id(conn, actor.bot_of)
        else:
            merchant = None
        if merchant is None or merchant.role != "merchant" or not merchant.active:
            raise forbidden(f"{sender} is not a bot of an active merchant")
        if named is not None and parse_jid(named, "merchant") != merchant.jid:
            raise forbidden(f"{sender} may not report payments for {named[:100]}")
        return merchant

    async def pay(
        self,
        sender: str,
        ref: str | None,
        payer: str | None,
        amount: str | None,
        currency: str | None,
        merchant_jid: str | None = None,
    ) -> DistributionView:
        """Distribute a payment exactly once; a repeat gets the stored answer."""

        async def use_case(conn: AsyncConnection) -> DistributionView:
            merchant = await self._merchant_of_sender(conn, sender, merchant_jid)
            payment_ref = parse_ref(ref, "payment id")
            payer_jid = parse_jid(payer, "payer")
            code = self._currency(currency)
            try:
                value = parse_minor_units(amount or "", cap=self.ctx.config.money.currencies[code])
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            existing = await store.find_payment(conn, merchant.id, payment_ref)
            if existing is not None:
                return await self._replay(conn, existing, merchant, payer_jid, value, code)
            payer_rec = await members.get_by_jid(conn, payer_jid, shared=True)
            if payer_rec is None:
                raise not_found(f"payer {payer_jid} is not a member")
            if not payer_rec.active:
                raise not_acceptable(f"payer {payer_jid} is {payer_rec.status}")
            return await self._distribute(conn, merchant, payer_rec, payment_ref, value, code)

        return await self.ctx.db.transaction(use_case)

    async def _replay(
        self,
        conn: AsyncConnection,
        p: PaymentRecord,
        merchant: MemberRecord,
        payer_jid: str,
        amount: int,
        currency: str,
    ) -> DistributionView:
        payer = await members.get_by_id(conn, p.payer_id)
        if payer is None or payer.jid != payer_jid or p.amount != amount or p.currency != currency:
            raise conflict(
                f"payment {p.ref} was already reported with another payer, amount or currency"
            )
        shares = await store.shares_of(conn, p.id)
        return DistributionView(
            p.ref, merchant.jid, p.amount, p.currency, p.policy_version, share_views(shares)
        )

    async def _live(self, conn: AsyncConnection, ids: set[int]) -> set[int]:
        """Which of these members are active (a terminated one earns nothing more)."""
        if not ids:
            return set()
        stmt = select(Member.id).where(Member.id.in_(ids), Member.status == "active")
        return {int(i) for i in (await conn.execute(stmt)).scalars()}

    async def _distribute(
        self,
        conn: AsyncConnection,
        merchant: MemberRecord,
        payer: MemberRecord,
        ref: str,
        amount: int,
        currency: str,
    ) -> DistributionView:
        now = self.ctx.clock()
        versioned = await current_policy(conn)
        policy = versioned.policy
        # The stored upline (nearest first, with JIDs), cut to the policy's levels.
        links = await members.upline_view(conn, payer.id, policy.levels)
        upline = [link.member_id for link in links]
        # The payer's stored agency chain (computed at registration, kept by repair).
        agency = await members.agency_view(conn, payer.id)
        live = await self._live(
            conn, {*upline, *(a.agent_id for a in agency if a.agent_id is not None)}
        )
        shares = allocation.allocate(
            amount,
            policy,
            [m if m in live else None for m in upline],
            [(SCOPES[a.scope_level], a.agent_id if a.agent_id in live else None) for a in agency],
            merchant.id,
        )
        # The insert comes first: a concurrent duplicate stops here on the unique key
        # before it locks any account, and is retried into the replay path.
        payment_id = await store.insert_payment(
            conn,
            merchant_id=merchant.id,
            ref=ref,
            payer_id=payer.id,
            amount=amount,
            currency=currency,
            policy_version=versioned.version,
            now=now,
            settle_at=now + timedelta(days=self.ctx.config.policy.hold_days),
        )
        rows = [(s.role, s.level, s.scope, s.member_id, s.amount) for s in shares]
        await store.insert_shares(conn, payment_id, rows)
        # What was just stored, with the JIDs read above in this transaction: no re-read.
        jids: dict[int | None, str | None] = {link.member_id: link.jid for link in links}
        jids.update((a.agent_id, a.agent_jid) for a in agency if a.agent_id is not None)
        jids[merchant.id] = merchant.jid
        stored = [
            ShareRecord(seq, role, level, scope, member_id, jids.get(member_id), share, 0)
            for seq, (role, level, scope, member_id, share) in enumerate(rows)
        ]
        moves: dict[AccountKey, int] = defaultdict(int)
        moves[ledger.system_account(ledger.PAYMENTS_IN, currency)] -= amount
        for s in shares:
            moves[_share_account(s.role, s.member_id, currency, settled=False)] += s.amount
        await ledger.post(
            conn, kind="payment", currency=currency, moves=moves, at=now, payment_id=payment_id
        )
        if self.notify:
            await self._notify(conn, stored, None, ref, merchant, payer.jid, currency, now)
        return DistributionView(
            ref, merchant.jid, amount, currency, versioned.version, share_views(stored)
        )

    async def _notify(
        self,
        conn: AsyncConnection,
        shares: list[ShareRecord],
        parts: list[int] | None,
        ref: str,
        merchant: MemberRecord,
        payer_jid: str,
        currency: str,
        now: Any,
        refund_ref: str | None = None,
    ) -> None:
        """Queue one outbox row per earner share (in this transaction)."""
        rows = []
        for i, s in enumerate(shares):
            amount = s.amount if parts is None else -parts[i]
            if s.role not in EARNER_ROLES or not amount or s.member_id is None or not s.jid:
                continue
            payload = {
                "payment": ref,
                "merchant": merchant.jid,
                "merchant_name": merchant.name or merchant.jid,
                "payer": payer_jid,
                "amount": str(amount),
                "currency": currency,
                "role": s.role,
            }
            if s.level is not None:
                payload["level"] = str(s.level)
            if s.scope:
                payload["scope"] = s.scope
            if refund_ref:
                payload["refund"] = refund_ref
            rows.append((s.member_id, s.jid, payload))
        await outbox.add(conn, rows, now)

    async def refund(
        self,
        sender: str,
        ref: str | None,
        payment: str | None,
        amount: str | None,
        merchant_jid: str | None = None,
    ) -> DistributionView:
        """Reverse part or all of a payment in proportion; idempotent on the refund id."""

        async def use_case(conn: AsyncConnection) -> DistributionView:
            merchant = await self._merchant_of_sender(conn, sender, merchant_jid)
            refund_ref = parse_ref(ref, "refund id")
            payment_ref = parse_ref(payment, "payment")
            try:
                value = parse_minor_units(amount or "", cap=10**18)
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            existing = await store.find_refund(conn, merchant.id, refund_ref)
            if existing is not None:
                return await self._replay_refund(conn, existing, merchant, payment_ref, value)
            p = await store.find_payment(conn, merchant.id, payment_ref, lock=True)
            if p is None:
                raise not_found(f"no payment {payment_ref} from {merchant.jid}")
            left = p.amount - p.refunded
            if value > left:
                raise bad_request(
                    f"refund of {value} exceeds what is left to refund of {p.ref} ({left})"
                )
            return await self._reverse(conn, merchant, p, refund_ref, value)

        return await self.ctx.db.transaction(use_case)

    async def _replay_refund(
        self,
        conn: AsyncConnection,
        r: store.RefundRecord,
        merchant: MemberRecord,
        payment_ref: str,
        amount: int,
    ) -> DistributionView:
        p = await store.get_payment(conn, r.payment_id)
        assert p is not None
        if p.ref != payment_ref or r.amount != amount:
            raise conflict(f"refund {r.ref} was already made with another payment or amount")
        shares = await store.shares_of(conn, p.id)
        parts = await store.refund_parts(conn, r.id)
        return DistributionView(
            p.ref,
            merchant.jid,
            -r.amount,
            p.currency,
            p.policy_version,
            share_views(shares, [-x for x in parts]),
            refund=r.ref,
        )

    async def _reverse(
        self,
        conn: AsyncConnection,
        merchant: MemberRecord,
        p: PaymentRecord,
        ref: str,
        amount: int,
    ) -> DistributionView:
        now = self.ctx.clock()
        shares = await store.shares_of(conn, p.id)
        parts = allocation.reverse(amount, [s.amount - s.refunded for s in shares])
        refund_id = await store.insert_refund(
            conn,
            merchant_id=merchant.id,
            ref=ref,
            payment_id=p.id,
            amount=amount,
            parts=parts,
            now=now,
        )
        settled = p.settled_at is not None
        moves: dict[AccountKey, int] = defaultdict(int)
        moves[ledger.system_account(ledger.PAYMENTS_IN, p.currency)] += amount
        for s, part in zip(shares, parts, strict=True):
            moves[_share_account(s.role, s.member_id, p.currency, settled=settled)] -= part
        await ledger.post(
            conn,
            kind="refund",
            currency=p.currency,
            moves=moves,
            at=now,
            payment_id=p.id,
            refund_id=refund_id,
        )
        if self.notify:
            payer = await members.get_by_id(conn, p.payer_id)
            payer_jid = payer.jid if payer else "a member"
            await self._notify(
                conn, shares, parts, p.ref, merchant, payer_jid, p.currency, now, refund_ref=ref
            )
        return DistributionView(
            p.ref,
            merchant.jid,
            -amount,
            p.currency,
            p.policy_version,
            share_views(shares, [-x for x in parts]),
            refund=ref,
        )


def _share_account(role: str, member_id: int | None, currency: str, *, settled: bool) -> AccountKey:
    """Where a share is booked: earners' pending (available once settled), the platform's
    earnings, the merchant's sales."""
    if role == "platform":
        return ledger.platform_account(currency)
    assert member_id is not None
    if role == "merchant":
        return ledger.member_account(member_id, ledger.SALES, currency)
    return ledger.member_account(
        member_id, ledger.AVAILABLE if settled else ledger.PENDING, currency
    )
