// Internal Scanning Management: a small page over the management API, same origin. The token
// is kept in this tab's sessionStorage only; every text from the API is set as text, never as
// markup.
"use strict";

const TOKEN = "ism-token";
const REFRESH_MS = 2000;
let refresh = null;
let me = null;

const $ = (id) => document.getElementById(id);

async function api(path, method = "GET", payload = undefined) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN) };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const sent = payload === undefined ? undefined : JSON.stringify(payload);
  const response = await fetch(path, { method, headers, body: sent });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error || response.status + " " + response.statusText);
  }
  return body;
}

function show(section) {
  for (const id of ["sign-in", "gateways", "gateway"]) {
    $(id).hidden = id !== section;
  }
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (className) td.className = className;
  return td;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "-";
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN, token);
  try {
    me = await api("/api/v1/me");
  } catch (e) {
    sessionStorage.removeItem(TOKEN);
    throw e;
  }
  $("user").textContent = me.name + " (" + me.role + ")";
  $("who").hidden = false;
}

function signOut() {
  sessionStorage.removeItem(TOKEN);
  me = null;
  $("who").hidden = true;
  clearInterval(refresh);
  location.hash = "";
  show("sign-in");
}

async function gateways() {
  const list = await api("/api/v1/gateways");
  const body = $("gateways-table").tBodies[0];
  body.replaceChildren();
  for (const g of list) {
    const row = body.insertRow();
    row.dataset.gateway = g.id;
    const link = document.createElement("a");
    link.href = "#gateway/" + encodeURIComponent(g.id);
    link.textContent = g.name;
    row.insertCell().append(link);
    cell(row, g.status, "status-" + g.status);
    cell(row, g.endpoint_count);
    cell(row, when(g.last_activity_ms));
    cell(row, when(g.deletion_due_ms));
  }
  $("gateways-empty").hidden = list.length > 0;
  $("gateways-table").hidden = list.length === 0;
  $("create-gateway").hidden = !(me && me.may_manage);
  const deleted = await api("/api/v1/deleted-gateways");
  const gone = $("deleted-table").tBodies[0];
  gone.replaceChildren();
  for (const g of deleted) {
    const row = gone.insertRow();
    cell(row, g.name);
    cell(row, when(g.deleted_ms));
    cell(row, g.deleted_reason);
  }
  $("deleted-empty").hidden = deleted.length > 0;
  $("deleted-table").hidden = deleted.length === 0;
}

async function createGateway(event) {
  event.preventDefault();
  $("create-gateway-error").textContent = "";
  try {
    const name = $("gateway-new-name").value.trim();
    const description = $("gateway-new-description").value.trim();
    await api("/api/v1/gateways", "POST", { name, description });
    $("gateway-new-name").value = "";
    $("gateway-new-description").value = "";
    await gateways();
  } catch (e) {
    // The API's own message (an ASCII rule, a duplicate name) is shown beside the form.
    $("create-gateway-error").textContent = e.message;
  }
}

async function copyKey(endpoint) {
  const answer = await api("/api/v1/endpoints/" + encodeURIComponent(endpoint.id) + "/key");
  $("key-value").value = answer.key;
  $("key-shown").hidden = false;
  try {
    await navigator.clipboard.writeText(answer.key);
  } catch (_) {
    // Without clipboard permission the key stays shown, selected, to copy by hand.
    $("key-value").select();
  }
}

async function gateway(id) {
  const g = await api("/api/v1/gateways/" + encodeURIComponent(id));
  $("gateway-name").textContent = "Gateway " + g.name + " (" + g.status + ")";
  $("gateway-address").textContent = g.endpoint_url;
  const list = await api("/api/v1/gateways/" + encodeURIComponent(id) + "/endpoints");
  const body = $("endpoints-table").tBodies[0];
  body.replaceChildren();
  for (const e of list) {
    const row = body.insertRow();
    row.dataset.endpoint = e.id;
    cell(row, e.name);
    cell(row, e.status, "status-" + e.status);
    cell(row, e.agent_version);
    cell(row, e.platform);
    cell(row, e.node);
    cell(row, e.scan_access ? "on" : "off");
    cell(row, e.open_streams + "/" + e.stream_limit);
    cell(row, e.running_scans + "/" + e.scan_capacity + (e.queued_scans ? " +" + e.queued_scans + " queued" : ""));
    const actions = row.insertCell();
    if (me && me.may_manage) {
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy-key";
      copy.textContent = "Copy Endpoint Key";
      copy.addEventListener("click", () => copyKey(e).catch(failed));
      actions.append(copy);
    }
  }
  $("endpoints-empty").hidden = list.length > 0;
  $("endpoints-table").hidden = list.length === 0;
}

function failed(e) {
  $("error").textContent = e.message;
}

async function route() {
  clearInterval(refresh);
  $("error").textContent = "";
  if (!sessionStorage.getItem(TOKEN) || !me) {
    show("sign-in");
    return;
  }
  const match = location.hash.match(/^#gateway\/(.+)$/);
  const load = match ? () => gateway(decodeURIComponent(match[1])) : gateways;
  show(match ? "gateway" : "gateways");
  $("key-shown").hidden = true;
  try {
    await load();
  } catch (e) {
    failed(e);
  }
  // Statuses change as endpoints come and go: kept current without reloading.
  refresh = setInterval(() => load().then(() => ($("error").textContent = "")).catch(failed), REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", async () => {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("sign-in-error").textContent = "";
    try {
      await signIn($("token").value.trim());
      $("token").value = "";
      await route();
    } catch (e) {
      $("sign-in-error").textContent = "Sign-in failed: " + e.message;
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("create-gateway").addEventListener("submit", createGateway);
  window.addEventListener("hashchange", route);
  if (sessionStorage.getItem(TOKEN)) {
    try {
      await signIn(sessionStorage.getItem(TOKEN));
    } catch (_) {
      // An expired or revoked token: sign in again.
    }
  }
  await route();
});
