// City workflows: warnings, the frontage register, the call-out list, patrol uploads (all through /api/v1).
"use strict";

// Call-out statuses with the Chinese labels the call-out staff use (pipelines.cityops.callout.LABELS_ZH).
const STATUSES = [["to_call", "待追呼"], ["called", "已追呼"], ["cut_off", "已停机"], ["reconnected_after_fine", "罚款后复机"],
                  ["fined", "已罚款"]];
const WARNING_STATES = { warned: "待复查 warned", complied: "已整改 complied", escalated: "已立案 escalated", lapsed: "未复查 lapsed" };
// Whether the shop was told, and a failure's reason (notify_error): the column said the bare code, failed without why.
const NOTIFIED = { delivered: "已送达 delivered", failed: "发送失败 failed", off: "未发送（未配置网关） off" };

// A warning's frame, shown in its row's cell; `what` (its camera and type) is what its alt text says it shows.
async function frame(id, cell, what) {
  const blob = await (await SW.api(`/api/v1/warnings/${encodeURIComponent(id)}/image`)).blob();
  cell.replaceChildren(SW.el("img", { src: URL.createObjectURL(blob), alt: `劝导告知画面 Warning frame: ${what}`, class: "thumb" }));
}

// Search box `id`'s text as the API's filter ({q}; {} when empty): what its table's 搜索 lists and its pager pages.
function search(id) {
  const q = document.getElementById(id).value.trim();
  return q ? { q } : {};
}

// The list paged table `name` shows (SW.pager's {query, offset}; the whole list's first page before it is drawn):
// what an import or an edit loads again.
const drawn = (name) => SW.shown[name] || { query: {}, offset: 0 };

// The warnings a page at a time (no filter: `query` is {}, for SW.pager).
async function loadWarnings(query = {}, offset = 0) {
  const [page, meta] = await Promise.all([
    SW.newest("warnings", "/api/v1/warnings?" + new URLSearchParams({ ...query, limit: SW.PAGE, offset })), SW.meta()]);
  if (!page) return;  // a newer load overtook it
  SW.pager("warnings", page, query, loadWarnings);
  SW.fill("#warnings tbody", page.items.map((w) => {
    // its 查看 View button named by its warning (each row's said the same), beginning with the words shown
    const what = `${w.camera_id} · ${SW.typeName(meta, w.violation_type)}`;
    const cell = SW.el("td", {}, w.has_image ? SW.el("button", { type: "button", onclick: (e) => frame(w.id, e.target.parentNode, what),
      "aria-label": `查看 View：劝导告知画面 warning frame ${what} · ${SW.time(w.warned_at)}` }, "查看 View") : "");
    return SW.el("tr", { "data-warning": w.id }, SW.el("td", {}, SW.time(w.warned_at)), SW.el("td", {}, w.camera_id),
      SW.el("td", {}, SW.typeName(meta, w.violation_type)), SW.el("td", {}, w.shop_id || ""),
      SW.el("td", {}, NOTIFIED[w.notified] || w.notified || "",
        ...(w.notify_error ? [SW.el("br"), SW.el("small", { class: "note" }, w.notify_error)] : [])),
      SW.el("td", {}, SW.time(w.recheck_at)), SW.el("td", { class: "state" }, WARNING_STATES[w.state] || w.state), SW.el("td", {}, w.case_id || ""), cell);
  }), "暂无劝导告知 No warnings yet");
}

// The register a page at a time from `offset`, by name, only the shops holding the search's text (`query`: search()
// at 搜索) when one was given.
async function loadShops(query = drawn("shops").query, offset = drawn("shops").offset) {
  const page = await SW.newest("shops", "/api/v1/shops?" + new URLSearchParams({ ...query, limit: SW.PAGE, offset }));
  if (!page) return;  // a newer load overtook it (a search or page asked for while this one was on its way)
  if (!page.items.length && offset > 0) return loadShops(query, Math.max(0, offset - SW.PAGE));  // its shops were removed
  SW.pager("shops", page, query, loadShops);
  SW.fill("#shops tbody", page.items.map((s) => SW.el("tr", Object.assign({ "data-shop": s.id }, SW.pickable(() => editShop(s))),
    SW.el("td", {}, s.id), SW.el("td", {}, s.name), SW.el("td", {}, s.address || ""), SW.el("td", {}, s.contact || ""),
  SW.el("td", {}, (s.frontages || []).map((f) => f.camera ? `camera ${f.camera}` : "map").join(", ")))),
  query.q ? `没有含「${query.q}」的商户 No shop holds ${query.q}` : "登记为空，请导入 CSV/Excel The register is empty: import a CSV or Excel file");
}

document.getElementById("shops-search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadShops(search("shops-q"), 0).catch((e) => SW.say(e.message, true));
});

// A shop picked in the register (a click, or Enter on its row) is opened for editing: its JSON in the box, and the
// focus there, so a keyboard user edits it at once.
function editShop(shop) {
  const box = document.getElementById("shop-json");
  box.value = JSON.stringify(shop, null, 2);
  box.focus();
}

// The call-out list a page at a time from `offset`, last seen first, only the numbers holding the search's digits
// (`query`: search() at 搜索) when given.
async function loadCallout(query = drawn("callout").query, offset = drawn("callout").offset) {
  const page = await SW.newest("callout", "/api/v1/callout?" + new URLSearchParams({ ...query, limit: SW.PAGE, offset }));
  if (!page) return;  // a newer load overtook it (a search or page asked for while this one was on its way)
  SW.pager("callout", page, query, loadCallout);
  SW.fill("#callout tbody", page.items.map((e) => {
    const select = SW.el("select", { onchange: async (ev) => {
      try {
        await SW.json(`/api/v1/callout/${encodeURIComponent(e.number)}`, { method: "PUT", json: { status: ev.target.value } });
        SW.say(`${e.number}: ${ev.target.selectedOptions[0].textContent}`);
      } catch (err) { SW.say(err.message, true); }
    } }, ...STATUSES.map(([s, zh]) => SW.el("option", s === e.status ? { value: s, selected: "selected" } : { value: s }, `${zh} ${s}`)));
    return SW.el("tr", { "data-number": e.number }, SW.el("td", {}, e.number), SW.el("td", {}, select), SW.el("td", {}, e.count),
      SW.el("td", {}, SW.time(e.first_seen)), SW.el("td", {}, SW.time(e.last_seen)), SW.el("td", {}, e.squad || ""),
      SW.el("td", {}, e.amount == null ? "" : `${e.amount} 元`));  // the API's amount is in yuan
  }), query.q ? `没有含「${query.q}」的号码 No number holds ${query.q}` : "暂无号码 No numbers on the call-out list");
}

document.getElementById("callout-search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadCallout(search("callout-q"), 0).catch((e) => SW.say(e.message, true));
});

async function upload(form, path, errorsId) {
  const res = await SW.json(path, { method: "POST", body: new FormData(form) });
  // the refused rows, then what to check: rows imported with a phone number that may have lost its leading 0, a CSV
  // that GBK and Windows-1252 both read, and which it was read as
  if (errorsId) document.getElementById(errorsId).replaceChildren(...(res.errors || []).map((e) => SW.el("li", {}, e)),
    ...SW.warningItems(res.warnings));
  return res;
}

document.getElementById("shops-import").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await upload(ev.target, "/api/v1/shops/import", "import-errors");
    SW.say(`导入 ${r.imported} 家商户 imported; ${r.errors.length} 行错误 rows refused; ${(r.warnings || []).length} 行待核对 to check`,
      r.errors.length + (r.warnings || []).length > 0 && "warn");
    await loadShops();
  } catch (e) { SW.say(e.message, true); }
});

document.getElementById("save-shop").addEventListener("click", async () => {
  try {
    const shop = JSON.parse(document.getElementById("shop-json").value);
    await SW.json(`/api/v1/shops/${encodeURIComponent(shop.id)}`, { method: "PUT", json: shop });
    SW.say(`已保存 saved ${shop.id}`);
    await loadShops();
  } catch (e) { SW.say(e.message, true); }
});

document.getElementById("callout-import").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await upload(ev.target, "/api/v1/callout/import", "callout-errors");
    SW.say(`更新 ${r.applied} 个号码 updated; 未知 unknown: ${r.unknown.join(", ") || "-"}`, r.errors.length + (r.warnings || []).length > 0 && "warn");
    await loadCallout();
  } catch (e) { SW.say(e.message, true); }
});

for (const format of ["csv", "xlsx"]) {  // the call-out list as a file (SW.download: the API wants the token, no plain link)
  document.getElementById(`export-${format}`).addEventListener("click", (ev) => {
    ev.preventDefault();
    SW.download(`/api/v1/callout/export?format=${format}`, `callout.${format}`).catch((e) => SW.say(e.message, true));
  });
}

// A patrol job as staff read it: its state, and once done what was sampled, skipped and found (the API's PatrolSummary).
function showPatrol(job, meta) {
  const s = job.summary;
  const lines = [];
  if (job.error) lines.push(`原因 Why: ${job.error}`);
  if (s) {
    // the span in the run's zone, named (the pages' zone, GET /meta's; a job of an earlier release may lack it)
    const span = s.video_span ? `${s.video_span[0]} – ${s.video_span[1]}` + (s.timezone ? ` ${s.timezone}` : "") : "";
    lines.push(`抽取画面 Frames sampled: ${s.frames}` + (span ? ` (${span})` : ""));
    if (s.skipped_without_position) {
      lines.push(`跳过 Skipped: ${s.skipped_without_position} 帧无定位，轨迹未覆盖 ${s.uncovered_s} 秒视频 ` +
                 `frames without a position, ${s.uncovered_s} s of video the track does not cover`);
    }
    lines.push(`发现违规 Violations found: ${s.groups} · 新案件 New cases: ${s.cases.length}` + (s.cases.length ? ` (${s.cases.join(", ")})` : ""));
    for (const a of s.already_open) lines.push(`已有案件 Already open: ${a.case_id} ${SW.typeName(meta, a.type)}（未重复立案 not doubled）`);
    if (s.no_cases) lines.push(`未生成案件 No cases written: ${s.no_cases}`);  // as an upload of photos says on its groups
    lines.push(...SW.spoolNews(s));  // the run retried the evidence spool, as an upload of photos does
    for (const m of s.messages) lines.push(`提示 Note: ${m}`);
  }
  const items = lines.map((text) => SW.el("li", {}, text));
  if (s && (s.cases.length || s.already_open.length)) items.push(SW.el("li", {}, SW.el("a", { href: "/ui/queue" }, "→ 审核队列 Review queue")));
  if (job.state === "done") {  // the run's report: every frame with its findings (the API's, with the token: no plain link)
    items.push(SW.el("li", {}, SW.el("button", { type: "button", id: "patrol-report",
      onclick: () => SW.open(`/api/v1/patrol/jobs/${job.id}/report`).catch((e) => SW.say(e.message, true)) }, "巡查报告 Patrol report")));
  }
  document.getElementById("patrol-job").replaceChildren(
    SW.el("p", { class: "state" }, `${job.video_label} · ${SW.jobStateName(job.state)}`), SW.el("ul", {}, ...items));
}

// How far a patrol job is (the API's PatrolProgress): frames sampled from the video, then frames judged of those,
// their rate and the minutes left while they are (SW.pace); the phase (or what the job waits for) as SW.jobPhase says it.
function patrolProgress(job) {
  const p = job.progress, phase = SW.jobPhase(job);
  if (p.phase === "sampling") return `${phase}: ${p.done} 帧 frames`;
  return p.total == null ? phase : `${p.done} / ${p.total} 帧 frames · ${phase}` + SW.pace(p, "帧/秒 frames/s");
}

let following = null;  // the patrol job whose summary #patrol-job shows (one at a time)

// A patrol job's row in the recent jobs: uploaded, video, start (as sent, else the video's own), state, progress.
function patrolRow(job, meta) {
  return SW.el("tr", { "data-job": job.id }, SW.el("td", {}, SW.time(job.created_at)), SW.el("td", {}, job.video_label),
    SW.el("td", {}, job.start ? SW.time(job.start) : "视频自带 from the video"), SW.el("td", { class: "state" }, SW.jobStateName(job.state)),
    SW.el("td", { class: "progress" }, patrolProgress(job)),
    SW.el("td", {}, SW.el("button", { type: "button", onclick: () => followPatrol(job, meta).catch((e) => SW.say(e.message, true)),
      "aria-label": `查看 View：巡查任务 patrol job ${job.video_label} · ${SW.time(job.created_at)}` }, "查看 View")));
}

// The recent patrol jobs (GET /api/v1/patrol/jobs: an inspector's own): a reloaded page finds a job still running.
async function loadPatrolJobs(meta) {
  const jobs = await SW.json("/api/v1/patrol/jobs?limit=20");
  SW.fill("#patrol-jobs tbody", jobs.map((j) => patrolRow(j, meta)), "暂无巡查任务 No patrol jobs yet");
  return jobs;
}

// Show a job's summary and follow it until it is done or failed (or another job is chosen), its row kept up to date.
async function followPatrol(job, meta) {
  following = job.id;
  for (;;) {
    showPatrol(job, meta);
    document.querySelector(`#patrol-jobs tr[data-job="${job.id}"]`)?.replaceWith(patrolRow(job, meta));
    if (!(job.state === "queued" || job.state === "running")) return job;
    await new Promise((r) => setTimeout(r, 2000));
    if (following !== job.id) return job;
    job = await SW.json(`/api/v1/patrol/jobs/${job.id}`);
  }
}

// The patrol's start as typed (form field start, the API's 'YYYY-MM-DD HH:MM[:SS]' in the city's zone): a text field,
// since the browser's own date-time field spoke its language (mm/dd/yyyy AM/PM on an English browser). What is wrong
// with it, Chinese first, or "" when it is empty or a real date and time: checked as it is typed (the browser then
// refuses the form, saying so) and again on sending, so a video is not uploaded only to be refused for its start.
const START_TIME = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?$/;
function startProblem(text) {
  const typed = text.trim(), m = START_TIME.exec(typed);
  if (!typed) return "";
  const wrong = `开始时间「${typed}」`;
  if (!m) return `${wrong}格式不对，请按 年-月-日 时:分[:秒] 填写，如 2026-11-20 09:00 Start: not YYYY-MM-DD HH:MM[:SS]`;
  const [y, mo, d, h, mi, sec] = m.slice(1).map((x) => Number(x || 0));
  const day = new Date(Date.UTC(y, mo - 1, d));
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== d || h > 23 || mi > 59 || sec > 59) {
    return `${wrong}没有这个日期或时间 Start: no such date or time`;
  }
  return "";
}
const startField = document.getElementById("patrol-start");
startField.addEventListener("input", () => startField.setCustomValidity(startProblem(startField.value)));
startField.addEventListener("invalid", () => SW.say(startField.validationMessage, true));

// The status line on a patrol job done: its new cases, and why there are none where cases cannot be written (the
// summary's no_cases, which the list below says too): "0 new cases" alone read as a video with nothing to report.
function patrolDone(s) {
  const done = `巡查完成 Patrol done: ${s.cases.length} 件新案件 new cases`;
  return s.no_cases ? `${done}；未生成案件 No cases written: ${s.no_cases}` : done;
}

document.getElementById("patrol").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  startField.setCustomValidity(startProblem(startField.value));
  if (!startField.reportValidity()) return;  // the status line says why (its invalid event)
  try {
    const meta = await SW.meta();
    let job = await SW.busy(ev.submitter || ev.target.querySelector("button"), "上传中… Uploading…", () => SW.upload(
      "/api/v1/patrol/jobs", new FormData(ev.target), document.getElementById("patrol-progress"), document.getElementById("patrol-upload-text")));
    await loadPatrolJobs(meta);
    job = await followPatrol(job, meta);
    if (following !== job.id) return;  // another job was chosen meanwhile
    SW.say(job.state === "done" ? patrolDone(job.summary) : job.error, job.state !== "done" || (Boolean(job.summary.no_cases) && "warn"));
  } catch (e) { SW.say(e.message, true); }
});

// On load, the newest patrol job still queued or running is followed: a reload goes on showing it.
async function loadPatrol(meta) {
  const running = (await loadPatrolJobs(meta)).find((j) => j.state === "queued" || j.state === "running");
  if (running) await followPatrol(running, meta);
}

SW.filePickers();
SW.nav("city");
SW.meta().then((meta) => Promise.all([loadWarnings(), loadShops(), loadCallout(), loadPatrol(meta)])).catch((e) => SW.say(e.message, true));
