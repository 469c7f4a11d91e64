"""The frontage register (门前三包): street-front shops and the strip in front of each they answer for.

A shop's frontage is a polygon in one camera's image (normalised [0, 1] coordinates, like scene
zones) and/or a polygon on the map (lon/lat, like city zones). A spill-over case (goods, racks,
tables out in front of a shop) then names the shop responsible: for a camera case, the shop whose
frontage holds the evidence (bottom-centre of the boxes, where things stand); for a photo with GPS,
the shop whose map frontage holds the photo's position. The case carries it as
`details["shop"]` = the shop's id (a string; the analytics count per shop by it) and
`details["shop_name"]` for people.

The register lives in the case store's database (`pipelines.cases.schema.shops`), is imported
from CSV/Excel (one row per frontage; rows of one shop share its licence number, or say "as above": `_carry_down`) and edited in the
service. Import validates every row: a row without a usable polygon is reported with its row
number and reason, and the other rows are imported; shops not in the file are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np
import shapely
import sqlalchemy as sa
from pydantic import Field, field_validator
from shapely.geometry import Polygon
from sqlalchemy.engine import Engine

from detect.cityzones import geometry_of
from detect.phones import find_phones
from detect.config_io import ZH_EN, ConfigModel, pydantic_en, pydantic_zh, zh_en
from detect.scenes import image_polygon
from detect.text import OneLine, fold_lines
from pipelines.cases.schema import shops
from pipelines.cases.store import Audit, audited, holding
from pipelines.tables import RowError, column_zh, read_rows, row_message

T = TypeVar("T")

DETAILS_KEY = "shop"
"""The case details key naming the responsible shop (its id); the analytics count per shop by it."""

SHOP_TYPES = frozenset({"shopfront_spillover"})
"""The violation types a shop answers for (out in front of its own door): the register names the shop of such a case,
and a warning SMS speaks to the shop (您门前); a street stall and the other types have no shop behind them."""

COLUMNS = {
    "name": ("店名", "商户名称", "名称", "shop"),
    "address": ("地址",),
    "licence_no": ("licence", "license", "license_no", "营业执照号", "统一社会信用代码", "许可证号"),
    "contact": ("联系人", "联系方式", "电话", "联系电话", "手机", "手机号码"),
    "camera": ("camera_id", "摄像头", "摄像头编号"),
    "polygon": ("image_polygon", "图像范围", "画面范围"),
    "gps_polygon": ("map_polygon", "GPS范围", "地图范围"),
}


class Frontage(ConfigModel):
    """One frontage: an image polygon of one camera, or a map polygon."""

    camera: OneLine | None = Field(None, title="Camera", description="Camera id whose image `polygon` is drawn in.")
    polygon: list[list[float]] | None = Field(None, title="Image polygon", description="[[x, y], ...] normalised image coordinates (0..1).")
    gps: list[list[float]] | None = Field(None, title="Map polygon", description="[[lon, lat], ...] WGS-84.")

    @field_validator("polygon")
    @classmethod
    def _image(cls, points: list[list[float]] | None) -> list[list[float]] | None:
        if points is not None:
            image_polygon(points)
        return points

    @field_validator("gps")
    @classmethod
    def _map(cls, points: list[list[float]] | None) -> list[list[float]] | None:
        if points is not None:
            ring = [list(p) for p in points]
            geometry_of({"type": "Polygon", "coordinates": [ring + ([ring[0]] if ring and ring[0] != ring[-1] else [])]})
        return points

    def model_post_init(self, __context: Any) -> None:
        if self.polygon is not None and not self.camera:
            raise ValueError(f"图像范围需填写它所在的摄像头{ZH_EN}an image polygon needs the camera it is drawn in")
        if self.polygon is None and self.gps is None:
            raise ValueError(f"门前范围需填写图像范围（及摄像头）或 GPS范围{ZH_EN}"
                             "a frontage needs an image polygon (with its camera) or a map polygon")


class Shop(ConfigModel):
    """A street-front shop of the register."""

    id: OneLine = Field(title="Shop id", description="Its licence number when it has one, else derived from name and address.",
                    min_length=1, max_length=64, pattern=r"^[^/\s]+$")
    # one line each (`OneLine`): they go into the warnings' notices, the reports' sheets and the cases a platform gets
    name: OneLine = Field(title="Name", description="Shop name as on its sign or licence.", min_length=1, max_length=200)
    address: OneLine | None = Field(None, title="Address", description="Street address.", max_length=500)
    licence_no: OneLine | None = Field(None, title="Licence number", description="营业执照号 / 统一社会信用代码.", max_length=64)
    contact: OneLine | None = Field(None, title="Contact", description="Person and/or phone the warnings go to.", max_length=200)
    frontages: list[Frontage] = Field(default_factory=list, title="Frontages", description="Where the shop's 门前三包 strip lies.")

    def case_details(self) -> dict[str, Any]:
        return {DETAILS_KEY: self.id, "shop_name": self.name}


def shop_id(name: str, address: str | None, licence_no: str | None) -> str:
    """The licence number, or a stable id from name and address for shops without one."""
    if licence_no:
        return re.sub(r"\s+", "", licence_no)
    return "shop-" + hashlib.sha256(f"{name}|{address or ''}".encode()).hexdigest()[:12]


def parse_points(text: Any, what: str) -> list[list[float]] | None:
    """`[[x, y], ...]` (JSON) or `x,y; x,y; ...` -> points; None for an empty cell.

    Full-width punctuation and digits (`0.1，0.5；…` typed with a Chinese input method) read as their
    ASCII forms (NFKC)."""
    if text in (None, ""):
        return None
    text = unicodedata.normalize("NFKC", str(text)).strip()
    try:
        if text.startswith("["):
            points = json.loads(text)
        else:
            points = [[float(v) for v in pair.split(",")] for pair in text.split(";") if pair.strip()]
    except (ValueError, json.JSONDecodeError):
        raise RowError(what, f"{text[:60]!r} 不是点的列表（[[x, y], ...] 或 x,y; x,y; ...）",
                       f"{what}: {text[:60]!r} is not a list of points ([[x, y], ...] or 'x,y; x,y; ...')") from None
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise RowError(what, "每个点应为 [x, y] 两个数", f"{what}: expected points as [x, y] pairs")
    return points


@dataclass
class ImportReport:
    """What an import did: shops written, and per-row errors (`row N: field: reason`)."""

    imported: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # rows imported with something staff should check, the file's encoding

    def as_dict(self) -> dict[str, Any]:
        return {"imported": len(self.imported), "shops": self.imported, "errors": self.errors, "warnings": self.warnings}


class LicenceHeld(ValueError):
    """A shop given a licence number another shop of the register holds (the column is unique: a licence is one
    shop's): names the number and the shop holding it, Chinese first; nothing is written. An edit giving a shop its
    neighbour's number, or an import row with the number of a shop added by hand under another id, met the unique
    constraint and answered 500."""

    def __init__(self, licence_no: str, holder_id: str, holder_name: str):
        self.licence_no, self.holder_id, self.holder_name = licence_no, holder_id, holder_name
        self.zh = f"营业执照号 {licence_no} 已登记在店铺 {holder_id}（{holder_name}）名下"
        super().__init__(f"{self.zh}，未保存{ZH_EN}licence number {licence_no} is held by shop {holder_id} ({holder_name}) "
                         "of the register: nothing saved")

    def row_error(self) -> RowError:
        """The refusal as an import row's (`row_message`), in its licence column."""
        return RowError("licence_no", f"{self.zh}，本行未导入", f"licence_no: {self.licence_no} is held by shop "
                        f"{self.holder_id} ({self.holder_name}) of the register: row not imported")


class ShopRegister:
    """The register, in the case store's database (`engine` of an open `CaseStore`: its migrations made the table)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._writer = engine.execution_options(writer=True)  # SQLite: BEGIN IMMEDIATE, as the store's writes

    # ---- records --------------------------------------------------------------------------

    def list(self) -> list[Shop]:
        with self.engine.connect() as conn:
            return [_shop(r) for r in conn.execute(sa.select(shops).order_by(shops.c.name, shops.c.id))]

    def page(self, *, q: str | None = None, limit: int, offset: int = 0) -> tuple[list[Shop], int]:
        """`limit` shops from the `offset`-th in `list`'s order, those whose id, name, address, licence number or
        contact holds `q` when given, and how many there are (all pages): a district's register is thousands."""
        where = sa.or_(*holding(q, (shops.c.id, shops.c.name, shops.c.address, shops.c.licence_no, shops.c.contact))) if q else sa.true()
        query = sa.select(shops).where(where).order_by(shops.c.name, shops.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(shops).where(where)).scalar_one()
            return [_shop(r) for r in conn.execute(query)], total

    def get(self, shop_id_: str) -> Shop | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(shops).where(shops.c.id == shop_id_)).first()
        return None if row is None else _shop(row)

    def put(self, shop: Shop, *, audit: Audit[Shop] | None = None) -> Shop:
        """Insert or replace one shop; `audit`: its record, in the same transaction (`audited`)."""
        return self._written(lambda conn: audited(conn, self._put(conn, shop), audit))

    def _written(self, write: Callable[[sa.Connection], T]) -> T:
        """`write` (shops put, with the audit's record) in one transaction, and once more, whole, when another writer
        inserted one of its shops after it looked (`_put` found none and its insert met the other's row): two `serve`
        processes importing one register, or adding one shop, at once, the second answered 500. PostgreSQL only
        (SQLite's writers queue); the second time the shop is known and replaced."""
        try:
            with self._writer.begin() as conn:
                return write(conn)
        except sa.exc.IntegrityError:
            with self._writer.begin() as conn:
                return write(conn)

    @staticmethod
    def _put(conn: sa.Connection, shop: Shop) -> Shop:
        """Write `shop`; LicenceHeld, nothing written, when another shop holds its licence number."""
        if shop.licence_no is not None:
            holder = conn.execute(sa.select(shops.c.id, shops.c.name)
                                  .where(shops.c.licence_no == shop.licence_no, shops.c.id != shop.id)).first()
            if holder is not None:
                raise LicenceHeld(shop.licence_no, holder.id, holder.name)
        values = {**shop.model_dump(exclude={"frontages"}), "frontages": [f.model_dump(exclude_none=True) for f in shop.frontages],
                  "updated_at": datetime.now(UTC)}
        if conn.execute(sa.select(shops.c.id).where(shops.c.id == shop.id)).first() is None:
            conn.execute(shops.insert().values(**values))
        else:
            conn.execute(shops.update().where(shops.c.id == shop.id).values(**values))
        return shop

    def delete(self, shop_id_: str, *, audit: Audit[str] | None = None) -> bool:
        """Remove a shop (False: there was none); `audit`: the removal's record, given the id, in the same transaction
        (`audited`; not called when there was nothing to remove)."""
        with self._writer.begin() as conn:
            gone = conn.execute(shops.delete().where(shops.c.id == shop_id_)).rowcount == 1
            if gone:
                audited(conn, shop_id_, audit)
        return gone

    # ---- import ---------------------------------------------------------------------------

    def import_file(self, data: bytes, name: str, encoding: str | None = None, *,
                    audit: Audit[ImportReport] | None = None) -> ImportReport:
        """Import a CSV/Excel register (one row per frontage); see the module doc for what is kept. The shops read are
        written in one transaction, with `audit`'s record of the import (`audited`): all of them or, on a failure,
        none (a shop per transaction left those before a failure written, unrecorded). `encoding`: the CSV's
        (`pipelines.tables.sheet_encoding`), else it is found; a note on the one found is among the warnings."""
        report = ImportReport()
        rows = read_rows(data, name, COLUMNS, required=("name",), encoding=encoding, notes=report.warnings)
        found: dict[str, Shop] = {}
        rows_of: dict[str, list[int]] = {}  # a shop's row numbers, to name them when its licence is another's
        refused: list[tuple[int, str]] = []  # (row number, message)
        above: dict[str, Any] | None = None
        for number, row in rows:
            row, folded = _folded(row)
            try:
                row = _carry_down(row, above)
            except RowError as exc:
                refused.append((number, row_message(name, number, exc, COLUMNS)))
                above = None  # a ditto that could not be read leaves nothing the next row may copy
                continue
            above = row
            try:
                shop, frontage = _row(row)
            except ValueError as exc:
                refused.append((number, row_message(name, number, _refusal(exc), COLUMNS)))
                continue
            shop.contact, doubts = restore_phones(shop.contact)
            report.warnings += [row_message(name, number, doubt, COLUMNS) for doubt in folded + doubts]
            known = found.setdefault(shop.id, shop)
            known.frontages.append(frontage)
            rows_of.setdefault(shop.id, []).append(number)
            for attr in ("address", "licence_no", "contact"):  # a later row may fill what an earlier one left empty
                if getattr(known, attr) is None:
                    setattr(known, attr, getattr(shop, attr))

        def write(conn: sa.Connection) -> ImportReport:
            report.imported, held = [], []
            refusals = _settle_licences(conn, found)
            for shop in found.values():
                try:
                    if shop.id in refusals:
                        raise refusals[shop.id]
                    report.imported.append(self._put(conn, shop).id)
                except LicenceHeld as exc:  # refused before anything of it was written: its rows are row errors
                    held += [(number, row_message(name, number, exc.row_error(), COLUMNS)) for number in rows_of[shop.id]]
            report.errors = [message for _, message in sorted(refused + held, key=lambda r: r[0])]
            return audited(conn, report, audit)

        return self._written(write)

    # ---- who is responsible ---------------------------------------------------------------

    def for_camera(self, camera_id: str, points: np.ndarray) -> Shop | None:
        """The shop whose frontage in `camera_id`'s image holds most of `points` (normalised (N, 2))."""
        best, best_hits, best_area = None, 0, float("inf")
        for shop in self.list():
            for f in shop.frontages:
                if f.camera != camera_id or f.polygon is None or len(points) == 0:
                    continue
                poly = Polygon(f.polygon)
                hits = int(shapely.intersects_xy(poly, points[:, 0], points[:, 1]).sum())
                if hits > best_hits or (hits == best_hits and hits and poly.area < best_area):
                    best, best_hits, best_area = shop, hits, poly.area
        return best

    def at(self, lat: float, lon: float) -> Shop | None:
        """The shop whose map frontage holds the point (the smallest when several do)."""
        hits = []
        for shop in self.list():
            for f in shop.frontages:
                if f.gps is None:
                    continue
                poly = Polygon(f.gps)
                if shapely.intersects_xy(poly, lon, lat):
                    hits.append((poly.area, shop.id, shop))
        return min(hits, key=lambda h: h[:2])[2] if hits else None


def _settle_licences(conn: sa.Connection, found: dict[str, Shop]) -> dict[str, LicenceHeld]:
    """The shops of an import, by id, whose licence number another shop still holds once the import is written, and
    why; the numbers the others leave free, cleared in `conn`'s transaction before they are written (the column is
    unique). Checked shop by shop in file order, a number moving from shop A to shop B was refused for B when B's row
    came first, and two shops could never swap theirs. A shop refused keeps the number it holds, which may refuse
    another: repeated until none more is."""
    held = {r.id: r for r in conn.execute(sa.select(shops.c.id, shops.c.name, shops.c.licence_no)
                                          .where(shops.c.licence_no.is_not(None)))}
    holder = {r.licence_no: r for r in held.values()}
    refusals: dict[str, LicenceHeld] = {}
    while True:
        written = found.keys() - refusals.keys()  # their numbers become the file's: any other they held is free
        more = {shop.id: LicenceHeld(shop.licence_no, other.id, other.name) for shop in found.values()
                if shop.id in written and shop.licence_no is not None
                and (other := holder.get(shop.licence_no)) is not None and other.id != shop.id and other.id not in written}
        if not more:
            break
        refusals |= more
    moving = [{"shop": i} for i in written if i in held and held[i].licence_no != found[i].licence_no]
    if moving:
        conn.execute(shops.update().where(shops.c.id == sa.bindparam("shop")).values(licence_no=None), moving)
    return refusals


def _shop(row) -> Shop:
    """A stored shop; a field a register kept with a line break (stored before they were one line) folded, as an import
    folds it, so that it still reads and is saved again as one line."""
    m = row._mapping
    one_line = {k: fold_lines(m[k]) if m[k] else m[k] for k in SINGLE_LINE}
    return Shop(id=m["id"], **one_line, frontages=[Frontage(**f) for f in (m["frontages"] or [])])


#: A shop's fields of one line (`Shop`), whose cells an import folds (`_folded`).
SINGLE_LINE = ("name", "address", "licence_no", "contact")


def _folded(row: dict[str, Any]) -> tuple[dict[str, Any], list[RowError]]:
    """`row` with each `SINGLE_LINE` cell holding a line break or tab (a cell typed with Alt+Enter) folded to one line
    (`fold_lines`), and a warning per cell folded, for the import's summary: the row is imported, not refused."""
    out, folded = dict(row), []
    for column in SINGLE_LINE:
        value = out.get(column)
        if isinstance(value, str) and (one := fold_lines(value)) != value.strip():
            out[column] = one
            folded.append(RowError(column, "含换行，已合并为一行（换行改为空格）",
                                   f"{column}: line breaks folded to one line (each a space)"))
    return out, folded


#: How a register says "as the row above" in a cell: 同上, 同前, 仝上, the ditto marks 〃 and ″, a lone `"`.
DITTO = frozenset({"同上", "同前", "仝上", "〃", "″", '"'})
#: The columns a ditto mark may stand in; the others (camera, polygons) are each frontage's own.
DITTO_COLUMNS = ("name", "address", "licence_no", "contact")


def _carry_down(row: dict[str, Any], above: dict[str, Any] | None) -> dict[str, Any]:
    """`row` with what it takes from the row above, `above` as this already made it (None for the first row, or
    after a row whose ditto could not be read):

    - a ditto mark (`DITTO`) in a `DITTO_COLUMNS` cell is the value above, whichever shop that is (the sheet says
      so); RowError naming the column when there is none above to copy;
    - a row continuing the shop above (the same name, and no other licence number or address: the next frontage of
      one shop, its name repeated or merged down) takes the address and licence number it leaves blank from it, so it joins
      that shop instead of becoming another without them. A blank under another shop stays blank: nothing says
      it is the same.
    """
    out = dict(row)
    for column in DITTO_COLUMNS:
        if str(out.get(column) or "").strip() not in DITTO:
            continue
        if above is None or above.get(column) in (None, ""):
            label = column_zh(column, COLUMNS)
            raise RowError(column, f"写的是「{str(out[column]).strip()}」（同上），但上一行没有可沿用的{label}：请填写{label}",
                           f"{column}: {str(out[column]).strip()!r} (ditto) but the row above gives none to copy: write it out")
        out[column] = above[column]

    def blank(column: str) -> bool:
        return out.get(column) in (None, "")

    def agrees(column: str) -> bool:  # with the row above: the same, or one of them blank
        return blank(column) or above.get(column) in (None, "") or str(out[column]).strip() == str(above[column]).strip()  # type: ignore[union-attr]

    same_shop = (above is not None and not blank("name") and str(out["name"]).strip() == str(above.get("name") or "").strip()
                 and agrees("licence_no") and agrees("address"))
    if same_shop:
        for column in ("address", "licence_no"):
            if blank(column):
                out[column] = above.get(column)  # type: ignore[union-attr]
    return out


#: The register column each field of a frontage is read from, to name it where a row's frontage is refused.
FRONTAGE_COLUMNS = {"camera": "camera", "polygon": "polygon", "gps": "gps_polygon"}


def _row(row: dict[str, Any]) -> tuple[Shop, Frontage]:
    name = str(row.get("name") or "").strip()
    if not name:
        raise RowError("name", "店名为空", "name: empty")
    address = str(row["address"]) if row.get("address") not in (None, "") else None
    licence = str(row["licence_no"]) if row.get("licence_no") not in (None, "") else None
    contact = str(row["contact"]) if row.get("contact") not in (None, "") else None
    polygon = parse_points(row.get("polygon"), "polygon")
    gps = parse_points(row.get("gps_polygon"), "gps_polygon")
    if polygon is None and gps is None:
        raise RowError("polygon", "没有可用的门前范围：请填写图像范围（及摄像头）或 GPS范围",
                       "polygon: no usable frontage: give `polygon` (with `camera`) or `gps_polygon`")
    camera = str(row["camera"]) if row.get("camera") not in (None, "") else None
    try:
        frontage = Frontage(camera=camera, polygon=polygon, gps=gps)
    except ValueError as exc:
        zh, reason = _reason(exc, FRONTAGE_COLUMNS)  # names its column (`gps_polygon: …`) unless pydantic gave none
        # the column of the polygon refused, or for the frontage's own checks the polygon given, or none
        column = _column(exc, FRONTAGE_COLUMNS) or ("polygon" if polygon is not None else "gps_polygon")
        raise RowError(column, f"范围不可用：{zh}" if zh else "范围不可用（原因见英文）",
                       reason if ":" in reason else f"{column}: {reason}") from None
    return Shop(id=shop_id(name, address, licence), name=name, address=address, licence_no=licence, contact=contact), frontage


def _refusal(exc: ValueError) -> RowError:
    """Why a register row is refused, for `row_message`: a `RowError` as it is; another (the shop's own checks: a name
    over 200 characters, a licence number with a `/`) with the column pydantic names and its English reason."""
    if isinstance(exc, RowError):
        return exc
    column = _column(exc, {"id": "licence_no"}) or "name"  # the id is the licence number when there is one
    zh, reason = _reason(exc)
    return RowError(column, f"取值不可用：{zh}" if zh else "取值不可用（原因见英文）", reason)


#: The Chinese of a field's pattern refused (pydantic's own words name the regular expression): the shop id is its
#: licence number when it has one, and an id is one part of the API's paths.
PATTERN_ZH = {"id": "不能含“/”或空白（营业执照号用作店铺编号）"}


def _column(exc: ValueError, columns: dict[str, str]) -> str | None:
    """The register column a pydantic error's first problem concerns (its field, or the column `columns` reads that
    field from); None when it names no field (a model's own check)."""
    errors = getattr(exc, "errors", None)
    locs = [e["loc"] for e in errors()] if callable(errors) else []
    return columns.get(str(locs[0][0]), str(locs[0][0])) if locs and locs[0] else None


#: Digits a spreadsheet kept as a number in a contact cell: 9 or more, not after a 0 (a number that kept its trunk 0 is
#: text), nor inside a written-out number (`0571-87654321`); a number cell's `.0` goes with it.
_BARE_NUMBER = re.compile(r"(?<![\d\-+])[1-9]\d{8,}(?:\.0)?(?![\d\-])")


def restore_phones(contact: str | None) -> tuple[str | None, list[RowError]]:
    """`contact` with each phone number a spreadsheet kept as a number written as the call-out list writes numbers
    (`detect.phones`, the rule its import reads them by): Excel and WPS drop a landline's leading 0 (`57187654321` is
    `0571-87654321`), which the numbering plan tells back. Digits it cannot tell as one number (`5718765432`: 0571's
    numbers have 8 digits) are kept as given, with a `RowError` to warn of: the shop is still registered."""
    if not contact:
        return contact, []
    doubts: list[RowError] = []

    def restore(m: re.Match) -> str:
        digits = m.group(0).removesuffix(".0")
        found = find_phones(digits)
        if len(found) == 1:
            return found[0].number
        doubts.append(RowError("contact", f"{digits} 不是有效的电话号码：表格把号码存成数字时会丢掉开头的 0，请核对后改为文本重新导入",
                               f"contact: {digits} is not a valid phone number: a spreadsheet keeping it as a number "
                               "drops a leading 0; check it and import it as text"))
        return digits

    return _BARE_NUMBER.sub(restore, contact), doubts


def _reason(exc: Exception, columns: dict[str, str] | None = None) -> tuple[str | None, str]:
    """A pydantic error's messages without its boilerplate: their Chinese (None unless every one is worded Chinese
    first, as the polygon and text checks word theirs: `config_io.zh_en`) and their English, each naming its field,
    or the register column `columns` reads it from (a frontage's `gps` is the `gps_polygon` column)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return zh_en(str(exc))
    zh, en = [], []
    for e in errors():
        said_zh, said_en = zh_en(pydantic_en(e).removeprefix("Value error, "))
        if e["type"] == "string_pattern_mismatch" and e["loc"]:
            said_zh = PATTERN_ZH.get(str(e["loc"][0]))
        zh.append(said_zh or pydantic_zh(e))
        loc = [(columns or {}).get(str(part), part) for part in e["loc"]]
        en.append(f"{'.'.join(map(str, loc)) + ': ' if loc else ''}{said_en}")
    return ("；".join(dict.fromkeys(zh)) if all(zh) else None), "; ".join(en)  # (a licence number too long: id and licence_no)


def responsible_shop(register: ShopRegister, event, ctx, taxonomy=None) -> dict[str, Any]:
    """`Intake` details hook: the shop answering for a shop-front case (empty when none is registered).

    Camera cases are placed by the evidence boxes' zone anchors (bottom-centres) in the camera's image
    (`taxonomy`'s anchors; default the shipped one); photo cases by their GPS position.
    """
    if event.violation_type not in SHOP_TYPES:
        return {}
    shop = None
    frame = event.frame
    if ctx.source_kind == "camera" and frame is not None and len(event.detections):
        from detect.scenes import anchor_points

        shop = register.for_camera(ctx.source_id or event.source_id, anchor_points(event.detections, frame.width, frame.height, taxonomy))
    if shop is None:
        geo = ctx.geo or (frame.geo if frame is not None else None)
        if geo is not None:
            shop = register.at(geo.lat, geo.lon)
    return shop.case_details() if shop else {}


def attach_shops(intake) -> ShopRegister:
    """New shop-front cases of `intake` (a `pipelines.cases.intake.Intake`) name the responsible shop of
    the register (`details.shop`): the watcher's, triage's and the patrol's intakes call this."""
    register = ShopRegister(intake.store.engine)
    intake.details_hooks.append(partial(responsible_shop, register, taxonomy=intake.builder.taxonomy))
    return register


__all__ = ["DETAILS_KEY", "SHOP_TYPES", "Frontage", "ImportReport", "Shop", "ShopRegister", "attach_shops", "responsible_shop"]
