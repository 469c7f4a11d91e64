// Cameras: list with health, the snapshot with the scene's zones drawn, the scene as editable JSON.
"use strict";

const C = { cameras: [], current: null, objectUrl: null };

// What staff call the watcher's statuses and the health conditions (the codes stay beside them).
const HEALTH_ZH = {
  starting: "启动中", online: "在线", running: "运行中", reconnecting: "重连中", offline: "离线", finished: "回放结束",
  failed: "失败", stopped: "已停止", refused: "配置被拒", left_behind: "未按时停止", unknown: "未知",
  frozen: "画面冻结", black: "黑屏", covered: "镜头遮挡", moved: "视角偏移", infrared: "夜视黑白画面（难以识别摊点和出店经营）",
  view_lost: "看不到布控区域（违规保持开启）", resolution_changed: "分辨率变化",
  config_refused: "新配置被拒，沿用上次有效配置",
};

function zh(code) { return HEALTH_ZH[code] ? `${HEALTH_ZH[code]} ${code}` : code; }

function healthText(h) {
  const conditions = h.conditions.map((c) => zh(c.kind)).join(", ");
  return `${zh(h.status)}${conditions ? " · " + conditions : ""}`;
}

// What the list says under a camera: why it is in its status, each condition's detail, why its scene is refused.
function notes(cam) {
  const h = cam.health;
  const lines = h.detail ? [`${zh(h.status)}: ${h.detail}`] : [];
  for (const c of h.conditions) if (c.detail && c.detail !== h.detail) lines.push(`${zh(c.kind)}: ${c.detail}`);
  if (cam.scene_error) lines.push(`场景错误 scene error: ${cam.scene_error}`);
  return lines.flatMap((line) => [SW.el("br"), SW.el("small", { class: "note" }, line)]);
}

async function loadCameras() {
  C.cameras = await SW.json("/api/v1/cameras");
  listCameras();
  if (!C.cameras.length) SW.say("未配置摄像头 No cameras configured (service.cameras_file)");
  else if (!C.current) show(C.cameras[0].id);
}

// The cameras whose id or name holds the search box's text (all of them when it is empty), and how many of how many:
// a district's 200 cameras were one long list to scroll through. Filtered here, as the list comes whole.
function listCameras() {
  const q = document.getElementById("cameras-q").value.trim().toLowerCase();
  const shown = C.cameras.filter((cam) => !q || cam.id.toLowerCase().includes(q) || (cam.name || "").toLowerCase().includes(q));
  document.getElementById("cameras-count").textContent = q ? `${shown.length} / ${C.cameras.length}` : "";
  // a camera is picked by keyboard as by mouse (a Tab stop, Enter or Space), the one shown marked for a screen reader
  document.getElementById("cameras").replaceChildren(...(shown.length ? shown.map((cam) => SW.el("li", Object.assign({
    "data-camera": cam.id, class: C.current === cam.id ? "current" : "", "aria-current": String(C.current === cam.id),
  }, SW.pickable(() => show(cam.id))), SW.el("span", { class: "state" }, healthText(cam.health)),
  SW.el("span", { class: "name" }, cam.name || cam.id), SW.el("br"),
  SW.el("small", {}, `${cam.id} · ${cam.zones} 区域 zones${cam.scene_error ? " · 场景错误 scene error" : ""}`), ...notes(cam)))
    : C.cameras.length ? [SW.el("li", { class: "none" }, `没有编号或名称含「${q}」的摄像头 No camera's id or name holds ${q}`)] : []));
}

document.getElementById("cameras-q").addEventListener("input", listCameras);

// The camera's scene file in the box: as JSON where it reads as a mapping (a refused one too, to be fixed and saved),
// else its text; nothing of the camera shown before stays, whatever answers first.
async function show(id) {
  C.current = id;
  SW.markCurrent(document.querySelectorAll("#cameras li"), (li) => li.dataset.camera === id);
  const box = document.getElementById("snapshot");
  const text = document.getElementById("scene");
  const error = document.getElementById("scene-error");
  box.replaceChildren();
  text.value = "";
  error.textContent = "";
  let file = null;
  try {
    file = await SW.json(`/api/v1/cameras/${encodeURIComponent(id)}/scene-file`);
  } catch (e) { if (C.current === id) SW.say(e.message, true); }
  if (C.current !== id) return;  // another camera was picked meanwhile
  if (file) {
    text.value = file.scene ? JSON.stringify(file.scene, null, 2) : (file.text || "");
    const unreadable = file.scene ? "" : " · 文件不是 YAML/JSON 映射，请改写为 JSON 后保存 not a YAML/JSON mapping: rewrite it as JSON to save";
    error.textContent = file.error ? `场景错误 scene error: ${file.error}${file.text != null ? unreadable : ""}` : "";
  }
  const scene = file && !file.error ? file.scene : null;  // zones are drawn from a valid scene only
  try {
    const blob = await (await SW.api(`/api/v1/cameras/${encodeURIComponent(id)}/snapshot`)).blob();
    if (C.current !== id) return;
    if (C.objectUrl) URL.revokeObjectURL(C.objectUrl);
    C.objectUrl = URL.createObjectURL(blob);
    const zoneCount = scene ? `，${(scene.zones || []).length} 个区域 zones` : "";
    const img = SW.el("img", { id: "snapshot-image", src: C.objectUrl, alt: `摄像头 ${id} 快照 Camera snapshot${zoneCount}` });
    img.onload = () => {
      const zones = ((scene && scene.zones) || []).map((z) => ({ points: z.polygon, kind: z.kind, ...SW.zoneLabel(z) }));
      box.replaceChildren(img, SW.overlay(img.naturalWidth, img.naturalHeight, [], zones));
    };
    box.replaceChildren(img);
  } catch (e) {
    if (C.current === id) box.replaceChildren(SW.el("p", {}, "无快照 No snapshot: " + e.message));
  }
}

document.getElementById("save-scene").addEventListener("click", async () => {
  let data;
  try { data = JSON.parse(document.getElementById("scene").value); } catch (e) { SW.say("JSON 错误 invalid JSON: " + e.message, true); return; }
  try {
    await SW.json(`/api/v1/cameras/${encodeURIComponent(C.current)}/scene`, { method: "PUT", json: data });
    SW.say("已保存 Saved");
    await Promise.all([loadCameras(), show(C.current)]);  // the list's scene error goes with the fix
  } catch (e) { SW.say(e.message, true); }
});

SW.nav("cameras");
loadCameras().catch((e) => SW.say(e.message, true));
