"""`imserver regions resolve` and `imserver regions load` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imserver.cli import main
from imserver.geo.crs import wgs84_to_gcj02

REPO = Path(__file__).parents[1]
CONFIG = str(REPO / "config.toml")


def resolve(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``imserver regions resolve ARGS`` in-process: (exit code, stdout, stderr)."""
    code = main(["--config", CONFIG, "regions", "resolve", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_resolve_coordinates_prints_the_region_and_its_parents(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = resolve(capsys, "22.5405,113.9345")
    assert code == 0
    got = json.loads(out)
    assert (got["code"], got["name"], got["level"]) == ("440305", "南山区", 3)
    assert got["chain"] == [
        {"code": "440000", "name": "广东省", "level": 1},
        {"code": "440300", "name": "深圳市", "level": 2},
        {"code": "440305", "name": "南山区", "level": 3},
    ]
    assert got["how"] == "point"


def test_resolve_gcj02(capsys: pytest.CaptureFixture[str]) -> None:
    lat, lon = wgs84_to_gcj02(22.5405, 113.9345)
    code, out, _ = resolve(capsys, f"{lat:.6f}, {lon:.6f}", "--crs", "gcj02")
    assert code == 0 and json.loads(out)["code"] == "440305"


def test_resolve_address_and_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = resolve(capsys, "北京市朝阳区建国路")
    assert code == 0 and json.loads(out)["code"] == "110105"
    code, out, _ = resolve(capsys, "540422")  # 米林, renumbered 540481
    got = json.loads(out)
    assert code == 0 and got["code"] == "540481" and "540422 was replaced" in got["note"]


@pytest.mark.parametrize(
    ("args", "exit_code", "needle"),
    [
        (("南山区",), 1, "230404 黑龙江省鹤岗市南山区, 440305 广东省深圳市南山区"),
        (("15.0,116.0",), 1, "km from the nearest district"),
        (("95,113",), 1, "out of range"),
        (("火星基地",), 1, "no known region"),
        (("深圳市", "--crs", "gcj02"), 2, "--crs applies to coordinates"),
    ],
)
def test_resolve_errors_are_clear_and_nonzero(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], exit_code: int, needle: str
) -> None:
    code, out, err = resolve(capsys, *args)
    assert code == exit_code and out == ""
    assert err.startswith("error: ") and needle in err, err


def _imserver(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imserver.cli", "--config", CONFIG, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_resolve_as_a_process_needs_no_database(tmp_path: Path) -> None:
    # A database URL that cannot be opened: resolve never touches it.
    env = {"IMSERVER_DATABASE__URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}
    done = _imserver("regions", "resolve", "广东省深圳市南山区科技园", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["code"] == "440305"
    done = _imserver("regions", "resolve", "朝阳区", env=env)
    assert done.returncode == 1 and "朝阳区 is ambiguous" in done.stderr


def test_regions_load_reports_and_refuses_bad_files(tmp_path: Path) -> None:
    env = {"IMSERVER_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}"}
    assert _imserver("migrate", env=env).returncode == 0
    done = _imserver("regions", "load", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("3463 regions loaded")
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name\n1,x\n", encoding="utf-8")
    done = _imserver("regions", "load", str(bad), env=env)
    assert done.returncode == 1 and "header must be" in done.stderr


def _batch_lines() -> tuple[list[str], dict[int, str | None]]:
    """A merchant list of 3,000 lines: the place set's points in WGS-84, GCJ-02 and as
    region codes, with bad lines and blank ones among them. Returns the lines and, per
    line number, the district expected (None: an error; absent: a blank line)."""
    import csv

    with (REPO / "tests" / "geo" / "data" / "places.csv").open(encoding="utf-8") as f:
        places = list(csv.DictReader(f))
    lines: list[str] = []
    expected: dict[int, str | None] = {}
    bad = ["not,a,point", "95.0,113.9", "22.5405,113.9345,mars", "999999", "41.0,-120.0"]
    i = 0
    while len(lines) < 3000:
        place = places[i % len(places)]
        lat, lon = float(place["lat"]), float(place["lon"])
        kind = i % 3
        if kind == 0:
            lines.append(f"{lat},{lon}")
        elif kind == 1:
            glat, glon = wgs84_to_gcj02(lat, lon)
            lines.append(f"{glat:.6f}, {glon:.6f}, gcj02")
        else:
            lines.append(place["code"])
        # Points are scored by the place set's own test; here: answered, in order.
        expected[len(lines)] = place["code"] if kind == 2 else ""
        if i % 97 == 0:
            lines.append(bad[(i // 97) % len(bad)])
            expected[len(lines)] = None
        if i % 211 == 0:
            lines.append("")
        i += 1
    return lines, expected


def test_batch_answers_every_line_in_order(tmp_path: Path) -> None:
    lines, expected = _batch_lines()
    path = tmp_path / "merchants.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "imserver.cli", "--config", CONFIG, "regions", "resolve",
         "--batch", str(path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["line"] for a in answers] == list(range(1, len(lines) + 1))
    errors = [a["line"] for a in answers if "error" in a]
    assert errors == sorted(n for n, code in expected.items() if code is None)
    for a in answers:
        assert a["query"] == lines[a["line"] - 1].strip()
        if a["line"] not in expected:
            assert a["skipped"] == "blank line"
            continue
        want = expected[a["line"]]
        if want:
            assert a["code"] == want, a
        elif want == "":
            assert "code" in a and "border_km" in a and "candidates" in a, a
        else:
            assert a["error"], a
    assert result.returncode == 1
    first = ", ".join(str(n) for n in errors[:20])
    assert f"{len(errors)} errors" in result.stderr and first in result.stderr, result.stderr


def test_batch_reads_standard_input_and_refuses_a_missing_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imserver.cli", "--config", CONFIG, "regions", "resolve",
         "--batch", "-"],
        input="22.5405,113.9345\n440305\n", capture_output=True, text=True, timeout=120,
        check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [json.loads(x)["code"] for x in result.stdout.splitlines()] == ["440305", "440305"]
    assert "2 resolved" in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "imserver.cli", "--config", CONFIG, "regions", "resolve",
         "--batch", str(tmp_path / "nope.txt")],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip
    assert missing.returncode == 2 and "cannot read" in missing.stderr
