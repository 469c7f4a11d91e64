// The latest analysis reports: period, counts, and their files (opened or downloaded with the token).
"use strict";

// A period as people read it, first to last day: the API's `end` is the day after (exclusive), so November read
// "2026-11-01 – 2026-12-01"; a day's report is its one day.
function days(r) {
  const last = new Date(Date.parse(`${r.end}T00:00:00Z`) - 86400000).toISOString().slice(0, 10);
  return last === r.start ? r.start : `${r.start} – ${last}`;
}

// The reports a page at a time (SW.PAGE), newest first, from `offset` (no filter: `query` is {}, for SW.pager).
async function load(query = {}, offset = 0) {
  const page = await SW.newest("reports", "/api/v1/reports?" + new URLSearchParams({ ...query, limit: SW.PAGE, offset }));
  if (!page) return;  // a newer load overtook it
  if (!page.items.length && offset > 0) return load(query, Math.max(0, offset - SW.PAGE));  // the last page's reports were removed
  SW.pager("reports", page, query, load);
  const list = page.items;
  const head = SW.el("tr", {}, ...["报告 report", "期间 period", "案件 cases", "较上期 change", "生成 generated", "文件 files"].map((h) => SW.el("th", {}, h)));
  const rows = list.map((r) => SW.el("tr", { "data-report": r.name }, SW.el("td", {}, r.title), SW.el("td", {}, days(r)),
    SW.el("td", {}, r.summary ? r.summary.cases : ""), SW.el("td", {}, r.summary ? r.summary.change : ""),
    SW.el("td", {}, SW.time(r.generated_at)),
    SW.el("td", {}, ...r.files.map((f) => SW.el("button", {
      type: "button", "data-file": f,
      onclick: () => (/\.(html|pdf)$/.test(f) ? SW.open(`/api/v1/reports/${r.name}/${f}`)
        : SW.download(`/api/v1/reports/${r.name}/${f}`, `${r.name}-${f}`)).catch((e) => SW.say(e.message, true)),
    }, f.split(".").pop().toUpperCase())))));
  document.getElementById("reports").replaceChildren(SW.el("thead", {}, head), SW.el("tbody", {}, ...rows));
  SW.say(page.total ? `${page.total} 份报告 reports`  // the command to run set as code, not between Markdown's backticks
    : ["还没有报告，请运行 No reports yet: run ", SW.el("code", {}, "streetwatch report --period month")]);
}

SW.nav("reports");
SW.meta().then(() => load()).catch((e) => SW.say(e.message, true));
