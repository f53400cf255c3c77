"""The log: one line per record in the format the config chooses, never a secret, members'
JIDs only as the config allows.

``[log] format``: ``text`` (today's human lines), ``kv`` (``key=value`` pairs) or ``json``
(one object per line). A record's structured fields (``extra={"fields": {...}}``, as the
request line of :mod:`imserver.xmpp.pipeline` passes them) are written as pairs in every
format. Whatever the format, the component secret and the database password are replaced
by ``[redacted]`` in the finished line, exceptions included, so that no code path (a
driver's error text that quotes its DSN, a traceback) can write them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from imserver.config import Config, LogConfig

REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines say nothing an operator needs (migrations, each job run).
NOISY = ("alembic", "apscheduler")
STANZA_TRACE = "slixmpp"
# Shorter "secrets" would redact ordinary words; a real one is never that short.
MIN_SECRET = 4

JidView = Callable[[str], str]


def secrets_of(config: Config) -> tuple[str, ...]:
    """What must never reach the log: the component secret and the database password
    (as written in the URL and decoded)."""
    found = {config.xmpp.secret}
    password = urlsplit(config.database.url).password
    if password:
        found |= {password, unquote(password)}
    return tuple(sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True))


def jid_view(log: LogConfig, key: str) -> JidView:
    """How a JID is written to the log under ``[log] jids``.

    ``hash`` gives ``h:`` and 16 hex digits of an HMAC keyed by ``key`` (the component
    secret): the same JID always gives the same hash, so one sender's lines can be
    followed, and nobody without the key can confirm a guessed JID.
    """
    if log.jids == "full":
        return _full
    if log.jids == "hidden":
        return _hidden
    secret = key.encode()

    @lru_cache(maxsize=4096)
    def hashed(jid: str) -> str:
        if not jid:
            return ""
        return "h:" + hmac.new(secret, jid.encode(), hashlib.sha256).hexdigest()[:16]

    return hashed


def _full(jid: str) -> str:
    return jid


def _hidden(jid: str) -> str:
    return "-" if jid else ""


# Printable ASCII but for the space, '"', '=' and '\\': written bare in a pair.
_BARE = re.compile(r'[!#-<>-\[\]-~]+')


def _value(v: Any) -> str:
    """A value of a ``key=value`` pair: bare when that is unambiguous, else JSON-quoted."""
    if isinstance(v, float):
        return f"{v:.3f}"
    s = str(v)
    return s if _BARE.fullmatch(s) else json.dumps(s, ensure_ascii=False)


def pairs(fields: Mapping[str, Any]) -> str:
    """``k=v k=v`` of a record's fields."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


class _Redacting(logging.Formatter):
    """Base of the three formats: renders a record, then removes every secret."""

    def __init__(self, secrets: Iterable[str], fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        line = self.render(record)
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    @staticmethod
    def fields(record: logging.LogRecord) -> Mapping[str, Any]:
        fields: Mapping[str, Any] | None = getattr(record, "fields", None)
        return fields or {}

    def exception_text(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return record.exc_text or ""

    @staticmethod
    def timestamp(record: logging.LogRecord) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class TextFormatter(_Redacting):
    """Today's human line; structured fields follow the message as pairs."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(secrets, TEXT_FORMAT)

    def render(self, record: logging.LogRecord) -> str:
        line = logging.Formatter.format(self, record)
        fields = self.fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # a traceback stays after the fields
        return f"{head} {pairs(fields)}{sep}{tail}"


class KeyValueFormatter(_Redacting):
    """``ts=… level=… logger=… msg=… k=v …``: one line per record, tracebacks quoted."""

    def render(self, record: logging.LogRecord) -> str:
        # The timestamp, level and logger name never need quotes.
        head = (
            f"ts={self.timestamp(record)} level={record.levelname.lower()} "
            f"logger={record.name} msg={_value(record.getMessage())}"
        )
        line = f"{head} {pairs(self.fields(record))}".rstrip()
        exc = self.exception_text(record)
        return f"{line} exc={json.dumps(exc)}" if exc else line


class JsonFormatter(_Redacting):
    """One JSON object per line: ts, level, logger, msg, the fields, exc if any."""

    def render(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(self.fields(record))
        exc = self.exception_text(record)
        if exc:
            out["exc"] = exc
        return json.dumps(out, ensure_ascii=False, default=str)


FORMATTERS: dict[str, Callable[[Iterable[str]], _Redacting]] = {
    "text": TextFormatter,
    "kv": KeyValueFormatter,
    "json": JsonFormatter,
}


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record comes, not the stream of the
    moment it was made (as the logging module's own last-resort handler does): a caller
    of ``imserver.cli.main`` inside a longer-lived process (a test, whose captured stderr
    is closed when it ends) must not leave a handler that writes to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # always the current sys.stderr


_handler: logging.Handler | None = None  # the handler configure() installed last
# The levels configure() found, by logger name ("" is the root), for reset().
_found: dict[str, int] = {}


def set_level(name: str, level: int | str) -> None:
    """Set a logger's level ("" is the root) until ``reset()``, which gives back the
    level found."""
    logger = logging.getLogger(name or None)
    _found.setdefault(name, logger.level)
    logger.setLevel(level)


def configure(
    config: Config | None, *, verbose: bool = False, trace: Sequence[str] = ()
) -> None:
    """Send every record to stderr in the configured format (``None``: the defaults,
    before a config could be read); ``verbose`` lowers the level to DEBUG, ``trace``
    names loggers to write at DEBUG alone (``imserver --trace NAME``). ``reset()`` undoes
    it."""
    log = config.log if config is not None else LogConfig()
    # No format of ours shows the caller's file and line, the thread or the process: not
    # finding them saves about a third of each record's cost (the logging HOWTO's
    # "Optimization" section), and the request line is written for every request.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    secrets = secrets_of(config) if config is not None else ()
    global _handler
    handler = _Stderr()
    handler.setFormatter(FORMATTERS[log.format](secrets))
    root = logging.getLogger()
    # Replace our own handler of an earlier call (before the config was read); leave
    # anyone else's alone (pytest's, when a test calls the CLI in-process).
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    set_level("", logging.DEBUG if verbose else log.level)
    for name in NOISY:
        set_level(name, logging.NOTSET if verbose else logging.WARNING)
    # slixmpp traces every stanza at DEBUG, JIDs and all: only where the config shows JIDs.
    set_level(STANZA_TRACE, logging.NOTSET if log.jids == "full" else logging.INFO)
    for name in trace:
        set_level(name, logging.DEBUG)


def reset() -> None:
    """Undo ``configure()``: remove its handler and give the loggers back the levels it
    found. The CLI does this as ``main()`` returns, for a caller in a process that goes
    on (a test beside a running component): the root logger left at INFO with our
    handler would write that component's request lines into the caller's stderr."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    for name, level in _found.items():
        logging.getLogger(name or None).setLevel(level)
    _found.clear()
