"""Invites: every active member's invite URI, its QR code and poster, and the
registrations that came through it.

The invite code is the member's rule number: unique (a unique column, never reused),
short, and it does not reveal the member's JID. A registration through an invite binds
its member as the newcomer's original referrer (see ``store/invites``), which is what the
statistics count.

``Invites.poster`` is the handler of the public HTTP route ``/invites/<code>.<png|pdf>``
(the component's loopback HTTP endpoint, behind the operator's reverse proxy).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from imserver.config import Config
from imserver.domain.invites import POSTER_FORMATS, invite_code, invite_uri, poster_url
from imserver.posters import poster as posters
from imserver.posters import qr
from imserver.posters.fonts import find_cjk_font
from imserver.service.authz import Capability, resolve_actor
from imserver.service.context import Context
from imserver.service.errors import bad_request, not_acceptable, not_found
from imserver.service.inputs import parse_jid
from imserver.store import invites, members
from imserver.store.db import Conn, Database
from imserver.store.invites import InviteCount
from imserver.store.records import MemberRecord

MAX_TOP = 100  # invites in the admins' table
# What a poster says above the QR code of a member without a business name (a user).
UNNAMED_TITLE = "邀请您加入 · You are invited"
# What the CLI writes, by the output file's suffix; the QR code alone with --qr.
QR_FORMATS = {"png": "image/png", "svg": "image/svg+xml"}


@dataclass(frozen=True)
class InviteView:
    """A member's invite: its code, the URI, and the poster's addresses when published."""

    jid: str
    code: str
    role: str
    name: str | None
    uri: str
    poster_pdf: str | None = None
    poster_png: str | None = None

    @property
    def title(self) -> str:
        """The poster's headline: the merchant's name, or an invitation."""
        return self.name or UNNAMED_TITLE


@dataclass(frozen=True)
class InviteStats:
    """The registrations through one member's invite."""

    invite: InviteView
    registrations: int
    active: int
    last_at: datetime | None


@dataclass(frozen=True)
class InviteTable:
    """The invites with the most registrations, and the registrations through any."""

    rows: list[InviteCount]
    total: int


@lru_cache(maxsize=32)
def _render(kind: str, title: str, code: str, uri: str, font: Path | None) -> bytes:
    """The bytes of one picture of an invite (kept: a poster is asked for again and again
    while a shop prints it, and it changes only with the name)."""
    if kind == "qr.png":
        return qr.png(uri)
    if kind == "qr.svg":
        return qr.svg(uri)
    assert font is not None
    if kind == "poster.png":
        return posters.png(title, code, uri, font)
    return posters.pdf(title, code, uri, font)


class Invites:
    """Invites of members, their pictures and their statistics."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def check_font(self) -> None:
        """Raise ``FontMissing`` when posters are published and none can be drawn: a
        start refused with the reason beats poster links that fail."""
        if self.ctx.config.invites.public_base_url:
            find_cjk_font(self.ctx.config.invites.font)

    def view(self, member: MemberRecord) -> InviteView:
        """The invite of a member (whatever its status: callers check it)."""
        base = self.ctx.config.invites.public_base_url
        code = member.rule_number
        pdf = poster_url(base, code, "pdf") if base else None
        png = poster_url(base, code, "png") if base else None
        uri = invite_uri(self.ctx.config.xmpp.component, code)
        return InviteView(member.jid, code, member.role, member.name, uri, pdf, png)

    async def _target(self, conn: Conn, sender: str, jid: str | None) -> MemberRecord:
        """The member whose invite is asked for: the sender's own, or (admins) anyone's."""
        actor = await resolve_actor(conn, sender, self.ctx.config)
        target = parse_jid(jid, "jid") if jid else sender
        if target == sender and not (actor.is_admin and actor.member is None):
            if actor.member is None:
                actor.require(Capability.INVITE_OWN)  # the refusal a non-member gets
            return actor.require_member()  # an ended member: not-acceptable
        actor.require(Capability.INVITE_ANY)
        return _found(await members.get_by_jid(conn, target), f"{target} is not a member")

    async def invite(self, sender: str, jid: str | None = None) -> InviteView:
        """The sender's invite (admins: any member's); an ended member has none."""

        async def use_case(conn: Conn) -> InviteView:
            member = await self._target(conn, sender, jid)
            _require_active(member)
            return self.view(member)

        return await self.ctx.db.transaction(use_case)

    async def statistics(self, sender: str, jid: str | None = None) -> InviteStats:
        """The registrations through the sender's invite (admins: any member's)."""

        async def use_case(conn: Conn) -> InviteStats:
            member = await self._target(conn, sender, jid)
            total, active, last = await invites.count_for(conn, member.id)
            return InviteStats(self.view(member), total, active, last)

        return await self.ctx.db.transaction(use_case)

    async def top(self, sender: str, limit: int = 20) -> InviteTable:
        """Admins: the invites with the most registrations."""
        if not 1 <= limit <= MAX_TOP:
            raise bad_request(f"max must be 1 to {MAX_TOP}")

        async def use_case(conn: Conn) -> InviteTable:
            actor = await resolve_actor(conn, sender, self.ctx.config)
            actor.require(Capability.INVITE_STATS)
            rows, total = await invites.top(conn, limit)
            return InviteTable(rows, total)

        return await self.ctx.db.transaction(use_case)

    async def picture(self, invite: InviteView, kind: str) -> bytes:
        """A picture of an invite: ``qr.png``, ``qr.svg``, ``poster.png`` or ``poster.pdf``.

        Drawn in a thread (a poster takes a tenth of a second of CPU). Raises
        ``FontMissing`` for a poster when no CJK font is installed.
        """
        font = find_cjk_font(self.ctx.config.invites.font) if kind.startswith("poster") else None
        return await asyncio.to_thread(_render, kind, invite.title, invite.code, invite.uri, font)

    async def poster(self, name: str) -> tuple[str, bytes]:
        """The HTTP route ``/invites/<name>``: ``name`` is ``<code>.png`` or ``<code>.pdf``.

        Returns (content type, body). An unknown code or format is ``item-not-found``, an
        ended member's invite ``not-acceptable`` (the text says why), as ``ServiceError``.
        """
        stem, _, fmt = name.rpartition(".")
        code = invite_code(stem)
        if code is None or fmt not in POSTER_FORMATS:
            raise not_found(f"no poster {name[:60]!r}: ask for <rule number>.png or .pdf")

        async def use_case(conn: Conn) -> InviteView:
            found = _found(
                await members.get_by_rule_number(conn, code), f"invite {code} is no member's"
            )
            _require_active(found)
            return self.view(found)

        invite = await self.ctx.db.transaction(use_case)
        return POSTER_FORMATS[fmt], await self.picture(invite, f"poster.{fmt}")

    async def export(self, jid: str, out: Path, qr_only: bool = False) -> InviteView:
        """The operator's ``imserver invite JID --out FILE``: write the member's poster
        (``.pdf``, ``.png``) or, with ``qr_only``, its QR code (``.png``, ``.svg``)."""
        target = parse_jid(jid, "jid")
        fmt = out.suffix.lower().lstrip(".")
        formats = QR_FORMATS if qr_only else POSTER_FORMATS
        if fmt not in formats:
            what = "the QR code" if qr_only else "a poster"
            raise bad_request(f"{out.name}: {what} is written as {' or '.join(formats)}")

        async def use_case(conn: Conn) -> InviteView:
            found = _found(await members.get_by_jid(conn, target), f"{target} is not a member")
            _require_active(found)
            return self.view(found)

        invite = await self.ctx.db.transaction(use_case)
        data = await self.picture(invite, f"{'qr' if qr_only else 'poster'}.{fmt}")
        await asyncio.to_thread(out.write_bytes, data)
        return invite


async def write_invite(config: Config, jid: str, out: Path, qr_only: bool) -> InviteView:
    """``imserver invite``: open the configured database, write the file, close."""
    db = Database(config.database.url)
    try:
        return await Invites(Context(db, config)).export(jid, out, qr_only)
    finally:
        await db.dispose()


def _found(member: MemberRecord | None, missing: str) -> MemberRecord:
    """The member looked up, or item-not-found with the text ``missing``."""
    if member is None:
        raise not_found(missing)
    return member


def _require_active(member: MemberRecord) -> None:
    """An ended member's invite registers nobody: refuse to hand it out."""
    if not member.active:
        raise not_acceptable(
            f"{member.rule_number} was {member.status}: its invite registers nobody"
        )
