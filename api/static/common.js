// Shared by the review pages: the API token (localStorage), fetch with auth, problem messages, SVG overlays.
"use strict";

const SW = {
  token() { return localStorage.getItem("sw_token") || ""; },
  setToken(t) { localStorage.setItem("sw_token", t.trim()); },

  // fetch with the bearer token; a 401 sends the user to the login page (saying so when a token was refused, and why
  // when the API said: the reason goes in sessionStorage, never the token in the URL).
  async api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {}, { Authorization: "Bearer " + SW.token() });
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      opts = Object.assign({}, opts, { body: JSON.stringify(opts.json) });
    }
    let res;
    try {
      res = await fetch(path, Object.assign({}, opts, { headers }));
    } catch (e) {
      if (e.name === "AbortError") throw e;  // a load a newer one overtook (SW.newest): no news
      throw SW.offline("网络不通，请检查网络后重试 Network unreachable: check the connection and try again");
    }
    return SW.checked(res);
  },
  // A request the network dropped, said in staff's words (the browser's own is English: "Failed to fetch"), its kind
  // OFFLINE for a page that goes on once the network is back (upload.js: a job's progress).
  offline(text) { return Object.assign(new Error(text), { kind: SW.OFFLINE }); },
  OFFLINE: "offline",
  // An answer as every call takes it: a 401 to the login page, any other refusal thrown with its problem's detail.
  async checked(res) {
    if (res.status === 401) {
      const why = SW.token() ? await SW.refusal(res) : null;
      if (why) sessionStorage.setItem("sw_refused", why); else sessionStorage.removeItem("sw_refused");
      location.href = "/ui/login?next=" + encodeURIComponent(location.pathname) + (SW.token() ? "&refused=1" : "");
      throw new Error("not logged in / 未登录");
    }
    if (!res.ok) {
      let detail = res.statusText, kind = null, problem = null;
      try {
        problem = await res.json();
        detail = SW.refusalText(problem) || detail;
        kind = SW.problemKind(problem);
      } catch (e) { /* not JSON */ }
      // kind: what a page may act on; problem: the whole document, for a page that says it in its own words
      throw Object.assign(new Error(res.status + ": " + detail), { kind, problem });
    }
    return res;
  },
  // What a refusal says to staff: a field refusal (validation-error, errors[]) worded in Chinese by our own checks
  // without its location ("body.lon: 经纬度须同时填写…" reads "经纬度须同时填写…"), one in FastAPI's English with it.
  refusalText(problem) {
    if (!Array.isArray(problem.errors) || !problem.errors.length) return problem.detail;
    return problem.errors.map((e) => /^[\u3400-\u9fff]/.test(e.msg || "") ? e.msg
      : (e.loc || []).join(".") + ": " + e.msg).join("; ");
  },
  // Why the API refused a token (a 401), when the reason is other than unknown or revoked: an expired token's
  // problem detail says when it expired, in Chinese and English. null otherwise (the page says it in its own words).
  async refusal(res) {
    try {
      const problem = await res.json();
      return SW.problemKind(problem) === SW.EXPIRED ? problem.detail : null;
    } catch (e) { return null; }  // not JSON
  },
  // The kind of problem the API answered: its type's last part (urn:streetwatch:problem:<kind>, made in one place,
  // api/problems.py), so the page names a kind as api/auth.py does and never the URI.
  problemKind(problem) { return String(problem.type || "").split(":").pop(); },
  EXPIRED: "token-expired",  // api/auth.py's EXPIRED (tests/test_review_pages.py holds the two the same)
  async json(path, opts) { return (await SW.api(path, opts)).json(); },

  // GET `path`'s JSON for the list `key` of a page (its table, loaded by the page at its opening, by its filter and
  // by its pager alike), the load of `key` before it aborted if still on its way: a slow earlier answer (the page's
  // own first load arriving after the one the reader asked for) drew its list over the newer one. -> the answer, or
  // null for a load a newer one overtook, of which its caller draws and says nothing (its failure is no longer news).
  async newest(key, path) {
    SW.loading[key]?.abort();
    const mine = SW.loading[key] = new AbortController();
    try {
      const answer = await SW.json(path, { signal: mine.signal });
      return mine.signal.aborted ? null : answer;
    } catch (e) {
      if (mine.signal.aborted) return null;
      throw e;
    }
  },
  loading: {},  // the AbortController of each list's load on its way (SW.newest), by key

  // POST a form as SW.json does, showing how much of it has gone in `bar` (a <progress>) and `text` ("1.2 / 35.0 MB"):
  // fetch reports no upload progress, and a photo batch or patrol video on a phone's network otherwise showed
  // nothing for minutes.
  upload(path, form, bar, text) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      xhr.setRequestHeader("Authorization", "Bearer " + SW.token());
      bar.value = 0;
      xhr.upload.onprogress = (ev) => {
        if (!ev.lengthComputable) return;
        bar.value = ev.loaded / ev.total;
        text.textContent = `${(ev.loaded / 1048576).toFixed(1)} / ${(ev.total / 1048576).toFixed(1)} MB`;
      };
      xhr.onload = () => {
        bar.value = 1;  // the server answered: the body is all there
        const res = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
        SW.checked(res).then((ok) => ok.json()).then(resolve, reject);
      };
      // Nothing of a body cut off is kept (the server makes no job of it), and the chosen files stay chosen.
      xhr.onerror = () => reject(SW.offline("上传失败：网络中断。照片仍已选好，网络恢复后再点“上传” " +
        "Upload failed: the network dropped. The photos are still chosen: tap Upload again once it is back"));
      xhr.send(form);
    });
  },

  // Runs `work` with `button` disabled and saying `busy` (上传中…), so a second tap on a slow network sends nothing twice.
  async busy(button, busy, work) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = busy;
    try { return await work(); } finally { button.disabled = false; button.textContent = label; }
  },

  // The attributes that make a row or list item picked by keyboard as by mouse (a case, a shop, a unit): a Tab stop
  // (tabindex 0), and Enter or Space on it does what a click does.
  pickable(pick) {
    return {
      tabindex: "0", onclick: pick,
      onkeydown: (ev) => {
        if ((ev.key === "Enter" || ev.key === " ") && ev.target === ev.currentTarget) { ev.preventDefault(); pick(ev); }
      },
    };
  },

  // Marks which of `nodes` is the one shown (a camera, a unit's row): class current, drawn with a dark bar at its left
  // (app.css; its light background alone was 1.3:1 against the others'), and aria-current for a screen reader.
  markCurrent(nodes, isCurrent) {
    for (const node of nodes) {
      const on = isCurrent(node);
      node.classList.toggle("current", on);
      node.setAttribute("aria-current", String(on));
    }
  },

  el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return node;
  },

  // GET /api/v1/meta, asked once per page (a failed answer is asked again next time): the forms' lists, the
  // Chinese names, and the city's time zone, which it keeps in SW.zone for SW.time.
  meta() {
    if (!SW.metaAnswer) {
      SW.metaAnswer = SW.json("/api/v1/meta").then((m) => { SW.zone = m.timezone; SW.showZone(); return m; },
                                                    (e) => { SW.metaAnswer = null; throw e; });
    }
    return SW.metaAnswer;
  },
  metaAnswer: null,
  zone: null,  // the city's IANA time zone (analytics.timezone), once SW.meta() has answered

  // An ISO 8601 time (the API's are UTC) on the city's clock, whatever the zone of the PC the page runs on
  // (an office PC set to UTC showed a 10:00 Hangzhou case as 02:00): "2025-03-14 10:00". Pages show times
  // after SW.meta(); before it answers the zone is unknown and the time is shown in UTC, saying so.
  time(iso) {
    const d = iso ? new Date(iso) : null;
    if (!d || isNaN(d)) return iso || "";
    const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
      timeZone: SW.zone || "UTC", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).formatToParts(d).map((p) => [p.type, p.value]));
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}${SW.zone ? "" : " UTC"}`;
  },

  // The zone the times are in, named in the navigation bar (the reader's PC may be set to another).
  showZone() {
    const box = document.getElementById("zone");
    if (box && SW.zone) box.textContent = `时区 Time zone: ${SW.zone}`;
  },

  // A violation type as staff read it, its id beside it ("机动车乱停放 illegal_parking"), from GET /api/v1/meta's types.
  typeName(meta, id) {
    const t = ((meta && meta.types) || []).find((x) => x.id === id);
    return t ? `${t.name_zh} ${id}` : id;
  },

  // A case state as staff read it, its code beside it ("待审核 candidate"), from GET /api/v1/meta's state_names.
  stateName(meta, state) {
    const zh = ((meta && meta.state_names) || {})[state];
    return zh ? `${zh} ${state}` : state;
  },

  // A review decision as staff read it, its code beside it ("已驳回 rejected"), from GET /api/v1/meta's review_names;
  // its reject reason the same way ("重复案件 duplicate") from the meta's reject_reasons.
  reviewName(meta, decision) {
    const zh = ((meta && meta.review_names) || {})[decision];
    return zh ? `${zh} ${decision}` : decision;
  },
  reasonName(meta, code) {
    const r = ((meta && meta.reject_reasons) || []).find((x) => x.code === code);
    return r ? `${r.zh} ${code}` : code;
  },
  // A reason of a case's history as staff read it, the stored English after it ("生成案件 case drafted", "已送达平台
  // delivered as DCM-7"), from the meta's history_reasons (the first pattern that matches); a reviewer's or a platform's
  // own words as they are.
  historyReason(meta, text) {
    const r = ((meta && meta.history_reasons) || []).find((x) => new RegExp(x.pattern).test(text || ""));
    return r ? `${r.zh} ${text}` : text || "";
  },
  // A case's source kind as staff read it ("照片 photo_batch"), from the meta's source_names.
  sourceName(meta, kind) {
    const zh = ((meta && meta.source_names) || {})[kind];
    return zh ? `${zh} ${kind}` : kind;
  },

  // An upload job's state (triage and patrol jobs alike) as staff read it, its code beside it ("处理中 running").
  jobStateName(state) {
    const zh = { queued: "排队中", running: "处理中", done: "完成", failed: "失败" }[state];
    return zh ? `${zh} ${state}` : state;
  },

  // While a job's inputs are judged (a photo upload's photos, a patrol's frames): their rate in `unit` ("张/秒 photos/s")
  // and the minutes left at it (its progress's rate and eta_s, from the inputs this run records: a resumed job's
  // earlier ones are not its rate), rounded up, so the last minute says 约剩 1 分钟; "" without a rate.
  pace(p, unit) {
    if (p.rate == null) return "";
    const left = p.eta_s == null ? "" : ` · 约剩 ${Math.ceil(p.eta_s / 60)} 分钟 about ${Math.ceil(p.eta_s / 60)} min left`;
    return ` · ${p.rate.toFixed(1)} ${unit}${left}`;
  },

  // An upload job's phase (a photo upload's or a patrol video's progress.phase) as staff read it, the code's words
  // beside it; while the job waits (its `waiting`: the case store gone) the job's own sentence, which says what it
  // does meanwhile and for how long. One table for both pages (each had its own copy).
  JOB_PHASES: { queued: "排队中 queued", photos: "识别照片 photos", sampling: "抽取画面 sampling", frames: "识别画面 judging frames",
                cases: "生成案件 building cases", store: "等待案件库恢复… waiting for the case store", done: "完成 done",
                failed: "失败 failed" },
  jobPhase(job) {
    return job.waiting || SW.JOB_PHASES[job.progress.phase] || job.progress.phase;
  },

  // A job's retry of the evidence spool (its summary's spool: a photo upload's or a patrol's) as staff read it: the
  // bundles earlier jobs left there while storage was down stored now, and those still waiting, the job's own
  // included (their reasons are in summary.spool); none when the spool is empty or the job is older than the news.
  spoolNews(summary) {
    const s = summary && summary.spool;
    if (!s) return [];
    return [...(s.uploaded ? [`证据已补传 ${s.uploaded} 份 evidence uploaded`] : []),
      ...(s.waiting ? [`证据待上传 ${s.waiting} 份 evidence waiting for storage`] : [])];
  },

  // What a file read had to check (an answer's `warnings`: a register's import, the scores' cut-off file), one list
  // item each, marked 提醒 before its Chinese-first text: the city page's imports and the scores page show them alike.
  warningItems(warnings) {
    return (warnings || []).map((w) => SW.el("li", {}, `提醒 ${w}`));
  },

  PAGE: 200,  // rows a long list's table shows (the API's limit); the rest are a 下一页 away (its offset)

  // The pager under list `name` (#NAME-pager, a <nav> named by SW.pagerName: .prev, .range, .next) for `page` of a long list ({items, total, limit,
  // offset}: the queue's cases, the city page's warnings, shops and call-out numbers, the reports, the scores' units)
  // that `load(query, offset)` drew from `query` (the API's filter as the boxes held it when the reader asked for the
  // list: 筛选, 搜索, 评分): which rows of how many it shows (counted in the box's data-unit, 条 else), and 上一页/下一页
  // loading that query at the offset before or after. The boxes are not read again: a box changed without pressing its
  // button had the next page load another list's rows under the one shown. SW.shown[name] keeps the query and offset
  // drawn, for a page that loads the list shown again (after an edit) or asks which query it shows. A list whole on its
  // first page (an empty one too) has no 上一页/下一页: two greyed buttons under 3 cases or none read as a list not loaded.
  // The same pager is drawn above the list too (#NAME-pager-top, SW.topPager), but for a list whole on its first page:
  // under a 200-row table alone it was 6,600 px down a desktop's page.
  pager(name, page, query, load) {
    SW.shown[name] = { query, offset: page.offset };
    const box = document.getElementById(`${name}-pager`), top = SW.topPager(box);
    const last = page.offset + page.items.length, unit = box.dataset.unit || "条";
    const whole = page.offset === 0 && last >= page.total;
    const turn = (offset) => () => Promise.resolve(load(query, offset)).catch((e) => SW.say(e.message, true));
    top.hidden = whole;
    for (const pager of [top, box]) {
      // the Chinese and the English each unbroken (on a phone the range wrapped at its dash: 1– on a line, 200 of 209
      // on the next), a line broken between them alone
      pager.querySelector(".range").replaceChildren(...(page.items.length
        ? [SW.el("span", {}, `第 ${page.offset + 1}–${last} ${unit}，共 ${page.total} ${unit}`), " ",
           SW.el("span", {}, `${page.offset + 1}–${last} of ${page.total}`)] : []));
      const before = Math.max(0, page.offset - page.limit);
      SW.pageButton(pager.querySelector(".prev"), whole, page.offset === 0, turn(before), before, page.offset, unit);
      SW.pageButton(pager.querySelector(".next"), whole, last >= page.total, turn(last), last, Math.min(last + page.limit, page.total), unit);
    }
  },

  // A pager's 上一页 or 下一页 (`button`), which loads rows `from` (an offset) to `to` by `turn`: its name says which rows
  // it goes to (上一页 Previous：第 1–200 件 1–200), where the top pager's and the bottom one's read alike to a screen
  // reader, four buttons named 上一页 and 下一页 alone; one disabled has its words alone, going nowhere.
  pageButton(button, hidden, disabled, turn, from, to, unit) {
    Object.assign(button, { hidden, disabled, onclick: turn });
    if (disabled) button.removeAttribute("aria-label");
    else button.setAttribute("aria-label", `${button.textContent}：第 ${from + 1}–${to} ${unit} ${from + 1}–${to}`);
  },

  // The name of pager `box` (a <nav>, one of the page's landmarks) above its list (`top`) or under it: the list's, from
  // its data-list and data-list-en, and where it is (案件列表分页（上） case list pages (top)); two unnamed pagers a list
  // were two pairs of 上一页/下一页 a screen reader could not tell apart.
  pagerName(box, top) {
    return `${box.dataset.list}分页（${top ? "上" : "下"}） ${box.dataset.listEn} pages (${top ? "top" : "bottom"})`;
  },

  // The copy of pager `box` above its list (the element just before it in every page: the table, or the queue's list),
  // made at its first drawing: ids of the pager's own parts (the queue's #page-next) stay the one under the list's.
  topPager(box) {
    let top = document.getElementById(`${box.id}-top`);
    if (!top) {
      top = Object.assign(box.cloneNode(true), { id: `${box.id}-top` });
      top.classList.add("top");
      for (const part of top.querySelectorAll("[id]")) part.removeAttribute("id");
      box.previousElementSibling.before(top);
      box.setAttribute("aria-label", SW.pagerName(box, false));
      top.setAttribute("aria-label", SW.pagerName(box, true));
    }
    return top;
  },
  shown: {},  // each paged list's {query, offset} as SW.pager last drew it, by name

  // A table's rows (`selector`: its tbody), or one row saying there are none (`none`, Chinese first) across its
  // columns: an empty table reads like a page that did not load.
  fill(selector, rows, none) {
    const columns = document.querySelectorAll(selector.replace("tbody", "thead th")).length;
    document.querySelector(selector).replaceChildren(...(rows.length ? rows
      : [SW.el("tr", { class: "none" }, SW.el("td", { colspan: columns }, none))]));
  },

  // The page's message line: `text`, a string or a list of strings and nodes (a link on to the next page). `bad`: true
  // for an error (something failed or was refused), "warn" for work done with something to check (rows refused, a
  // job's photo with no case). Both are drawn on red, and each is marked in words too (app.css: ✖ 错误 Error：,
  // ⚠ 请核对 Check：), which a screen reader reads with the line: the red alone said nothing to one who cannot see it.
  say(text, bad = false) {
    const box = document.getElementById("status");
    if (!box) return;
    box.replaceChildren(...[].concat(text));
    box.className = bad === "warn" ? "status bad warn" : bad ? "status bad error" : "status";
  },

  // Shapes laid over an image, boxes in pixels of a (width x height) image and polygons in 0..1 coordinates, in an
  // <svg> stretched to it, and their labels ("客车 bus 0.94" by SW.boxLabel with `meta`, a zone's id) as text in CSS pixels placed over it (in the svg
  // they scaled with the image, ~7 px and unreadable with the 810 px photo shown 380 px wide: a phone, or an office
  // screen's 62vh). The labels are placed by SW.placeLabels whenever the image is shown at a new size. The outlines
  // are drawn 2 CSS px wide however the image is scaled (app.css, non-scaling-stroke): in image pixels, ~1 px on a phone.
  overlay(width, height, boxes = [], polygons = [], meta = null) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");  // the shapes, unnamed, read as an empty image; their labels are the text
    const labels = [];
    for (const p of polygons) {
      const poly = document.createElementNS(ns, "polygon");
      poly.setAttribute("points", p.points.map(([x, y]) => `${x * width},${y * height}`).join(" "));
      poly.setAttribute("class", "zone " + (p.kind || ""));
      svg.append(poly);
      const [x, y] = p.points[0];
      if (p.label) labels.push(SW.overlayLabel("zone-label", p.label, [x, y, x, y], p.title));
    }
    for (const b of boxes) {
      const [x1, y1, x2, y2] = b.xyxy;
      const r = document.createElementNS(ns, "rect");
      Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: "box" })
        .forEach(([k, v]) => r.setAttribute(k, v));
      svg.append(r);
      labels.push(SW.overlayLabel("box-label", SW.boxLabel(meta, b), [x1 / width, y1 / height, x2 / width, y2 / height]));
    }
    const overlay = SW.el("div", { class: "overlay" }, svg, ...labels);
    new ResizeObserver(() => SW.placeLabels(overlay)).observe(overlay);  // its first call once it is shown
    return overlay;
  },
  // An evidence box's label: its class as staff read it, the detector's name beside it, and its confidence ("客车 bus
  // 0.94"; GET /api/v1/meta's class_names, from the taxonomy), the class name alone where the taxonomy has no Chinese.
  boxLabel(meta, box) {
    const name = box.class_name || "?", zh = ((meta && meta.class_names) || {})[name];
    return `${zh ? `${zh} ${name}` : name} ${box.confidence != null ? box.confidence.toFixed(2) : ""}`;
  },
  // One label of SW.overlay, naming `anchor` ([x1, y1, x2, y2] in 0..1 of the image: a box, or a zone's first point),
  // `title` its tooltip.
  overlayLabel(kind, text, anchor, title) {
    const label = SW.el("span", title ? { class: kind, title } : { class: kind }, text);
    label.anchor = anchor;
    return label;
  },
  // A zone ({id, name, kind}: a scene's or the evidence's) as SW.overlay labels it: by its name where it has one
  // (北门人行道, as city staff know it), its id and kind in the tooltip, the label kept short on a phone; by its id
  // and kind otherwise.
  zoneLabel(zone) {
    const id = zone.kind ? `${zone.id} (${zone.kind})` : zone.id;
    return { label: zone.name || id, title: id };
  },
  // Places the labels of an overlay as it is shown now, in CSS px, one after the other so none covers another (two
  // zones whose first points were close had their labels drawn over each other, unreadable on a phone), the evidence
  // boxes' first (a box is what a reviewer judges: a zone's label placed before it pushed "bus 0.94" off its place
  // above the box): each is tried above its anchor, below it and inside it (a zone's first below its point, then
  // above), then a label's height further down at a time to the image's bottom, then up from above it, and put at
  // the first place free of the labels already placed (at its first where none is). Across, a label is moved left by
  // its anchor's share of the image's width, so one at the left starts at its anchor and one at the right ends there,
  // and it is kept within the image (one wider than the image is wrapped to its width: app.css). One placed away from
  // its anchor has a leader line from the anchor to it.
  placeLabels(overlay) {
    const W = overlay.clientWidth, H = overlay.clientHeight;
    if (!W || !H) return;  // not shown
    const svg = overlay.querySelector("svg"), view = svg.viewBox.baseVal;
    svg.querySelectorAll("line.leader").forEach((line) => line.remove());
    const placed = [];
    const free = (l, t, w, h) => placed.every(([l2, t2, r2, b2]) => l + w <= l2 || r2 <= l || t + h <= t2 || b2 <= t);
    for (const label of [...overlay.querySelectorAll(".box-label"), ...overlay.querySelectorAll(".zone-label")]) {
      Object.assign(label.style, { left: "0px", top: "0px" });  // measured at the image's full width
      const { width: w, height: h } = label.getBoundingClientRect();
      const [x1, y1, x2, y2] = label.anchor.map((v, i) => v * (i % 2 ? H : W));
      const isBox = label.classList.contains("box-label"), gap = isBox ? 0 : 2, pad = isBox ? 0 : 4;
      const share = label.anchor[0];
      const left = Math.min(Math.max(x1 + pad * (1 - 2 * share) - share * w, 0), Math.max(W - w, 0));
      const above = y1 - h - gap, inside = y1 + gap, below = y2 + gap;
      const tops = isBox ? [above, below, inside] : [inside, above];
      for (let t = inside + h; t < H; t += h) tops.push(t);
      for (let t = above - h; t > -h; t -= h) tops.push(t);
      const within = tops.map((t) => Math.min(Math.max(t, 0), Math.max(H - h, 0)));
      const top = within.find((t) => free(left, t, w, h)) ?? within[0];
      Object.assign(label.style, { left: `${left}px`, top: `${top}px` });
      placed.push([left, top, left + w, top + h]);
      SW.leader(svg, [x1, y1, x2, y2], [left, top, left + w, top + h], view.width / W, view.height / H);
    }
  },
  // A line from an anchor to its label (both [left, top, right, bottom] in CSS px) between their nearest points,
  // drawn in the svg's units (`sx`, `sy` per CSS px) where the label is more than 6 px from its anchor.
  leader(svg, anchor, label, sx, sy) {
    const near = (a1, a2, b1, b2) => a2 < b1 ? [a2, b1] : b2 < a1 ? [a1, b2]
      : Array(2).fill((Math.max(a1, b1) + Math.min(a2, b2)) / 2);
    const [ax, lx] = near(anchor[0], anchor[2], label[0], label[2]), [ay, ly] = near(anchor[1], anchor[3], label[1], label[3]);
    if (Math.hypot(lx - ax, ly - ay) <= 6) return;
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    Object.entries({ x1: ax * sx, y1: ay * sy, x2: lx * sx, y2: ly * sy, class: "leader" }).forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
  },

  // A file from the API (auth header needed, so no plain link): saved under `filename`, or opened in a tab.
  async download(path, filename) {
    const url = URL.createObjectURL(await (await SW.api(path)).blob());
    const a = SW.el("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  },
  async open(path) {
    const url = URL.createObjectURL(await (await SW.api(path)).blob());
    window.open(url, "_blank");
  },

  // Each file field of the page (data-pick: the button's words, 选择照片 Choose photos) as a button in the staff's words
  // with what was chosen beside it in Chinese, in place of the browser's own "Choose Files / No file chosen", which is
  // in the browser's language. The field stays, out of sight but in the Tab order: the button is its <label for=>, so
  // a click on it opens the chooser, and Tab stops on the field (its focus ring drawn on the button), Enter or Space
  // opening the chooser. Called by each page with such a field.
  filePickers() {
    for (const input of document.querySelectorAll("input[type=file][data-pick]")) {
      if (!input.id) input.id = `${input.form.id}-${input.name}`;
      const chosen = SW.el("span", { id: `${input.id}-chosen`, class: "file-chosen", "aria-live": "polite" });
      const show = () => { chosen.textContent = SW.chosenFiles(input.files); };
      input.classList.add("file-input");
      input.setAttribute("aria-describedby", chosen.id);
      input.after(SW.el("label", { for: input.id, class: "file-button" }, input.dataset.pick), " ", chosen);
      input.addEventListener("change", show);
      input.form.addEventListener("reset", () => setTimeout(show));  // after the reset has emptied the field
      show();
    }
  },

  // What a file field holds, as its line beside the button says it: none, the one file's name, or how many.
  chosenFiles(files) {
    if (!files.length) return "未选择文件 No file chosen";
    if (files.length === 1) return `已选择 ${files[0].name}`;
    return `已选择 ${files.length} 个文件 ${files.length} files chosen`;
  },

  nav(active) {
    const links = [["queue", "审核队列 Review queue"], ["upload", "照片上传 Photo upload"], ["cameras", "摄像头 Cameras"],
                   ["map", "地图 Map"], ["scores", "考核评分 Scores"], ["reports", "分析报告 Reports"],
                   ["city", "城市管理 City workflows"]];
    const bar = SW.el("nav", { class: "site", "aria-label": "页面 Pages" }, ...links.map(([p, label]) =>
      SW.el("a", p === active ? { href: "/ui/" + p, class: "active", "aria-current": "page" } : { href: "/ui/" + p }, label)));
    bar.append(SW.el("span", { id: "zone", class: "right" }), SW.el("a", { href: "/ui/login" }, "令牌 Token"));
    document.body.prepend(bar);
    SW.showZone();
    SW.meta().catch(() => {});  // the page that needs the answer says why it failed
  },
};
