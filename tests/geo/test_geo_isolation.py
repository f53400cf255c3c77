"""imserver.geo stands alone: no I/O at import, no imports from the rest of imserver."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import imserver.geo

PACKAGE = Path(imserver.geo.__file__).resolve().parent
ALLOWED_TOP = {"numpy", "shapely", "geopy", "imserver", "__future__"}


def test_modules_import_only_stdlib_and_the_geo_stack() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top in ALLOWED_TOP, (path.name, name)
                if top == "imserver":
                    assert name.startswith("imserver.geo"), (path.name, name)


def test_import_loads_nothing_and_reads_no_data() -> None:
    # A fresh interpreter: whatever `imserver` itself imports is someone
    # else's business, so compare before and after importing the geo package.
    code = """
import sys, builtins, io
import imserver
before = set(sys.modules)
opened = []
real_open = io.open
def spy(file, *a, **k):
    opened.append(str(file))
    return real_open(file, *a, **k)
builtins.open = io.open = spy
import imserver.geo, imserver.geo.online, imserver.geo.boundaries, imserver.geo.address
builtins.open = io.open = real_open
new = sorted(set(sys.modules) - before)
heavy = ('sqlalchemy', 'slixmpp', 'aiosqlite', 'asyncpg', 'pydantic', 'apscheduler')
bad = [m for m in new if m.split('.')[0] in heavy
       or (m.startswith('imserver.') and not m.startswith('imserver.geo'))]
data = [f for f in opened if '/geo/data/' in f]
from imserver.geo import regions, boundaries, resolver
assert regions.default_regions.cache_info().currsize == 0
assert boundaries._load_default.cache_info().currsize == 0
assert resolver._default_resolver.cache_info().currsize == 0
print(repr((bad, data)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "([], [])", out.stdout + out.stderr
