"""Taxonomy: the shipped file loads, codes resolve per city, bad files are refused with file/field/reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detect.config_io import ConfigError
from detect.taxonomy import DEFAULT_TAXONOMY_PATH, CityCode, load_taxonomy

REQUIRED = {"street_stall", "shopfront_spillover", "illegal_parking", "nonmotor_parking", "flyposting", "exposed_garbage"}


def test_shipped_taxonomy_has_the_core_types_with_codes_and_evidence():
    tax = load_taxonomy()
    assert REQUIRED <= set(tax.types)
    stall = tax.types["street_stall"]
    assert (stall.name_zh, stall.major_class, stall.minor_class) == ("占道经营 / 无照经营游商", "街面秩序", "无照经营游商")
    assert tax.city_code("street_stall") == CityCode(major_code="05", minor_code="0501")
    assert tax.types["flyposting"].major_class == "宣传广告"
    assert tax.types["exposed_garbage"].major_class == "市容环境"
    # COCO classes and custom-model classes both count as evidence
    assert {"umbrella", "dining table", "stall", "vendor_cart", "goods_display"} <= set(stall.evidence_classes)
    assert {"car", "bus", "truck"} <= set(tax.types["illegal_parking"].evidence_classes)
    assert {"small_ad", "poster"} <= set(tax.types["flyposting"].evidence_classes)
    assert "garbage" in tax.types["exposed_garbage"].evidence_classes
    assert "banner" in tax.types["illegal_banner"].evidence_classes
    assert tax.types["illegal_parking"].dwell_s == 300
    assert {t.id for t in tax.types_for_class("umbrella")} == {"street_stall", "shopfront_spillover"}


def test_composite_evidence_needs_several_coco_classes_but_one_custom_class():
    stall = load_taxonomy().types["street_stall"]
    assert stall.evidence_score({"umbrella"}) < stall.min_evidence
    assert stall.evidence_score({"person"}) < stall.min_evidence
    assert stall.evidence_score({"umbrella", "dining table"}) >= stall.min_evidence
    assert stall.evidence_score({"stall"}) >= stall.min_evidence


def test_city_file_adds_codes_and_refuses_unknown_types(tmp_path: Path):
    good = tmp_path / "hangzhou.yaml"
    good.write_text("city: hangzhou\ncodes:\n  street_stall: {major_code: '13', minor_code: '1301'}\n", encoding="utf-8")
    tax = load_taxonomy(city_files=[good])
    assert tax.city_code("street_stall", "hangzhou") == CityCode(major_code="13", minor_code="1301")
    with pytest.raises(KeyError, match="no codes for city 'hangzhou'"):
        tax.city_code("flyposting", "hangzhou")

    bad = tmp_path / "bad-city.yaml"
    bad.write_text("city: x\ncodes:\n  street_stal: {major_code: '1', minor_code: '2'}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad-city.yaml: codes.street_stal: unknown violation type"):
        load_taxonomy(city_files=[bad])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["types"]["street_stall"].update(min_conf=1.5), r"types.street_stall.min_conf: Input should be less than or equal to 1"),
        (lambda d: d["types"]["illegal_parking"].update(zone_kinds=["parking_lot"]), r"types.illegal_parking.zone_kinds.0: Input should be"),
        (lambda d: d["types"]["flyposting"]["city_codes"].pop("default"), r"types.flyposting.city_codes: Value error, needs a `default` city"),
        (lambda d: d["types"]["flyposting"].pop("name_zh"), r"types.flyposting.name_zh: Field required"),
    ],
)
def test_bad_taxonomy_names_file_field_and_reason(tmp_path: Path, mutate, message):
    data = yaml.safe_load(DEFAULT_TAXONOMY_PATH.read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"taxonomy.yaml: {message}"):
        load_taxonomy(path)
