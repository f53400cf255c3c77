"""`imserver demo` at a small size against the real Prosody fixture and the component.

The demo seeds its city and trades through Prosody with real slixmpp clients; here its
summary is checked against the database with a query of the test's own, its pictures
are opened as what they claim to be, and an account it prints logs in and gets an
answer from the component.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import func, select

from imserver.cli import main
from imserver.config import Config
from imserver.demo.city import SHOPS
from imserver.demo.client import MemberClient
from imserver.demo.day import plan_day
from imserver.demo.run import DemoOptions, report_text, run_demo
from imserver.demo.seed import WAVE, Cast, City, plan_users
from imserver.demo.servers import DemoError
from imserver.store.models import Member, Payment
from tests.conftest import Service
from tests.support.clients import PASSWORD

USERS = 36
PAYMENTS = 100


def demo_config(service: Service) -> Config:
    """The service's config, with the Prosody data dir of the fixture (its accounts)."""
    config = service.config
    prosody = config.prosody.model_copy(update={"data_dir": str(service.prosody.data_dir)})
    return config.model_copy(update={"prosody": prosody})


async def test_demo_summary_matches_the_database(service: Service, tmp_path: Path) -> None:
    config = demo_config(service)
    started = time.monotonic()
    result = await run_demo(
        config,
        DemoOptions(users=USERS, payments=PAYMENTS, out=tmp_path, seed=7, admin_password=PASSWORD),
    )
    assert time.monotonic() - started < 60
    assert result.started == [], "the fixture's Prosody and component were found and used"
    report, tally = result.report, result.tally

    # The database's own word, by a query of the test's, not the demo's.
    merchants = list(result.city.merchants)
    async with service.app.ctx.db.engine.connect() as conn:
        paid, refunded, count = (
            await conn.execute(
                select(func.sum(Payment.amount), func.sum(Payment.refunded), func.count())
                .join(Member, Member.id == Payment.merchant_id)
                .where(Member.jid.in_(merchants))
            )
        ).one()
    assert count == PAYMENTS == report.payments == tally.payments
    assert report.volume == paid - refunded == tally.paid - tally.refunded
    assert sum(report.shares.values()) == report.volume
    assert dict(tally.shares) == report.shares
    assert report.ledger.ok, report.ledger.problems
    assert result.ok
    assert len(result.city.users) == USERS
    joined = {m.jid for m in report.members if m.role == "user"}
    assert joined == set(result.city.users)
    assert any(r not in result.city.merchants for r in result.city.referrer.values()), (
        "some users joined through other users"
    )

    text = report_text(config, result)
    assert "Ledger check: OK" in text and "agree with the database" in text

    svg = result.pictures.svg.read_bytes()
    assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    png = result.pictures.png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    # A printed account logs in with the printed password, and the component answers it.
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("busiest user"))
    found = re.fullmatch(r"\s*busiest user\s+(\S+)\s+password (\S+)", line)
    assert found is not None, line
    jid, password = found.groups()
    client = await MemberClient(jid, password).open(service.prosody.client_port)
    try:
        answer = await client.dist.balance(service.jid, timeout=10)
        assert answer["type"] == "result" and answer["from"] == service.jid
    finally:
        await client.close()


async def test_demo_refuses_a_wrong_admin_password_and_changes_nothing(
    service: Service, tmp_path: Path
) -> None:
    await service.admin()  # the admin's account exists, with the tests' password
    async with service.app.ctx.db.engine.connect() as conn:
        before = (await conn.execute(select(func.count()).select_from(Member))).scalar_one()
    with pytest.raises(DemoError, match="already has an account with another password"):
        await run_demo(
            demo_config(service),
            DemoOptions(users=5, payments=5, out=tmp_path, admin_password="not-" + PASSWORD),
        )
    async with service.app.ctx.db.engine.connect() as conn:
        after = (await conn.execute(select(func.count()).select_from(Member))).scalar_one()
    assert after == before


def test_plans_join_through_members_and_fill_the_day() -> None:
    rng = random.Random(3)
    merchants = ["shop-a", "shop-b"]
    plan = plan_users(merchants, 100, rng)
    for i, (_user, referrer) in enumerate(plan):
        earlier = {u for u, _ in plan[: (i // WAVE) * WAVE]}
        assert referrer in merchants or referrer in earlier
    assert any(r not in merchants for _, r in plan)
    cast = Cast("t", "localhost", "pw")
    city = City(cast, merchants={m: SHOPS[0] for m in merchants})
    city.users = [u for u, _ in plan]
    city.region = dict.fromkeys(city.users, SHOPS[0].district)
    day = plan_day(city, 1234, rng)
    sales = [s for hour in day for s in hour]
    assert len(day) == 24 and len(sales) == 1234
    assert len({s.ref for s in sales}) == len(sales)
    assert all(100 <= s.amount <= 200_000 for s in sales)
    assert max(len(h) for h in day[11:14]) > 5 * len(day[3]), "lunch is busier than 3 a.m."


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--users", "0"], "give a number from 1 to 5,000"),
        (["--payments", "many"], "'many' is not a whole number"),
    ],
)
def test_cli_refuses_bad_sizes(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *args])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
