"""Payments and refunds: exactly-once distribution into the double-entry ledger."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from imserver.domain import allocation
from imserver.domain.chains import SCOPES
from imserver.domain.policy import Policy
from imserver.service.authz import MERCHANT, Capability, resolve_actor
from imserver.service.batching import GroupCommit
from imserver.service.chaincache import ChainCache
from imserver.service.context import Context
from imserver.service.errors import (
    ServiceError,
    bad_request,
    conflict,
    forbidden,
    not_acceptable,
    not_found,
)
from imserver.service.inputs import parse_amount, parse_currency, parse_jid, parse_ref
from imserver.service.money_views import DistributionView, share_views
from imserver.service.trust import Earners
from imserver.store import ledger, members, outbox
from imserver.store import payments as store
from imserver.store.db import Conn
from imserver.store.ledger import AccountKey
from imserver.store.payments import NewPayment, PaymentRecord, ShareRecord
from imserver.store.records import ChainMember, MemberRecord, PayerChain

EARNER_ROLES = ("referrer", "agent")


@dataclass(frozen=True)
class PaymentRequest:
    """A payment as the merchant's bot sent it: attributes unparsed (the batch checks)."""

    sender: str
    ref: str | None
    payer: str | None
    amount: str | None
    currency: str | None
    merchant: str | None = None


@dataclass(frozen=True)
class _Accepted:
    """A request that passed every check that needs no payer: where it stands in the batch."""

    index: int
    merchant: MemberRecord
    ref: str
    payer: str
    amount: int
    currency: str

    @property
    def key(self) -> tuple[int, str]:
        return (self.merchant.id, self.ref)

    def same_as(self, other: _Accepted) -> bool:
        return (self.payer, self.amount, self.currency) == (
            other.payer,
            other.amount,
            other.currency,
        )


class Payments:
    """``payment`` and ``refund`` for a merchant (its own JID or one of its bots).

    Payments go through one writer per process (group commit, ``service/batching.py``):
    the requests that arrive together are checked one by one and then written by a few
    set-based statements in one transaction. Chains, statuses, bot links and the policy
    come from a cache that the database's chain epoch keeps right (``chaincache.py``).
    """

    def __init__(self, ctx: Context, *, notify: bool = True) -> None:
        self.ctx = ctx
        # Notifications can be switched off (benchmarks measure the difference).
        self.notify = notify
        self.cache = ChainCache(ctx.config.payments.cached_payers)
        self.writer: GroupCommit[PaymentRequest, DistributionView] = GroupCommit(
            ctx.db,
            self._pay_batch,
            name="payments",
            cap=ctx.config.payments.batch_max,
            after_commit=ctx.outbox_written,
        )

    async def close(self) -> None:
        """Stop the writer (the batch in flight finishes first)."""
        await self.writer.close()

    async def _merchant_of_sender(self, conn: Conn, sender: str, named: str | None) -> MemberRecord:
        """The merchant the sender reports for: itself, or the merchant of its bot JID.

        ``named`` is the optional ``merchant`` attribute: a sender naming a merchant it
        may not report for is refused (forbidden), whoever it is.
        """
        merchant = self.cache.merchant_of(sender)
        if merchant is None:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.PAYMENT_SEND)
            if MERCHANT in actor.kinds and actor.member is not None:
                merchant = actor.member
            elif actor.bot_of is not None:
                merchant = await members.get_by_id(conn, actor.bot_of)
            if merchant is None or merchant.role != "merchant" or not merchant.active:
                raise forbidden(f"{sender} is not a bot of an active merchant")
            self.cache.remember_merchant(sender, merchant)
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
        return await self.writer.submit(
            PaymentRequest(sender, ref, payer, amount, currency, merchant_jid)
        )

    async def _accept(self, conn: Conn, index: int, r: PaymentRequest) -> _Accepted:
        """Every check of a request that needs no payer, in the protocol's order."""
        merchant = await self._merchant_of_sender(conn, r.sender, r.merchant)
        ref = parse_ref(r.ref, "payment id")
        payer = parse_jid(r.payer, "payer")
        code = parse_currency(r.currency, self.ctx.config.money.currencies)
        value = parse_amount(r.amount, self.ctx.config.money.currencies[code])
        return _Accepted(index, merchant, ref, payer, value, code)

    async def _pay_batch(
        self, conn: Conn, requests: Sequence[PaymentRequest]
    ) -> list[DistributionView | ServiceError]:
        """Answer a batch of payment requests in one transaction (see ``GroupCommit``)."""
        await self.cache.sync(conn)
        version, policy = await self.cache.policy(conn)
        earners = Earners(self.ctx.config, await self.cache.trusts(conn))
        out: list[DistributionView | ServiceError | None] = [None] * len(requests)
        accepted: list[_Accepted] = []
        for i, r in enumerate(requests):
            try:
                accepted.append(await self._accept(conn, i, r))
            except ServiceError as exc:
                out[i] = exc
        stored = await store.find_payments(conn, list({a.key for a in accepted}))
        chains = await self.cache.payers(
            conn, {a.payer for a in accepted if a.key not in stored}, policy.levels
        )
        now = self.ctx.clock()
        hold = _Hold(now, self.ctx.config.policy.hold_days, self.ctx.config.federation.hold_days)
        new: dict[tuple[int, str], tuple[_Accepted, NewPayment, list[ShareRecord]]] = {}
        repeats: list[tuple[_Accepted, _Accepted]] = []
        for a in accepted:
            try:
                if a.key in new:
                    # The same id twice in one batch: the second is a repeat of the first.
                    first = new[a.key][0]
                    if not a.same_as(first):
                        raise _conflict(a.ref)
                    repeats.append((a, first))
                elif a.key in stored:
                    out[a.index] = await self._replay(conn, stored[a.key], a)
                else:
                    new[a.key] = (a, *self._allocate(a, chains.get(a.payer), policy, version,
                                                     hold, earners))  # fmt: skip
            except ServiceError as exc:
                out[a.index] = exc
        if new:
            await self._write(conn, list(new.values()), now)
        views = {}
        for a, _, shares in new.values():
            views[a.key] = DistributionView(
                a.ref, a.merchant.jid, a.amount, a.currency, version, share_views(shares)
            )
            out[a.index] = views[a.key]
        for a, first in repeats:
            out[a.index] = views[first.key]
        assert all(o is not None for o in out)
        return out  # type: ignore[return-value]

    def _allocate(
        self,
        a: _Accepted,
        chain: PayerChain | None,
        policy: Policy,
        version: int,
        hold: _Hold,
        earners: Earners,
    ) -> tuple[NewPayment, list[ShareRecord]]:
        """The split of one new payment, from the payer's chains as cached.

        An earner of a blocked remote domain earns nothing: its share is a vacancy (the
        platform's). A remote earner's share is held until the longer remote hold ends.
        """
        if chain is None:
            raise not_found(f"payer {a.payer} is not a member")
        if not chain.member.active:
            raise not_acceptable(f"payer {a.payer} is {chain.member.status}")
        upline = chain.upline[: policy.levels]
        agency = [(SCOPES[level], agent) for level, agent in chain.agency]
        shares = allocation.allocate(
            a.amount,
            policy,
            [_earner_id(m, earners) for m in upline],
            [(scope, _earner_id(g, earners)) for scope, g in agency],
            a.merchant.id,
        )
        jids: dict[int | None, str] = {m.member_id: m.jid for m in upline}
        jids.update((g.member_id, g.jid) for _, g in agency if g is not None)
        jids[a.merchant.id] = a.merchant.jid
        rows = [
            (s.role, s.level, s.scope, s.member_id, s.amount,
             hold.longer and s.role in EARNER_ROLES and earners.remote(jids[s.member_id]))
            for s in shares
        ]  # fmt: skip
        records = [
            ShareRecord(seq, role, level, scope, member_id, jids.get(member_id), share, 0, held)
            for seq, (role, level, scope, member_id, share, held) in enumerate(rows)
        ]
        held_until = hold.remote if any(r[5] for r in rows) else None
        payment = NewPayment(
            a.merchant.id, a.ref, chain.member.id, a.amount, a.currency, version, hold.now,
            hold.local, held_until, rows,
        )  # fmt: skip
        return payment, records

    async def _write(
        self,
        conn: Conn,
        new: list[tuple[_Accepted, NewPayment, list[ShareRecord]]],
        now: datetime,
    ) -> None:
        """Store new payments, their shares, ledger movements and notifications."""
        ids = await store.insert_payments(conn, [p for _, p, _ in new])
        movements = []
        notices: list[tuple[int, str, dict[str, str]]] = []
        for payment_id, (a, _, shares) in zip(ids, new, strict=True):
            moves: dict[AccountKey, int] = defaultdict(int)
            moves[ledger.system_account(ledger.PAYMENTS_IN, a.currency)] -= a.amount
            for s in shares:
                moves[_share_account(s.role, s.member_id, a.currency, settled=False)] += s.amount
            movements.append(
                ledger.Movement("payment", a.currency, moves, now, payment_id=payment_id)
            )
            if self.notify:
                notices.extend(_earnings(shares, None, a.ref, a.merchant, a.payer, a.currency))
        await ledger.post_many(conn, movements)
        await outbox.add(conn, notices, now)

    async def _replay(self, conn: Conn, p: PaymentRecord, a: _Accepted) -> DistributionView:
        payer = await members.get_by_id(conn, p.payer_id)
        same = payer is not None and payer.jid == a.payer
        if not same or p.amount != a.amount or p.currency != a.currency:
            raise _conflict(p.ref)
        shares = await store.shares_of(conn, p.id)
        return DistributionView(
            p.ref, a.merchant.jid, p.amount, p.currency, p.policy_version, share_views(shares)
        )

    async def refund(
        self,
        sender: str,
        ref: str | None,
        payment: str | None,
        amount: str | None,
        merchant_jid: str | None = None,
    ) -> DistributionView:
        """Reverse part or all of a payment in proportion; idempotent on the refund id."""

        async def use_case(conn: Conn) -> DistributionView:
            await self.cache.sync(conn)  # the cache answers for senders only once synced
            merchant = await self._merchant_of_sender(conn, sender, merchant_jid)
            refund_ref = parse_ref(ref, "refund id")
            payment_ref = parse_ref(payment, "payment")
            value = parse_amount(amount)
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

        view = await self.ctx.db.transaction(use_case)
        self.ctx.outbox_written()
        return view

    async def _replay_refund(
        self,
        conn: Conn,
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
        conn: Conn,
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
        moves: dict[AccountKey, int] = defaultdict(int)
        moves[ledger.system_account(ledger.PAYMENTS_IN, p.currency)] += amount
        for s, part in zip(shares, parts, strict=True):
            settled = p.share_settled(s.held)
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
            earnings = _earnings(shares, parts, p.ref, merchant, payer_jid, p.currency, ref)
            await outbox.add(conn, earnings, now)
        return DistributionView(
            p.ref,
            merchant.jid,
            -amount,
            p.currency,
            p.policy_version,
            share_views(shares, [-x for x in parts]),
            refund=ref,
        )


class _Hold:
    """When a batch's new payments settle: ``local`` for their shares, ``remote`` for
    the held ones (remote members' earnings), held only when that hold is ``longer``."""

    __slots__ = ("local", "longer", "now", "remote")

    def __init__(self, now: datetime, local_days: int, remote_days: int) -> None:
        self.now = now
        self.local = now + timedelta(days=local_days)
        self.remote = now + timedelta(days=remote_days)
        self.longer = remote_days > local_days


def _earner_id(m: ChainMember | None, earners: Earners) -> int | None:
    """The member id that earns this place of a chain, or None: a vacancy (no one, an
    inactive member, or a member of a blocked remote domain)."""
    if m is None or not m.active or earners.blocked(m.jid):
        return None
    return m.member_id


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


def _conflict(ref: str) -> ServiceError:
    return conflict(f"payment {ref} was already reported with another payer, amount or currency")


def _earnings(
    shares: Sequence[ShareRecord],
    parts: Sequence[int] | None,
    ref: str,
    merchant: MemberRecord,
    payer_jid: str,
    currency: str,
    refund_ref: str | None = None,
) -> list[tuple[int, str, dict[str, str]]]:
    """The outbox rows of a payment (or of a refund's ``parts``): one per earner share."""
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
    return rows
