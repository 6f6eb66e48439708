// kiln console: plain JavaScript, no framework, no network beyond this server.
// Views: #/ (functions) and #/fn/NAME (one function: charts, environments, invoke, log).
"use strict";

const API = "/2015-03-31/functions";
const WINDOW_SECS = 120;
const LOG_MAX_LINES = 2000;

const state = { mode: "on", timer: null, logAbort: null, view: null };

// ---- signing (kiln serve --auth-keys) -----------------------------------------------------
// With keys on, every API call is signed with AWS Signature Version 4 in the page (WebCrypto),
// with a key the user types in; the key stays in this tab's sessionStorage and goes nowhere
// but into signatures. WebCrypto exists only in secure contexts: https, or localhost.

const auth = { on: false, region: "us-east-1" };
const KEY_ID = "kiln.accessKeyId", SECRET = "kiln.secretAccessKey";
const te = new TextEncoder();
const hexOf = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
const sha256Hex = async (data) => hexOf(await crypto.subtle.digest("SHA-256", typeof data === "string" ? te.encode(data) : data));
async function hmac(key, msg) {
  const k = await crypto.subtle.importKey("raw", typeof key === "string" ? te.encode(key) : key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return crypto.subtle.sign("HMAC", k, te.encode(msg));
}
// Every byte but A-Z a-z 0-9 - _ . ~ (and / when keepSlash) as %XX, as kiln and botocore encode.
function uriEncode(bytes, keepSlash) {
  let out = "";
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    if (/[A-Za-z0-9\-_.~]/.test(c) || (keepSlash && c === "/")) out += c;
    else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}
function pctDecode(s) {
  const b = te.encode(s), out = [];
  for (let i = 0; i < b.length; i++) {
    const hx = (x) => parseInt(String.fromCharCode(x), 16);
    if (b[i] === 37 && i + 2 < b.length && !isNaN(hx(b[i + 1])) && !isNaN(hx(b[i + 2]))) {
      out.push(hx(b[i + 1]) * 16 + hx(b[i + 2]));
      i += 2;
    } else out.push(b[i]);
  }
  return out;
}
function canonicalPath(path) {
  const segs = [];
  for (const s of path.split("/")) {
    if (s === "" || s === ".") continue;
    if (s === "..") segs.pop(); else segs.push(s);
  }
  let normal = (path.startsWith("/") ? "/" : "") + segs.join("/");
  if (path.endsWith("/") && segs.length) normal += "/";
  return uriEncode(te.encode(normal || "/"), true);
}
function canonicalQuery(query) {
  const pairs = query.split("&").filter((kv) => kv).map((kv) => {
    const i = kv.indexOf("=");
    const [k, v] = i < 0 ? [kv, ""] : [kv.slice(0, i), kv.slice(i + 1)];
    return [uriEncode(pctDecode(k), false), uriEncode(pctDecode(v), false)];
  });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => k + "=" + v).join("&");
}
// The headers that sign `method url body` for the key: X-Amz-Date and Authorization.
async function sigv4(method, url, body, keyId, secret, region) {
  const u = new URL(url, location.origin);
  const amzDate = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
  const day = amzDate.slice(0, 8);
  const scope = day + "/" + region + "/lambda/aws4_request";
  const canonical = [method, canonicalPath(u.pathname), canonicalQuery(u.search.replace(/^\?/, "")),
    "host:" + u.host, "x-amz-date:" + amzDate, "", "host;x-amz-date", await sha256Hex(body || "")].join("\n");
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256Hex(canonical)].join("\n");
  let k = await hmac("AWS4" + secret, day);
  for (const part of [region, "lambda", "aws4_request"]) k = await hmac(k, part);
  const signature = hexOf(await hmac(k, toSign));
  return { "X-Amz-Date": amzDate,
    Authorization: "AWS4-HMAC-SHA256 Credential=" + keyId + "/" + scope + ", SignedHeaders=host;x-amz-date, Signature=" + signature };
}
// fetch, signed when kiln asks for signatures.
async function apiFetch(path, opts = {}) {
  if (!auth.on) return fetch(path, opts);
  const keyId = sessionStorage.getItem(KEY_ID), secret = sessionStorage.getItem(SECRET);
  if (!keyId || !secret) throw new Error("not signed in");
  const signed = await sigv4(opts.method || "GET", path, opts.body, keyId, secret, auth.region);
  return fetch(path, { ...opts, headers: { ...(opts.headers || {}), ...signed } });
}

// ---- small helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const svg = ["svg", "path", "line", "rect", "text", "g", "circle"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick" || k === "onchange" || k === "oninput") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function getJSON(path) {
  const r = await apiFetch(path, { headers: { Accept: "application/json" } });
  const text = await r.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch (_) { body = { message: text }; }
  if (!r.ok) throw new Error(body.Message || body.message || r.status + " " + r.statusText);
  return body;
}

const enc = encodeURIComponent;
const fmtMB = (mb) => (mb >= 1024 ? (mb / 1024).toFixed(mb % 1024 ? 1 : 0) + " GB" : mb + " MB");
function fmtAge(s) {
  if (s < 60) return Math.floor(s) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}
function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms === 0) return "0";
  if (ms < 1) return ms.toFixed(2) + " ms";
  if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + " ms";
  return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}
function stateBadge(s) {
  const cls = { Active: "ok", idle: "ok", frozen: "ok", provisioned: "ok", busy: "busy", Pending: "warn",
    initialising: "init", Failed: "bad", Inactive: "warn" }[s] || "";
  return h("span", { class: "badge " + cls, text: s });
}
function setLive(ok) {
  document.getElementById("live").classList.toggle("stale", !ok);
}
function crumbs(parts) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren();
  parts.forEach((p, i) => {
    nav.append(h("span", { class: "sep", text: "/" }));
    nav.append(p.href ? h("a", { href: p.href, text: p.text }) : h("span", { text: p.text }));
    if (i === parts.length - 1) document.title = p.text + " · kiln";
  });
  if (!parts.length) document.title = "kiln console";
}
function stopView() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  if (state.logAbort) state.logAbort.abort();
  state.logAbort = null;
}

async function listFunctions() {
  let all = [];
  let marker = null;
  do {
    const q = marker ? "?Marker=" + enc(marker) : "";
    const page = await getJSON(API + "/" + q);
    all = all.concat(page.Functions || []);
    marker = page.NextMarker;
  } while (marker && all.length < 1000);
  return all;
}

// ---- functions view -----------------------------------------------------------------------

async function functionsView() {
  crumbs([]);
  const app = document.getElementById("app");
  const body = h("tbody", { id: "functions-body" });
  const table = h("table", { id: "functions" },
    h("thead", {}, h("tr", {},
      h("th", { text: "Function" }), h("th", { text: "Runtime" }), h("th", { class: "num", text: "Memory" }),
      h("th", { class: "num", text: "Timeout" }), h("th", { text: "State" }), h("th", { class: "num", text: "Versions" }),
      h("th", { text: "Aliases" }), h("th", { class: "num", text: "Reserved" }), h("th", { class: "num", text: "Provisioned" }),
      h("th", { class: "num", text: "Environments" }), h("th", { class: "num", text: "Cold / warm" }))),
    body);
  const stats = h("div", { class: "stats", id: "overview" });
  app.replaceChildren(
    h("div", { class: "title-row" }, h("h1", { text: "Functions" })),
    stats,
    h("div", { class: "card" }, table));

  async function refresh() {
    const [fns, status] = await Promise.all([listFunctions(), getJSON("/kiln/v1/status")]);
    const byName = Object.fromEntries((status.Functions || []).map((f) => [f.FunctionName, f]));
    const details = await Promise.all(fns.map((f) => functionExtras(f.FunctionName).catch(() => ({}))));
    let envs = 0, busy = 0, invocations = 0;
    const rows = fns.map((f, i) => {
      const st = byName[f.FunctionName] || { Environments: [] };
      const d = details[i];
      envs += st.Environments.length;
      busy += st.Environments.filter((e) => e.State === "busy").length;
      invocations += (st.ColdStarts || 0) + (st.WarmStarts || 0) + (st.ProvisionedStarts || 0);
      const stateText = f.LastUpdateStatus === "InProgress" ? "Updating" : (f.State || "Active");
      return h("tr", { class: "link", "data-function": f.FunctionName, onclick: () => (location.hash = "#/fn/" + enc(f.FunctionName)) },
        h("td", { class: "name", text: f.FunctionName }),
        h("td", { text: f.Runtime || "–" }),
        h("td", { class: "num", text: fmtMB(f.MemorySize) }),
        h("td", { class: "num", text: f.Timeout + " s" }),
        h("td", {}, stateBadge(stateText)),
        h("td", { class: "num", text: d.versions === undefined ? "–" : String(d.versions) }),
        h("td", { text: d.aliases && d.aliases.length ? d.aliases.map((a) => a.Name + "→" + a.FunctionVersion).join(", ") : "–" }),
        h("td", { class: "num", text: d.reserved === undefined || d.reserved === null ? "–" : String(d.reserved) }),
        h("td", { class: "num", text: d.provisioned ? String(d.provisioned) : "–" }),
        h("td", { class: "num", text: String(st.Environments.length) }),
        h("td", { class: "num", text: (st.ColdStarts || 0) + " / " + ((st.WarmStarts || 0) + (st.ProvisionedStarts || 0)) }));
    });
    body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 11, class: "empty" },
      "No functions yet. Deploy one with ", h("code", { text: "kiln deploy NAME ./bootstrap" }), " or ",
      h("code", { text: "aws lambda create-function" }), "."))]));
    const pool = status.SandboxPool;
    stats.replaceChildren(
      stat(fns.length, "functions"), stat(envs, "live environments"), stat(busy, "busy now"),
      stat(invocations, "invocations since start"),
      pool ? stat(pool.Ready + " / " + pool.Target, "sandbox pool ready") : null);
  }
  await refresh();
  state.timer = setInterval(() => refresh().then(() => setLive(true), () => setLive(false)), 3000);
}

function stat(v, k) {
  return h("div", { class: "stat" }, h("div", { class: "v", text: String(v) }), h("div", { class: "k", text: k }));
}

async function functionExtras(name) {
  const [versions, aliases, conc, pc] = await Promise.all([
    getJSON(API + "/" + enc(name) + "/versions"),
    getJSON(API + "/" + enc(name) + "/aliases"),
    getJSON("/2019-09-30/functions/" + enc(name) + "/concurrency"),
    getJSON("/2019-09-30/functions/" + enc(name) + "/provisioned-concurrency").catch(() => ({})),
  ]);
  const published = (versions.Versions || []).filter((v) => v.Version !== "$LATEST");
  const pcs = pc.ProvisionedConcurrencyConfigs || [];
  return {
    versions: published.length,
    versionList: published,
    aliases: aliases.Aliases || [],
    reserved: conc.ReservedConcurrentExecutions,
    provisioned: pcs.reduce((n, c) => n + (c.RequestedProvisionedConcurrentExecutions || 0), 0),
    provisionedList: pcs,
  };
}

// ---- function view ------------------------------------------------------------------------

async function functionView(name) {
  crumbs([{ text: "functions", href: "#/" }, { text: name }]);
  const app = document.getElementById("app");
  let fn;
  try {
    fn = await getJSON(API + "/" + enc(name));
  } catch (e) {
    app.replaceChildren(h("div", { class: "card empty" }, h("p", { class: "error-text", text: e.message }), h("a", { href: "#/", text: "← all functions" })));
    return;
  }
  const c = fn.Configuration;
  const extras = await functionExtras(name).catch(() => ({ aliases: [], versionList: [], provisionedList: [] }));
  const chip = (k, v) => h("div", { class: "chip" }, h("b", { text: k }), v);
  const stateText = c.LastUpdateStatus === "InProgress" ? "Updating" : (c.State || "Active");

  const invChart = h("div", { id: "chart-invocations" });
  const latChart = h("div", { id: "chart-latency" });
  const envBody = h("tbody", { id: "environments-body" });
  const statsRow = h("div", { class: "stats", id: "fn-stats" });
  const payload = h("textarea", { id: "invoke-payload", rows: 6, spellcheck: "false" });
  payload.value = '{\n  "name": "console"\n}';
  const result = h("div", { id: "invoke-result" });
  const invokeBtn = h("button", { id: "invoke-button", text: "Invoke" });
  const readOnly = state.mode !== "on";
  if (readOnly) invokeBtn.disabled = true;
  invokeBtn.addEventListener("click", () => invoke(name, payload, result, invokeBtn));
  const logPre = h("pre", { class: "log", id: "log" });
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  follow.addEventListener("change", () => { if (follow.checked) logPre.scrollTop = logPre.scrollHeight; });

  app.replaceChildren(
    h("div", { class: "title-row" }, h("h1", { id: "function-name", text: c.FunctionName }), stateBadge(stateText),
      c.Description ? h("span", { class: "muted", text: c.Description }) : null),
    h("div", { class: "chips" },
      chip("Runtime", c.Runtime || "–"), chip("Memory", fmtMB(c.MemorySize)), chip("Timeout", c.Timeout + " s"),
      chip("Architecture", (c.Architectures || ["x86_64"]).join(", ")), chip("Handler", c.Handler || "–"),
      chip("Code", (c.CodeSize / 1024).toFixed(0) + " KB"), chip("Reserved concurrency", extras.reserved === undefined || extras.reserved === null ? "unreserved" : String(extras.reserved)),
      chip("Last modified", (c.LastModified || "").replace("T", " ").slice(0, 19))),
    statsRow,
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("div", { class: "card-head" }, h("h2", { text: "Invocations per second" }),
        h("div", { class: "legend" }, h("span", {}, h("i", { class: "l-cold" }), "cold"), h("span", {}, h("i", { class: "l-warm" }), "warm"), h("span", {}, h("i", { class: "l-err" }), "errors"))), invChart),
      h("div", { class: "card" }, h("div", { class: "card-head" }, h("h2", { text: "Latency p50 / p99" }),
        h("div", { class: "legend" }, h("span", {}, h("i", { class: "l-cold" }), "cold"), h("span", {}, h("i", { class: "l-warm" }), "warm"), h("span", { class: "muted", text: "dashed: p99" }))), latChart),
      h("div", { class: "card wide" }, h("h2", { text: "Execution environments" }),
        h("table", { id: "environments" }, h("thead", {}, h("tr", {},
          h("th", { text: "Environment" }), h("th", { text: "Version" }), h("th", { text: "State" }), h("th", { text: "Type" }),
          h("th", { class: "num", text: "Age" }), h("th", { class: "num", text: "Invocations" }), h("th", { class: "num", text: "Memory used" }))), envBody)),
      h("div", { class: "card" }, h("h2", { text: "Invoke" }), payload,
        h("div", { class: "row" }, invokeBtn,
          h("span", { class: "hint", text: readOnly ? "The console is read-only on this server." : "RequestResponse, with the log tail." })),
        result),
      h("div", { class: "card" }, h("h2", { text: "Versions, aliases, provisioned concurrency" }), versionsCard(c, extras)),
      h("div", { class: "card wide" }, h("div", { class: "card-head" }, h("h2", { text: "Log" }),
        h("label", { class: "toggle" }, follow, "follow")), logPre)));
  followLog(name, logPre, follow);

  async function refresh() {
    const [status, samples] = await Promise.all([
      getJSON("/kiln/v1/functions/" + enc(name) + "/environments"),
      getJSON("/kiln/v1/functions/" + enc(name) + "/samples?seconds=" + WINDOW_SECS),
    ]);
    const st = (status.Functions || [])[0] || { Environments: [] };
    const envs = st.Environments;
    envBody.replaceChildren(...(envs.length ? envs.map((e) => h("tr", { "data-state": e.State },
      h("td", { class: "mono", text: e.Id ? e.Id.slice(0, 12) : "(starting)" }),
      h("td", { text: e.Version }),
      h("td", {}, stateBadge(e.State)),
      h("td", { text: e.InitType }),
      h("td", { class: "num", text: fmtAge(e.AgeSeconds) }),
      h("td", { class: "num", text: String(e.Invocations) }),
      h("td", { class: "num", text: Math.ceil(e.MaxMemoryUsedBytes / 1048576) + " / " + e.MemorySize + " MB" })))
      : [h("tr", {}, h("td", { colspan: 7, class: "empty", text: "No live environments. The next invocation starts one (a cold start)." }))]));
    const s = samples.Samples || [];
    const total = s.reduce((n, x) => n + x.Invocations, 0);
    const errors = s.reduce((n, x) => n + x.Errors, 0);
    statsRow.replaceChildren(
      stat(st.ColdStarts || 0, "cold starts"), stat((st.WarmStarts || 0) + (st.ProvisionedStarts || 0), "warm starts"),
      stat(fmtMs(st.InitDurationMsAvg || null), "average init"), stat(total, "invocations, last " + WINDOW_SECS / 60 + " min"),
      stat(errors, "errors, last " + WINDOW_SECS / 60 + " min"), stat(envs.length, "live environments"));
    invChart.replaceChildren(barChart(s));
    latChart.replaceChildren(latencyChart(s));
  }
  await refresh().catch(() => setLive(false));
  state.timer = setInterval(() => refresh().then(() => setLive(true), () => setLive(false)), 1000);
}

function versionsCard(c, extras) {
  const rows = [h("tr", {}, h("td", { class: "mono", text: "$LATEST" }), h("td", { text: (c.LastModified || "").slice(0, 19).replace("T", " ") }), h("td", { text: c.CodeSha256 ? c.CodeSha256.slice(0, 12) + "…" : "" }))];
  for (const v of (extras.versionList || []).slice().reverse()) {
    rows.push(h("tr", {}, h("td", { class: "mono", text: v.Version }), h("td", { text: (v.LastModified || "").slice(0, 19).replace("T", " ") }), h("td", { text: v.Description || "" })));
  }
  const aliases = (extras.aliases || []).map((a) => {
    const w = a.RoutingConfig && a.RoutingConfig.AdditionalVersionWeights;
    const extra = w ? Object.entries(w).map(([v, p]) => " + " + v + " (" + Math.round(p * 100) + "%)").join("") : "";
    return h("li", {}, h("b", { text: a.Name }), " → " + a.FunctionVersion + extra);
  });
  const pcs = (extras.provisionedList || []).map((p) => h("li", {},
    h("b", { text: (p.FunctionArn || "").split(":").pop() }), " " + (p.AllocatedProvisionedConcurrentExecutions || 0) + " / " + p.RequestedProvisionedConcurrentExecutions + " ", stateBadge(p.Status)));
  return h("div", {},
    h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Version" }), h("th", { text: "Modified" }), h("th", { text: "Code / description" }))), h("tbody", {}, rows)),
    h("div", { class: "row" }, h("span", { class: "muted", text: "Aliases:" }), aliases.length ? h("ul", {}, aliases) : h("span", { text: "none" })),
    h("div", { class: "row" }, h("span", { class: "muted", text: "Provisioned:" }), pcs.length ? h("ul", {}, pcs) : h("span", { text: "none" })));
}

// ---- charts (inline SVG) ------------------------------------------------------------------

const W = 600, H = 190, PAD_L = 44, PAD_B = 20, PAD_T = 8, PAD_R = 8;

function axes(svg, maxY, fmt, n) {
  const plotH = H - PAD_T - PAD_B;
  for (let i = 0; i <= 4; i++) {
    const y = PAD_T + plotH - (plotH * i) / 4;
    svg.append(h("line", { class: "grid-line", x1: PAD_L, x2: W - PAD_R, y1: y, y2: y }));
    svg.append(h("text", { x: PAD_L - 6, y: y + 3.5, "text-anchor": "end", text: fmt((maxY * i) / 4) }));
  }
  const plotW = W - PAD_L - PAD_R;
  for (const ago of [120, 90, 60, 30, 0]) {
    if (ago > n) continue;
    const x = PAD_L + plotW * (1 - ago / n);
    svg.append(h("text", { x, y: H - 5, "text-anchor": ago === 0 ? "end" : "middle", text: ago === 0 ? "now" : "-" + ago + "s" }));
  }
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function barChart(samples) {
  const svg = h("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", "data-points": samples.length });
  const n = Math.max(samples.length, 1);
  const maxY = niceMax(Math.max(1, ...samples.map((s) => s.Invocations)));
  axes(svg, maxY, (v) => (v % 1 ? v.toFixed(1) : String(v)), n);
  const plotW = W - PAD_L - PAD_R, plotH = H - PAD_T - PAD_B, bw = plotW / n;
  samples.forEach((s, i) => {
    if (!s.Invocations) return;
    const x = PAD_L + i * bw + 0.5;
    let y = PAD_T + plotH;
    const other = Math.max(0, s.Invocations - s.Cold - s.Warm);
    for (const [count, cls] of [[s.Warm + other, "warm"], [s.Cold, "cold"]]) {
      if (!count) continue;
      const hgt = (plotH * count) / maxY;
      y -= hgt;
      svg.append(h("rect", { class: cls, x, y, width: Math.max(1, bw - 1), height: hgt, rx: 1 }));
    }
    if (s.Errors) {
      const hgt = (plotH * s.Errors) / maxY;
      svg.append(h("rect", { class: "err", x, y: PAD_T + plotH - hgt, width: Math.max(1, bw - 1), height: Math.max(2, hgt), opacity: 0.85 }));
    }
  });
  return svg;
}

function latencyChart(samples) {
  // Log scale: cold starts (hundreds of ms) and warm calls (a few ms) on one chart.
  const svg = h("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none" });
  const n = Math.max(samples.length, 1);
  const keys = ["ColdP50Ms", "ColdP99Ms", "WarmP50Ms", "WarmP99Ms"];
  const values = samples.flatMap((s) => keys.map((k) => s[k])).filter((v) => v > 0);
  const lo = Math.floor(Math.log10(values.length ? Math.min(...values) : 1));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(values.length ? Math.max(...values) : 10)));
  const plotW = W - PAD_L - PAD_R, plotH = H - PAD_T - PAD_B, bw = plotW / n;
  const yOf = (v) => PAD_T + plotH - (plotH * (Math.log10(v) - lo)) / (hi - lo);
  for (let e = lo; e <= hi; e++) {
    const y = yOf(Math.pow(10, e));
    svg.append(h("line", { class: "grid-line", x1: PAD_L, x2: W - PAD_R, y1: y, y2: y }));
    svg.append(h("text", { x: PAD_L - 6, y: y + 3.5, "text-anchor": "end", text: fmtMs(Math.pow(10, e)).replace(" ", "") }));
  }
  for (const ago of [120, 90, 60, 30, 0]) {
    if (ago > n) continue;
    const x = PAD_L + plotW * (1 - ago / n);
    svg.append(h("text", { x, y: H - 5, "text-anchor": ago === 0 ? "end" : "middle", text: ago === 0 ? "now" : "-" + ago + "s" }));
  }
  for (const [key, cls] of [["WarmP50Ms", "warm"], ["WarmP99Ms", "warm p99"], ["ColdP50Ms", "cold"], ["ColdP99Ms", "cold p99"]]) {
    let d = "";
    let pen = false;
    samples.forEach((s, i) => {
      const v = s[key];
      if (!(v > 0)) { pen = false; return; }
      const x = PAD_L + (i + 0.5) * bw, y = yOf(v);
      d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      pen = true;
      svg.append(h("circle", { class: cls.split(" ")[0], cx: x, cy: y, r: cls.includes("p99") ? 1.5 : 2.5 }));
    });
    if (d) svg.append(h("path", { class: "line " + cls, d }));
  }
  return svg;
}

// ---- invoke -------------------------------------------------------------------------------

async function invoke(name, payload, result, btn) {
  let body = payload.value.trim() || "{}";
  try { JSON.parse(body); } catch (e) {
    result.replaceChildren(h("p", { class: "error-text", text: "The payload is not valid JSON: " + e.message }));
    return;
  }
  btn.disabled = true;
  const started = performance.now();
  try {
    const r = await apiFetch(API + "/" + enc(name) + "/invocations", {
      method: "POST", body, headers: { "Content-Type": "application/json", "X-Amz-Log-Type": "Tail" },
    });
    const text = await r.text();
    const ms = performance.now() - started;
    const fnError = r.headers.get("X-Amz-Function-Error");
    const logB64 = r.headers.get("X-Amz-Log-Result");
    let pretty = text;
    try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
    const ok = r.ok && !fnError;
    const tail = logB64 ? new TextDecoder().decode(Uint8Array.from(atob(logB64), (ch) => ch.charCodeAt(0))) : "";
    result.replaceChildren(
      h("div", { class: "result-head" },
        h("span", { id: "invoke-status", class: "badge " + (ok ? "ok" : "bad"), text: ok ? "Succeeded" : (fnError ? "Function error: " + fnError : "HTTP " + r.status) }),
        h("span", { class: "muted", text: "version " + (r.headers.get("X-Amz-Executed-Version") || "–") + " · " + fmtMs(ms) + " round trip" })),
      h("pre", { class: "result", id: "invoke-output", text: pretty }),
      tail ? h("div", {}, h("div", { class: "result-head" }, h("span", { class: "muted", text: "Log tail" })), colorLog(h("pre", { class: "result", id: "invoke-log" }), tail)) : null);
  } catch (e) {
    result.replaceChildren(h("p", { class: "error-text", text: "The request failed: " + e.message }));
  } finally {
    btn.disabled = state.mode !== "on";
  }
}

// ---- log ----------------------------------------------------------------------------------

function lineClass(line) {
  if (/^(START|END|INIT_START|INIT_REPORT) /.test(line)) return "platform";
  if (line.startsWith("REPORT ")) return "report";
  if (/error|Traceback|Task timed out/i.test(line)) return "errline";
  return null;
}

function colorLog(pre, text) {
  for (const line of text.split("\n")) {
    if (!line) continue;
    const cls = lineClass(line);
    pre.append(cls ? h("span", { class: cls, text: line + "\n" }) : document.createTextNode(line + "\n"));
  }
  return pre;
}

async function followLog(name, pre, follow) {
  const ctrl = new AbortController();
  state.logAbort = ctrl;
  pre.replaceChildren(h("span", { class: "platform", text: "waiting for log lines…\n" }));
  let first = true;
  try {
    const r = await apiFetch("/kiln/v1/functions/" + enc(name) + "/logs?follow=true", { signal: ctrl.signal });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += dec.decode(value, { stream: true });
      const cut = rest.lastIndexOf("\n");
      if (cut < 0) continue;
      const chunk = rest.slice(0, cut + 1);
      rest = rest.slice(cut + 1);
      if (first) { pre.replaceChildren(); first = false; }
      colorLog(pre, chunk);
      while (pre.childNodes.length > LOG_MAX_LINES) pre.removeChild(pre.firstChild);
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    if (e.name !== "AbortError") pre.append(h("span", { class: "errline", text: "[log stream ended: " + e.message + "]\n" }));
  }
}

// ---- routing ------------------------------------------------------------------------------

async function route() {
  stopView();
  if (auth.on && !sessionStorage.getItem(KEY_ID)) { signIn(); return; }
  const m = location.hash.match(/^#\/fn\/(.+)$/);
  try {
    if (m) await functionView(decodeURIComponent(m[1]));
    else await functionsView();
    setLive(true);
  } catch (e) {
    setLive(false);
    document.getElementById("app").replaceChildren(h("div", { class: "card empty" }, h("p", { class: "error-text", text: "Cannot reach kiln: " + e.message })));
  }
}

// The sign-in card (keys on, no key in this tab yet).
function signIn() {
  crumbs([{ text: "sign in" }]);
  const app = document.getElementById("app");
  if (!window.crypto || !crypto.subtle) {
    app.replaceChildren(h("div", { class: "card empty" }, h("p", { class: "error-text", id: "signin-error",
      text: "This kiln requires signed requests, and this browser signs only in a secure context: open the console over https or on localhost." })));
    return;
  }
  const keyId = h("input", { id: "signin-key", placeholder: "AKIA…", autocomplete: "username", size: 40 });
  const secret = h("input", { id: "signin-secret", type: "password", autocomplete: "current-password", size: 40 });
  const msg = h("p", { class: "error-text", id: "signin-error" });
  const button = h("button", { id: "signin-button", onclick: async () => {
    sessionStorage.setItem(KEY_ID, keyId.value.trim());
    sessionStorage.setItem(SECRET, secret.value.trim());
    try {
      await getJSON(API + "/?MaxItems=1");
      route();
    } catch (e) {
      sessionStorage.removeItem(KEY_ID);
      sessionStorage.removeItem(SECRET);
      msg.textContent = "Not signed in: " + e.message;
    }
  } }, "Sign in");
  app.replaceChildren(h("div", { class: "card" },
    h("h2", { text: "Sign in" }),
    h("p", { class: "muted", text: "This kiln requires signed requests. Use a key of its keys file; it stays in this tab." }),
    h("p", {}, h("label", {}, "Access key ID ", keyId)),
    h("p", {}, h("label", {}, "Secret access key ", secret)),
    button, msg));
}

async function start() {
  try {
    const c = await getJSON("/kiln/v1/console");
    state.mode = c.Mode || "on";
    auth.on = c.Auth === true;
    auth.region = c.Region || auth.region;
  } catch (_) { state.mode = "read-only"; }
  const badge = document.getElementById("mode");
  if (state.mode !== "on") { badge.textContent = "read-only"; badge.classList.add("warn"); }
  window.addEventListener("hashchange", route);
  route();
}

start();
