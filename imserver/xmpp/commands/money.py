"""Commands over balances, statements, withdrawals, the policy and merchants' bots.

People type amounts in major units with decimals (``withdraw 12.50 CNY``); the wire and
the services use integer minor units, so the translation happens here, exactly, without
floats.
"""

from __future__ import annotations

import re

from imserver.domain.money import ISO_4217
from imserver.service.authz import Capability
from imserver.service.errors import bad_request
from imserver.service.money_views import PolicyView, WithdrawalView
from imserver.xmpp.commands.base import (
    Args,
    Cell,
    Column,
    Command,
    Field,
    Money,
    Result,
    Table,
    Text,
    int_arg,
    optional,
    required,
)

_DECIMAL = re.compile(r"^(\d{1,15})(?:[.,](\d{1,4}))?$")
CHAT_STATEMENT_PAGE = 20


def minor_units(text: str, currency: str) -> str:
    """``"12.50", "CNY"`` -> ``"1250"``: a typed amount as the service's minor-unit digits."""
    m = _DECIMAL.match(text.strip())
    if not m:
        raise bad_request("amount must be a number such as 12.50")
    exp = ISO_4217.get(currency, 2)
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > exp:
        raise bad_request(f"{currency} has {exp} decimals")
    return str(int(whole) * 10**exp + (int(frac.ljust(exp, "0")) if exp else 0))


def _currency(command: Command, args: Args) -> str:
    """The typed currency, or the only one this server accepts."""
    typed = optional(args, "currency")
    if typed:
        return typed.upper()
    accepted = list(command.services.ctx.config.money.currencies)
    if len(accepted) == 1:
        return accepted[0]
    raise bad_request("say which currency: " + ", ".join(accepted))


def policy_details(view: PolicyView) -> list[tuple[str, Cell]]:
    """A policy in percent, as people read it."""

    def pct(bp: int) -> str:
        return f"{bp / 100:g}%"

    rows: list[tuple[str, Cell]] = [("Version", view.version), ("Pool", pct(view.pool_bp))]
    rows += [(f"Referral level {i}", pct(bp)) for i, bp in enumerate(view.referral_bp, 1)]
    for scope, bp in zip(("District", "City", "Province"), view.agent_bp, strict=True):
        rows.append((f"{scope} agent", pct(bp)))
    return rows


def withdrawal_row(w: WithdrawalView) -> dict[str, Cell]:
    """One withdrawal as a table row."""
    return {
        "id": f"#{w.id}",
        "jid": w.jid,
        "amount": Money(w.amount, w.currency),
        "status": w.status,
        "at": w.created_at.strftime("%Y-%m-%d"),
        "reason": w.reason,
    }


WITHDRAWAL_COLUMNS = [
    Column("id", "Number"),
    Column("jid", "Member"),
    Column("amount", "Amount"),
    Column("status", "Status"),
    Column("at", "Asked on"),
    Column("reason", "Reason"),
]


class Balance(Command):
    name = "My balance"
    node = "balance"
    keywords = ("balance", "my balance")
    help = "What you earned: available, pending (in the hold period) and reserved."
    capabilities = frozenset({Capability.BALANCE_OWN, Capability.BALANCE_ANY})
    fields = (Field("jid", "Member's JID", "jid", required=False, desc="admins: anyone's"),)

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.ledger.balance(actor, optional(args, "jid"))
        if not view.lines:
            return Text(f"Balance of {view.jid}: nothing earned yet.")
        details: list[tuple[str, Cell]] = []
        several = len(view.lines) > 1
        for line in view.lines:
            prefix = f"{line.currency} " if several else ""
            details += [
                (f"{prefix}Available", Money(line.available, line.currency)),
                (f"{prefix}Pending", Money(line.pending, line.currency)),
                (f"{prefix}Reserved", Money(line.reserved, line.currency)),
            ]
        return Text(f"Balance of {view.jid}", details)


class Statement(Command):
    name = "My statement"
    node = "statement"
    keywords = ("statement", "my statement")
    help = "Your ledger entries, newest first."
    capabilities = frozenset({Capability.BALANCE_OWN, Capability.BALANCE_ANY})
    fields = (
        Field("max", "How many", "int", required=False),
        Field("jid", "Member's JID", "jid", required=False, desc="admins: anyone's"),
    )

    async def run(self, actor: str, args: Args) -> Result:
        page = await self.services.ledger.statement(
            actor,
            jid=optional(args, "jid"),
            limit=int_arg(args, "max", CHAT_STATEMENT_PAGE),
            before=True,  # the last page: the newest entries
        )
        rows: list[dict[str, Cell]] = [
            {
                "at": line.at.strftime("%Y-%m-%d %H:%M"),
                "kind": line.kind,
                "bucket": line.bucket,
                "amount": Money(line.amount, line.currency),
                "ref": line.payment
                or line.refund
                or (f"#{line.withdrawal}" if line.withdrawal else None),
            }
            for line in reversed(page.lines)
        ]
        return Table(
            f"Statement: {page.count} entries",
            [
                Column("at", "When (UTC)"),
                Column("kind", "What"),
                Column("bucket", "Balance"),
                Column("amount", "Amount"),
                Column("ref", "Reference"),
            ],
            rows,
            empty="no entries yet",
        )


class Withdraw(Command):
    name = "Ask for a withdrawal"
    node = "withdraw"
    keywords = ("withdraw", "withdrawal")
    help = "Ask to be paid out of your available balance (an admin approves)."
    capabilities = frozenset({Capability.WITHDRAWAL_ASK})
    fields = (
        Field("amount", "Amount (e.g. 12.50)"),
        Field("currency", "Currency (e.g. CNY)", required=False),
    )

    async def run(self, actor: str, args: Args) -> Result:
        currency = _currency(self, args)
        view = await self.services.withdrawals.ask(
            actor, minor_units(required(args, "amount"), currency), currency
        )
        return Text(
            f"Withdrawal #{view.id} of {Money(view.amount, view.currency)} asked; "
            "an admin will decide.",
            [("Status", view.status)],
        )


class Withdrawals(Command):
    name = "Withdrawals"
    node = "withdrawals"
    keywords = ("withdrawals",)
    help = "Withdrawals: admins see everyone's pending ones, members their own."
    capabilities = frozenset({Capability.WITHDRAWAL_ASK, Capability.WITHDRAWAL_DECIDE})
    fields = (
        Field(
            "status",
            "Status",
            "list",
            required=False,
            options=(("pending", "pending"), ("approved", "approved"), ("rejected", "rejected")),
        ),
    )
    adhoc_form = False

    async def run(self, actor: str, args: Args) -> Result:
        status = optional(args, "status")
        access = await self.services.queries.access(actor)
        if status is None and Capability.WITHDRAWAL_DECIDE in access.capabilities:
            status = "pending"
        found = await self.services.withdrawals.listing(actor, status)
        return Table(
            f"Withdrawals ({status or 'all'}): {len(found)}",
            WITHDRAWAL_COLUMNS,
            [withdrawal_row(w) for w in found],
            footer="approve <number> or reject <number> <reason>"
            if found and status == "pending"
            else "",
            empty="none",
        )


class _Decide(Command):
    action: str
    fields = (
        Field("id", "Withdrawal number", "int"),
        Field("reason", "Reason", required=False, rest=True),
    )
    capabilities = frozenset({Capability.WITHDRAWAL_DECIDE})

    async def run(self, actor: str, args: Args) -> Result:
        number = required(args, "id").lstrip("#")
        view = await self.services.withdrawals.decide(
            actor, number, self.action, optional(args, "reason")
        )
        return Text(
            f"Withdrawal #{view.id} of {Money(view.amount, view.currency)} {view.status}.",
            [("Member", view.jid), ("Status", view.status)],
        )


class Approve(_Decide):
    name = "Approve a withdrawal"
    node = "approve-withdrawal"
    keywords = ("approve",)
    help = "Approve a pending withdrawal: the money leaves."
    action = "approve"


class Reject(_Decide):
    name = "Reject a withdrawal"
    node = "reject-withdrawal"
    keywords = ("reject",)
    help = "Reject a pending withdrawal: the reserved money is available again."
    action = "reject"


class ShowPolicy(Command):
    name = "Distribution policy"
    node = "policy"
    keywords = ("policy",)
    help = "How each payment is shared out (the policy in force)."
    capabilities = frozenset({Capability.POLICY_READ})

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.policy.get(actor)
        return Text("Distribution policy", policy_details(view))


class SetPolicy(Command):
    name = "Set the distribution policy"
    node = "set-policy"
    keywords = ("set policy",)
    help = "Replace the policy (basis points: 1000 = 10%); payments from now on use it."
    capabilities = frozenset({Capability.POLICY_SET})
    fields = (
        Field("pool", "Pool (bp of each payment)", "int"),
        Field("referral", "Referral levels (bp of the pool, e.g. 3000,2000)"),
        Field("district", "District agent (bp)", "int"),
        Field("city", "City agent (bp)", "int"),
        Field("province", "Province agent (bp)", "int"),
        Field("reason", "Reason", required=False, rest=True),
    )

    async def run(self, actor: str, args: Args) -> Result:
        wire: dict[str, str | None] = {
            "pool-bp": required(args, "pool"),
            "referral-bp": required(args, "referral"),
            "district-bp": required(args, "district"),
            "city-bp": required(args, "city"),
            "province-bp": required(args, "province"),
        }
        view = await self.services.policy.replace(actor, wire, optional(args, "reason"))
        return Text(f"Policy version {view.version} is in force.", policy_details(view))


class _BotLink(Command):
    action: str
    capabilities = frozenset({Capability.BOT_MANAGE})
    fields = (
        Field("jid", "Bot's JID", "jid"),
        Field("merchant", "Merchant's JID", "jid", required=False, desc="admins: whose bot"),
    )

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.bots.change(
            actor, required(args, "jid"), optional(args, "merchant"), self.action
        )
        state = "may now report payments for" if view.linked else "no longer reports for"
        return Text(f"{view.jid} {state} {view.merchant}.")


class LinkBot(_BotLink):
    name = "Link a bot"
    node = "link-bot"
    keywords = ("link", "link bot")
    help = "Let a bot JID report payments and refunds for your shop."
    action = "link"


class UnlinkBot(_BotLink):
    name = "Unlink a bot"
    node = "unlink-bot"
    keywords = ("unlink", "unlink bot")
    help = "Stop a bot JID from reporting for your shop."
    action = "unlink"


class Sales(Command):
    name = "Payments of a day"
    node = "sales"
    keywords = ("sales", "payments")
    help = "Your shop's payments and refunds of a day (UTC; default today)."
    capabilities = frozenset({Capability.MERCHANT_SALES})
    fields = (
        Field("day", "Day (YYYY-MM-DD)", required=False, desc="empty: today"),
        Field("merchant", "Merchant's JID", "jid", required=False, desc="admins: whose"),
    )

    async def run(self, actor: str, args: Args) -> Result:
        day = await self.services.queries.merchant_sales(
            actor, optional(args, "day"), optional(args, "merchant")
        )
        rows: list[dict[str, Cell]] = [
            {
                "at": s.at.strftime("%H:%M"),
                "kind": "payment",
                "ref": s.ref,
                "payer": s.payer,
                "amount": Money(s.amount, s.currency),
            }
            for s in day.payments
        ]
        rows += [
            {
                "at": s.at.strftime("%H:%M"),
                "kind": f"refund of {s.payment_ref}",
                "ref": s.ref,
                "payer": s.payer,
                "amount": Money(-s.amount, s.currency),
            }
            for s in day.refunds
        ]
        rows.sort(key=lambda r: str(r["at"]))
        totals: dict[str, int] = {}
        for s in day.payments:
            totals[s.currency] = totals.get(s.currency, 0) + s.amount
        for s in day.refunds:
            totals[s.currency] = totals.get(s.currency, 0) - s.amount
        net = ", ".join(str(Money(v, c)) for c, v in sorted(totals.items()))
        title = (
            f"{day.merchant} on {day.day.isoformat()}: {len(day.payments)} payments, "
            f"{len(day.refunds)} refunds" + (f"; net {net}" if net else "")
        )
        return Table(
            title,
            [
                Column("at", "Time (UTC)"),
                Column("kind", "What"),
                Column("ref", "Reference"),
                Column("payer", "Payer"),
                Column("amount", "Amount"),
            ],
            rows,
            footer="(first 200 of each only)" if day.truncated else "",
            empty="no payments",
        )
