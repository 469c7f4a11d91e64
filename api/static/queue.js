// The review queue: a list of cases and the current case's evidence, worked with the keyboard.
"use strict";

// pointer: whether the press and release of the click under way fell outside the open reasons (null: no press seen)
const Q = { meta: null, items: [], index: -1, detail: null, rejecting: false, pointer: null };

function stateName(state) { return SW.stateName(Q.meta, state); }

function typeName(id) {
  const t = (Q.meta.types || []).find((x) => x.id === id);
  return t ? `${t.name_zh} ${t.name_en}` : id;
}

// What an evidence image is, as its alt text and tooltip say it (a role of the bundle's manifest, detect/evidence: its
// kind, then the moment it was taken): a screen reader read the thumbnails by their codes alone ("crop").
const IMAGE_KINDS = { original: "原图 original", annotated: "标注图 annotated", shared: "打码图 shared (blurred)",
                      strip: "连拍 strip", crop: "目标截图 crop", shared_crop: "打码截图 shared crop" };
const IMAGE_MOMENTS = { opened: "立案时 at opening", latest: "最新 latest", first_seen: "首次发现 first seen" };

function imageRole(role) {
  if (IMAGE_KINDS[role]) return IMAGE_KINDS[role];
  const [, kind, when] = role.match(/^(original|annotated|shared)_(.+)$/) || [];
  if (!kind) return `证据图 evidence image ${role}`;
  const check = when.match(/^verification_(\d+)$/);
  return `${IMAGE_KINDS[kind]}（${check ? `第 ${check[1]} 次核查 check ${check[1]}` : IMAGE_MOMENTS[when] || when}）`;
}

async function loadMeta() {
  Q.meta = await SW.meta();
  const state = document.getElementById("f-state");
  for (const s of Q.meta.states) state.append(SW.el("option", { value: s }, stateName(s)));
  const type = document.getElementById("f-type");
  for (const t of Q.meta.types) type.append(SW.el("option", { value: t.id }, `${t.name_zh} ${t.name_en}`));
  const severity = document.getElementById("f-severity");
  for (const s of Q.meta.severities) severity.append(SW.el("option", { value: s.id }, `${s.zh} ${s.id}`));
  const box = document.getElementById("reasons");
  box.append(SW.el("strong", {}, "驳回原因 Reject reason:"));
  Q.meta.reject_reasons.forEach((r, i) => box.append(
    SW.el("button", { type: "button", "data-reason": r.code, onclick: () => reject(r.code) }, keyHint(`${i + 1} `), `${r.zh} ${r.en}`)));
}

// The filter boxes as the API's filter (GET /cases), what 筛选 lists: no state is the unreviewed candidates.
function filterQuery() {
  const query = { sort: "opened_at", order: "desc" };
  const state = document.getElementById("f-state").value;
  Object.assign(query, state ? { state } : { state: "candidate", reviewed: "false" });
  for (const [id, key] of [["f-type", "type"], ["f-severity", "severity"], ["f-q", "q"]]) {
    const v = document.getElementById(id).value.trim();
    if (v) query[key] = v;
  }
  return query;
}

// The cases of `query` (filterQuery() at 筛选) a page (SW.PAGE) at a time from `offset`: by default the list shown
// (SW.shown: after a confirm or reject), the filter's first page before one is.
async function loadList(query = (SW.shown.cases || {}).query || filterQuery(), offset = (SW.shown.cases || {}).offset || 0) {
  const page = await SW.newest("cases", "/api/v1/cases?" + new URLSearchParams({ ...query, limit: SW.PAGE, offset }));
  if (!page) return;  // a newer load overtook it (a filter or page asked for while this one was on its way)
  if (!page.items.length && offset > 0) {  // the last page's cases were all reviewed (or left the filter): the one before
    return loadList(query, Math.max(0, offset - SW.PAGE));
  }
  Q.items = page.items;
  SW.pager("cases", page, query, relist);
  renderList();
  SW.say(`${page.total} 件 cases`);
  await select(Q.items.length ? Math.min(Math.max(Q.index, 0), Q.items.length - 1) : -1);
}

function renderList() {
  // One Tab stop, the current case (not 200 on the way to the detail); ↑/↓ (j/k) pick the one above or below, the
  // focus going with the pick, and Enter or a click picks the one focused.
  const list = document.getElementById("cases");
  const focused = list.contains(document.activeElement);
  list.replaceChildren(...Q.items.map((c, i) => SW.el("li", Object.assign(SW.pickable(() => open(i)), {
    class: i === Q.index ? "current" : "", "data-case": c.id, role: "option", "aria-selected": String(i === Q.index),
    tabindex: i === Math.max(Q.index, 0) ? "0" : "-1",
  }), SW.el("span", { class: "state" }, stateName(c.state)), typeName(c.violation_type), SW.el("br"),
  SW.el("small", {}, `${c.id} · ${SW.time(c.opened_at)}`))));
  if (focused && list.querySelector("li[tabindex='0']")) list.querySelector("li[tabindex='0']").focus();
}

// A case picked in the list (a tap, a click, Enter): where the detail is laid out under the list (a phone, a tablet:
// one column), the page goes down to it; a tap there changed only the list's highlight, the case off the screen.
async function open(i) {
  await select(i);
  const list = document.getElementById("cases"), detail = document.getElementById("detail");
  if (Q.index === i && detail.getBoundingClientRect().top >= list.getBoundingClientRect().bottom) detail.scrollIntoView();
}

async function select(i) {
  Q.index = i;
  Q.detail = null;  // until this case's detail is in, c and r act on nothing (not on the case still shown)
  renderList();
  const section = document.getElementById("detail");
  if (i < 0) { section.replaceChildren(SW.el("p", {}, "没有待审案件 No case to review.")); showKeys([]); return; }
  const current = document.querySelector("#cases li.current");
  if (current) current.scrollIntoView({ block: "nearest" });
  const id = Q.items[i].id;
  let detail;
  try {
    detail = await SW.json("/api/v1/cases/" + encodeURIComponent(id));
  } catch (e) {
    if (Q.index === i) {
      section.replaceChildren(SW.el("p", { class: "status bad" }, `案件无法加载 Case ${id} could not be loaded: ${e.message}`));
      SW.say(e.message, true);
    }
    return;
  }
  if (Q.index !== i || Q.items[i].id !== id) return;  // another case was picked meanwhile
  Q.detail = detail;
  renderDetail(detail);
}

// A case field with its name shown before it, Chinese first, as its <label for> (its accessible name): a tooltip or
// placeholder alone left a reviewer guessing which list was the type and which the severity, and the placeholder
// went once a description was typed. The label holds only the name (one holding a list would name it by its choice too).
function fieldLabel(text, field) {
  return SW.el("span", { class: "field" }, SW.el("label", { for: field.id }, text), " ", field);
}

// A text of lines as a box of lines reads it back (its value): a CR LF or a CR is a line break (LF), so a description
// kept with CR LF reads as unchanged.
function lines(text) { return (text || "").replace(/\r\n?/g, "\n"); }

function renderDetail(d) {
  const c = d.case, ev = d.evidence;
  const section = document.getElementById("detail");
  const parts = [SW.el("h2", {}, `${typeName(c.violation_type)} · ${c.id}`)];
  // only what the API allows in the case's state (the detail's actions): 确认 and 驳回 of a case a platform holds, or
  // its type or place changed, were offered and refused on a click; what it cannot change is shown greyed, as it reads
  const fixed = d.actions.includes("edit") ? {} : { disabled: "" }, untagged = d.actions.includes("tag") ? {} : { disabled: "" };
  const typeSelect = SW.el("select", { id: "edit-type", ...fixed }, ...Q.meta.types.map((t) =>
    SW.el("option", Object.assign({ value: t.id }, t.id === c.violation_type ? { selected: "" } : {}), `${t.name_zh} ${t.name_en}`)));
  // a box of lines, as the API keeps a description (a one-line input dropped its line breaks, and a save of the tags or
  // severity alone then sent it run together); Enter makes a line, Ctrl+Enter saves (fieldKey)
  const desc = SW.el("textarea", { id: "edit-description", rows: "2", cols: "40", maxlength: "4000",
    "aria-keyshortcuts": "Control+Enter", title: "Enter 换行，Ctrl+Enter 保存 Enter: new line, Ctrl+Enter: save", ...fixed }, lines(c.description));
  const caseTags = (c.details && c.details.tags) || [];
  // the scoring sheet's tags for this type (e.g. 现场加工食品 food_on_site on a stall), and any the case already has, each
  // with every sheet item it counts in (the second and later were in a tooltip alone, which a touch screen never shows)
  const offered = Q.meta.tags.filter((t) => t.types.includes(c.violation_type) || caseTags.includes(t.tag));
  const tagBoxes = offered.map((t) => SW.el("label", { class: "tag" },
    SW.el("input", Object.assign({ type: "checkbox", class: "edit-tag", value: t.tag, ...untagged }, caseTags.includes(t.tag) ? { checked: "" } : {})),
    ` ${t.items.join("；") || t.tag} (${t.tag})`));
  const severity = (c.details && c.details.severity) || "general";
  const severitySelect = SW.el("select", { id: "edit-severity", ...untagged }, ...Q.meta.severities.map((s) =>
    SW.el("option", Object.assign({ value: s.id }, s.id === severity ? { selected: "" } : {}), `${s.zh} ${s.id}`)));
  parts.push(SW.el("div", { class: "actions" },
    ...(d.actions.includes("confirm") ? [SW.el("button", { id: "confirm", onclick: confirm }, "确认 Confirm", keyHint(" (c)"))] : []),
    ...(d.actions.includes("reject") ? [SW.el("button", { id: "reject", onclick: openReasons }, "驳回 Reject", keyHint(" (r)"))] : []),
    " ", fieldLabel("类型 Type", typeSelect), fieldLabel("描述 Description", desc), fieldLabel("严重程度 Severity", severitySelect),
    ...tagBoxes, SW.el("button", { id: "save-edit", onclick: saveEdit }, "保存修改 Save changes")));
  // where a platform sends a handler; a photo without GPS has no place until a reviewer types one (saved with 保存修改).
  // 地点 Place names the row as a group, each field its own label (a placeholder or tooltip alone was no name).
  parts.push(SW.el("div", { class: "actions place", role: "group", "aria-labelledby": "place-name" },
    SW.el("span", { id: "place-name", class: "field" }, "地点 Place:"),
    fieldLabel("地址 Address", SW.el("input", { id: "edit-address", size: "32", maxlength: "200", value: c.address || "", ...fixed })),
    fieldLabel("纬度 Lat", SW.el("input", { id: "edit-lat", type: "number", step: "any", min: "-90", max: "90", value: c.lat ?? "", title: "纬度 Latitude (WGS-84)", ...fixed })),
    fieldLabel("经度 Lon", SW.el("input", { id: "edit-lon", type: "number", step: "any", min: "-180", max: "180", value: c.lon ?? "", title: "经度 Longitude (WGS-84)", ...fixed }))));
  if (d.reopen && d.reopen.allowed) {  // a rejection in review, recent: a mis-click is undone with a reason
    parts.push(SW.el("div", { class: "actions reopen" },
      fieldLabel("重新打开原因（必填） Why reopen (required)", SW.el("input", { id: "reopen-note", size: "40", maxlength: "2000", "aria-required": "true" })),
      SW.el("button", { id: "reopen", onclick: reopen }, "重新打开 Reopen")));
  }
  // a note in any state: where a reviewer records that a case a platform holds (已上报, 已立案) is false, which only the
  // platform voids; it changes nothing else on the case. A box of lines (a one-line input took no note of several
  // lines, which the API keeps): Enter makes a line, 添加备注 or Ctrl+Enter adds it (noteKey).
  parts.push(SW.el("div", { class: "actions note" },
    fieldLabel("备注 Note", SW.el("textarea", { id: "note-text", rows: "3", cols: "40", maxlength: "2000",
      "aria-keyshortcuts": "Control+Enter", title: "Enter 换行，Ctrl+Enter 添加 Enter: new line, Ctrl+Enter: add the note" })),
    SW.el("button", { id: "add-note", onclick: addNote }, "添加备注 Add note")));
  if (ev && ev.boxes && ev.boxes.url) {
    const boxes = (ev.boxes.boxes || []).length;
    const img = SW.el("img", { id: "evidence-image", src: ev.boxes.url,
      alt: `证据照片 Evidence photo: ${typeName(c.violation_type)} · ${c.source_id} · ${SW.time(c.opened_at)} · 检出框 ${boxes} 个 boxes` });
    const zone = ev.zone && ev.zone.polygon ? [{ points: ev.zone.polygon, kind: ev.zone.kind, ...SW.zoneLabel(ev.zone) }] : [];
    parts.push(SW.el("div", { class: "figure" }, img, SW.overlay(ev.boxes.width, ev.boxes.height, ev.boxes.boxes || [], zone, Q.meta)));
    const thumbs = ev.images.filter((x) => x.path !== ev.boxes.image).map((x) =>
      SW.el("a", { href: x.url, target: "_blank", title: imageRole(x.role) },
        SW.el("img", { src: x.url, alt: `${imageRole(x.role)} · ${typeName(c.violation_type)}` })));
    parts.push(SW.el("div", { class: "thumbs" }, ...thumbs));
  } else {
    parts.push(SW.el("p", {}, ev && ev.error ? ev.error : "证据尚未存储 Evidence not stored yet" + (c.reason ? `: ${c.reason}` : "")));
  }
  const rows = [
    ["状态 State", stateName(c.state)], ["来源 Source", `${SW.sourceName(Q.meta, c.source_kind)} ${c.source_id}`], ["地址 Address", c.address],
    ["经纬度 Lat/Lon", c.lat != null && c.lon != null ? `${c.lat}, ${c.lon}` : ""],
    ["地点 Place", c.address || c.lat != null ? "" : "未定位：无地址、无坐标，请补充地址后派发 no place: add an address before dispatch"],
    ["网格 Grid cell", c.grid_cell], ["区域 Zone", ev && ev.zone ? zoneText(ev.zone) : ""], ["发现 Opened", SW.time(c.opened_at)], ["描述 Description", c.description],
    ["分数 Score", c.details && c.details.score], ...judgedBy(ev), ["标签 Tags", caseTags.join(", ")],
    ["严重程度 Severity", (Q.meta.severities.find((s) => s.id === severity) || { zh: "" }).zh + " " + severity], ["号码 Phones", ev && ev.phones ? ev.phones.join(", ") : ""],
    ["审核 Review", c.review_decision ? [SW.reviewName(Q.meta, c.review_decision), c.reviewer,
      c.review_reason && SW.reasonName(Q.meta, c.review_reason)].filter(Boolean).join(" · ") : ""],
    ["重新打开 Reopen", d.reopen && !d.reopen.allowed ? `不能重新打开 cannot reopen: ${d.reopen.why_not}` : ""],
  ];
  parts.push(SW.el("table", { class: "facts" }, ...rows.filter((r) => r[1] != null && r[1] !== "").map(
    ([k, v]) => SW.el("tr", {}, SW.el("td", {}, k), SW.el("td", {}, v)))));
  parts.push(...changeLog(d));
  const focused = section.contains(document.activeElement) ? document.activeElement.id : "";
  section.replaceChildren(...parts);
  // a reviewer working by Tab and Enter stays where they were (the next case's 确认, the field just saved), rather than
  // being sent back to the top of the page to Tab through the navigation and filters again
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
  showKeys([...d.actions, ...(d.reopen && d.reopen.allowed ? ["reopen"] : [])]);
}

// A button's key (c, r, a reason's digit) beside its name, hidden with the key line where there is no keyboard (app.css
// .keys): on a phone or a tablet 确认 Confirm (c) named a key nobody could press.
function keyHint(text) {
  return SW.el("span", { class: "keys" }, text);
}

// The zone the evidence was judged in, by its name and its id and kind (the overlay's label shows the name alone, the id
// in a tooltip, which a touch screen never shows): 北门人行道 · z-north (no_stall).
function zoneText(zone) {
  const { label, title } = SW.zoneLabel(zone);
  return label === title ? title : `${label} · ${title}`;
}

// What saw and judged the case, as its evidence's manifest names them: the detector (检测模型) and the verifier heads
// (核验模型), by id with the card's SHA-256 cut to 12 hex digits, the whole digests in the tooltip, so a reviewer can
// tell a case found by one verifier from one found after another's promotion. A bundle judged by the detector's classes
// alone (`--verifier none`, id none) or sealed before bundles named their verifier (null) says which, never an empty
// cell; evidence not read (not stored yet, removed, unreadable) says nothing here, the line above saying why.
function judgedBy(ev) {
  if (!ev || ev.error) return [];
  const m = ev.model || {}, v = ev.verifier;
  const model = m.id ? SW.el("span", m.sha256 ? { title: `检测模型 SHA-256 model: ${m.sha256}` } : {}, m.id) : "";
  let verifier = "未记录 not recorded（证据早于记录核验模型 sealed before bundles named it）";
  if (v && v.id === "none") verifier = "仅检测器类别 detector classes only（未用核验模型 no verifier）";
  else if (v) {
    verifier = SW.el("span", { class: "verifier", title: `核验卡片 SHA-256 card: ${v.card_sha256}\n权重 SHA-256 heads: ${v.heads_sha256}` },
      v.card_sha256 ? `${v.id} · ${v.card_sha256.slice(0, 12)}` : v.id);
  }
  return [["检测模型 Detector", model], ["核验模型 Verifier", verifier]];
}

// The key line's keys for what the case shown offers (`actions`: the detail's, and reopen where it can be reopened):
// c and r were listed on a case 已上报, which offers neither, and Enter saving in every field where the fields it saves
// are greyed (the note's box makes a line with it, Ctrl+Enter adding the note: fieldKey).
function showKeys(actions) {
  for (const part of document.querySelectorAll(".keys [data-keys]")) part.hidden = !actions.includes(part.dataset.keys);
}

// What a revision changed, in the words of the form above (details.revisions: field, from, to, by, at).
const FIELD_NAMES = {
  violation_type: "类型 Type", description: "描述 Description", address: "地址 Address", lat: "纬度 Lat", lon: "经度 Lon",
  grid_cell: "网格 Grid cell", tags: "标签 Tags", severity: "严重程度 Severity",
};

function revisionValue(field, v) {
  if (v == null || v === "" || (Array.isArray(v) && !v.length)) return "（空）";
  if (field === "violation_type") return typeName(v);
  if (field === "severity") return `${(Q.meta.severities.find((s) => s.id === v) || { zh: "" }).zh} ${v}`.trim();
  return Array.isArray(v) ? v.join(", ") : String(v);
}

function logTable(id, heads, rows) {
  return SW.el("table", { id, class: "log" }, SW.el("tr", {}, ...heads.map((h) => SW.el("th", {}, h))),
    ...rows.map((cells) => SW.el("tr", {}, ...cells.map((v) => SW.el("td", {}, v)))));
}

// Who acted, broken over lines only after a ':' or '/' (each piece kept whole, app.css span.whole): at its hyphen, as a
// browser may, the history's rules:batch-7/bus read rules:batch- / 7/bus on a phone.
function actorText(actor) {
  const pieces = String(actor == null ? "" : actor).split(/(?<=[:/])/);
  return SW.el("span", { class: "actor" }, ...pieces.flatMap((p, n) => [...(n ? [SW.el("wbr")] : []), SW.el("span", { class: "whole" }, p)]));
}

// The case's history (state changes: who, when, why) and its revisions (field from → to: who, when), oldest first,
// times on the city's clock like every other time on the page.
function changeLog(d) {
  const moves = d.history.map((h) => [SW.time(h.at), actorText(h.actor),
    h.from && h.from !== h.to ? `${stateName(h.from)} → ${stateName(h.to)}` : stateName(h.to), SW.historyReason(Q.meta, h.reason)]);
  const revisions = ((d.case.details && d.case.details.revisions) || []).map((r) => [SW.time(r.at), actorText(r.by),
    FIELD_NAMES[r.field] || r.field,
    `${revisionValue(r.field, r.from)} → ${revisionValue(r.field, r.to)}${r.derived_from ? "（随网格推算 from the grid cell）" : ""}`]);
  const notes = ((d.case.details && d.case.details.notes) || []).map((n) => [SW.time(n.at), actorText(n.by), n.text]);
  return [
    SW.el("h3", {}, "处理记录 History"),
    logTable("history", ["时间 Time", "操作人 By", "状态 State", "原因 Reason"], moves),
    SW.el("h3", {}, "备注记录 Notes"),
    notes.length ? logTable("notes", ["时间 Time", "操作人 By", "备注 Note"], notes) : SW.el("p", { id: "notes" }, "无备注 No notes"),
    SW.el("h3", {}, "修改记录 Revisions"),
    revisions.length ? logTable("revisions", ["时间 Time", "操作人 By", "字段 Field", "修改 Change"], revisions)
      : SW.el("p", { id: "revisions" }, "无修改 No revisions"),
  ];
}

// `doing(id, body)` acts on the case shown with `body` (its JSON, what the action adds to it): the case's updated_at
// as this page loaded it goes with every action, so a page left open while another reviewer confirmed, rejected or
// edited the case is refused (case-changed) instead of overwriting them, and shows the case as it is now.
// `done` names the action as staff read it ("已确认 confirmed"); it is said once the list is in again, whose own
// count ("N 件 cases") wrote over it, so a reviewer never saw that a save or a confirm had gone through.
// A refusal because the case changed reloads it, and what this reviewer had typed or chosen and not saved (address,
// description, reopen reason …) is put back over the case as it is now, so nothing typed is lost: they check it
// against the other reviewer's change and save again. What has nowhere to go back to (the case left the list: the
// other reviewer confirmed it; a reopen reason once it can no longer be reopened) is written out in the status line,
// field by field, for the reviewer to copy, rather than dropped without a word. The line is the page's own
// (changedLine): the service's detail tells an API client to reload and act again, which the page has done.
async function act(doing, done) {
  if (!Q.detail) return;
  const id = Q.detail.case.id;
  try {
    const updated = await doing(id, { expected_updated_at: Q.detail.case.updated_at });
    await loadList();
    SW.say(`${done}: ${updated.id} · ${stateName(updated.state)}`);
  } catch (e) {
    if (e.kind !== "case-changed") { SW.say(e.message, true); return; }
    const typed = unsaved();
    await loadList();
    const shown = Q.detail !== null && Q.detail.case.id === id;
    const lost = shown ? restore(typed) : typed;
    SW.say(changedLine(id, (e.problem && e.problem.case) || {}, shown, typed.length > lost.length, lost), true);
  }
}

// What became of an action refused because the case changed (`now`: the problem's case, id, state, last_by), once
// the page has reloaded it: who changed it and its state, nothing done, the case reloaded or gone from the list,
// what was typed kept, and what could not be kept written out for the reviewer to copy.
function changedLine(id, now, shown, kept, lost) {
  const who = now.last_by ? `（最后操作人 ${now.last_by}，现为 ${stateName(now.state)}）` : "";
  const line = [`案件 ${id} 在您打开后已被修改${who}，本次操作未执行；` + (shown ? "已重新载入 changed meanwhile: nothing done, reloaded"
    : "已不在列表中 changed meanwhile: nothing done, it has left the list")];
  if (kept) line.push("您填写的内容已保留，请核对后再保存 what you typed is kept: check it and save again");
  if (lost.length) line.push("以下填写的内容未保存，请复制留存 not saved, copy what you need: " + lost.map((x) => `${x.label}: ${x.shown}`).join("；"));
  return line.join(" — ");
}

// The case form's fields the reviewer changed since the case was drawn: selector, value (a tag box: its checked),
// and the field's name and value as the reviewer reads them (for a line saying what could not be kept).
function unsaved() {
  const changed = (x) => x.type === "checkbox" ? x.checked !== x.defaultChecked
    : x.tagName === "SELECT" ? [...x.options].some((o) => o.selected !== o.defaultSelected) : x.value !== x.defaultValue;
  return [...document.querySelectorAll("#detail input, #detail select, #detail textarea")].filter(changed).map((x) => x.type === "checkbox"
    ? { selector: `input.edit-tag[value="${CSS.escape(x.value)}"]`, value: x.checked,
        label: `标签 Tag ${x.value}`, shown: x.checked ? "勾选 ticked" : "不选 unticked" }
    : { selector: "#" + CSS.escape(x.id), value: x.value, label: x.labels.length ? x.labels[0].textContent : x.title || x.placeholder || x.id,
        shown: x.tagName === "SELECT" ? x.selectedOptions[0].text : `「${x.value}」` });
}

// Puts `typed` (unsaved()'s) back in the form drawn again; what it could not put back (a field no longer offered).
function restore(typed) {
  const lost = [];
  for (const t of typed) {
    const field = document.querySelector(t.selector);
    if (!field) { lost.push(t); continue; }  // a reopen reason once the case is no longer reopenable
    if (field.type === "checkbox") field.checked = t.value; else field.value = t.value;
  }
  return lost;
}

// Whether the case shown offers `action` (the detail's actions): c and r do nothing where 确认 and 驳回 are not shown.
function allows(action) { return Q.detail !== null && Q.detail.actions.includes(action); }

function confirm() {
  const dispatch = Q.meta.dispatch_targets.length > 0;
  return act((id, body) => SW.json(`/api/v1/cases/${encodeURIComponent(id)}/confirm`, { method: "POST", json: Object.assign(body, { dispatch }) }),
    "已确认 confirmed");
}

// The reject reasons are a small dialog: the focus moves into it, Tab and Shift+Tab go round its buttons, a digit picks
// a reason, and Esc or a click outside it closes it; the focus then goes back to 驳回 (the reject button), as it does
// after a reason is picked, so a reviewer on the keyboard goes on from where they were.
function openReasons() {
  Q.rejecting = true;
  const box = document.getElementById("reasons");
  box.classList.add("open");
  box.querySelector("button").focus();
}

function closeReasons() {
  Q.rejecting = false;
  document.getElementById("reasons").classList.remove("open");
  const button = document.getElementById("reject");
  if (button) button.focus();
}

// A key while the reasons are open: Esc, a reason's digit, Tab round the buttons; Enter or Space presses the button
// that has the focus; every other key (j, c …) does nothing while the dialog is open.
function reasonsKey(ev) {
  const buttons = [...document.querySelectorAll("#reasons button")];
  const n = parseInt(ev.key, 10);
  if (ev.key === "Escape") closeReasons();
  else if (n >= 1 && n <= Q.meta.reject_reasons.length) reject(Q.meta.reject_reasons[n - 1].code);
  else if (ev.key === "Tab") {
    const at = buttons.indexOf(document.activeElement);
    buttons[(at + (ev.shiftKey ? -1 : 1) + buttons.length) % buttons.length].focus();
  } else if (ev.key === "Enter" || ev.key === " ") return;
  ev.preventDefault();
}

function reject(code) {
  closeReasons();
  return act((id, body) => SW.json(`/api/v1/cases/${encodeURIComponent(id)}/reject`, { method: "POST", json: Object.assign(body, { reason: code }) }),
    "已驳回 rejected");
}

function reopen() {
  return act((id, body) => {
    const note = document.getElementById("reopen-note").value.trim();
    if (!note) throw new Error("请填写重新打开的原因 give why the rejection is undone");
    return SW.json(`/api/v1/cases/${encodeURIComponent(id)}/reopen`, { method: "POST", json: Object.assign(body, { note }) });
  }, "已重新打开 reopened");
}

// A note goes without the case's updated_at: it changes nothing a colleague acts on, so nothing refuses it.
function addNote() {
  return act((id) => {
    const text = document.getElementById("note-text").value;
    if (!text.trim()) throw new Error("请填写备注内容 the note is blank");
    return SW.json(`/api/v1/cases/${encodeURIComponent(id)}/notes`, { method: "POST", json: { text } });
  }, "已添加备注 note added");
}

function saveEdit() {
  return act((id, stamp) => {
    const body = Object.assign(factsEdit(Q.detail.case), placeEdit(Q.detail.case));
    if (!Object.keys(body).length) throw new Error(`没有修改 nothing changed: ${changeable()}`);
    return SW.json(`/api/v1/cases/${encodeURIComponent(id)}`, { method: "PATCH", json: Object.assign(body, stamp) });
  }, "已保存 saved");
}

// The parts of the case form and the action of the detail's that lets them be changed (review_actions), in the form's
// order: 保存修改 with nothing changed named the type, description and place of a case 已上报 too, greyed there.
const FORM_PARTS = [["edit", "类型", "type"], ["edit", "描述", "description"], ["tag", "严重程度", "severity"],
                    ["tag", "标签", "tags"], ["edit", "地点", "place"]];

// What the reviewer may change on the case shown, as the line refusing a save with nothing changed says it: the parts
// its state lets be changed (tags only where the form offers some), or that none can be.
function changeable() {
  const parts = FORM_PARTS.filter(([action, , en]) => allows(action) && (en !== "tags" || document.querySelector("input.edit-tag")));
  if (!parts.length) return "此状态下不可修改 nothing can be changed in this state";
  const list = (words, or) => words.length > 1 ? `${words.slice(0, -1).join(or[0])}${or[1]}${words.at(-1)}` : words[0];
  return `请先修改${list(parts.map((p) => p[1]), ["、", "或"])} edit the ${list(parts.map((p) => p[2]), [", ", " or "])} first`;
}

function factsEdit(c) {
  // only what the reviewer changed: an untouched field sent as it reads would record a revision (no description -> "")
  const edit = {};
  const type = document.getElementById("edit-type").value;
  if (type !== c.violation_type) edit.type = type;
  const description = document.getElementById("edit-description").value;
  if (description !== lines(c.description)) edit.description = description;
  const severity = document.getElementById("edit-severity").value;
  if (severity !== ((c.details && c.details.severity) || "general")) edit.severity = severity;
  const boxes = [...document.querySelectorAll("input.edit-tag")];  // no boxes: leave the case's tags alone
  const tags = boxes.filter((x) => x.checked).map((x) => x.value).sort();
  if (boxes.length && tags.join() !== [...((c.details && c.details.tags) || [])].sort().join()) edit.tags = tags;
  return edit;
}

function placeEdit(c) {
  // only what the reviewer changed: an emptied address or one coordinate alone is sent, so the service says why not
  const edit = {};
  const address = document.getElementById("edit-address").value;
  if (address.trim() !== (c.address || "")) edit.address = address;
  const lat = document.getElementById("edit-lat").value, lon = document.getElementById("edit-lon").value;
  if (lat !== String(c.lat ?? "") || lon !== String(c.lon ?? "")) {
    if (lat !== "") edit.lat = Number(lat);
    if (lon !== "") edit.lon = Number(lon);
    if (lat === "" && lon === "") Object.assign(edit, { lat: null, lon: null });  // both emptied: remove coordinates set by mistake
  }
  return edit;
}

// Enter in a field of the case's form does what its button does (保存修改 for description and place, 重新打开 for the
// reopen reason: the buttons are elsewhere in the Tab order); in the note's box it makes a line, and Ctrl+Enter
// (⌘+Enter) adds the note. Esc leaves a field, so j/k/c/r act again. An Enter or Esc that ends a Chinese input
// method's composition is the input method's.
function fieldKey(ev) {
  if (ev.isComposing || ev.keyCode === 229) return;
  if (ev.key === "Escape") ev.target.blur();
  else if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && ev.target.id === "note-text") addNote();
  else if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && ev.target.id === "edit-description") saveEdit();
  else if (ev.key === "Enter" && ev.target.matches("#detail input:not([type=checkbox])")) {
    ({ "reopen-note": reopen }[ev.target.id] || saveEdit)();
  } else return;
  ev.preventDefault();
}

document.addEventListener("keydown", (ev) => {
  if (["note-text", "edit-description"].includes(ev.target.id) && (ev.ctrlKey || ev.metaKey)) { fieldKey(ev); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.target.matches("input, select, textarea")) { fieldKey(ev); return; }
  if (Q.rejecting) { reasonsKey(ev); return; }
  const moves = { j: 1, ArrowDown: 1, ArrowRight: 1, k: -1, ArrowUp: -1, ArrowLeft: -1 };
  if (ev.key in moves && Q.items.length) {
    select(Math.min(Math.max(Q.index + moves[ev.key], 0), Q.items.length - 1));
  } else if (ev.key === "c" && allows("confirm")) confirm();
  else if (ev.key === "r" && allows("reject")) openReasons();
  else return;
  ev.preventDefault();
});

// A click outside the open reasons only closes them: what was clicked (another case in the list, a filter) does
// nothing, as a click outside any dialog. Its press keeps the focus from moving there (it goes back to 驳回), and
// its click is caught on the way down, before the case list's own handler opens another case. Outside means both the
// press and the release: Chromium sends a press inside and a release outside (a reason pressed, the pointer slid off
// it), or the other way round, as a click on what holds both, outside the reasons; such a click is only swallowed.
function outsideReasons(ev) { return Q.rejecting && !document.getElementById("reasons").contains(ev.target); }
document.addEventListener("pointerdown", (ev) => { Q.pointer = { down: outsideReasons(ev) }; }, true);
document.addEventListener("pointerup", (ev) => { if (Q.pointer) Q.pointer.up = outsideReasons(ev); }, true);
document.addEventListener("mousedown", (ev) => { if (outsideReasons(ev)) ev.preventDefault(); });
document.addEventListener("click", (ev) => {
  const landed = outsideReasons(ev), { down = landed, up = landed } = Q.pointer || {};  // no press: a script's click
  Q.pointer = null;
  if (!Q.rejecting || !(down || up || landed)) return;
  ev.preventDefault();
  ev.stopPropagation();
  if (down && up) closeReasons();
}, true);
// The cases of `query` from `offset` (a filter: the first page; 上一页/下一页: SW.pager's), its first case picked, a
// refusal said in the status line, Chinese first (a filter's was never said: a search over 200 characters left the
// list as it was, without a word).
function relist(query, offset) {
  Q.index = 0;
  loadList(query, offset).catch((e) => SW.say(`案件列表无法加载 Cases could not be listed: ${e.message}`, true));
}
document.getElementById("filters").addEventListener("submit", (ev) => { ev.preventDefault(); relist(filterQuery(), 0); });
SW.nav("queue");
loadMeta().then(() => loadList()).catch((e) => SW.say(e.message, true));
