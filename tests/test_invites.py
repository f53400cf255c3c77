"""Invites end to end, on both databases: the URI a member gets, joining with its body
(chat, ad-hoc, register IQ), ended members' invites, statistics, the poster's HTTP
handler and `imserver invite` (on SQLite; on PostgreSQL too in `make soak`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from imserver.config import InvitesConfig
from imserver.service.context import Context
from imserver.service.errors import ServiceError
from imserver.service.invites import Invites
from imserver.xmpp.commands.base import Text
from imserver.xmpp.commands.invites import Invite
from tests.conftest import Service
from tests.support.clients import Client, expect_error
from tests.support.commands import adhoc_run, result_table, result_values, say
from tests.support.network import Network, add_merchant, build_network, chain_of, member_of
from tests.support.scan import pdf_page, zbar

REPO = Path(__file__).parents[1]
BASE = "https://dist.example.org/pub"


@pytest.fixture(scope="module")
async def net(service: Service) -> Network:
    return await build_network(service)


def detail(answer: str, label: str) -> str:
    """The value of a ``Label: value`` line of a chat answer."""
    for line in answer.splitlines():
        if line.startswith(f"{label}: "):
            return line.removeprefix(f"{label}: ")
    raise AssertionError(f"no {label!r} in {answer!r}")


def body_of(uri: str) -> str:
    """What a client types for an RFC 5122 ``?message;body=…`` URI."""
    assert uri.startswith("xmpp:")
    _jid, _, query = uri.partition("?")
    action, *pairs = query.split(";")
    assert action == "message"
    return unquote(dict(pair.split("=", 1) for pair in pairs)["body"])


async def invite_of(svc: Service, member: Client) -> str:
    """The member's invite URI, as the `invite` chat command gives it."""
    answer = await say(member, svc.jid, "invite")
    return detail(answer, "Invite")


async def joined_user(svc: Service, referrer: str) -> tuple[Client, str]:
    """A new user under ``referrer`` (JID or code), and its rule number."""
    user = await svc.client(svc.new_jid("inv"))
    return user, member_of(await user.dist.register(svc.jid, referrer))["rule-number"]


async def test_a_client_sends_the_uri_body_and_joins_under_the_merchant(
    service: Service, net: Network
) -> None:
    uri = await invite_of(service, net.merchant)
    assert uri == f"xmpp:{service.jid}?message;body=join%20{net.merchant_rule}"
    newcomer = await service.client(service.new_jid("scan"))
    answer = await say(newcomer, service.jid, body_of(uri))
    assert answer.startswith("Welcome! You joined as 440305-U"), answer
    assert detail(answer, "Referrer") == net.merchant.bare
    chain = chain_of(await newcomer.dist.chain(service.jid))
    assert chain["upline"][0][1] == net.merchant.bare
    assert chain["member"]["region"] == "440305"
    # The register IQ takes the code too (typed in lower case: the same invite).
    other = await service.client(service.new_jid("iq"))
    answer_iq = member_of(await other.dist.register(service.jid, net.merchant_rule.lower()))
    assert answer_iq["referrer"] == net.merchant.bare and answer_iq["status"] == "active"


async def test_the_adhoc_form_takes_a_users_rule_number(service: Service, net: Network) -> None:
    user, rule = await joined_user(service, net.merchant.bare)
    newcomer = await service.client(service.new_jid("form"))
    done = await adhoc_run(newcomer, service.jid, "join", {"referrer": rule})
    values = result_values(done)
    assert values["Referrer"] == user.bare
    chain = chain_of(await newcomer.dist.chain(service.jid))
    assert [link[1] for link in chain["upline"]] == [user.bare, net.merchant.bare]


async def test_an_agents_invite_works_like_a_users(service: Service, net: Network) -> None:
    agent_rule = chain_of(await net.district_agent.dist.chain(service.jid))["member"]["rule-number"]
    uri = await invite_of(service, net.district_agent)
    assert body_of(uri) == f"join {agent_rule}"
    newcomer = await service.client(service.new_jid("viaagent"))
    answer = await say(newcomer, service.jid, body_of(uri))
    assert detail(answer, "Referrer") == net.district_agent.bare
    chain = chain_of(await newcomer.dist.chain(service.jid))
    assert chain["upline"][0][1] == net.district_agent.bare


async def test_invites_of_ended_members_register_nobody(service: Service, net: Network) -> None:
    admin = await service.admin()
    gone, gone_rule = await joined_user(service, net.merchant.bare)
    erased, erased_rule = await joined_user(service, net.merchant.bare)
    gone_uri = await invite_of(service, gone)
    await admin.dist.terminate(service.jid, gone.bare, reason="contract ended")
    await admin.dist.delete(service.jid, erased.bare, reason="erasure request")
    newcomer = await service.client(service.new_jid("late"))
    for rule, status in ((gone_rule, "terminated"), (erased_rule, "deleted")):
        text = f"invite {rule} registers nobody: its member was {status}"
        assert await say(newcomer, service.jid, f"join {rule}") == f"Not done: {text}."
        error = await expect_error(newcomer.dist.register(service.jid, rule), "not-acceptable")
        assert error["error"]["text"] == text
        await expect_error(
            adhoc_run(newcomer, service.jid, "join", {"referrer": rule}), "not-acceptable"
        )
    assert body_of(gone_uri) == f"join {gone_rule}"
    await expect_error(newcomer.dist.chain(service.jid), "registration-required")
    # An ended member gets no invite to hand out, from itself or from an admin.
    assert await say(gone, service.jid, "invite") == "Not done: your membership has ended."
    answer = await say(admin, service.jid, f"invite {gone.bare}")
    assert answer == f"Not done: {gone_rule} was terminated: its invite registers nobody."


async def test_unknown_and_malformed_codes(service: Service) -> None:
    newcomer = await service.client(service.new_jid("typo"))
    answer = await say(newcomer, service.jid, "join 440305-U99999999")
    assert answer == "Not done: invite 440305-U99999999 is no member's: check the code."
    await expect_error(newcomer.dist.register(service.jid, "440305-U99999999"), "item-not-found")
    error = await expect_error(newcomer.dist.register(service.jid, "440305"), "bad-request")
    assert "neither a JID (user@domain) nor an invite code" in error["error"]["text"]
    await expect_error(newcomer.dist.chain(service.jid), "registration-required")


async def test_registrations_per_invite(service: Service) -> None:
    admin = await service.admin()
    shop = await service.client(service.new_jid("statshop"))
    code = member_of(await add_merchant(admin, service.jid, shop.bare, name="Stats Shop"))[
        "rule-number"
    ]
    answer = await say(shop, service.jid, "invites")
    assert answer.startswith(f"0 joined through invite {code}")
    assert detail(answer, "Last joined") == "nobody yet"
    joined = [await joined_user(service, code) for _ in range(3)]
    await joined_user(service, shop.bare)  # by JID: the same invite
    # A merchant that an admin places under the shop is no registration.
    await add_merchant(admin, service.jid, service.new_jid("sub"), referrer=shop.bare)
    await admin.dist.terminate(service.jid, joined[0][0].bare)
    # Repair and reassignment never move a registration to another invite.
    await admin.dist.reassign(service.jid, joined[1][0].bare, joined[2][0].bare, "moved")
    answer = await say(shop, service.jid, "my invites")
    assert answer.startswith(f"4 joined through invite {code}"), answer
    assert detail(answer, "Registrations") == "4" and detail(answer, "Still active") == "3"
    answer = await say(admin, service.jid, f"invites {shop.bare}")
    assert detail(answer, "Registrations") == "4"
    forbidden = await say(joined[1][0], service.jid, f"invites {shop.bare}")
    assert forbidden.startswith("Not done:")
    done = await adhoc_run(admin, service.jid, "invite-statistics", {"max": "100"})
    labels, items = result_table(done)
    assert labels[:2] == ["Invite code", "Member"]
    row = next(item for item in items if item["code"] == code)
    assert (row["registrations"], row["active"], row["name"]) == ("4", "3", "Stats Shop")
    counts = [int(item["registrations"]) for item in items]
    assert counts == sorted(counts, reverse=True)
    answer = await say(admin, service.jid, "invite stats 1")
    assert answer.startswith("Invites by registrations (")


async def test_poster_links_and_the_http_handler(service: Service, net: Network) -> None:
    config = service.config.model_copy(update={"invites": InvitesConfig(public_base_url=BASE)})
    invites = Invites(Context(service.app.db, config, clock=service.clock))
    mine = await invites.invite(net.merchant.bare)
    assert mine.poster_pdf == f"{BASE}/invites/{net.merchant_rule}.pdf"
    assert mine.poster_png == f"{BASE}/invites/{net.merchant_rule}.png"
    services = dataclasses.replace(service.app.services, invites=invites)
    shown = await Invite(services).run(net.merchant.bare, {})
    assert isinstance(shown, Text)
    assert ("Poster to print", mine.poster_pdf) in shown.details
    # Without a public base URL the answer names no poster.
    answer = await say(net.merchant, service.jid, "invite")
    assert "Poster" not in answer and detail(answer, "Code") == net.merchant_rule

    kind, png = await invites.poster(f"{net.merchant_rule}.png")
    assert kind == "image/png" and png.startswith(b"\x89PNG")
    kind, pdf = await invites.poster(f"{net.merchant_rule.lower()}.pdf")
    assert kind == "application/pdf" and pdf.startswith(b"%PDF")
    for name, condition in (
        ("440305-M99999999.png", "item-not-found"),
        (f"{net.merchant_rule}.gif", "item-not-found"),
        ("../../etc/passwd", "item-not-found"),
    ):
        with pytest.raises(ServiceError) as refused:
            await invites.poster(name)
        assert refused.value.condition == condition, name
    gone, gone_rule = await joined_user(service, net.merchant.bare)
    await (await service.admin()).dist.terminate(service.jid, gone.bare)
    with pytest.raises(ServiceError, match="registers nobody") as refused:
        await invites.poster(f"{gone_rule}.pdf")
    assert refused.value.condition == "not-acceptable"


async def _imserver(svc: Service, *args: str) -> tuple[int, str, str]:
    """``imserver ARGS`` as a process against the test service's database."""
    env = {
        **os.environ,
        "IMSERVER_DATABASE__URL": svc.config.database.url,
        "IMSERVER_XMPP__COMPONENT": svc.jid,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imserver.cli", "--config", str(REPO / "config.toml"), *args,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# Of the database the command only reads the member, as the invite tests above do on both
# backends (its own part is the poster and the QR code): PostgreSQL's run is soak.
@pytest.mark.soak_when(service="postgresql")
async def test_the_operators_command_writes_posters_and_qr_codes(
    service: Service, net: Network, tmp_path: Path
) -> None:
    uri = f"xmpp:{service.jid}?message;body=join%20{net.merchant_rule}"
    pdf = tmp_path / "shop.pdf"
    code, out, err = await _imserver(service, "invite", net.merchant.bare, "--out", str(pdf))
    assert code == 0, err
    assert out.splitlines()[0] == uri
    assert zbar(pdf_page(pdf)) == [uri]
    svg = tmp_path / "shop.svg"
    code, _, err = await _imserver(service, "invite", net.merchant.bare, "--qr", "--out", str(svg))
    assert code == 0, err
    assert svg.read_bytes().startswith(b"<?xml")
    code, _, err = await _imserver(service, "invite", "ghost@localhost", "--out", str(pdf))
    assert (code, err.strip()) == (1, "error: ghost@localhost is not a member")
    code, _, err = await _imserver(service, "invite", net.merchant.bare, "--out", str(svg))
    assert code == 1 and "a poster is written as png or pdf" in err


async def test_codes_and_jids_in_one_batch_of_registrations(service: Service, net: Network) -> None:
    """Registrations submitted together are one batch (service level, as the XMPP layer
    calls it): codes of several members, JIDs, an unknown code and an ended member's code
    each get their own answer, and the good ones are stored under the right referrer."""
    user, user_rule = await joined_user(service, net.merchant.bare)
    gone, gone_rule = await joined_user(service, net.merchant.bare)
    await (await service.admin()).dist.terminate(service.jid, gone.bare)
    named = [net.merchant_rule, user_rule.lower(), user.bare, "440305-U99999998", gone_rule] * 4
    expected = [net.merchant.bare, user.bare, user.bare, "item-not-found", "not-acceptable"] * 4
    jids = [service.new_jid("batch") for _ in named]
    membership = service.app.services.membership
    batches = membership.writer.batches

    async def outcome(jid: str, referrer: str) -> str:
        try:
            view = await membership.register(jid, referrer)
        except ServiceError as exc:
            return exc.condition
        assert view.referrer is not None
        return view.referrer

    got = await asyncio.gather(*(outcome(j, r) for j, r in zip(jids, named, strict=True)))
    assert got == expected
    assert membership.writer.batches == batches + 1, "submitted together, committed together"
    admin = service.config.admins[0]
    for jid, referrer in zip(jids, expected, strict=True):
        if "@" in referrer:
            chain = await membership.chain(admin, jid)
            assert chain.upline[0].jid == referrer
