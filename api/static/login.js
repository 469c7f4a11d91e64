// The login page: ask the API with the pasted token first, keep it (localStorage) only once the API accepts it,
// then go on to `next`; a refused token leaves the one kept before as it was. An expired token is said as the API
// says it (when it expired), here and when another page was refused it (SW.api keeps the reason in sessionStorage).
"use strict";

if (new URLSearchParams(location.search).get("refused")) {
  SW.say(sessionStorage.getItem("sw_refused") || "令牌已失效（已吊销或已更换），请粘贴新令牌 Your token was refused (revoked or replaced): paste a new one", true);
}
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = document.getElementById("token").value.trim();
  let res;
  try {
    res = await fetch("/api/v1/meta", { headers: { Authorization: "Bearer " + token } });
  } catch (e) {
    SW.say("无法连接服务 Cannot reach the service: " + e.message, true);
    return;
  }
  if (res.status === 401) { SW.say((await SW.refusal(res)) || "令牌无效 Invalid token", true); return; }
  // A valid token of a role the pages do not serve (integration: machines' webhook and metrics).
  if (res.status === 403) { SW.say("此令牌无权使用审核页面 This token's role cannot use the review pages", true); return; }
  if (!res.ok) { SW.say("服务出错，请稍后再试 The service answered " + res.status + ": try again later", true); return; }
  SW.setToken(token);
  sessionStorage.removeItem("sw_refused");
  const next = new URLSearchParams(location.search).get("next") || "/ui/queue";
  location.href = next.startsWith("/ui/") ? next : "/ui/queue";
});
