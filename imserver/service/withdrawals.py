"""Withdrawals: a member asks (the amount is reserved at once), an admin approves or rejects."""

from __future__ import annotations

from imserver.domain.money import format_amount
from imserver.service.authz import Capability, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import bad_request, conflict, not_acceptable, not_found
from imserver.service.inputs import parse_amount, parse_currency, parse_reason, parse_ref
from imserver.service.money_views import WithdrawalView
from imserver.store import audit, ledger
from imserver.store import withdrawals as store
from imserver.store.db import Conn
from imserver.store.withdrawals import WithdrawalRecord

ACTIONS = {"approve": "approved", "reject": "rejected"}
MAX_LIST = 100


def _view(w: WithdrawalRecord) -> WithdrawalView:
    return WithdrawalView(
        w.id, w.jid, w.amount, w.currency, w.status, w.created_at, w.ref, w.reason
    )


class Withdrawals:
    """ask, decide (admin) and list."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ask(
        self, sender: str, amount: str | None, currency: str | None, ref: str | None = None
    ) -> WithdrawalView:
        """Reserve ``amount`` of the sender's available balance for a payout."""
        code = parse_currency(currency, self.ctx.config.money.currencies)
        value = parse_amount(amount, self.ctx.config.money.currencies[code])
        key = parse_ref(ref, "id") if ref is not None else None
        minimum = self.ctx.config.money.withdrawal_minimum.get(code, 1)

        async def use_case(conn: Conn) -> WithdrawalView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            member = actor.require_member()
            actor.require(Capability.WITHDRAWAL_ASK)
            if key is not None:
                found = await store.find_by_ref(conn, member.id, key)
                if found is not None:
                    if found.amount != value or found.currency != code:
                        raise conflict(f"withdrawal {key} was asked with another amount")
                    return _view(found)
            balances = await ledger.lock_member_balances(conn, member.id, code)
            available = balances.get(ledger.AVAILABLE, 0)
            if available < 0:
                raise not_acceptable(
                    f"your available balance is negative ({format_amount(available, code)}): "
                    "no withdrawal until it is positive again"
                )
            if value < minimum:
                raise not_acceptable(f"the smallest withdrawal is {format_amount(minimum, code)}")
            if value > available:
                raise not_acceptable(
                    f"you asked for {format_amount(value, code)} but only "
                    f"{format_amount(available, code)} is available"
                )
            now = self.ctx.clock()
            wid = await store.insert_withdrawal(
                conn, member_id=member.id, ref=key, amount=value, currency=code, now=now
            )
            await ledger.post(
                conn,
                kind="withdrawal.ask",
                currency=code,
                moves={
                    ledger.member_account(member.id, ledger.AVAILABLE, code): -value,
                    ledger.member_account(member.id, ledger.RESERVED, code): value,
                },
                at=now,
                withdrawal_id=wid,
            )
            created = await store.get(conn, wid)
            assert created is not None
            return _view(created)

        return await self.ctx.db.transaction(use_case)

    async def decide(
        self, sender: str, withdrawal_id: str | None, action: str | None, reason: str | None
    ) -> WithdrawalView:
        """An admin approves (the money leaves) or rejects (the reservation is released)."""
        if not withdrawal_id or not withdrawal_id.isdigit() or len(withdrawal_id) > 18:
            raise bad_request("id must be a withdrawal number")
        if action not in ACTIONS:
            raise bad_request("action must be approve or reject")
        reason = parse_reason(reason)
        status = ACTIONS[action]
        wid = int(withdrawal_id)

        async def use_case(conn: Conn) -> WithdrawalView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.WITHDRAWAL_DECIDE)
            w = await store.get(conn, wid, lock=True)
            if w is None:
                raise not_found(f"no withdrawal {wid}")
            if w.status == status:
                return _view(w)  # the same decision again: nothing more to do
            if w.status != "pending":
                raise conflict(f"withdrawal {wid} was already {w.status}")
            now = self.ctx.clock()
            # Lock the member's accounts in key order before moving the reservation.
            await ledger.lock_member_balances(conn, w.member_id, w.currency)
            if not await store.decide(conn, wid, status=status, by=sender, reason=reason, now=now):
                raise conflict(f"withdrawal {wid} was decided meanwhile")
            reserved = ledger.member_account(w.member_id, ledger.RESERVED, w.currency)
            other = (
                ledger.system_account(ledger.PAYOUTS, w.currency)
                if status == "approved"
                else ledger.member_account(w.member_id, ledger.AVAILABLE, w.currency)
            )
            await ledger.post(
                conn,
                kind=f"withdrawal.{action}",
                currency=w.currency,
                moves={reserved: -w.amount, other: w.amount},
                at=now,
                withdrawal_id=wid,
            )
            await audit.record(
                conn,
                at=now,
                actor=sender,
                action=f"withdrawal.{action}",
                target=w.jid,
                details={"withdrawal": wid, "amount": w.amount, "currency": w.currency},
                reason=reason,
            )
            decided = await store.get(conn, wid)
            assert decided is not None
            return _view(decided)

        return await self.ctx.db.transaction(use_case)

    async def listing(self, sender: str, status: str | None) -> list[WithdrawalView]:
        """The sender's withdrawals; an admin sees everyone's."""
        if status is not None and status not in ("pending", "approved", "rejected"):
            raise bad_request("status must be pending, approved or rejected")

        async def use_case(conn: Conn) -> list[WithdrawalView]:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            member_id = (
                None if actor.may(Capability.WITHDRAWAL_DECIDE) else actor.require_member().id
            )
            rows = await store.listing(conn, member_id=member_id, status=status, limit=MAX_LIST)
            return [_view(w) for w in rows]

        return await self.ctx.db.transaction(use_case)
