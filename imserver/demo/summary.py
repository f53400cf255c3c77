"""The demo's closing table, from the database, checked against what the bots were told."""

from __future__ import annotations

from imserver.demo.day import Tally, money
from imserver.service.network_report import NetworkReport

# The places of the split in the order of the protocol's <distribution/>.
ORDER = (
    "referrer 1",
    "referrer 2",
    "referrer 3",
    "agent district",
    "agent city",
    "agent province",
    "platform",
    "merchant",
)


def disagreements(report: NetworkReport, tally: Tally) -> list[str]:
    """Where the database and the bots' answers differ (empty: they agree)."""
    found = []
    pairs = [
        ("payments", report.payments, tally.payments),
        ("amount paid", report.paid, tally.paid),
        ("refunds", report.refunds, tally.refunds),
        ("amount refunded", report.refunded, tally.refunded),
    ]
    pairs += [
        (f"{key} shares", report.shares.get(key, 0), tally.shares.get(key, 0))
        for key in sorted(set(report.shares) | set(tally.shares))
    ]
    for what, db, told in pairs:
        if db != told:
            found.append(f"{what}: database {db}, bots told {told}")
    if sum(report.shares.values()) != report.volume:
        found.append(f"shares sum to {sum(report.shares.values())}, volume is {report.volume}")
    return found


def summary_table(report: NetworkReport, tally: Tally) -> str:
    """The table printed at the end of the demo (every figure read from the database)."""
    lines = [
        "Summary (read from the database)",
        f"  payments   {report.payments:>8,}   paid      {money(report.paid):>16}",
        f"  refunds    {report.refunds:>8,}   refunded  {money(report.refunded):>16}",
        f"  volume                paid - refunded {money(report.volume):>10}",
        "",
        "  Shares by role                      amount   of volume",
    ]
    volume = report.volume or 1
    for key in sorted(report.shares, key=lambda k: (ORDER.index(k) if k in ORDER else 99, k)):
        amount = report.shares[key]
        lines.append(f"    {key:<22} {money(amount):>16}   {100 * amount / volume:6.2f} %")
    lines += ["", "  Top earners per level"]
    for key in ORDER:
        if key in report.top and key != "merchant":
            best = ", ".join(f"{jid} {money(net)}" for jid, net in report.top[key])
            lines.append(f"    {key:<16} {best}")
    if "merchant" in report.top:
        best = ", ".join(f"{jid} {money(net)}" for jid, net in report.top["merchant"])
        lines.append(f"    {'merchant':<16} {best}")
    ledger = report.ledger
    sums = ", ".join(f"{c} {s}" for c, s in sorted(ledger.currencies.items()))
    lines += [
        "",
        f"  Ledger check: {'OK' if ledger.ok else 'BROKEN'} ({ledger.accounts:,} accounts, "
        f"{ledger.movements:,} movements, {ledger.entries:,} entries; sums: {sums})",
    ]
    lines += [f"    PROBLEM: {p}" for p in ledger.problems]
    wrong = disagreements(report, tally)
    if wrong:
        lines.append("  The database and the bots' answers DISAGREE:")
        lines += [f"    {w}" for w in wrong]
    else:
        lines.append(
            "  The bots' answers agree with the database: "
            f"{tally.payments:,} payments, {tally.refunds:,} refunds, every share."
        )
    return "\n".join(lines)
