// The case map: the city's grid cells and zones (its own GeoJSON, drawn by Leaflet; tiles only when
// configured), coloured by case count; a click lists the cases of the cell or zone.
"use strict";

const M = { map: null, groups: [], meta: null, base: null };
const STEPS = ["#fee5d9", "#fcae91", "#fb6a4a", "#de2d26", "#a50f15"];

function filterParams() {
  const q = new URLSearchParams();
  for (const [id, key] of [["f-period", "period"], ["f-type", "type"], ["f-state", "state"], ["f-source", "source"]]) {
    const v = document.getElementById(id).value.trim();
    if (v) q.set(key, v);
  }
  return q;
}

function colour(n, max) {
  if (!n) return "#f1f3f5";
  return STEPS[Math.min(STEPS.length - 1, Math.floor((n / Math.max(max, 1)) * STEPS.length - 1e-9))];
}

async function loadMeta() {
  M.meta = await SW.meta();
  for (const t of M.meta.types) document.getElementById("f-type").append(SW.el("option", { value: t.id }, `${t.name_zh} ${t.name_en}`));
  for (const s of M.meta.states) document.getElementById("f-state").append(SW.el("option", { value: s }, SW.stateName(M.meta, s)));
}

function featureLabel(layer, p) {
  const where = layer === "grid" ? [p.name, p.street, p.squad].filter(Boolean).join(" · ") : [p.name, p.kind].filter(Boolean).join(" · ");
  return `${layer === "grid" ? "网格" : "区域"} ${p.id}${where ? " " + where : ""}`;
}

// The cases of cell or zone `p` under `drawn`, the filter of the map drawn (filterParams() at its load): read at the
// click, a box changed without 筛选 listed another filter's cases beside the counts shown.
async function showCases(layer, p, drawn) {
  document.querySelectorAll("#map path.selected").forEach((e) => e.classList.remove("selected"));
  document.querySelectorAll(`#map path[data-feature="${CSS.escape(layer + ":" + p.id)}"]`).forEach((e) => e.classList.add("selected"));
  const q = new URLSearchParams(drawn);
  q.set("layer", layer);
  q.set("id", p.id);
  const box = document.getElementById("feature");
  box.replaceChildren(SW.el("h2", {}, featureLabel(layer, p)), SW.el("p", {}, "加载中 loading…"));
  let page;
  try {
    page = await SW.newest("map-cases", "/api/v1/map/cases?" + q);
  } catch (e) {  // not left on "loading"
    box.replaceChildren(SW.el("h2", {}, featureLabel(layer, p)), SW.el("p", { class: "status bad" }, `案件无法加载 Cases could not be loaded: ${e.message}`));
    throw e;
  }
  if (!page) return;  // another cell or zone was clicked while this one's list was on its way
  const list = SW.el("ul", { id: "feature-cases", class: "list" }, ...page.items.map((c) => SW.el("li", { "data-case": c.id },
    SW.el("span", { class: "state" }, SW.stateName(M.meta, c.state)), `${SW.typeName(M.meta, c.type)} · ${c.id}`, SW.el("br"),
    SW.el("small", {}, `${SW.time(c.opened_at)} · ${c.address || ""}${c.objects > 1 ? ` · ${c.objects} 个 objects` : ""}`))));
  box.replaceChildren(SW.el("h2", {}, featureLabel(layer, p)),
    SW.el("p", { id: "feature-total", class: page.truncated ? "status bad" : "" }, featureTotal(page)),
    list);
}

// What a cell's or zone's list shows of what: its total is its count on the map, of the map's newest max_cases cases
// (truncated: more matched on the whole map), and the list its newest cases, fewer than the total past 500.
function featureTotal(page) {
  const n = page.items.length;
  const shown = page.total > n ? `前 ${n} 条，共 ${page.total} 条 newest ${n} of ${page.total}` : `${page.total} 件 cases`;
  return shown + (page.truncated ? ` · 仅统计全图最新 ${page.max_cases} 件，请缩短期间或收窄筛选 only the map's newest `
    + `${page.max_cases} counted: choose a shorter period or a narrower filter` : "");
}

// A cell's or zone's shape as a keyboard and a screen reader reach it (Leaflet's shapes answer a mouse alone, and a
// reader heard "graphics symbol" with no name): a Tab stop named as its tooltip ("网格 … · 3 件"), Enter or Space
// listing its cases as a click does.
function pickableShape(shape, feature, name, open) {
  if (!shape) return;
  const { tabindex, onkeydown } = SW.pickable(open);
  Object.entries({ "data-feature": feature, tabindex, role: "button", "aria-label": name }).forEach(([k, v]) => shape.setAttribute(k, v));
  shape.addEventListener("keydown", onkeydown);
}

// The colours as colour() gives them: a count n is in step i when n > i·max/steps, so step i starts at
// floor(i·max/steps) + 1 (with 10 the highest count, 1+ 3+ 5+ 7+ 9+; ceil said 2+ for a 2 drawn in the first
// step). A step no count reaches (a highest count under 5) is left out rather than shown with its neighbour's number.
function legend(max) {
  const box = document.getElementById("legend");
  const firsts = STEPS.map((_, i) => Math.floor((i * max) / STEPS.length) + 1);
  const reached = STEPS.map((c, i) => [c, firsts[i]]).filter(([, first], i) => i === STEPS.length - 1 || first < firsts[i + 1]);
  box.replaceChildren(SW.el("span", {}, "案件数 cases: "), SW.el("i", { style: "background:#f1f3f5" }), "0 ",
    ...(max ? reached.flatMap(([c, first]) => [SW.el("i", { style: `background:${c}` }), `${first}+ `]) : []));
}

async function load() {
  const drawn = filterParams();
  const data = await SW.newest("map", "/api/v1/map?" + drawn);
  if (!data) return;  // a newer load overtook it (a filter submitted while the page's first was on its way)
  if (!M.map) {
    // its zoom buttons named in the staff's language (Leaflet's own say "Zoom in" / "Zoom out")
    M.map = L.map("map", { zoomSnap: 0.25, attributionControl: !!data.tile_url, zoomControl: false });
    L.control.zoom({ zoomInTitle: "放大 Zoom in", zoomOutTitle: "缩小 Zoom out" }).addTo(M.map);
    // Leaflet writes a credit as HTML: the settings' text is escaped to show as written (never run as markup)
    const credit = SW.el("span", {}, data.tile_attribution || "").innerHTML;
    if (data.tile_url) L.tileLayer(data.tile_url, { attribution: credit, maxZoom: 19 }).addTo(M.map);
  }
  M.groups.forEach((g) => g.remove());
  M.groups = [];
  const counts = [...data.layers.grid.features, ...data.layers.zones.features].map((f) => f.properties.count);
  const max = Math.max(0, ...counts);
  for (const layer of ["grid", "zones"]) {
    const fc = data.layers[layer];
    if (!fc.features.length) continue;
    const group = L.geoJSON(fc, {
      style: (f) => ({ className: `sw-${layer === "grid" ? "cell" : "zone"} sw-${layer}-${f.properties.id}`,
                       color: layer === "grid" ? "#456" : "#b35c00", weight: layer === "grid" ? 1 : 2,
                       dashArray: layer === "grid" ? null : "6 4", fillColor: colour(f.properties.count, max),
                       fillOpacity: layer === "grid" ? 0.75 : 0.25 }),
      onEachFeature: (f, item) => {
        const name = `${featureLabel(layer, f.properties)} · ${f.properties.count} 件`;
        const open = () => showCases(layer, f.properties, drawn).catch((e) => SW.say(e.message, true));
        // an element, not a string (Leaflet writes a string as HTML): names from the grid and zone files are text
        item.bindTooltip(SW.el("span", {}, name), { sticky: true });
        item.on("click", open);
        item.on("add", () => pickableShape(item.getElement(), `${layer}:${f.properties.id}`, name, open));
      },
    }).addTo(M.map);
    M.groups.push(group);
  }
  const bounds = M.groups.length ? L.featureGroup(M.groups).getBounds() : null;
  if (bounds && bounds.isValid()) M.map.fitBounds(bounds, { padding: [10, 10] });
  else M.map.setView([30.27, 120.15], 12);
  legend(max);
  keepSince(data.since);
  SW.say(M.groups.length ? counted(data) : "未配置网格或区域 No grid or zone file configured (analytics.grid / analytics.zones)",
    (!M.groups.length || data.truncated) && "warn");
}

// The first day the map counts without a period, for export.js: the map's export covers those days. Kept when a
// period is shown (the answer has none), so clearing the period exports the default window again.
function keepSince(since) {
  const field = document.getElementById("f-since");
  if (!since || field.value === since) return;
  field.value = since;
  field.dispatchEvent(new Event("change", { bubbles: true }));  // export.js says the period again
}

// What the counts are of: without a period the service counts the last analytics.map_days days (since), and it
// counts at most analytics.map_max_cases cases, the newest (truncated), so the numbers say which.
function counted(data) {
  const parts = [`${data.total} 件 cases`, `${data.unplaced} 件不在网格内 outside the grid`];
  if (data.since) parts.unshift(`${data.since} 起 since ${data.since}（未选期间 no period chosen）`);
  if (data.truncated) parts.push(`仅统计最新 ${data.total} 件，请缩短期间或收窄筛选 only the newest ${data.total} counted: choose a shorter period or a narrower filter`);
  return parts.join(" · ");
}

document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); load().catch((err) => SW.say(err.message, true)); });
SW.nav("map");
loadMeta().then(load).catch((e) => SW.say(e.message, true));
