"""The set of commands one component offers, looked up by node or by chat keyword."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence

from imserver.service.authz import Capability
from imserver.xmpp.commands.base import Command


class CommandSet:
    """Every command, in the order ``help`` lists them."""

    def __init__(self, commands: Iterable[Command]) -> None:
        self.commands: list[Command] = list(commands)
        self.by_node = {c.node: c for c in self.commands}
        if len(self.by_node) != len(self.commands):
            raise ValueError("two commands share an ad-hoc node")
        self.by_keyword: dict[str, Command] = {}
        for c in self.commands:
            for kw in c.keywords:
                if kw in self.by_keyword:
                    raise ValueError(f"two commands share the keyword {kw!r}")
                self.by_keyword[kw] = c

    def __iter__(self) -> Iterator[Command]:
        return iter(self.commands)

    def add(self, command: Command) -> None:
        """Add a command (a concern that installs its own commands late)."""
        for kw in command.keywords:
            if kw in self.by_keyword:
                raise ValueError(f"two commands share the keyword {kw!r}")
        if command.node in self.by_node:
            raise ValueError(f"two commands share the node {command.node!r}")
        self.commands.append(command)
        self.by_node[command.node] = command
        for kw in command.keywords:
            self.by_keyword[kw] = command

    def visible(self, capabilities: frozenset[Capability]) -> list[Command]:
        """The commands a sender with these capabilities may run."""
        return [c for c in self.commands if c.visible_to(capabilities)]

    def match(self, words: Sequence[str]) -> tuple[Command, int] | None:
        """The command whose keyword starts ``words`` (longest keyword wins), and its length."""
        lowered = [w.lower() for w in words]
        if lowered:
            lowered[0] = lowered[0].lstrip("/")
        best: tuple[Command, int] | None = None
        for kw, command in self.by_keyword.items():
            kw_words = kw.split()
            n = len(kw_words)
            if lowered[:n] == kw_words and (best is None or n > best[1]):
                best = (command, n)
        return best

    @staticmethod
    def suggest(words: Sequence[str], among: Sequence[Command], n: int = 3) -> list[Command]:
        """The commands whose keywords are closest to what was typed (difflib)."""
        if not words:
            return []
        phrases = {words[0].lower().lstrip("/")}
        if len(words) > 1:
            phrases.add(f"{words[0]} {words[1]}".lower().lstrip("/"))
        keywords = {kw: c for c in among for kw in c.keywords}
        scored: dict[str, float] = {}
        for phrase in phrases:
            for kw in difflib.get_close_matches(phrase, keywords, n=n, cutoff=0.5):
                ratio = difflib.SequenceMatcher(None, phrase, kw).ratio()
                scored[kw] = max(scored.get(kw, 0.0), ratio)
        found: list[Command] = []
        for kw in sorted(scored, key=lambda k: -scored[k]):
            if keywords[kw] not in found:
                found.append(keywords[kw])
        return found[:n]
