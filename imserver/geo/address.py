"""Offline address matching: find the region named in free address text.

The text is scanned for region names, full (广东省, 深圳市, 南山区) and the
short forms people write (广东, 深圳, 南山).  Names repeat across the country
(南山区 is in 深圳 and 鹤岗, 朝阳区 in 北京 and 长春), so no name is taken on
its own: every region named anywhere in the text is a hypothesis, scored by
how many levels of its chain (province, city, district) the text names.  The
hypothesis whose chain is best supported wins, which is the top-down reading
"province, then a city of that province, then a district of that city".  A
tie between regions that are not the same place is an :class:`AmbiguousAddress`
listing them; a text naming no region is an :class:`UnknownAddress`.

Only live regions are matched; a retired name resolves through its live
successor's name.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import AmbiguousAddress, UnknownAddress
from .index import RegionIndex, is_structural_name
from .regions import Region

__all__ = ["AddressMatch", "AddressMatcher", "short_forms"]

# The 56 recognised ethnic groups, stripped from autonomous-area names to get
# the short form people use (延边朝鲜族自治州 -> 延边).
# (各族, "all ethnic groups", appears the same way: 龙胜各族自治县 -> 龙胜.)
_ETHNIC = (
    "汉族",
    "蒙古族",
    "回族",
    "藏族",
    "维吾尔族",
    "苗族",
    "彝族",
    "壮族",
    "布依族",
    "朝鲜族",
    "满族",
    "侗族",
    "瑶族",
    "白族",
    "土家族",
    "哈尼族",
    "哈萨克族",
    "傣族",
    "黎族",
    "傈僳族",
    "佤族",
    "畲族",
    "高山族",
    "拉祜族",
    "水族",
    "东乡族",
    "纳西族",
    "景颇族",
    "柯尔克孜族",
    "土族",
    "达斡尔族",
    "仫佬族",
    "羌族",
    "布朗族",
    "撒拉族",
    "毛南族",
    "仡佬族",
    "锡伯族",
    "阿昌族",
    "普米族",
    "塔吉克族",
    "怒族",
    "乌孜别克族",
    "俄罗斯族",
    "鄂温克族",
    "德昂族",
    "保安族",
    "裕固族",
    "京族",
    "塔塔尔族",
    "独龙族",
    "鄂伦春族",
    "赫哲族",
    "门巴族",
    "珞巴族",
    "基诺族",
    "各族",
)
_ETHNIC_LONGEST_FIRST = tuple(sorted(_ETHNIC, key=len, reverse=True))

_PROVINCE_SUFFIXES = (
    "特别行政区",
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "自治区",
    "省",
    "市",
)
_CITY_SUFFIXES = ("自治州", "地区", "新区", "林区", "盟", "市")
_DISTRICT_SUFFIXES = ("自治县", "自治旗", "新区", "林区", "特区", "区", "县", "市", "旗")

# A short form followed by one of these is a street, school or building named
# after a place (中山路, 南京东路, 浙江大学), not the place itself.  Full names
# are not checked: 南山区人民医院 is in 南山区.
_POI_FOLLOWERS = (
    "路",
    "街",
    "道",
    "巷",
    "弄",
    "胡同",
    "东路",
    "西路",
    "南路",
    "北路",
    "中路",
    "大街",
    "大道",
    "大学",
    "学院",
    "中学",
    "小学",
    "医院",
    "公园",
    "广场",
    "大厦",
    "花园",
    "小区",
    "宾馆",
    "酒店",
    "饭店",
    "银行",
    "商场",
    "机场",
    "站",
    "桥",
    "港",
    "码头",
    "号",
)

_MIN_NAME = 2


def short_forms(name: str, level: int) -> set[str]:
    """Short forms of a region name that people write instead of the full one.

    Examples: 广东省 -> 广东, 内蒙古自治区 -> 内蒙古, 延边朝鲜族自治州 -> 延边,
    南山区 -> 南山, 石柱土家族自治县 -> 石柱.  Forms shorter than two
    characters (城区 -> 城) are not produced: they match everywhere.
    """
    suffixes = {1: _PROVINCE_SUFFIXES, 2: _CITY_SUFFIXES}.get(level, _DISTRICT_SUFFIXES)
    out: set[str] = set()
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = name[: -len(suffix)]
            if suffix.startswith("自治"):
                stem = _strip_ethnic(stem)
            if len(stem) >= _MIN_NAME:
                out.add(stem)
            break
    out.discard(name)
    return out


def _strip_ethnic(stem: str) -> str:
    changed = True
    while changed:
        changed = False
        for ethnic in _ETHNIC_LONGEST_FIRST:
            if stem.endswith(ethnic) and len(stem) > len(ethnic):
                stem = stem[: -len(ethnic)]
                changed = True
                break
    return stem


def normalize(text: str) -> str:
    """NFKC (full-width to ASCII), case-folded, without whitespace.

    Names and text are both normalised, so 广东省 深圳市 matches as written
    and a name with spaces (another country's) still matches.
    """
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class AddressMatch:
    """The region an address names.

    ``code`` is a live code; ``matched`` holds the text fragments that named
    levels of its chain, top-down; ``note`` says what a caller should know
    (a city without a district, a district named without province or city).
    """

    code: str
    level: int
    matched: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    codes: frozenset[str]
    full: frozenset[str]  # codes for which `text` is the full name


@dataclass(frozen=True)
class _Score:
    support: int  # levels of the chain named in the text
    full: int  # of those, named by their full name
    tokens: tuple[_Token, ...]  # top-down


class AddressMatcher:
    """Matches address text against the live regions of a :class:`RegionIndex`."""

    def __init__(self, index: RegionIndex | Iterable[Region]) -> None:
        """Build the name table (full names and short forms) of live regions."""
        self._index = index if isinstance(index, RegionIndex) else RegionIndex(index)
        names: dict[str, dict[str, bool]] = {}
        for region in self._index:
            if region.successor is not None or is_structural_name(region.name):
                continue
            level = region.level
            parent = self._index.get(region.parent) if region.parent else None
            if parent is not None and parent.name == region.name:
                # A municipality's city row (北京市 under 北京市) is written
                # like the province: 北京, 香港, 澳门.
                level = parent.level
            forms = {region.name: True}
            forms.update(dict.fromkeys(short_forms(region.name, level), False))
            for form, is_full in forms.items():
                entry = names.setdefault(normalize(form), {})
                entry[region.code] = entry.get(region.code, False) or is_full
        self._names = names
        self._max_len = max((len(n) for n in names), default=0)

    def tokens(self, text: str) -> list[_Token]:
        """Region names in ``text``, scanning left to right, longest match first.

        Consuming the longest name at each position keeps 浙江西湖区 from
        reading as 江西: 浙江 is taken first and 西湖区 after it.
        """
        text = normalize(text)
        out: list[_Token] = []
        i, n = 0, len(text)
        while i < n:
            for length in range(min(self._max_len, n - i), _MIN_NAME - 1, -1):
                entries = self._names.get(text[i : i + length])
                if not entries:
                    continue
                end = i + length
                poi = text.startswith(_POI_FOLLOWERS, end)
                codes = frozenset(c for c, full in entries.items() if full or not poi)
                if not codes:
                    continue
                full = frozenset(c for c, is_full in entries.items() if is_full)
                out.append(_Token(text[i:end], i, codes, full))
                i = end
                break
            else:
                i += 1
        return out

    def match(self, text: str) -> AddressMatch:
        """The region the address names; raises UnknownAddress or AmbiguousAddress."""
        tokens = self.tokens(text)
        shown = " ".join(text.split())
        if not tokens:
            raise UnknownAddress(f"no known region name in address {shown!r}")
        hypotheses = sorted({code for tok in tokens for code in tok.codes})
        scores = {code: self._score(code, tokens) for code in hypotheses}
        best = max((s.support, s.full) for s in scores.values())
        tied = [c for c in hypotheses if (scores[c].support, scores[c].full) == best]
        chosen = self._break_tie(tied)
        if chosen is None:
            fragment = "、".join(dict.fromkeys(scores[c].tokens[-1].text for c in tied))
            raise AmbiguousAddress(fragment, [(c, self._index.full_name(c)) for c in sorted(tied)])
        score = scores[chosen]
        region = self._index.get(chosen)
        assert region is not None
        return AddressMatch(
            code=chosen,
            level=region.level,
            matched=tuple(t.text for t in score.tokens),
            note=self._note(region, score),
        )

    def _score(self, code: str, tokens: Sequence[_Token]) -> _Score:
        """Best matching of distinct tokens to levels of ``code``'s chain.

        The region itself must be named (it came from a token); each token
        names one level at most, so 北京市 alone supports 110000 or its city
        110100, not both.  Chains have three levels, so trying every
        assignment is cheap.
        """
        chain = [r.code for r in self._index.chain(code)]
        options = [[i for i, t in enumerate(tokens) if member in t.codes] for member in chain]
        best_key = (0, 0)
        best_pick: tuple[tuple[int, str], ...] = ()

        def walk(level: int, picked: tuple[tuple[int, str], ...]) -> None:
            nonlocal best_key, best_pick
            if level < 0:
                key = (len(picked), sum(1 for i, m in picked if m in tokens[i].full))
                if key > best_key:
                    best_key, best_pick = key, picked
                return
            used = {i for i, _ in picked}
            for i in options[level]:
                if i not in used:
                    walk(level - 1, (*picked, (i, chain[level])))
            if level != len(chain) - 1:  # ancestors may go unnamed, the region may not
                walk(level - 1, picked)

        walk(len(chain) - 1, ())
        ordered = tuple(tokens[i] for i in sorted(i for i, _ in best_pick))
        return _Score(best_key[0], best_key[1], ordered)

    def _break_tie(self, tied: list[str]) -> str | None:
        """Pick among equally supported hypotheses, or None if they differ.

        Hypotheses with the same name on one line of descent are one place
        named once: 北京市 fits the province 110000 and its city 110100, and
        means the city (the deepest); 重庆市 fits 500000 and its two cities
        500100/500200, and means the municipality (the one above the others).
        """
        if len(tied) == 1:
            return tied[0]
        regions = [self._index.get(c) for c in tied]
        if len({r.name for r in regions if r is not None}) != 1:
            return None
        for cand in sorted(tied, key=lambda c: -len(self._index.chain(c))):
            if all(o == cand or self._index.is_ancestor(o, cand) for o in tied):
                return cand
        for cand in sorted(tied, key=lambda c: len(self._index.chain(c))):
            if all(o == cand or self._index.is_ancestor(cand, o) for o in tied):
                return cand
        return None

    def _note(self, region: Region, score: _Score) -> str:
        full_name = self._index.full_name(region.code)
        if region.level == 1:
            return f"the address names only the province {full_name}"
        if region.level == 2:
            live_children = [c for c in self._index.children(region.code) if c.successor is None]
            if not live_children:
                return f"{full_name} has no districts; resolved to the city"
            return f"the address names no district of {full_name}; resolved to the city"
        if score.support == 1:
            return f"only the district name {score.tokens[0].text} was given; it is unique"
        return ""
