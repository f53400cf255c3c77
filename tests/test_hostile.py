"""Hostile and malformed input: each gets an error, nothing is written, the component lives.

Two paths:

- through Prosody, with real clients (the ``service`` fixture): what a client can get to
  the component at all. Prosody closes the *client's* stream for XML it refuses (DTDs,
  entities, invalid UTF-8, control characters, repeated attributes, > 256 KiB stanzas);
  what it passes on (deep nesting, unknown namespaces, bad attributes, amounts, JIDs)
  reaches the component and must get a stanza error.
- directly against the component, with no server: a fake XEP-0114 server on a loopback
  socket (``tests/support/fakeserver.py``) performs the handshake and writes raw bytes to
  the component, to feed it only what Prosody would never pass on (every stanza-level
  input Prosody can carry goes through Prosody). Stanzas that are too big or too
  deep get a stanza error on a link that stays up; XML that is not well-formed or that
  declares a DTD closes the stream (there is no way to resynchronise an XML stream) and
  the component reconnects and answers the next request.

After every hostile input: the database is unchanged (every table compared) and the next
ordinary request is answered. The outcomes are printed at the end of the module (``-s``).

Every input comes from one of the corpora below, by path (``corpora()``); the tests run
every entry of theirs, and ``test_corpus_sizes_are_the_documented_ones`` compares the
sizes with docs/hostile-inputs.md, so the figures there are the inputs that run.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatcherId

from imserver.app import App
from imserver.config import load_config
from imserver.domain.jids import InvalidJid, normalize_jid
from imserver.domain.money import parse_minor_units
from imserver.geo.regions import load_regions_csv
from imserver.service.membership import Location
from imserver.service.regions import load_regions
from imserver.store.migrate import upgrade
from imserver.xmpp import hardening
from imserver.xmpp.hardening import GuardedParser, Rejected, StreamLimits, UnsafeEnvironment
from plugins.distribution import NS
from tests.conftest import FakeClock, Service
from tests.support.clients import Client, expect_error
from tests.support.dbsnap import diff, snapshot
from tests.support.fakeserver import FakeServer, Link
from tests.support.network import build_network

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
COMPONENT = "dist.test"
SECRET = "hostile-test-secret"
MIB = 1024 * 1024
DOC = Path(__file__).parents[1] / "docs" / "hostile-inputs.md"

# (path, case, outcome) of every hostile input tried; printed at module teardown.
TALLY: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_tally() -> object:
    yield
    if TALLY:
        paths = sorted({path for path, _, _ in TALLY})
        distinct = {p: len({c for path, c, _ in TALLY if path == p}) for p in paths}
        print(f"\n== hostile inputs tried: {len(TALLY)}, distinct by path: {distinct}")
        for path, case, outcome in TALLY:
            print(f"  [{path}] {case}: {outcome}")


# -- hostile values for payload attributes ---------------------------------------------

BAD_AMOUNTS = [
    "-100", "0", "00", "10.5", "1e3", "1E3", "0x10", "+100", " 100", "100 ", "1_000",
    "99999999999999999999999", "100000001", "abc", "", "１００", "٣", "NaN", "Infinity",
    "10,00", "1/2",
]  # fmt: skip
BAD_CURRENCIES = ["XXX", "cny", "ABCD", "", "US$", "€", "CN", "C\u200bNY", "123"]
# JIDs that do not parse, or whose form a server would map to another JID.
BAD_JIDS = [
    "not a jid", "@localhost", "alice@", "a@b@c", "alice@local host", "alice@localhost\u200b",
    "ali\u202ece@localhost", "alice\u0000@localhost", "x" * 1100 + "@localhost",
    "alice@-bad-.localhost", "<alice>@localhost", "alice@[::1]",
    # Parse, but a server would stamp another JID: fullwidth, case folding, ligatures.
    "\uff41lice@localhost", "stra\u00dfe@localhost", "\ufb01sh@localhost", "a@\uff4cocalhost",
]  # fmt: skip
# The bad JIDs that can be written in an XML attribute at all (a NUL cannot: it is one of
# the stream cases), escaped for one.
XML_JIDS = [j.replace("<", "&lt;") for j in BAD_JIDS if "\u0000" not in j]
# The attributes of a payment request with a bad amount or currency.
PAYMENT_CASES = [(f"amount {a!r}", f"amount='{a}' currency='CNY'") for a in BAD_AMOUNTS] + [
    (f"currency {c!r}", f"amount='100' currency='{c}'") for c in BAD_CURRENCIES
]


def _payment_id() -> str:
    return f"o-{uuid.uuid4().hex}"


def test_parse_minor_units_refuses_every_hostile_amount() -> None:
    for raw in BAD_AMOUNTS:
        with pytest.raises(ValueError):
            parse_minor_units(raw, cap=100_000_000)
        TALLY.append(("parser", f"amount {raw!r}", "ValueError"))
    assert parse_minor_units("100", cap=1000) == 100


def test_normalize_jid_refuses_every_hostile_jid() -> None:
    for raw in BAD_JIDS:
        with pytest.raises(InvalidJid):
            normalize_jid(raw)
        TALLY.append(("parser", f"jid {raw[:40]!r}", "InvalidJid"))
    # What does normalise, normalises to the server's form.
    assert normalize_jid("Alice@LocalHost/phone") == "alice@localhost"


# -- the guard alone ---------------------------------------------------------------------


def _feed(data: bytes, limits: StreamLimits | None = None) -> tuple[GuardedParser, list[Rejected]]:
    rejected: list[Rejected] = []
    parser = GuardedParser(limits or StreamLimits(64 * 1024, 16), rejected.append)
    parser.feed(b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='s'>")
    parser.feed(data)
    return parser, rejected


def test_guard_builds_stanzas_like_elementtree() -> None:
    xml = (
        b"<iq type='get' id='1' xml:lang='en'><query xmlns='urn:x'>a<b c='d'/>tail"
        b"<e>&amp;&#x4e2d;</e></query></iq>"
    )
    parser, rejected = _feed(xml)
    events = list(parser.read_events())
    assert [k for k, _ in events] == ["stream-start", "stanza"]
    stanza = events[1][1]
    assert stanza is not None and not rejected and parser.error is None
    expected = ET.fromstring(b"<wrap xmlns='jabber:component:accept'>" + xml + b"</wrap>")[0]
    assert ET.tostring(stanza) == ET.tostring(expected)


def test_guard_is_byte_by_byte_safe() -> None:
    data = "<message to='a@b'><body>héllo 中文</body></message>".encode()
    rejected: list[Rejected] = []
    parser = GuardedParser(StreamLimits(), rejected.append)
    for b in b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='s'>" + data:
        parser.feed(bytes([b]))
    stanzas = [e for k, e in parser.read_events() if k == "stanza"]
    assert stanzas[0] is not None and stanzas[0][0].text == "héllo 中文"


def _laughs() -> bytes:
    """A billion laughs in a DTD before the stream's root."""
    entities = b"".join(
        f"<!ENTITY lol{i} '{('&lol' + str(i - 1) + ';') * 10 if i else '&lol;' * 10}'>".encode()
        for i in range(10)
    )
    return (
        b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        + entities
        + b"]><stream:stream xmlns:stream='s'>&lol9;"
    )


# (case, bytes, fed after the stream header, expected outcome) for the guard alone, with
# limits of 64 KiB and 16 levels. The outcome: the stream error, the stanzas rejected
# (id, condition) and the ids of the stanzas passed on, of which the last is always an
# ordinary <iq id='ok'/> written after the hostile bytes.
GuardOutcome = tuple[str | None, list[tuple[str | None, str]], list[str | None]]
GUARD_CASES: list[tuple[str, bytes, bool, GuardOutcome]] = [
    ("billion laughs before the stream", _laughs(), False, ("restricted-xml", [], [])),
    ("stanza nested 40 deep", b"<iq>" + b"<a>" * 40 + b"</a>" * 40 + b"</iq>", True,
     (None, [(None, "bad-request")], ["ok"])),
    ("100 KB stanza", b"<iq type='set' id='x' from='a@b'>" + b"x" * 100_000 + b"</iq>", True,
     (None, [("x", "policy-violation")], ["ok"])),
    ("unclosed 100 KB attribute", b"<iq a='" + b"x" * 100_000, True,
     ("policy-violation", [], [])),
]  # fmt: skip


def test_guard_refuses_dtds_entities_and_oversize() -> None:
    for case, data, in_stream, expected in GUARD_CASES:
        rejected: list[Rejected] = []
        parser = GuardedParser(StreamLimits(64 * 1024, 16), rejected.append)
        if in_stream:
            parser.feed(b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='s'>")
        parser.feed(data)
        parser.feed(b"<iq id='ok'/>")  # ignored after a stream error
        passed = [e.get("id") for k, e in parser.read_events() if k == "stanza" and e is not None]
        got = (
            parser.error.condition if parser.error else None,
            [(r.attrib.get("id"), r.condition) for r in rejected],
            passed,
        )
        assert got == expected, case
        TALLY.append(("parser", case, f"guard: {got}"))


def test_startup_refuses_old_expat_and_default_secret_off_loopback() -> None:
    with pytest.raises(UnsafeEnvironment, match=r"expat 2\.4\.0 is vulnerable"):
        hardening.check_expat((2, 4, 0))
    hardening.check_expat((2, 4, 1))
    hardening.check_expat()  # the one this Python runs with
    config = load_config(None, env={})
    hardening.check_secret(config)  # default secret on loopback: fine for `make run`
    remote = config.model_copy(
        update={"xmpp": config.xmpp.model_copy(update={"host": "xmpp.example.org"})}
    )  # model_copy skips validation: the start-time check must still refuse it
    with pytest.raises(UnsafeEnvironment, match=r"xmpp\.secret"):
        hardening.check_secret(remote)


# -- directly against the component, through a fake XEP-0114 server -----------------------


@dataclass
class Direct:
    app: App
    server: FakeServer
    link: Link
    merchant: str = "shop@test"
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def nid(self) -> str:
        return f"h{next(self.ids)}"


@pytest.fixture(scope="module")
async def direct(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Direct]:
    server = FakeServer(COMPONENT, SECRET)
    await server.start()
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('hostile') / 'db.sqlite3'}"
    await asyncio.to_thread(upgrade, url)
    env = {
        "IMSERVER_ADMINS": '["admin@test"]',
        "IMSERVER_XMPP__COMPONENT": COMPONENT,
        "IMSERVER_XMPP__DOMAIN": "test",
        "IMSERVER_XMPP__MEMBER_DOMAINS": '["test"]',
        "IMSERVER_XMPP__SECRET": SECRET,
        "IMSERVER_XMPP__COMPONENT_PORT": str(server.port),
        "IMSERVER_XMPP__RECONNECT_MAX_DELAY": "1.0",
        "IMSERVER_DATABASE__URL": url,
        # Hostile tests must not be slowed down by the rate limit (tested on its own).
        "IMSERVER_LIMITS__RATE": "10000",
        "IMSERVER_LIMITS__BURST": "10000",
    }
    config = load_config(Path(__file__).parents[1] / "config.toml", env=env)
    app = App(config, clock=FakeClock())
    await load_regions(app.ctx, load_regions_csv())
    await app.services.membership.add_merchant(
        "admin@test", "shop@test", "Shop", None, Location(region="440305")
    )
    started = asyncio.create_task(app.start())
    link = await server.next_link()
    await started
    d = Direct(app, server, link)
    yield d
    await app.stop()
    await server.stop()


def _condition(stanza: ET.Element) -> str | None:
    # slixmpp writes <error/> in jabber:client even on a component stream.
    error = next((c for c in stanza if c.tag.rpartition("}")[2] == "error"), None)
    if error is None:
        return None
    for child in error:
        if child.tag.startswith(f"{{{STANZAS}}}") and not child.tag.endswith("}text"):
            return child.tag.rpartition("}")[2]
    return None


async def _probe(d: Direct) -> None:
    """The next ordinary request (a registration) is answered with a result."""
    iid = d.nid()
    user = f"probe-{uuid.uuid4().hex[:8]}@test"
    await d.link.send(
        f"<iq type='set' id='{iid}' from='{user}/r' to='{COMPONENT}'>"
        f"<register xmlns='{NS}' referrer='{d.merchant}'/></iq>"
    )
    reply = await d.link.next_stanza()
    assert reply.get("id") == iid and reply.get("type") == "result", ET.tostring(reply)


async def _stanza_case(
    d: Direct, case: str, payload: bytes | str, expect: str, sender: str = "evil@test/x"
) -> None:
    """Send one hostile IQ; it must get ``expect``, write nothing, and the link lives."""
    iid = d.nid()
    raw = payload.encode() if isinstance(payload, str) else payload
    head = f"<iq type='set' id='{iid}' from='{sender}' to='{COMPONENT}'>".encode()
    before = await snapshot(d.app.db)
    await d.link.send(head + raw + b"</iq>")
    reply = await d.link.next_stanza(timeout=30)
    assert reply.get("id") == iid and reply.get("type") == "error", ET.tostring(reply)[:300]
    got = _condition(reply)
    assert got == expect, f"{case}: expected {expect}, got {got}: {ET.tostring(reply)[:400]!r}"
    assert not diff(before, await snapshot(d.app.db)), case
    await _probe(d)
    TALLY.append(("stand-in", case, f"stanza error {got}; link kept; next request answered"))


async def _stream_case(
    d: Direct, case: str, data: bytes, expect: str, *, in_header: bool = False
) -> None:
    """Send bytes that break the stream: it is closed with ``expect``, then reconnected."""
    before = await snapshot(d.app.db)
    connections = d.server.connections
    if in_header:
        # Hostile bytes at the very start of the server's stream (before the root).
        d.server.next_header_prefix = data
        await d.link.send(b"</stream:stream>")
        await d.link.wait_closed()
        d.link = await d.server.next_link()
    else:
        await d.link.send(data)
    error = await d.link.next_stanza(timeout=30)
    assert error.tag == "{http://etherx.jabber.org/streams}error", ET.tostring(error)[:300]
    got = next(c.tag.rpartition("}")[2] for c in error if c.tag.startswith(f"{{{STREAMS}}}"))
    assert got == expect, f"{case}: expected {expect}, got {got}: {ET.tostring(error)[:400]!r}"
    await d.link.wait_closed()
    d.link = await d.server.next_link(timeout=20)  # the component reconnected
    assert d.server.connections > connections
    assert not diff(before, await snapshot(d.app.db)), case
    await _probe(d)
    TALLY.append(("stand-in", case, f"stream error {got}; reconnected; next request answered"))


async def test_direct_valid_request_is_answered(direct: Direct) -> None:
    await _probe(direct)


# The stand-in server's corpus: only what Prosody would never pass on to a component
# (every other stanza-level input goes through the real Prosody, on both databases).
# Stanza cases: (case, IQ payload, stanza error). 50,000 levels are 350 KB, and the big
# ones MiBs: over Prosody's 256 KiB stanza limit, so only a broken or hostile server
# could send them; Prosody also drops comments and processing instructions.
DIRECT_DEPTHS = (50_000,)


def direct_deep_cases() -> list[tuple[str, str, str]]:
    # slixmpp alone raises RecursionError on these before any handler runs (no answer).
    return [
        (f"nested {depth} deep",
         f"<register xmlns='{NS}' referrer='shop@test'>{'<a>' * depth}{'</a>' * depth}"
         "</register>", "bad-request")
        for depth in DIRECT_DEPTHS
    ]  # fmt: skip


def direct_big_cases() -> list[tuple[str, str, str]]:
    text = "x" * (4 * MIB)
    many = "<a b='c'/>" * (MIB // 2)  # 5 MiB of small elements
    return [
        ("4 MiB text", f"<register xmlns='{NS}' referrer='shop@test'>{text}</register>",
         "policy-violation"),
        ("5 MiB of elements", f"<register xmlns='{NS}'>{many}</register>", "policy-violation"),
    ]  # fmt: skip


def direct_payload_cases() -> list[tuple[str, str, str]]:
    return [
        ("comment and PI inside", f"<register xmlns='{NS}'><!--x--><?pi x?></register>",
         "bad-request"),
    ]  # fmt: skip


# A sender the component cannot parse, and what it answers: None for no answer. slixmpp
# cannot make a stanza whose 'from' does not parse, so it drops it before any handler
# (there is no address to answer to); an empty 'from' reaches the component.
UNPARSEABLE_SENDERS: dict[str, str | None] = {"@@@": None, "a@b@c": None, "": "bad-request"}


def stream_breaker_cases() -> list[tuple[str, bytes, str, bool]]:
    """(case, bytes, stream error, written before the stream's root instead of inside it)."""
    body = f"<iq type='set' id='x' from='evil@test' to='{COMPONENT}'><register xmlns='{NS}' "
    lol = "".join(f"<!ENTITY l{i} '{f'&l{i - 1};' * 10}'>" for i in range(1, 10))
    return [
        ("billion laughs in the stream header",
         f"<?xml version='1.0'?><!DOCTYPE s [<!ENTITY l0 'lol'>{lol}]>".encode(),
         "restricted-xml", True),
        ("external entity in the stream header",
         b"<?xml version='1.0'?><!DOCTYPE s SYSTEM 'file:///etc/passwd'>", "restricted-xml",
         True),
        ("DOCTYPE inside the stream", b"<!DOCTYPE x [<!ENTITY a 'b'>]>", "not-well-formed",
         False),
        ("undefined entity", (body + "referrer='&a;'/></iq>").encode(), "not-well-formed", False),
        ("invalid UTF-8", (body + "referrer='").encode() + b"\xff\xfe'/></iq>",
         "not-well-formed", False),
        ("overlong UTF-8", (body + "referrer='").encode() + b"\xc0\xaf'/></iq>",
         "not-well-formed", False),
        ("raw control character", (body + "referrer='a\x01b@test'/></iq>").encode(),
         "not-well-formed", False),
        ("control character reference", (body + "referrer='a&#1;b@test'/></iq>").encode(),
         "not-well-formed", False),
        ("NUL", (body + "referrer='a\x00b@test'/></iq>").encode(), "not-well-formed", False),
        ("repeated attribute", (body + "referrer='a@test' referrer='b@test'/></iq>").encode(),
         "not-well-formed", False),
        ("unbound prefix", (body + "evil:referrer='a@test'/></iq>").encode(),
         "not-well-formed", False),
        ("mismatched tags", b"<iq type='get' id='m'><a></b></iq>", "not-well-formed", False),
        ("4 MiB attribute value", (body + "referrer='").encode() + b"x" * (4 * MIB),
         "policy-violation", False),
    ]  # fmt: skip


async def test_direct_too_deep_gets_bad_request(direct: Direct) -> None:
    for case, payload, expect in direct_deep_cases():
        await _stanza_case(direct, case, payload, expect)


async def test_direct_too_big_gets_policy_violation(direct: Direct) -> None:
    connections = direct.server.connections
    for case, payload, expect in direct_big_cases():
        await _stanza_case(direct, case, payload, expect)
    assert direct.server.connections == connections  # the link stayed up


async def test_direct_payload_errors(direct: Direct) -> None:
    for case, payload, expect in direct_payload_cases():
        await _stanza_case(direct, case, payload, expect)


async def test_direct_unparseable_sender_is_dropped_safely(direct: Direct) -> None:
    before = await snapshot(direct.app.db)
    expected: dict[str, tuple[str, str | None]] = {}  # IQ id -> (sender, answer)
    for sender, answer in UNPARSEABLE_SENDERS.items():
        iid = direct.nid()
        expected[iid] = (sender, answer)
        await direct.link.send(
            f"<iq type='set' id='{iid}' from='{sender}' to='{COMPONENT}'>"
            f"<register xmlns='{NS}' referrer='shop@test'/></iq>"
        )
    probe = direct.nid()
    await direct.link.send(
        f"<iq type='get' id='{probe}' from='p@test/r' to='{COMPONENT}'><chain xmlns='{NS}'/></iq>"
    )
    # Read until the probe's answer and every expected answer are in (each read has a
    # deadline); every stanza read must be one of those, answered once.
    answered = {iid for iid, (_, answer) in expected.items() if answer is not None}
    replies: dict[str, ET.Element] = {}
    while not answered | {probe} <= set(replies):
        reply = await direct.link.next_stanza()
        rid = reply.get("id", "")
        assert rid in answered | {probe} and rid not in replies, ET.tostring(reply)[:300]
        replies[rid] = reply
    assert _condition(replies[probe]) == "registration-required"
    for iid in answered:
        sender, answer = expected[iid]
        assert replies[iid].get("type") == "error" and _condition(replies[iid]) == answer, sender
    assert not diff(before, await snapshot(direct.app.db))
    # An answer to a dropped one coming late would be read here instead of the probe's.
    await _probe(direct)
    for sender, answer in UNPARSEABLE_SENDERS.items():
        outcome = f"stanza error {answer}" if answer else "dropped unanswered"
        TALLY.append(("stand-in", f"from={sender!r}", f"{outcome}; no write; next answered"))


async def test_direct_stream_breakers_close_the_stream_and_reconnect(direct: Direct) -> None:
    for case, data, expect, in_header in stream_breaker_cases():
        await _stream_case(direct, case, data, expect, in_header=in_header)


# -- through Prosody, with real clients -----------------------------------------------------


async def _answered(service: Service) -> None:
    """The component still answers: a non-member's chain request gets its error."""
    probe = await service.client(f"hostile-probe@{service.config.xmpp.domain}")
    await expect_error(probe.dist.chain(service.jid), "registration-required")


# The Prosody corpus. What Prosody refuses itself (it closes the client's stream):
def prosody_refused_cases(component: str) -> list[tuple[str, bytes]]:
    lol = "".join(f"<!ENTITY l{i} '{f'&l{i - 1};' * 10}'>" for i in range(1, 10))
    iq = f"<iq type='set' id='x' to='{component}'><register xmlns='{NS}' "
    return [
        ("DOCTYPE with billion laughs", f"<!DOCTYPE s [<!ENTITY l0 'lol'>{lol}]>".encode()),
        ("undefined entity", (iq + "referrer='&l0;'/></iq>").encode()),
        ("invalid UTF-8", (iq + "referrer='").encode() + b"\xff\xfe'/></iq>"),
        ("raw control character", (iq + "referrer='a\x01b@localhost'/></iq>").encode()),
        ("control character reference", (iq + "referrer='a&#1;b@localhost'/></iq>").encode()),
        ("repeated attribute",
         (iq + "referrer='a@localhost' referrer='b@localhost'/></iq>").encode()),
        ("comment", (iq + "referrer='a@localhost'><!-- x --></register></iq>").encode()),
        ("300 KiB stanza", (iq + "referrer='a@localhost'>").encode() + b"x" * (300 * 1024)
         + b"</register></iq>"),
    ]  # fmt: skip


# What it passes on to the component, which must answer with a stanza error: nesting
# (1000 and 10000 levels are 7 KB and 70 KB, under Prosody's limits; slixmpp alone would
# hit RecursionError and drop them unanswered), and bad payloads from a member, then from
# an admin: (case, IQ type, payload, stanza error).
PROSODY_DEPTHS = (40, 1000, 10_000)


def prosody_deep_cases(referrer: str) -> list[tuple[str, str, str, str]]:
    return [
        (f"nested {depth} deep", "set",
         f"<register xmlns='{NS}' referrer='{referrer}'>{'<a>' * depth}{'</a>' * depth}"
         "</register>", "bad-request")
        for depth in PROSODY_DEPTHS
    ]  # fmt: skip


def prosody_member_cases() -> list[tuple[str, str, str, str]]:
    cases = [
        ("unknown namespace", "set", "<register xmlns='urn:evil' referrer='x@localhost'/>",
         "service-unavailable"),
        ("unknown element in NS", "set", f"<steal xmlns='{NS}'/>", "service-unavailable"),
        ("no payload", "set", "", "bad-request"),
        ("two payloads", "set", f"<register xmlns='{NS}'/><register xmlns='{NS}'/>",
         "bad-request"),
        ("register without referrer", "set", f"<register xmlns='{NS}'/>", "bad-request"),
        ("chain of a bad JID", "get", f"<chain xmlns='{NS}' jid='a@b@c'/>", "bad-request"),
    ]  # fmt: skip
    return cases + [
        (f"referrer {jid[:30]!r}", "set", f"<register xmlns='{NS}' referrer='{jid}'/>",
         "bad-request")
        for jid in XML_JIDS
    ]  # fmt: skip


def prosody_admin_cases(new_jid: Callable[[], str]) -> list[tuple[str, str, str, str]]:
    return [
        ("merchant without jid", "set", f"<merchant xmlns='{NS}' name='x'>"
         "<location region='440305'/></merchant>", "bad-request"),
        ("merchant without location", "set", f"<merchant xmlns='{NS}' jid='{new_jid()}' "
         "name='x'/>", "bad-request"),
        ("merchant with two locations", "set", f"<merchant xmlns='{NS}' jid='{new_jid()}' "
         "name='x'><location region='440305' address='x'/></merchant>", "bad-request"),
        # (A tab written a&#x9;b reaches the component as a space: Prosody re-serialises
        # it literally and attribute-value normalisation turns it into a space.)
        ("merchant name with U+202E", "set", f"<merchant xmlns='{NS}' jid='{new_jid()}'"
         " name='a\u202eb'><location region='440305'/></merchant>", "bad-request"),
        ("merchant name of 201 characters", "set", f"<merchant xmlns='{NS}' jid='{new_jid()}'"
         f" name='{'n' * 201}'><location region='440305'/></merchant>", "bad-request"),
        ("merchant with lat=nan", "set", f"<merchant xmlns='{NS}' jid='{new_jid()}' "
         "name='x'><location lat='nan' lon='nan'/></merchant>", "bad-request"),
        ("merchant with lat=1e999", "set", f"<merchant xmlns='{NS}' jid='{new_jid()}' "
         "name='x'><location lat='1e999' lon='1'/></merchant>", "bad-request"),
        ("merchant with region='٤٤٠٣٠٥'", "set", f"<merchant xmlns='{NS}' jid='{new_jid()}' "
         "name='x'><location region='٤٤٠٣٠٥'/></merchant>", "bad-request"),
        ("agent with region '../1'", "set", f"<agent xmlns='{NS}' jid='{new_jid()}' "
         "region='../1'/>", "bad-request"),
        ("agent with region ' 440305'", "set", f"<agent xmlns='{NS}' jid='{new_jid()}' "
         "region=' 440305'/>", "bad-request"),
        ("agent for a bad JID", "set", f"<agent xmlns='{NS}' jid='x@@y' region='440305'/>",
         "bad-request"),
    ]  # fmt: skip


async def test_prosody_closes_clients_that_send_what_it_refuses(service: Service) -> None:
    for case, data in prosody_refused_cases(service.jid):
        client = await service.client()
        before = await snapshot(service.app.db)
        closed = client.disconnected  # replaced by a new future once it is resolved
        client.send_raw(data)
        await asyncio.wait_for(asyncio.shield(closed), 15)
        await _answered(service)
        assert not diff(before, await snapshot(service.app.db)), case
        TALLY.append(
            (f"prosody/{service.backend}", case, "client stream closed by Prosody; no write")
        )


async def _raw_case(
    service: Service, client: Client, case: str, itype: str, payload: str, expect: str
) -> None:
    """Send one IQ as raw text through Prosody: ``expect``, no write, the next answered."""
    before = await snapshot(service.app.db)
    answer = await _send_bytes_for_answer(client, service.jid, payload, itype)
    assert answer.get("type") == "error", f"{case}: {ET.tostring(answer)[:300]!r}"
    assert _condition(answer) == expect, f"{case}: {ET.tostring(answer)[:300]!r}"
    assert not diff(before, await snapshot(service.app.db)), case
    await _answered(service)
    TALLY.append((f"prosody/{service.backend}", case, f"stanza error {expect}"))


async def _send_bytes_for_answer(
    client: Client, to: str, payload: str, itype: str = "set"
) -> ET.Element:
    """Write an IQ as raw text and await its answer.

    Raw, because slixmpp's serialiser would alter the payload: it recurses (deep nesting)
    and writes a tab in an attribute literally, which the receiver then reads as a space.
    """
    iid = f"raw-{uuid.uuid4().hex[:8]}"
    answer: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()
    client.register_handler(
        Callback(iid, MatcherId(iid), lambda iq: answer.set_result(iq.xml), once=True)
    )
    client.send_raw(f"<iq type='{itype}' id='{iid}' to='{to}'>{payload}</iq>")
    return await asyncio.wait_for(answer, 20)


async def test_prosody_passes_deep_nesting_and_the_component_answers(service: Service) -> None:
    net = await build_network(service)
    client = await service.client()
    for case in prosody_deep_cases(net.merchant.bare):
        await _raw_case(service, client, *case)
    # And the same client can still join normally afterwards.
    await client.dist.register(service.jid, net.merchant.bare)


async def test_prosody_payload_errors_reach_the_component(service: Service) -> None:
    net = await build_network(service)
    client = await service.client()
    admin = await service.admin()
    for case in prosody_member_cases():
        await _raw_case(service, client, *case)
    for case in prosody_admin_cases(service.new_jid):
        await _raw_case(service, admin, *case)
    await client.dist.register(service.jid, net.merchant.bare)


async def test_prosody_payment_amounts_and_currencies(service: Service) -> None:
    net = await build_network(service)
    payer = await service.client()
    await payer.dist.register(service.jid, net.merchant.bare)
    for case, attrs in PAYMENT_CASES:
        payload = f"<payment xmlns='{NS}' id='{_payment_id()}' payer='{payer.bare}' {attrs}/>"
        await _raw_case(service, net.merchant, case, "set", payload, "bad-request")


# -- the corpora, counted ---------------------------------------------------------------

PLACEHOLDER = "placeholder@localhost"
PATHS = ("parser", "stand-in", "prosody")


def corpora() -> dict[str, list[tuple[str, bytes]]]:
    """Every hostile input of this module as (case, the bytes parsed or sent), by path
    (``parser``, ``stand-in``, ``prosody``) and by part of a path (``prosody/refused``).

    Fresh JIDs and ids are one placeholder for all, so that two inputs of a part differ
    only where their hostile part does.
    """

    def payment(attrs: str) -> bytes:
        return f"<payment xmlns='{NS}' id='o-1' payer='{PLACEHOLDER}' {attrs}/>".encode()

    stanzas = direct_deep_cases() + direct_big_cases() + direct_payload_cases()
    through_prosody = (
        prosody_deep_cases(PLACEHOLDER)
        + prosody_member_cases()
        + prosody_admin_cases(lambda: PLACEHOLDER)
    )
    parts = {
        "parser/amount": [(f"amount {a!r}", a.encode()) for a in BAD_AMOUNTS],
        "parser/jid": [(f"jid {j!r}", j.encode()) for j in BAD_JIDS],
        "parser/stream-guard": [(case, data) for case, data, _, _ in GUARD_CASES],
        "stand-in/stanza": [(case, payload.encode()) for case, payload, _ in stanzas],
        "stand-in/sender": [(f"from={s!r}", f"from='{s}'".encode()) for s in UNPARSEABLE_SENDERS],
        "stand-in/stream": [(case, data) for case, data, _, _ in stream_breaker_cases()],
        "prosody/refused": prosody_refused_cases(PLACEHOLDER),
        "prosody/stanza": [(c, f"{t} {p}".encode()) for c, t, p, _ in through_prosody],
        "prosody/payment": [(case, payment(attrs)) for case, attrs in PAYMENT_CASES],
    }
    paths = {p: [c for k, v in parts.items() if k.startswith(f"{p}/") for c in v] for p in PATHS}
    return {**paths, **parts}


def _documented() -> dict[str, int]:
    """The figures of docs/hostile-inputs.md: its table rows ``| `key` | ... | N |``."""
    rows = re.findall(r"^\|\s*`([a-z/-]+)`\s*\|.*\|\s*(\d+)\s*\|\s*$", DOC.read_text(), re.M)
    return {key: int(n) for key, n in rows}


def test_corpus_sizes_are_the_documented_ones() -> None:
    sizes: dict[str, int] = {}
    for key, cases in corpora().items():
        names = [case for case, _ in cases]
        assert len(set(names)) == len(names), f"{key}: a case name used twice"
        if "/" in key:
            inputs = [data for _, data in cases]
            assert len(set(inputs)) == len(inputs), f"{key}: the same input twice"
        sizes[key] = len(cases)
    # Each Prosody input runs once per database; the stand-in server runs on SQLite.
    sizes["runs-both-databases"] = 2 * sizes["prosody"] + sizes["stand-in"] + sizes["parser"]
    assert _documented() == sizes
