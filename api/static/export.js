// Case export from a page's filters (#f-type, #f-state, and where present #f-severity, #f-period, #f-source): CSV or Excel.
"use strict";

function exportParams(format) {
  const q = new URLSearchParams({ format });
  const value = (id) => { const e = document.getElementById(id); return e ? e.value.trim() : ""; };
  if (value("f-type")) q.append("type", value("f-type"));
  // On the queue page an empty state means "unreviewed": export what the queue shows.
  const queue = !document.getElementById("f-period");
  if (value("f-state")) q.set("state", value("f-state"));
  else if (queue) { q.set("state", "candidate"); q.set("reviewed", "false"); }
  if (value("f-severity")) q.set("severity", value("f-severity"));
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
