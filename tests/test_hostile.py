"""Hostile and malformed input: each gets an error, nothing is written, the component lives.

Two paths:

- through Prosody, with real clients (the ``service`` fixture): what a client can get to
  the component at all. Prosody closes the *client's* stream for XML it refuses (DTDs,
  entities, invalid UTF-8, control characters, repeated attributes, > 256 KiB stanzas);
  what it passes on (deep nesting, unknown namespaces, bad attributes, amounts, JIDs)
  reaches the component and must get a stanza error.
- directly against the component, with no server: a fake XEP-0114 server on a loopback
  socket (``tests/support/fakeserver.py``) performs the handshake and writes raw bytes to
  the component, to feed it what Prosody would refuse. Stanzas that are too big or too
  deep get a stanza error on a link that stays up; XML that is not well-formed or that
  declares a DTD closes the stream (there is no way to resynchronise an XML stream) and
  the component reconnects and answers the next request.

After every hostile input: the database is unchanged (every table compared) and the next
ordinary request is answered. The figures are printed at the end of the module (``-s``).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
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

# (path, case, outcome) of every hostile input tried; printed at module teardown.
TALLY: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_tally() -> object:
    yield
    if TALLY:
        print(f"\n== hostile inputs tried: {len(TALLY)}")
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


def test_parse_minor_units_refuses_every_hostile_amount() -> None:
    for raw in BAD_AMOUNTS:
        with pytest.raises(ValueError):
            parse_minor_units(raw, cap=100_000_000)
        TALLY.append(("domain", f"amount {raw!r}", "ValueError"))
    assert parse_minor_units("100", cap=1000) == 100


def test_normalize_jid_refuses_every_hostile_jid() -> None:
    for raw in BAD_JIDS:
        with pytest.raises(InvalidJid):
            normalize_jid(raw)
        TALLY.append(("domain", f"jid {raw[:40]!r}", "InvalidJid"))
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


def test_guard_refuses_dtds_entities_and_oversize() -> None:
    bomb = (
        b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        + b"".join(
            f"<!ENTITY lol{i} '{('&lol' + str(i - 1) + ';') * 10 if i else '&lol;' * 10}'>".encode()
            for i in range(10)
        )
        + b"]><stream:stream xmlns:stream='s'>&lol9;"
    )
    rejected: list[Rejected] = []
    parser = GuardedParser(StreamLimits(), rejected.append)
    parser.feed(bomb)
    assert parser.error is not None and parser.error.condition == "restricted-xml"
    parser.feed(b"<more/>")  # ignored after the error
    parser, _ = _feed(b"<iq>" + b"<a>" * 40 + b"</a>" * 40 + b"</iq><iq id='ok'/>")
    assert [e.get("id") for k, e in parser.read_events() if k == "stanza" and e is not None] == [
        "ok"
    ]
    parser, rejected = _feed(b"<iq type='set' id='x' from='a@b'>" + b"x" * 100_000 + b"</iq>")
    assert rejected[0].condition == "policy-violation" and rejected[0].attrib["id"] == "x"
    parser, _ = _feed(b"<iq a='" + b"x" * 100_000)
    assert parser.error is not None and parser.error.condition == "policy-violation"


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
    TALLY.append(("direct", case, f"stanza error {got}; link kept; next request answered"))


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
    TALLY.append(("direct", case, f"stream error {got}; reconnected; next request answered"))


async def test_direct_valid_request_is_answered(direct: Direct) -> None:
    await _probe(direct)


async def test_direct_too_deep_gets_bad_request(direct: Direct) -> None:
    # slixmpp alone raises RecursionError on this before any handler runs (no answer).
    for depth in (40, 1000, 50_000):
        deep = f"<register xmlns='{NS}' referrer='shop@test'>" + "<a>" * depth + "</a>" * depth
        await _stanza_case(direct, f"nested {depth} deep", deep + "</register>", "bad-request")


async def test_direct_too_big_gets_policy_violation(direct: Direct) -> None:
    text = "x" * (4 * MIB)
    await _stanza_case(
        direct, "4 MiB text", f"<register xmlns='{NS}' referrer='shop@test'>{text}</register>",
        "policy-violation",
    )  # fmt: skip
    many = "<a b='c'/>" * (MIB // 2)  # 5 MiB of small elements
    await _stanza_case(
        direct, "5 MiB of elements", f"<register xmlns='{NS}'>{many}</register>",
        "policy-violation",
    )  # fmt: skip
    assert direct.server.connections == 1


async def test_direct_payload_errors(direct: Direct) -> None:
    cases = [
        ("unknown namespace", "<register xmlns='urn:evil'/>", "service-unavailable"),
        ("unknown element in NS", f"<steal xmlns='{NS}'/>", "service-unavailable"),
        ("no payload", "", "bad-request"),
        ("two payloads", f"<register xmlns='{NS}'/><register xmlns='{NS}'/>", "bad-request"),
        ("register without referrer", f"<register xmlns='{NS}'/>", "bad-request"),
        ("comment and PI inside", f"<register xmlns='{NS}'><!--x--><?pi x?></register>",
         "bad-request"),
    ]  # fmt: skip
    for jid in BAD_JIDS:
        attr = jid.replace("<", "&lt;").replace("\u0000", "")
        if "\u0000" in jid:
            continue  # a NUL cannot even be written in XML: see the stream cases
        cases.append(
            (f"referrer {jid[:30]!r}", f"<register xmlns='{NS}' referrer='{attr}'/>", "bad-request")
        )
    for case, payload, expect in cases:
        await _stanza_case(direct, case, payload, expect)


async def test_direct_unparseable_sender_is_dropped_safely(direct: Direct) -> None:
    before = await snapshot(direct.app.db)
    for sender in ("@@@", "a@b@c", ""):
        await direct.link.send(
            f"<iq type='set' id='bad' from='{sender}' to='{COMPONENT}'>"
            f"<register xmlns='{NS}' referrer='shop@test'/></iq>"
        )
        TALLY.append(("direct", f"from={sender!r}", "no write; next request answered"))
    # Whatever slixmpp answers to a sender it cannot parse, the probe is answered after it.
    iid = direct.nid()
    await direct.link.send(
        f"<iq type='get' id='{iid}' from='p@test/r' to='{COMPONENT}'><chain xmlns='{NS}'/></iq>"
    )
    while (reply := await direct.link.next_stanza()).get("id") != iid:
        pass
    assert _condition(reply) == "registration-required"
    assert not diff(before, await snapshot(direct.app.db))


async def test_direct_stream_breakers_close_the_stream_and_reconnect(direct: Direct) -> None:
    body = f"<iq type='set' id='x' from='evil@test' to='{COMPONENT}'><register xmlns='{NS}' "
    lol = "".join(f"<!ENTITY l{i} '{f'&l{i - 1};' * 10}'>" for i in range(1, 10))
    cases: list[tuple[str, bytes, str, bool]] = [
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
    for case, data, expect, in_header in cases:
        await _stream_case(direct, case, data, expect, in_header=in_header)


async def test_direct_payment_amounts_and_currencies(direct: Direct) -> None:
    if (NS, "payment") not in direct.app.component._known:
        pytest.skip("the payment request is not routed yet")
    # The payer must be a member for the amount checks to be reached.
    payer = "payer@test"
    await direct.app.services.membership.register(payer, direct.merchant)
    for amount in BAD_AMOUNTS:
        await _stanza_case(
            direct, f"amount {amount!r}",
            f"<payment xmlns='{NS}' id='o-{uuid.uuid4().hex}' payer='{payer}' "
            f"amount='{amount}' currency='CNY'/>",
            "bad-request", sender="shop@test/pos",
        )  # fmt: skip
    for currency in BAD_CURRENCIES:
        await _stanza_case(
            direct, f"currency {currency!r}",
            f"<payment xmlns='{NS}' id='o-{uuid.uuid4().hex}' payer='{payer}' "
            f"amount='100' currency='{currency}'/>",
            "bad-request", sender="shop@test/pos",
        )  # fmt: skip


# -- through Prosody, with real clients -----------------------------------------------------


async def _answered(service: Service) -> None:
    """The component still answers: a non-member's chain request gets its error."""
    probe = await service.client(f"hostile-probe@{service.config.xmpp.domain}")
    await expect_error(probe.dist.chain(service.jid), "registration-required")


async def test_prosody_closes_clients_that_send_what_it_refuses(service: Service) -> None:
    lol = "".join(f"<!ENTITY l{i} '{f'&l{i - 1};' * 10}'>" for i in range(1, 10))
    iq = f"<iq type='set' id='x' to='{service.jid}'><register xmlns='{NS}' "
    cases: list[tuple[str, bytes]] = [
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
    for case, data in cases:
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
    # 1000 and 10000 levels: 7 KB and 70 KB, under Prosody's limits, so they reach the
    # component; slixmpp alone would hit RecursionError and drop them unanswered.
    for depth in (40, 1000, 10_000):
        deep = "<a>" * depth + "</a>" * depth
        payload = f"<register xmlns='{NS}' referrer='{net.merchant.bare}'>{deep}</register>"
        before = await snapshot(service.app.db)
        answer = await _send_bytes_for_answer(client, service.jid, payload)
        assert answer.get("type") == "error" and _condition(answer) == "bad-request"
        assert not diff(before, await snapshot(service.app.db))
        await _answered(service)
        TALLY.append(
            (f"prosody/{service.backend}", f"nested {depth} deep", "stanza error bad-request")
        )
    # And the same client can still join normally afterwards.
    await client.dist.register(service.jid, net.merchant.bare)


async def test_prosody_payload_errors_reach_the_component(service: Service) -> None:
    net = await build_network(service)
    client = await service.client()
    admin = await service.admin()
    cases = [
        ("unknown namespace", "set", "<register xmlns='urn:evil' referrer='x@localhost'/>",
         "service-unavailable"),
        ("unknown element in NS", "set", f"<steal xmlns='{NS}'/>", "service-unavailable"),
        ("register without referrer", "set", f"<register xmlns='{NS}'/>", "bad-request"),
        ("chain of a bad JID", "get", f"<chain xmlns='{NS}' jid='a@b@c'/>", "bad-request"),
    ]  # fmt: skip
    for jid in BAD_JIDS:
        if "\u0000" in jid:
            continue
        attr = jid.replace("<", "&lt;")
        cases.append(
            (f"referrer {jid[:30]!r}", "set", f"<register xmlns='{NS}' referrer='{attr}'/>",
             "bad-request")
        )  # fmt: skip
    for case, itype, payload, expect in cases:
        await _raw_case(service, client, case, itype, payload, expect)
    admin_cases = [
        ("merchant without jid", f"<merchant xmlns='{NS}' name='x'><location region='440305'/>"
         "</merchant>", "bad-request"),
        ("merchant without location", f"<merchant xmlns='{NS}' jid='{service.new_jid()}' "
         "name='x'/>", "bad-request"),
        ("merchant with two locations", f"<merchant xmlns='{NS}' jid='{service.new_jid()}' "
         "name='x'><location region='440305' address='x'/></merchant>", "bad-request"),
        # (A tab written a&#x9;b reaches the component as a space: Prosody re-serialises
        # it literally and attribute-value normalisation turns it into a space.)
        ("merchant name with U+202E", f"<merchant xmlns='{NS}' jid='{service.new_jid()}'"
         " name='a\u202eb'><location region='440305'/></merchant>", "bad-request"),
        ("merchant name of 201 characters", f"<merchant xmlns='{NS}' jid='{service.new_jid()}'"
         f" name='{'n' * 201}'><location region='440305'/></merchant>", "bad-request"),
        ("merchant with lat=nan", f"<merchant xmlns='{NS}' jid='{service.new_jid()}' "
         "name='x'><location lat='nan' lon='nan'/></merchant>", "bad-request"),
        ("merchant with lat=1e999", f"<merchant xmlns='{NS}' jid='{service.new_jid()}' "
         "name='x'><location lat='1e999' lon='1'/></merchant>", "bad-request"),
        ("merchant with region='٤٤٠٣٠٥'", f"<merchant xmlns='{NS}' jid='{service.new_jid()}' "
         "name='x'><location region='٤٤٠٣٠٥'/></merchant>", "bad-request"),
        ("agent with region '../1'", f"<agent xmlns='{NS}' jid='{service.new_jid()}' "
         "region='../1'/>", "bad-request"),
        ("agent with region ' 440305'", f"<agent xmlns='{NS}' jid='{service.new_jid()}' "
         "region=' 440305'/>", "bad-request"),
        ("agent for a bad JID", f"<agent xmlns='{NS}' jid='x@@y' region='440305'/>",
         "bad-request"),
    ]  # fmt: skip
    for case, payload, expect in admin_cases:
        await _raw_case(service, admin, case, "set", payload, expect)
    await client.dist.register(service.jid, net.merchant.bare)


async def test_prosody_payment_amounts_and_currencies(service: Service) -> None:
    if (NS, "payment") not in service.app.component._known:
        pytest.skip("the payment request is not routed yet")
    net = await build_network(service)
    payer = await service.client()
    await payer.dist.register(service.jid, net.merchant.bare)
    cases = [(f"amount {a!r}", f"amount='{a}' currency='CNY'") for a in BAD_AMOUNTS] + [
        (f"currency {c!r}", f"amount='100' currency='{c}'") for c in BAD_CURRENCIES
    ]
    for case, attrs in cases:
        payload = f"<payment xmlns='{NS}' id='o-{uuid.uuid4().hex}' payer='{payer.bare}' {attrs}/>"
        await _raw_case(service, net.merchant, case, "set", payload, "bad-request")
