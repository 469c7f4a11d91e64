"""Phone numbers and small-ad keywords in text (no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detect.config_io import ConfigError
from detect.phones import find_phones, load_lexicon


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("专业开锁 电话:13800138000", ["13800138000"]),
        ("138 0013 8000", ["13800138000"]),
        ("138.0013.8000", ["13800138000"]),
        ("138-0013-8000", ["13800138000"]),
        ("+86 139-0013-9000", ["13900139000"]),
        ("１３９００１３９０００", ["13900139000"]),  # full-width digits
        ("138O0l38000", ["13800138000"]),  # OCR look-alikes between digits
        ("0571-8765 4321", ["0571-87654321"]),
        ("(010)12345678", ["010-12345678"]),
        ("0310-2345678", ["0310-2345678"]),  # a 7-digit local number where the plan has them (Handan)
        ("0755-1234567", []),  # Shenzhen numbers have 8 digits: not a valid number
        ("l38OO138OOO", ["13800138000"]),  # look-alikes at the start of a run too
        ("400-820-8820 / 800 810 8888", ["400-820-8820", "800-810-8888"]),
        ("13800138000 13900139000 13800138000", ["13800138000", "13900139000"]),
        ("身份证 330106199001011234", []),  # a longer digit group is never cut into a phone number
        ("价格 12.50 元, 2024-06-03", []),
        ("12800138000", []),  # no mobile range starts with 12
    ],
)
def test_find_phones(text, numbers):
    assert [p.number for p in find_phones(text)] == numbers


def test_other_regions_from_settings():
    assert [p.number for p in find_phones("Call 9123 4567 now", region="HK")] == ["91234567"]
    assert find_phones("Call 9123 4567 now") == []  # not a mainland number
    phone = find_phones("+852 9123 4567", region="CN")[0]  # an explicit country code wins
    assert (phone.kind, phone.e164) == ("mobile", "+85291234567")
    with pytest.raises(ValueError, match="unknown phone region 'XX'"):
        find_phones("13800138000", region="XX")


def test_phone_kinds():
    assert [p.kind for p in find_phones("13800138000 0571-87654321 4008208820")] == ["mobile", "landline", "service"]


def test_lexicon_matches_keywords_across_spaces_and_full_width():
    lexicon = load_lexicon()
    assert {"办证", "贷款", "开锁", "疏通", "刻章", "招聘", "租房"} <= set(lexicon.keywords)
    assert lexicon.match("专业 开 锁，疏通下水道") == ["开锁", "疏通", "下水道"]
    assert lexicon.match("王记面馆") == []


@pytest.mark.parametrize("text, keywords", [
    ("上海市出租汽车暨汽车租赁", []),  # a taxi company's sign (OCR of a Shanghai street photo of street-scenes)
    ("出租车 停靠站", []),
    ("可回收物 Recyclable", []),  # a sorting bin
    ("地下有燃气管道 严禁开挖", []),
    ("快照 证件照", []),
    ("房屋出租 13800138000", ["出租"]),  # the same word on a small ad still counts
    ("专业疏通管道", ["疏通", "管道"]),
    ("高价回收 空调", ["回收"]),
    ("可回收物 旁 办证", ["办证"]),
])
def test_keywords_inside_the_streets_own_signs_do_not_count(text, keywords):
    assert load_lexicon().match(text) == keywords


def test_custom_lexicon_file_and_bad_one(tmp_path: Path):
    good = tmp_path / "ads.yaml"
    good.write_text("keywords: [代办, 信用卡]\n", encoding="utf-8")
    assert load_lexicon(good).match("代办信用卡") == ["代办", "信用卡"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("keywords: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: keywords: List should have at least 1 item"):
        load_lexicon(bad)
