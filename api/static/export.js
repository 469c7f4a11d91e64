// Case export from a page's filters (#f-type, #f-state, and where present #f-period, #f-source): CSV or Excel.
"use strict";

function exportParams(format) {
  const q = new URLSearchParams({ format });
  const value = (id) => { const e = document.getElementById(id); return e ? e.value.trim() : ""; };
  if (value("f-type")) q.append("type", value("f-type"));
  // On the queue page an empty state means "unreviewed": export its candidates.
  const state = value("f-state") || (document.getElementById("f-period") ? "" : "candidate");
  if (state) q.set("state", state);
  if (value("f-period")) q.set("period", value("f-period"));
  if (value("f-source")) q.set("source", value("f-source"));
  return q;
}

for (const format of ["csv", "xlsx"]) {
  const button = document.getElementById("export-" + format);
  if (button) button.addEventListener("click", () => {
    const q = exportParams(format);
    SW.download("/api/v1/exports/cases?" + q, `cases-${q.get("period") || "all"}.${format}`)
      .then(() => SW.say("已导出 Exported"), (e) => SW.say(e.message, true));
  });
}
