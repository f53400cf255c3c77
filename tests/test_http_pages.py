"""The pages of the component's HTTP server other than the metrics: invite posters under
/invites/, fetched over HTTP from a real ``imserver run`` (the route table's prefix
routes), with the refusals a person who follows a stale link sees."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.network import chain_of
from tests.support.running import ADMIN, http_get, http_on, running_component


async def test_invite_posters_over_http(tmp_path: Path) -> None:
    env, root = http_on(IMSERVER_INVITES__PUBLIC_BASE_URL="https://dist.example.org")
    base = f"{root}/invites"
    async with running_component(tmp_path, env) as run:
        shop, payer = await run.shop_and_payer()
        shop_code = chain_of(await shop.dist.chain(run.jid))["member"]["rule-number"]
        payer_code = chain_of(await payer.dist.chain(run.jid))["member"]["rule-number"]

        status, ctype, png = await asyncio.to_thread(http_get, f"{base}/{shop_code}.png")
        assert (status, ctype) == (200, "image/png") and png.startswith(b"\x89PNG\r\n")
        status, ctype, pdf = await asyncio.to_thread(http_get, f"{base}/{shop_code.lower()}.pdf")
        assert (status, ctype) == (200, "application/pdf") and pdf.startswith(b"%PDF-")

        status, _, text = await asyncio.to_thread(http_get, f"{base}/440305-U09999999.png")
        assert status == 404 and b"is no member's" in text
        status, _, text = await asyncio.to_thread(http_get, f"{base}/{shop_code}.gif")
        assert status == 404 and b"ask for <rule number>.png or .pdf" in text

        admin = await run.client(ADMIN)
        await admin.dist.terminate(run.jid, payer.bare, "moved away", timeout=10)
        status, _, text = await asyncio.to_thread(http_get, f"{base}/{payer_code}.png")
        assert status == 410, text
        # /metrics still answers beside them.
        assert (await asyncio.to_thread(http_get, f"{root}/metrics"))[0] == 200
