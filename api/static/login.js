// The login page: keep the pasted token (localStorage) once the API accepts it, then go on to `next`.
"use strict";

if (new URLSearchParams(location.search).get("refused")) SW.say("令牌已失效（已吊销或已更换），请粘贴新令牌 Your token was refused (revoked or replaced): paste a new one", true);
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  SW.setToken(document.getElementById("token").value);
  const res = await fetch("/api/v1/meta", { headers: { Authorization: "Bearer " + SW.token() } });
  if (!res.ok) { SW.say("令牌无效 Token refused (" + res.status + ")", true); return; }
  const next = new URLSearchParams(location.search).get("next") || "/ui/queue";
  location.href = next.startsWith("/ui/") ? next : "/ui/queue";
});
