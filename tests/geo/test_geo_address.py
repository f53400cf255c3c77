"""Offline address matching, top-down, and its ambiguity errors."""

from __future__ import annotations

from collections import defaultdict

import pytest

from imserver.geo.address import AddressMatcher, short_forms
from imserver.geo.errors import AmbiguousAddress, UnknownAddress
from imserver.geo.index import RegionIndex, is_structural_name
from imserver.geo.regions import Region
from imserver.geo.resolver import Resolver


@pytest.fixture(scope="module")
def matcher(regions: tuple[Region, ...]) -> AddressMatcher:
    return AddressMatcher(regions)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("广东省深圳市南山区科技园", "440305"),
        ("广东深圳南山区", "440305"),
        ("深圳市南山区", "440305"),
        ("深圳南山", "440305"),
        ("广东省 深圳市 龙华区 民治街道", "440309"),
        ("海南省海口市龙华区", "460106"),
        ("北京市朝阳区建国路", "110105"),
        ("北京朝阳区", "110105"),
        ("吉林省长春市朝阳区", "220104"),
        ("长春朝阳区", "220104"),
        ("上海市浦东新区世纪大道", "310115"),
        ("上海浦东", "310115"),
        ("浙江省杭州市西湖区", "330106"),
        ("浙江西湖区", "330106"),  # 浙江 then 西湖区, never 江西
        ("湖北省仙桃市", "429004"),
        ("新疆石河子市", "659001"),
        ("内蒙古自治区呼和浩特市回民区", "150103"),
        ("延边朝鲜族自治州延吉市", "222401"),
        ("延边延吉", "222401"),
        ("重庆市渝北区", "500112"),
        ("重庆江北区", "500105"),
        ("中山大学(广州市海珠区新港西路135号)", "440105"),
        ("广东省深圳市福田区中山路", "440304"),  # 中山路 is a street, not 中山市
        ("香港特别行政区中西区", "810101"),
        ("ＦＵＬＬ　ｗｉｄｔｈ　广东省深圳市南山区", "440305"),
    ],
)
def test_addresses(matcher: AddressMatcher, text: str, code: str) -> None:
    match = matcher.match(text)
    assert match.code == code, match


@pytest.mark.parametrize(
    ("text", "code", "level", "words"),
    [
        ("广东省深圳市", "440300", 2, "names no district"),
        ("深圳", "440300", 2, "names no district"),
        ("北京市", "110100", 2, "names no district"),
        ("广东省东莞市", "441900", 2, "has no districts"),
        ("中山市", "442000", 2, "has no districts"),
        ("吉林省吉林市", "220200", 2, "names no district"),
        ("广东省", "440000", 1, "only the province"),
        ("重庆市", "500000", 1, "only the province"),
        ("海淀区中关村", "110108", 3, "only the district name"),
    ],
)
def test_coarser_matches_say_so(
    matcher: AddressMatcher, text: str, code: str, level: int, words: str
) -> None:
    match = matcher.match(text)
    assert (match.code, match.level) == (code, level)
    assert words in match.note


def test_unknown(matcher: AddressMatcher) -> None:
    for text in ["火星基地", "123 Main Street", "中山路88号"]:
        with pytest.raises(UnknownAddress, match="no known region"):
            matcher.match(text)


def test_ambiguity_names_the_candidates(matcher: AddressMatcher) -> None:
    with pytest.raises(AmbiguousAddress) as info:
        matcher.match("南山区")
    err = info.value
    assert [c for c, _ in err.candidates] == ["230404", "440305"]
    message = str(err)
    assert message.startswith("南山区 is ambiguous: ")
    assert "440305 广东省深圳市南山区" in message and "230404 黑龙江省鹤岗市南山区" in message

    with pytest.raises(AmbiguousAddress) as info:
        matcher.match("朝阳区人民政府")
    assert {c for c, _ in info.value.candidates} == {"110105", "220104"}

    with pytest.raises(AmbiguousAddress) as info:
        matcher.match("吉林")  # the province, or its city 吉林市
    assert {c for c, _ in info.value.candidates} == {"220000", "220200"}


def _ambiguous_district_names(regions: tuple[Region, ...]) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = defaultdict(list)
    for r in regions:
        if r.level == 3 and r.successor is None and not is_structural_name(r.name):
            by_name[r.name].append(r.code)
    return {name: codes for name, codes in by_name.items() if len(codes) > 1}


def test_there_are_many_ambiguous_district_names(regions: tuple[Region, ...]) -> None:
    names = _ambiguous_district_names(regions)
    assert {"南山区", "朝阳区", "鼓楼区", "城关区", "龙华区", "江北区"} <= set(names)
    assert len(names) > 40


def test_every_ambiguous_district_name(
    regions: tuple[Region, ...], matcher: AddressMatcher
) -> None:
    """Alone, each repeated district name is refused listing every district of
    that name; with its province and city it resolves to the right one."""
    index = RegionIndex(regions)
    failures = []
    for name, codes in sorted(_ambiguous_district_names(regions).items()):
        try:
            matcher.match(name)
            failures.append(f"{name}: resolved alone")
        except AmbiguousAddress as err:
            listed = {c for c, _ in err.candidates}
            if not set(codes) <= listed:
                failures.append(
                    f"{name}: lists {sorted(listed)}, misses {sorted(set(codes) - listed)}"
                )
            for code in codes:
                if f"{code} {index.full_name(code)}" not in str(err):
                    failures.append(f"{name}: message lacks {code}")
        for code in codes:
            full = index.full_name(code)
            got = matcher.match(full).code
            if got != code:
                failures.append(f"{full}: got {got}, expected {code}")
    assert not failures, failures


def test_every_live_region_resolves_by_its_full_name(
    regions: tuple[Region, ...], matcher: AddressMatcher
) -> None:
    index = RegionIndex(regions)
    wrong = []
    for r in regions:
        if r.successor is not None or is_structural_name(r.name):
            continue
        full = index.full_name(r.code)
        try:
            got = matcher.match(full).code
        except (AmbiguousAddress, UnknownAddress) as err:
            got = f"error {err}"
        # A municipality's city row has the province's name: 北京市 means its
        # one city 110100; 重庆市, with two such cities, means the province.
        top = r if r.level == 1 else index.get(r.parent or "")
        assert top is not None
        same = [c.code for c in index.children(top.code) if c.name == top.name]
        expected = r.code
        if top.name == r.name:
            expected = same[0] if len(same) == 1 else top.code
        if got != expected:
            wrong.append(f"{full}: {got} != {expected}")
    assert not wrong, wrong[:20]


@pytest.mark.parametrize(
    ("name", "level", "forms"),
    [
        ("广东省", 1, {"广东"}),
        ("内蒙古自治区", 1, {"内蒙古"}),
        ("广西壮族自治区", 1, {"广西"}),
        ("香港特别行政区", 1, {"香港"}),
        ("延边朝鲜族自治州", 2, {"延边"}),
        ("黔东南苗族侗族自治州", 2, {"黔东南"}),
        ("大兴安岭地区", 2, {"大兴安岭"}),
        ("锡林郭勒盟", 2, {"锡林郭勒"}),
        ("南山区", 3, {"南山"}),
        ("城区", 3, set()),
        ("石柱土家族自治县", 3, {"石柱"}),
        ("龙胜各族自治县", 3, {"龙胜"}),
        ("积石山保安族东乡族撒拉族自治县", 3, {"积石山"}),
        ("浦东新区", 3, {"浦东"}),
        ("神农架林区", 3, {"神农架"}),
    ],
)
def test_short_forms(name: str, level: int, forms: set[str]) -> None:
    assert short_forms(name, level) == forms


def test_resolver_wraps_the_match(resolver: Resolver) -> None:
    got = resolver.resolve_address("广东省深圳市南山区科技园")
    assert (got.code, got.how, got.level) == ("440305", "address", 3)
    assert got.chain == (
        ("440000", "广东省", 1),
        ("440300", "深圳市", 2),
        ("440305", "南山区", 3),
    )
    city = resolver.resolve_address("广东省深圳市")
    assert city.level == 2 and "no district" in city.note
