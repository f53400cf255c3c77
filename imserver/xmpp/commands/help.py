"""``help``: what the sender may run, filtered by the same authorization as everything."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from imserver.xmpp.commands.base import Args, Command, Field, Result, Text, optional

if TYPE_CHECKING:
    from imserver.service.registry import Services
    from imserver.xmpp.commands.registry import CommandSet


class Help(Command):
    name = "Help"
    node = "help"
    keywords = ("help", "?", "commands")
    help = "What you can do here; help <command> tells how."
    fields = (Field("command", "Command", required=False, rest=True),)
    adhoc_form: ClassVar[bool] = False

    def __init__(self, services: Services, commands: CommandSet) -> None:
        super().__init__(services)
        self.commands = commands

    async def run(self, actor: str, args: Args) -> Result:
        access = await self.services.queries.access(actor)
        visible = self.commands.visible(access.capabilities)
        topic = optional(args, "command")
        if topic:
            found = self.commands.match(topic.split())
            if found is not None and found[0] in visible:
                cmd = found[0]
                lines = [f"Usage: {cmd.usage}", cmd.help]
                lines += [
                    f"  {f.var}: {f.label}" + (f" ({f.desc})" if f.desc else "") for f in cmd.fields
                ]
                if len(cmd.keywords) > 1:
                    lines.append("Also: " + ", ".join(cmd.keywords[1:]))
                return Text(cmd.name, lines=lines)
        lines = [f"{c.usage} — {c.help}" for c in visible]
        return Text("You can say:", lines=lines)
