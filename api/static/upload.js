// Triage upload: send files with upload progress (SW.upload), then poll the job until it is done.
"use strict";

// What staff call a photo's outcome and a job's state (the code stays beside it).
const STATUS_ZH = { ok: "已读取", error: "无法读取", duplicate: "重复" };
function zh(code) { return STATUS_ZH[code] ? `${STATUS_ZH[code]} ${code}` : SW.jobStateName(code); }

function send(files) {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  return SW.upload("/api/v1/triage/jobs", form, document.getElementById("upload-progress"), document.getElementById("upload-text"));
}

// The cases a finished job wrote (the review queue shows them): its groups that got a case id. A group gets
// none where the service writes no cases (no evidence key, or service.triage.cases: false).
function written(job) { return job.cases.filter((c) => c.case_id).length; }

// The progress line: photos recorded out of the total and the phase (or what the job waits for); once done, the job's groups and, only
// when it wrote any, its cases (job.cases lists groups, with or without a case), and the spool's news.
function showJob(job) {
  const p = job.progress;
  const bar = document.getElementById("job-progress");
  bar.max = p.total || 1;
  bar.value = p.done;
  const phase = SW.jobPhase(job);
  const cases = job.summary && written(job) ? ` · ${written(job)} 件案件 cases` : "";
  document.getElementById("job-text").textContent = `${p.done} / ${p.total ?? "?"} · ${phase}` + SW.pace(p, "张/秒 photos/s") +
    (job.summary ? ` · ${job.summary.groups} 组 groups${cases}` : "") + SW.spoolNews(job.summary).map((t) => ` · ${t}`).join("") + (job.error ? ` · ${job.error}` : "");
}

// What a finished job drafted: the cases the review queue shows, and the groups that got none and why (the
// service has no evidence key: each says so), never a count of groups as if all were cases; a link on to the queue.
function done(job) {
  const n = written(job);
  const missing = job.cases.find((c) => !c.case_id);
  return [`完成 Done: ${n} 件候选案件 candidate cases → `, SW.el("a", { href: "/ui/queue" }, "审核队列 Review queue"),
    missing ? ` · ${job.cases.length - n} 组未生成案件 groups without a case` +
      (missing.error ? `: ${missing.error}` : "（本服务不生成案件 this service writes no cases: service.triage.cases false）") : ""];
}

async function showResults(jobId) {
  const rows = await SW.json(`/api/v1/triage/jobs/${jobId}/results`);
  document.getElementById("results").replaceChildren(...rows.map((r) => SW.el("tr", { "data-status": r.status },
    SW.el("td", {}, r.source), SW.el("td", {}, zh(r.status)),
    SW.el("td", {}, found(r)),
    SW.el("td", {}, [r.reason_zh, r.reason].filter(Boolean).join(" — ")))));  // Chinese first, as inspectors read it
}

// What a photo showed: its findings, 未发现 none for a photo judged without any (an empty cell read as not yet judged);
// nothing for one not judged (unreadable, a duplicate), whose reason is beside it.
function found(r) {
  const findings = (r.findings || []).map((f) => `${f.name_zh} ${f.name_en} ${f.score.toFixed(2)}`).join("; ");
  return findings || (r.status === "ok" ? "未发现 none" : "");
}

// A finished job's report (every photo with its findings), opened with the token: a plain link would carry none.
function showReport(job) {
  const button = document.getElementById("job-report");
  button.hidden = job.state !== "done";
  button.onclick = () => SW.open(`/api/v1/triage/jobs/${job.id}/report`).catch((e) => SW.say(e.message, true));
}

// A job followed until it ends, through a dropped network: the photos are in (the job exists), so the page says so and
// asks again every few seconds (it stopped at the browser's "Failed to fetch", and an inspector uploaded them again).
async function follow(jobId) {
  for (let dropped = false; ;) {
    const job = await look(jobId);
    if (job && dropped) SW.say(`任务 Job ${jobId}`);  // the network is back: the warning is no longer news
    dropped = !job;
    if (job) {
      showJob(job);
      showReport(job);
      if (job.state === "done" || job.state === "failed") {
        SW.say(job.state === "done" ? done(job) : job.error, job.state !== "done" || (job.cases.some((c) => !c.case_id) && "warn"));
        listJobs();
        return job;
      }
    }
    await new Promise((r) => setTimeout(r, dropped ? 3000 : 1000));
  }
}

// One look at a job and its results: the job, or null where the network dropped (said in the status line).
async function look(jobId) {
  try {
    const job = await SW.json(`/api/v1/triage/jobs/${jobId}`);
    await showResults(jobId);  // results first: when the progress says done, the table is complete
    return job;
  } catch (e) {
    if (e.kind !== SW.OFFLINE) throw e;
    SW.say(`照片已上传（任务 ${jobId}），网络中断：恢复后自动继续，无需重新上传 ` +
      `Photos received (job ${jobId}); the network dropped: progress resumes by itself, no need to upload again`, "warn");
    return null;
  }
}

async function listJobs() {
  const jobs = await SW.json("/api/v1/triage/jobs");
  document.getElementById("jobs").replaceChildren(...jobs.slice(0, 20).map((j) => SW.el("li", {},
    SW.el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); follow(j.id); },  // named by more than its id
      "aria-label": `分拣任务 Triage job ${j.id} · ${SW.time(j.created_at)} · ${j.files.length} 文件 files` }, j.id),
    ` ${SW.time(j.created_at)} · ${j.files.length} 文件 files · ${zh(j.state)}`)));
  if (!jobs.length) document.getElementById("jobs").replaceChildren(SW.el("li", {}, "还没有任务 No jobs yet"));
}

document.getElementById("upload").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const files = document.getElementById("files").files;
  if (!files.length) { SW.say("请选择文件 Choose files first", true); return; }
  try {
    const job = await SW.busy(ev.submitter || ev.target.querySelector("button"), "上传中… Uploading…", () => send(files));
    ev.target.reset();  // the photos are in: a second tap of 上传 sends them no second time (it says none are chosen)
    SW.say(`任务 Job ${job.id}`);
    await follow(job.id);
  } catch (e) { SW.say(e.message, true); }
});

SW.filePickers();
SW.nav("upload");
SW.meta().then(listJobs).catch((e) => SW.say(e.message, true));
