"""Commands over remote XMPP domains (federation): their trust, and what they registered."""

from __future__ import annotations

from imserver.config import TRUSTS
from imserver.service.authz import Capability
from imserver.service.federation import DomainView
from imserver.xmpp.commands.base import (
    Args,
    Cell,
    Column,
    Command,
    Field,
    Result,
    Table,
    Text,
    optional,
    required,
)

_TRUSTS = tuple((t, t) for t in (*TRUSTS, "default"))


def _row(view: DomainView) -> dict[str, Cell]:
    return {
        "domain": view.domain,
        "trust": view.trust,
        "set_by": view.set_by or "config",
        "members": view.members,
        "this_hour": view.this_hour,
    }


class SetTrust(Command):
    name = "Trust a remote domain"
    node = "trust"
    keywords = ("trust",)
    help = (
        "Who of another XMPP server may join: open (anyone), invite-only (by invite or a "
        "local referrer), blocked; default: back to the config's."
    )
    capabilities = frozenset({Capability.DOMAIN_TRUST})
    fields = (
        Field("domain", "Domain", desc="a server's domain, such as example.org"),
        Field("trust", "Trust", "list", options=_TRUSTS),
        Field("reason", "Reason", required=False, rest=True),
    )

    async def run(self, actor: str, args: Args) -> Result:
        view = await self.services.federation.set_trust(
            actor, required(args, "domain"), required(args, "trust"), optional(args, "reason")
        )
        said = f" From now on {view.earnings}." if view.earnings else ""
        return Text(
            f"{view.domain} is {view.trust} now.{said}",
            [("Domain", view.domain), ("Trust", view.trust), ("Members", view.members)],
        )


class Domains(Command):
    name = "Remote domains"
    node = "domains"
    keywords = ("domains",)
    help = "The remote domains with a trust of their own or members, and their counts."
    capabilities = frozenset({Capability.DOMAIN_TRUST})

    async def run(self, actor: str, args: Args) -> Result:
        views = await self.services.federation.domains(actor)
        return Table(
            "Remote domains",
            [
                Column("domain", "Domain"),
                Column("trust", "Trust"),
                Column("set_by", "Set by"),
                Column("members", "Members"),
                Column("this_hour", "This hour"),
            ],
            [_row(v) for v in views],
            empty="No remote domain has a trust of its own or members yet.",
        )
