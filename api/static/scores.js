// Assessment scores: one row per unit, deductions per item; a click shows the cases behind each deduction.
"use strict";

const S = { table: null };

// The period and unit as the boxes hold them now: what 评分 scores and the workbook has.
function filter() {
  return { period: document.getElementById("f-period").value.trim(), by: document.getElementById("f-by").value };
}

// The API's query for filter `shown` (period, by) as `format`, `page` its limit and offset.
function query(shown, format, page = {}) {
  return new URLSearchParams({ ...shown, format, ...page });
}

// An item not scored for the unit says why in its column (not a 0, read as nothing to deduct), as the workbook and the
// command do (pipelines.analytics.scoring NOT_APPLICABLE, NOT_SCORED: how its note starts).
function cell(item) {
  for (const label of ["不适用 n/a", "未评分 not scored"]) if (item.note && item.note.startsWith(label)) return label;
  return item.deduction ? `−${item.deduction} (${item.count})` : "0";
}

// An item's cases, each id a piece of its own, so that it is kept on one line (app.css): broken anywhere, or after its
// hyphen as a browser may, an id was split over two lines on a phone (SW20261105- / a11e9ef95d69).
function caseIds(ids) {
  return SW.el("small", { class: "cases" }, ...ids.flatMap((id, n) => [...(n ? [", "] : []), SW.el("span", {}, id)]));
}

function showUnit(unit) {
  SW.markCurrent(document.querySelectorAll("#scores tbody tr[data-unit]"), (row) => row.dataset.unit === unit.unit);
  const parts = [SW.el("h2", {}, `${unit.label}: ${unit.score} / ${unit.points}`)];
  for (const s of unit.sections) {
    parts.push(SW.el("h3", {}, `${s.name} (−${s.deduction} / ${s.points})`));
    parts.push(SW.el("ul", {}, ...s.items.map((i) => SW.el("li", { "data-item": i.id },
      `${i.name}: ${cell(i)}${i.note ? " · " + i.note : ""}`,
      ...(i.cases.length ? [SW.el("br"), caseIds(i.cases)] : [])))));
  }
  document.getElementById("unit").replaceChildren(...parts);
}

// A page of the table's units (a district's 400 grid cells are two) for `shown`, the filter scored (filter() at 评分),
// 上一页/下一页 under it paging that filter (SW.pager); the workbook has them all.
async function load(shown, offset = 0) {
  const t = await SW.newest("scores", "/api/v1/scores?" + query(shown, "json", { limit: SW.PAGE, offset }));
  if (!t) return;  // a newer load overtook it
  S.table = t;
  SW.pager("scores", { items: t.units, total: t.total, limit: t.limit, offset: t.offset }, shown, load);
  document.getElementById("sheet").textContent = `${t.sheet} · ${t.period} · 满分 ${t.points} · 计分案件 ${t.cases_counted} 件`
    + (t.voided_by_platform ? ` · 平台作废 ${t.voided_by_platform} 件（不计分）` : "")
    + (t.awaiting_review ? ` · 待审核 ${t.awaiting_review} 件（未计分，请先审核） awaiting review, not scored` : "")
    + (t.include_candidates ? " · 含候选案件 candidates count" : "");
  const head = SW.el("tr", {}, SW.el("th", {}, document.querySelector(`#f-by option[value="${t.by}"]`).textContent), SW.el("th", {}, "得分 score"), ...t.items.map((i) => SW.el("th", { title: i.name }, i.name)));
  const rows = t.units.map((u) => SW.el("tr", Object.assign({ "data-unit": u.unit }, SW.pickable(() => showUnit(u))),
    SW.el("td", {}, u.label), SW.el("td", { class: "score" }, u.score),  // a camera by its scene's name
    ...t.items.map((i) => SW.el("td", {}, cell(u.sections.flatMap((s) => s.items).find((x) => x.id === i.id))))));
  document.getElementById("scores").replaceChildren(SW.el("thead", {}, head), SW.el("tbody"));
  SW.fill("#scores tbody", rows, "没有可评分的单位：本期没有计分案件，也没有配置单位 No units: no case counted this period and none configured");
  document.getElementById("unit").replaceChildren();
  // the cut-off file's rows to check (a repeated header skipped): in the JSON alone, staff never saw them
  document.getElementById("warnings").replaceChildren(...SW.warningItems(t.warnings));
  SW.say(`${t.total} 个单位 units` + (t.warnings.length ? `; ${t.warnings.length} 条提醒 to check` : ""), t.warnings.length > 0 && "warn");
}

document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); load(filter()).catch((err) => SW.say(err.message, true)); });
document.getElementById("scores-xlsx").addEventListener("click", () => {
  const q = query(filter(), "xlsx");
  SW.download("/api/v1/scores?" + q, `scores-${q.get("period")}-${q.get("by")}.xlsx`).catch((e) => SW.say(e.message, true));
});
SW.nav("scores");
SW.meta().then(() => {  // this month on the city's clock (the PC's may be a day off at a month's end)
  const period = document.getElementById("f-period");
  if (period.value) return null;  // the reader typed one meanwhile: it loads when they submit
  period.value = SW.time(new Date().toISOString()).slice(0, 7);
  return load(filter());
}).catch((e) => SW.say(e.message, true));
