"""What every use case needs: the database, the config, a clock."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imserver.config import Config
from imserver.store.db import Database


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass
class Context:
    """Shared by the services; the clock is injectable so tests never sleep."""

    db: Database
    config: Config
    clock: Callable[[], datetime] = field(default=utc_now)
    # Told after a commit that wrote notifications (the XMPP layer's sender listens).
    outbox_listeners: list[Callable[[], None]] = field(default_factory=list)

    def outbox_written(self) -> None:
        """Run after a commit that wrote to the outbox: wake whoever sends it."""
        for listener in self.outbox_listeners:
            listener()

    def erased_hash(self, jid: str) -> str:
        """Keyed hash of a JID, kept after erasure to recognise a deleted referrer."""
        key = self.config.xmpp.secret.encode()
        return hmac.new(key, jid.encode(), hashlib.sha256).hexdigest()
