"""Merchant bots: JIDs allowed to report payments and refunds for one merchant."""

from __future__ import annotations

from imserver.service.authz import Capability, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import bad_request, conflict, forbidden, not_found
from imserver.service.inputs import parse_jid
from imserver.service.money_views import BotView
from imserver.store import audit, bots, members
from imserver.store.db import Conn


class Bots:
    """link and unlink; by an admin, or by the merchant for its own bots."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def change(
        self, sender: str, jid: str | None, merchant: str | None, action: str | None
    ) -> BotView:
        """Link (``action='link'``) or unlink a bot JID; the same request twice is harmless."""
        bot_jid = parse_jid(jid, "jid")
        merchant_jid = parse_jid(merchant, "merchant") if merchant else sender
        if action not in ("link", "unlink"):
            raise bad_request("action must be link or unlink")
        if bot_jid == merchant_jid:
            raise bad_request("a merchant's own JID needs no bot link")

        async def use_case(conn: Conn) -> BotView:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.BOT_MANAGE)
            if not actor.is_admin and merchant_jid != sender:
                raise forbidden("a merchant may only manage its own bots")
            m = await members.get_by_jid(conn, merchant_jid, shared=True)
            if m is None:
                raise not_found(f"{merchant_jid} is not a member")
            if m.role != "merchant":
                raise bad_request(f"{merchant_jid} is not a merchant")
            current = await bots.merchant_of(conn, bot_jid, lock=True)
            now = self.ctx.clock()
            if action == "link":
                if current == m.id:
                    return BotView(bot_jid, m.jid, True)
                if current is not None:
                    raise conflict(f"{bot_jid} is already the bot of another merchant")
                if not m.active:
                    raise bad_request(f"{merchant_jid} is {m.status}")
                if await members.get_by_jid(conn, bot_jid) is not None:
                    raise conflict(f"{bot_jid} is a member: a bot JID must be used only as a bot")
                await bots.link(conn, bot_jid, m.id, now)
            else:
                if current != m.id:
                    raise not_found(f"{bot_jid} is not a bot of {merchant_jid}")
                await bots.unlink(conn, bot_jid, m.id)
            await audit.record(
                conn,
                at=now,
                actor=sender,
                action=f"bot.{action}",
                target=bot_jid,
                details={"merchant": m.jid},
            )
            return BotView(bot_jid, m.jid, action == "link")

        return await self.ctx.db.transaction(use_case)
