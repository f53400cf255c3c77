"""In-memory index over a region table: lookups, chains, successors, names."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .regions import Region, RegionDataError

__all__ = ["RegionIndex", "is_structural_name"]

# Names of the containers that GB/T 2260 puts between a province and the
# county-level units it governs directly ("省直辖县级行政区划").  They are
# rows of the tree but not names anyone writes in an address or wants to see
# in a full name.
_STRUCTURAL_MARK = "直辖"


def is_structural_name(name: str) -> bool:
    """True for a container row such as 省直辖县级行政区划."""
    return _STRUCTURAL_MARK in name


class RegionIndex:
    """Regions by code with parent/child links and successor resolution."""

    def __init__(self, regions: Iterable[Region]) -> None:
        """Index ``regions`` (already validated, e.g. by ``load_regions_csv``)."""
        self._by_code: dict[str, Region] = {}
        self._children: dict[str, list[str]] = {}
        for region in regions:
            if region.code in self._by_code:
                raise RegionDataError(f"duplicate region code {region.code}")
            self._by_code[region.code] = region
        for region in self._by_code.values():
            if region.parent is not None:
                if region.parent not in self._by_code:
                    raise RegionDataError(f"parent {region.parent} of {region.code} missing")
                self._children.setdefault(region.parent, []).append(region.code)

    def __len__(self) -> int:
        return len(self._by_code)

    def __iter__(self) -> Iterator[Region]:
        return iter(self._by_code.values())

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str) -> Region | None:
        """The region with ``code`` (live or retired), or None."""
        return self._by_code.get(code)

    def children(self, code: str) -> list[Region]:
        """Direct children of ``code`` (retired ones included)."""
        return [self._by_code[c] for c in self._children.get(code, [])]

    def live(self, code: str) -> Region | None:
        """Follow successors from ``code`` to the live region, or None if unknown."""
        region = self._by_code.get(code)
        seen: set[str] = set()
        while region is not None and region.successor is not None:
            if region.code in seen:  # validated tables have no loops; be safe anyway
                raise RegionDataError(f"successor chain of {code} loops")
            seen.add(region.code)
            region = self._by_code.get(region.successor)
        return region

    def chain(self, code: str) -> tuple[Region, ...]:
        """The region and its ancestors, from the province down."""
        out: list[Region] = []
        region = self._by_code.get(code)
        while region is not None:
            out.append(region)
            region = self._by_code.get(region.parent) if region.parent else None
        return tuple(reversed(out))

    def full_name(self, code: str) -> str:
        """Names from the province down, e.g. 广东省深圳市南山区.

        A municipality's city row repeats the province's name (北京市北京市)
        and containers such as 省直辖县级行政区划 are not part of how anyone
        writes the place, so both are left out.
        """
        parts: list[str] = []
        for region in self.chain(code):
            if is_structural_name(region.name) and region.code != code:
                continue
            if parts and parts[-1] == region.name:
                continue
            parts.append(region.name)
        return "".join(parts)

    def is_ancestor(self, ancestor: str, code: str) -> bool:
        """True when ``ancestor`` is a proper ancestor of ``code``."""
        return any(r.code == ancestor for r in self.chain(code)[:-1])
