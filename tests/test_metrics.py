"""The metrics endpoint of a real ``imserver run``, scraped before and after known requests:
the counters move by exactly the requests made. Also its /status page, the HTTP server's
refusals, and the key=value log of the same run."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import expect_error
from tests.support.running import PAYER, SHOP, http_get, http_on, running_component

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, text) of one HTTP request."""
    status, ctype, body = http_get(url, method)
    return status, ctype, body.decode()


async def scrape(base: str) -> Samples:
    status, ctype, body = await asyncio.to_thread(get, f"{base}/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_by_exactly_the_requests_made(tmp_path: Path) -> None:
    env, base = http_on(IMSERVER_LOG__FORMAT="kv", IMSERVER_LOG__JIDS="full")
    async with running_component(tmp_path, env) as run:
        shop, _payer = await run.shop_and_payer()
        before = await scrape(base)
        assert value(before, "imserver_requests_total", operation="set register", outcome="ok") == 1
        assert value(before, "imserver_batch_size_sum", writer="registrations") == 1

        await asyncio.gather(
            *(shop.dist.pay(run.jid, f"o-{i}", PAYER, 1000, "CNY", timeout=10) for i in range(5))
        )
        for i in range(2):
            await expect_error(
                shop.dist.pay(run.jid, f"bad-{i}", PAYER, 1000, "XXX", timeout=10), "bad-request"
            )
        after = await scrape(base)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        pay_ok = {"operation": "set payment", "outcome": "ok"}
        pay_bad = {"operation": "set payment", "outcome": "bad-request"}
        assert moved("imserver_requests_total", **pay_ok) == 5
        assert moved("imserver_requests_total", **pay_bad) == 2
        assert moved("imserver_request_duration_seconds_count", **pay_ok) == 5
        assert moved("imserver_request_duration_seconds_bucket", le="+Inf", **pay_ok) == 5
        assert moved("imserver_request_duration_seconds_sum", **pay_ok) > 0
        # Every counter moved by these requests and by nothing else (scrapes are not
        # requests): the sum over all labels moved by 7.
        total = sum(v for (n, _), v in after.items() if n == "imserver_requests_total") - sum(
            v for (n, _), v in before.items() if n == "imserver_requests_total"
        )
        assert total == 7
        # All seven went through the payment writer (it checks them inside the batch), in
        # one batch or several.
        assert moved("imserver_batch_size_sum", writer="payments") == 7
        assert 3 <= moved("imserver_batch_size_count", writer="payments") <= 7
        assert moved("imserver_batch_size_sum", writer="registrations") == 0
        assert value(after, "imserver_xmpp_link_up") == 1
        assert value(after, "imserver_xmpp_link_drops_total") == 0
        assert value(after, "imserver_database_up") == 1
        assert value(after, "imserver_database_unavailable_total") == 0
        assert value(after, "imserver_settlement_lag_seconds") == 0  # held for 7 days
        assert value(after, "imserver_settlement_runs_total") >= 1
        assert ("imserver_outbox_pending", ()) in after
        # The earners hear of it: the outbox drains to zero and the sent count shows it.
        for _ in range(100):
            drained = await scrape(base)
            if value(drained, "imserver_outbox_pending") == 0:
                break
            await asyncio.sleep(0.1)
        assert value(drained, "imserver_outbox_pending") == 0
        assert value(drained, "imserver_outbox_oldest_age_seconds") == 0
        # No remote server here (tests/test_federation.py counts its bounces and give-ups).
        assert value(drained, "imserver_outbox_remote_retrying") == 0
        assert value(drained, "imserver_outbox_given_up") == 0
        assert value(drained, "imserver_notifications_sent_total") >= 5  # 5 earnings of shop

        status, ctype, body = await asyncio.to_thread(get, f"{base}/status")
        assert (status, ctype) == (200, "application/json")
        page = json.loads(body)
        assert page["component"] == run.jid and page["link"]["up"] is True
        assert page["pid"] == run.component.process.pid  # type: ignore[union-attr]
        assert (await asyncio.to_thread(get, f"{base}/nothing"))[0] == 404
        assert (await asyncio.to_thread(get, f"{base}/metrics", "POST"))[0] == 405
        await run.stop()
        log = run.log()

    # The same run's key=value log: one line per request, JIDs in full as configured.
    lines = [line for line in log.splitlines() if "logger=imserver.requests" in line]
    assert len(lines) == 9  # merchant, register, 5 + 2 payments
    pattern = (
        r"ts=\S+ level=info logger=imserver\.requests msg=request "
        rf'op="set payment" sender={re.escape(SHOP)} outcome=bad-request ms=\d+\.\d{{3}}'
    )
    assert re.fullmatch(pattern, lines[-1]), lines[-1]
