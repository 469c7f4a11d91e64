// Case export from a page's filters (#f-type, #f-state, and where present #f-severity, #f-period, #f-source): CSV or Excel.
// On the map, no period exports the days the map counts without one: #f-since, the first of them, which map.js keeps
// from the map's answer (`since`); #export-scope says which period an export covers.
"use strict";

function exportParams(format) {
  const q = new URLSearchParams({ format });
  const value = (id) => { const e = document.getElementById(id); return e ? e.value.trim() : ""; };
  if (value("f-type")) q.append("type", value("f-type"));
  // On the queue page an empty state means "unreviewed": export what the queue shows. On the map it means every state
  // but rejected (已作废), what the map counts without one (as the reports do): its state options, less that one.
  const queue = !document.getElementById("f-period");
  const map = !!document.getElementById("f-since");
  if (value("f-state")) q.set("state", value("f-state"));
  else if (queue) { q.set("state", "candidate"); q.set("reviewed", "false"); }
  else if (map) for (const o of document.getElementById("f-state").options) if (o.value && o.value !== "rejected") q.append("state", o.value);
  if (value("f-severity")) q.set("severity", value("f-severity"));
  if (value("f-period")) q.set("period", value("f-period"));
  else if (value("f-since")) q.set("since", value("f-since"));
  if (value("f-source")) q.set("source", value("f-source"));
  return q;
}

// The map's export waits for the map's window (no period and no `since` yet would export every case ever held).
const unknownWindow = (q) => document.getElementById("f-since") && !q.get("period") && !q.get("since");

function showExportScope() {
  const box = document.getElementById("export-scope");
  if (!box) return;
  const q = exportParams("csv");
  const whole = (key) => SW.el("span", { class: "whole" }, q.get(key));  // a date never broken at its hyphen (2026-11- / 08)
  box.replaceChildren(...(q.get("period") ? ["导出期间 Exports period ", whole("period")]
    : q.get("since") ? ["导出 ", whole("since"), " 起的案件（地图默认期间）Exports the cases since ", whole("since"), " (the map's default days)"]
    : unknownWindow(q) ? [] : ["导出全部期间 Exports every period"]));
}

for (const format of ["csv", "xlsx"]) {
  const button = document.getElementById("export-" + format);
  if (button) button.addEventListener("click", () => {
    const q = exportParams(format);
    if (unknownWindow(q)) { SW.say("地图尚未显示，请先显示地图或填写期间 The map has not answered yet: show it, or give a period", true); return; }
    const scope = q.get("period") || (q.get("since") ? "since-" + q.get("since") : "all");
    SW.download("/api/v1/exports/cases?" + q, `cases-${scope}.${format}`)
      .then(() => SW.say("已导出 Exported"), (e) => SW.say(e.message, true));
  });
}
const filters = document.getElementById("filters");
if (filters) { filters.addEventListener("input", showExportScope); filters.addEventListener("change", showExportScope); }
showExportScope();
