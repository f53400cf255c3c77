"""Reading the ledger: balances, statements and the invariant check."""

from __future__ import annotations

from imserver.service.authz import Capability, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import bad_request, not_found
from imserver.service.inputs import parse_currency, parse_jid
from imserver.service.money_views import (
    BalanceLine,
    BalanceView,
    StatementPage,
)
from imserver.store import ledger, members
from imserver.store.db import Conn
from imserver.store.ledger import LedgerReport

MAX_PAGE = 100
DEFAULT_PAGE = 20


class Ledger:
    """Balances and statements of members; the ledger check of `imserver ledger check`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def _member_id(self, conn: Conn, sender: str, jid: str | None) -> int:
        """The member whose ledger is read: the sender, or anyone for an admin."""
        actor = await resolve_actor(conn, sender, self.ctx.config)
        target = parse_jid(jid, "jid") if jid else sender
        if target != sender:
            actor.require(Capability.BALANCE_ANY)
            member = await members.get_by_jid(conn, target)
            if member is None:
                raise not_found(f"{target} is not a member")
            return member.id
        # A member whose service ended still sees its balance (it may hold money).
        if actor.member is None:
            raise actor.not_a_member()
        return actor.member.id

    async def balance(self, sender: str, jid: str | None = None) -> BalanceView:
        """Pending, available and reserved amounts per currency."""

        async def use_case(conn: Conn) -> BalanceView:
            member_id = await self._member_id(conn, sender, jid)
            found = await ledger.member_balances(conn, member_id)
            lines = [
                BalanceLine(
                    currency,
                    b.get(ledger.PENDING, 0),
                    b.get(ledger.AVAILABLE, 0),
                    b.get(ledger.RESERVED, 0),
                )
                for currency, b in sorted(found.items())
            ]
            return BalanceView(jid or sender, lines)

        return await self.ctx.db.transaction(use_case)

    async def statement(
        self,
        sender: str,
        *,
        jid: str | None = None,
        currency: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        before: str | bool | None = None,
    ) -> StatementPage:
        """A page of the member's ledger entries (XEP-0059: max, after, before)."""
        if currency:
            currency = parse_currency(currency, self.ctx.config.money.currencies)
        size = DEFAULT_PAGE if limit is None else limit
        if not 0 <= size <= MAX_PAGE:
            raise bad_request(f"max must be within 0..{MAX_PAGE}")
        after_id = _cursor(after, "after")
        before_id = _cursor(before, "before") if isinstance(before, str) else None

        async def use_case(conn: Conn) -> StatementPage:
            member_id = await self._member_id(conn, sender, jid)
            entries, count, first = await ledger.statement(
                conn,
                member_id,
                currency=currency,
                limit=size,
                after=after_id,
                before=before_id,
                last_page=before is True,
            )
            return StatementPage(entries, count, first)

        return await self.ctx.db.transaction(use_case)

    async def check(self) -> LedgerReport:
        """The ledger's invariants (every currency sums to zero, balances equal entries)."""
        return await self.ctx.db.transaction(ledger.check)


def _cursor(raw: str | None, what: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise bad_request(f"{what} must be an entry id from a previous page")
    return int(raw)
