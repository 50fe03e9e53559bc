// Internal Scanning Management: a small page over the management API, same origin, no build
// step and no library. The token is kept in this tab's sessionStorage only; every text from the
// API is set as text, never as markup. Tables are updated in place (rows keyed by id) so that a
// refresh never takes a button away from under a click.
"use strict";

const TOKEN = "ism-token";
const REFRESH_MS = 2000;
const AUDIT_PAGE = 50;
const SCANS_SHOWN = 100;
const PAGES = ["sign-in", "gateways", "gateway", "configure", "scans", "scan", "audit", "notifications"];

let me = null;
let node = null; // this node's /status: the CA endpoints must trust
let refresh = null; // the next refresh of the page shown
let routed = 0; // counts page changes: work started for an earlier page is dropped

const $ = (id) => document.getElementById(id);

// ----- the API -----

async function call(path, method = "GET", payload = undefined) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN) };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const sent = payload === undefined ? undefined : JSON.stringify(payload);
  const response = await fetch(path, { method, headers, body: sent });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = new Error(body.error || response.status + " " + response.statusText);
    error.status = response.status;
    // A token revoked or expired while signed in: back to the sign-in form.
    if (response.status === 401 && me) signOut();
    throw error;
  }
  return response;
}

async function api(path, method = "GET", payload = undefined) {
  return (await call(path, method, payload)).json();
}

const id = encodeURIComponent;

// ----- small DOM helpers -----

function text(node, value) {
  const shown = value === null || value === undefined || value === "" ? "-" : String(value);
  if (node.textContent !== shown) node.textContent = shown;
}

// A button whose accessible name says what it acts on (`label` + " " + `subject`): every row has
// an "Edit", and a screen reader must tell them apart.
// A message line: exactly `value`, empty when there is nothing to say (`text` shows "-" for a
// missing value in a table, which a message must not).
function message(node, value) {
  if (node.textContent !== value) node.textContent = value;
}

function button(label, className, onClick, subject = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  if (subject) b.setAttribute("aria-label", label + " " + subject);
  b.addEventListener("click", () => Promise.resolve(onClick()).catch(failed));
  return b;
}

function link(label, href) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = label;
  return a;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "-";
}

// Keeps `table`'s body showing `items` in order, one row per `keyOf(item)`: a new row gets
// `columns` cells and `create(row, item)` (its buttons), every row gets `fill(row, item)`.
// Rows of items gone are removed; the empty state is shown instead of an empty table.
function sync(table, empty, items, keyOf, columns, fill, create) {
  const body = table.tBodies[0];
  const rows = new Map([...body.rows].map((r) => [r.dataset.key, r]));
  const seen = new Map();
  let previous = null;
  for (const item of items) {
    // Two items with one key (say, two findings alike) get a row each.
    const base = String(keyOf(item));
    const n = seen.get(base) || 0;
    seen.set(base, n + 1);
    const key = n ? base + "#" + n : base;
    let row = rows.get(key);
    rows.delete(key);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.key = key;
      for (let i = 0; i < columns; i++) row.insertCell();
      if (create) create(row, item);
    }
    const next = previous ? previous.nextSibling : body.firstChild;
    if (row !== next) body.insertBefore(row, next);
    fill(row, item);
    previous = row;
  }
  rows.forEach((r) => r.remove());
  if (empty) empty.hidden = items.length > 0;
  table.hidden = items.length === 0;
}

function download(name, type, content) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([content], { type }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

async function copy(value, field) {
  field.value = value;
  try {
    await navigator.clipboard.writeText(value);
  } catch (_) {
    // Without clipboard permission the value stays shown, selected, to copy by hand.
    field.select();
  }
}

function failed(e) {
  message($("error"), e.message);
}

// A form whose submit runs `action` (one at a time), with the API's refusal (an ASCII rule, a
// duplicate name, a bad URL) shown in its error line beside it.
function submits(formId, errorId, action) {
  $(formId).addEventListener("submit", (event) => {
    event.preventDefault();
    $(errorId).textContent = "";
    busy(event.target, () => action().catch((e) => ($(errorId).textContent = e.message)));
  });
}

// Runs `action` with `form`'s buttons disabled: a second click while the request is out would
// repeat it (two scans, two webhooks, a second rotation).
async function busy(form, action) {
  const buttons = [...form.querySelectorAll("button")];
  buttons.forEach((b) => (b.disabled = true));
  try {
    return await action();
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

// ----- dialogs: Edit, Manage Access, and a confirmation -----

// Opens `dialog`; `submit` runs on its form's submit, and the API's refusal is shown in the
// dialog's error line (the dialog stays open to correct or cancel).
function openDialog(dialog, errorLine, submit) {
  const form = dialog.querySelector("form");
  errorLine.textContent = "";
  form.onsubmit = (event) => {
    event.preventDefault();
    errorLine.textContent = "";
    busy(form, async () => {
      try {
        await submit();
        dialog.close();
      } catch (e) {
        errorLine.textContent = e.message;
      }
    });
  };
  dialog.showModal();
}

function confirmThen(question, action, label = "Confirm") {
  $("confirm-text").textContent = question;
  $("confirm-yes").textContent = label;
  openDialog($("confirm-dialog"), $("confirm-error"), action);
}

// ----- sign-in -----

async function signIn(token) {
  sessionStorage.setItem(TOKEN, token);
  try {
    me = await api("/api/v1/me");
    node = await api("/api/v1/status");
  } catch (e) {
    sessionStorage.removeItem(TOKEN);
    me = null;
    throw e;
  }
  $("user").textContent = me.name + " (" + me.role + ")";
  $("who").hidden = false;
  $("nav").hidden = false;
  // Manage actions are absent for a reviewer, not failing (CSS hides every `.manage`).
  document.body.classList.toggle("may-manage", me.may_manage);
}

function signOut() {
  sessionStorage.removeItem(TOKEN);
  me = null;
  routed++;
  forgetSecrets();
  $("who").hidden = true;
  $("nav").hidden = true;
  document.body.classList.remove("may-manage");
  clearTimeout(refresh);
  location.hash = "";
  show("sign-in");
}

// Keys and secrets shown once are not left on the page for the next person or page.
function forgetSecrets() {
  $("key-value").value = "";
  $("key-shown").hidden = true;
  $("install-key").value = "";
  $("webhook-secret-value").textContent = "";
  $("webhook-secret").hidden = true;
}

// ----- gateways -----

async function gateways() {
  const list = await api("/api/v1/gateways");
  sync($("gateways-table"), $("gateways-empty"), list, (g) => g.id, 6,
    (row, g) => {
      row.dataset.gateway = g.id;
      text(row.cells[0].firstChild, g.name);
      text(row.cells[1], g.status);
      row.cells[1].className = "status-" + g.status;
      text(row.cells[2], g.endpoint_count);
      text(row.cells[3], when(g.last_activity_ms));
      text(row.cells[4], when(g.deletion_due_ms));
      row.gateway = g;
    },
    (row, g) => {
      row.cells[0].append(link(g.name, "#gateway/" + id(g.id)));
      row.cells[5].append(button("Delete", "manage delete-gateway", () => deleteGateway(row.gateway), "gateway " + g.name));
    });
  const deleted = await api("/api/v1/deleted-gateways");
  sync($("deleted-table"), $("deleted-empty"), deleted, (g) => g.id, 3, (row, g) => {
    text(row.cells[0], g.name);
    text(row.cells[1], when(g.deleted_ms));
    text(row.cells[2], g.deleted_reason);
  });
}

function deleteGateway(g) {
  confirmThen(`Delete gateway "${g.name}"? Its endpoints must be deleted first.`, async () => {
    await api("/api/v1/gateways/" + id(g.id), "DELETE");
    await gateways();
  }, "Delete gateway");
}

async function createGateway() {
  const name = $("gateway-new-name").value.trim();
  const description = $("gateway-new-description").value.trim();
  await api("/api/v1/gateways", "POST", { name, description });
  $("gateway-new-name").value = "";
  $("gateway-new-description").value = "";
  await gateways();
}

// ----- a gateway and its endpoints -----

function scansInUse(e) {
  return e.running_scans + "/" + e.scan_capacity + (e.queued_scans ? " +" + e.queued_scans + " queued" : "");
}

function supportAccess(s) {
  if (s.indefinite) return "indefinite";
  return s.state === "active" && s.until_ms ? "until " + when(s.until_ms) : s.state;
}

async function gateway(gatewayId) {
  const g = await api("/api/v1/gateways/" + id(gatewayId));
  text($("gateway-name"), "Gateway " + g.name + " (" + g.status + ")");
  message($("gateway-description"), g.description);
  text($("gateway-address"), g.endpoint_url);
  $("add-endpoint").href = "#configure/" + id(g.id);
  const list = await api("/api/v1/gateways/" + id(gatewayId) + "/endpoints");
  sync($("endpoints-table"), $("endpoints-empty"), list, (e) => e.id, 10,
    (row, e) => {
      row.endpoint = e;
      row.dataset.endpoint = e.id;
      text(row.cells[0], e.name);
      text(row.cells[1], e.status);
      row.cells[1].className = "status-" + e.status;
      text(row.cells[2], e.agent_version);
      text(row.cells[3], e.platform);
      text(row.cells[4], e.node);
      text(row.cells[5], e.scan_access ? "on" : "off");
      text(row.cells[6], supportAccess(e.support_access));
      text(row.cells[7], e.open_streams + "/" + e.stream_limit + (e.queued_streams ? " +" + e.queued_streams + " queued" : ""));
      text(row.cells[8], scansInUse(e));
      row.querySelector(".set-up").hidden = e.status !== "Pending";
    },
    (row, first) => {
      // The buttons read the row's latest view when clicked (an edit sends the version read).
      const e = () => row.endpoint;
      const of = "of endpoint " + first.name;
      row.cells[9].append(
        button("Copy Endpoint Key", "manage copy-key", () => copyKey(e()), of),
        button("Edit", "manage edit", () => editEndpoint(e()), of),
        button("Manage Access", "manage access", () => manageAccess(e()), of),
        button("Rotate key", "manage rotate", () => rotateKey(e()), of),
        button("Delete", "manage delete", () => deleteEndpoint(e()), of),
        button("Set Up", "manage set-up", () => (location.hash = "#setup/" + id(e().id)), of));
    });
}

function reloadGateway() {
  const match = location.hash.match(/^#gateway\/(.+)$/);
  return match ? gateway(decodeURIComponent(match[1])) : Promise.resolve();
}

function said(message) {
  $("endpoint-message").textContent = message;
}

async function copyKey(e) {
  const answer = await api("/api/v1/endpoints/" + id(e.id) + "/key");
  $("key-shown").hidden = false;
  await copy(answer.key, $("key-value"));
}

function editEndpoint(e) {
  $("edit-name").value = e.name;
  $("edit-description").value = e.description;
  // The version as read when the dialog opened: someone else's change meanwhile is a conflict
  // the API refuses, and its message is shown here.
  let version = e.version;
  openDialog($("edit-dialog"), $("edit-error"), async () => {
    const name = $("edit-name").value.trim();
    const description = $("edit-description").value.trim();
    try {
      await api("/api/v1/endpoints/" + id(e.id), "PATCH", { name, description, version });
    } catch (error) {
      if (error.status === 409) {
        // Someone changed it meanwhile: the form now shows what is current, to edit again.
        const now = await api("/api/v1/endpoints/" + id(e.id));
        version = now.version;
        $("edit-name").value = now.name;
        $("edit-description").value = now.description;
        error.message += " The form now shows the current values.";
      }
      throw error;
    }
    said(`Endpoint "${name}" saved.`);
    await reloadGateway();
  });
}

function manageAccess(e) {
  $("access-endpoint").textContent = e.name;
  $("access-scan").checked = e.scan_access;
  const support = $("access-support");
  support.querySelector("option[value='']")?.remove();
  if (e.support_access.indefinite) {
    support.value = "indefinite";
  } else if (e.support_access.until_ms) {
    const keep = new Option("Unchanged (until " + when(e.support_access.until_ms) + ")", "");
    support.prepend(keep);
    support.value = "";
  } else {
    support.value = "off";
  }
  openDialog($("access-dialog"), $("access-error"), async () => {
    const change = { scan_access: $("access-scan").checked };
    if (support.value !== "") {
      change.support_access = /^\d+$/.test(support.value) ? Number(support.value) : support.value;
    }
    await api("/api/v1/endpoints/" + id(e.id) + "/access", "PUT", change);
    said(`Access of "${e.name}" saved.`);
    await reloadGateway();
  });
}

function rotateKey(e) {
  confirmThen(`Rotate the key of "${e.name}"? The old key stops working and its running session ends; install the new key on its machine.`, async () => {
    const answer = await api("/api/v1/endpoints/" + id(e.id) + "/key/rotate", "POST");
    $("key-shown").hidden = false;
    await copy(answer.key, $("key-value"));
    said(`The key of "${e.name}" was replaced.`);
  }, "Rotate key");
}

function deleteEndpoint(e) {
  confirmThen(`Delete endpoint "${e.name}"? Its session ends, its scans are cancelled and its key stops working.`, async () => {
    await api("/api/v1/endpoints/" + id(e.id), "DELETE");
    said(`Endpoint "${e.name}" deleted.`);
    await reloadGateway();
  }, "Delete endpoint");
}

// ----- Configure Internal Scanning: gateway -> endpoint -> install -> connect -----

const wizard = { gateway: null, endpoint: null, key: "" };

function step(name) {
  for (const s of ["step-gateway", "step-endpoint", "step-install", "step-connect"]) {
    $(s).hidden = s !== name;
  }
  // Keyboard users continue where the new step starts, not at the top of the page.
  $(name).querySelector("input, h3").focus();
}

async function configure(arg) {
  Object.assign(wizard, { gateway: null, endpoint: null, key: "" });
  for (const f of ["step-gateway", "step-endpoint", "step-install"]) $(f).reset();
  $("step-gateway-error").textContent = "";
  $("step-endpoint-error").textContent = "";
  if (arg && arg.setup) {
    // Set Up of an endpoint already added: straight to its install step.
    const e = await api("/api/v1/endpoints/" + id(arg.setup));
    wizard.endpoint = e;
    wizard.gateway = await api("/api/v1/gateways/" + id(e.gateway));
    wizard.key = (await api("/api/v1/endpoints/" + id(e.id) + "/key")).key;
    showInstall();
  } else if (arg && arg.gateway) {
    wizard.gateway = await api("/api/v1/gateways/" + id(arg.gateway));
    $("wizard-gateway").textContent = wizard.gateway.name;
    step("step-endpoint");
  } else {
    step("step-gateway");
  }
}

async function wizardGateway() {
  const name = $("wizard-gateway-name").value.trim();
  const description = $("wizard-gateway-description").value.trim();
  wizard.gateway = await api("/api/v1/gateways", "POST", { name, description });
  $("wizard-gateway").textContent = wizard.gateway.name;
  step("step-endpoint");
}

async function wizardEndpoint() {
  const name = $("wizard-endpoint-name").value.trim();
  const description = $("wizard-endpoint-description").value.trim();
  const platform = document.querySelector("input[name=platform]:checked").value;
  const added = await api("/api/v1/gateways/" + id(wizard.gateway.id) + "/endpoints", "POST", { name, description, platform });
  wizard.endpoint = added.endpoint;
  wizard.key = added.key;
  showInstall();
}

function showInstall() {
  $("install-endpoint").textContent = wizard.endpoint.name;
  $("install-key").value = wizard.key;
  for (const e of document.querySelectorAll(".ca-needed")) e.hidden = !node.gateway_ca_pem;
  step("step-install");
  renderInstall();
}

// One line of a properties file or one shell word: what a person typed never adds a line or
// breaks out of its quotes.
const oneLine = (v) => v.replace(/[\r\n]+/g, " ").trim();
const quoted = (v) => "'" + oneLine(v).replace(/'/g, "'\\''") + "'";

function installSettings() {
  const url = new URL(wizard.gateway.endpoint_url);
  const proxy = $("proxy-manual").checked;
  return {
    gateway: url.host,
    wsPath: url.pathname,
    protocol: url.protocol.replace(":", ""),
    allowed: oneLine($("allowed-targets").value),
    proxy: proxy && {
      host: oneLine($("proxy-host").value),
      port: oneLine($("proxy-port").value),
      scope: document.querySelector("input[name=proxy-scope]:checked").value,
      resolveGateway: $("proxy-resolve-gateway").checked,
      resolveUrls: $("proxy-resolve-urls").checked,
      user: $("proxy-auth").checked ? oneLine($("proxy-user").value) : "",
      exclusions: oneLine($("proxy-exclusions").value),
    },
  };
}

function propertiesText(s) {
  const lines = [
    `# ISM endpoint "${oneLine(wizard.endpoint.name)}" of gateway "${oneLine(wizard.gateway.name)}"`,
    `token = ${wizard.key}`,
    `gateway = ${s.gateway}`,
    `websocketProtocol = ${s.protocol}`,
    `wsendpoint = ${s.wsPath}`,
  ];
  if (node.gateway_ca_pem) lines.push("gatewayCaFile = config/gateway-ca.pem");
  lines.push(`allowedTargets = ${s.allowed}`);
  if (s.proxy) {
    lines.push(`proxyHost = ${s.proxy.host}`, `proxyPort = ${s.proxy.port}`, `proxyScope = ${s.proxy.scope}`);
    lines.push(`proxyResolveGatewayHostname = ${s.proxy.resolveGateway}`);
    if (s.proxy.scope === "gatewayAndUrls") lines.push(`proxyResolveUrlHostname = ${s.proxy.resolveUrls}`);
    if (s.proxy.exclusions) lines.push(`proxyExclusionList = ${s.proxy.exclusions}`);
  }
  return lines.join("\n") + "\n";
}

function installCommand(s) {
  const words = ["sudo ./install.sh", "--key " + quoted(wizard.key), "--gateway " + quoted(s.gateway)];
  if (node.gateway_ca_pem) words.push("--gateway-ca gateway-ca.pem");
  if (s.wsPath !== "/wsendpoint") words.push("--ws-path " + quoted(s.wsPath));
  words.push("--allowed-targets " + quoted(s.allowed));
  if (s.proxy) {
    words.push("--proxy-host " + quoted(s.proxy.host), "--proxy-port " + quoted(s.proxy.port), "--proxy-scope " + s.proxy.scope);
    if (!s.proxy.resolveGateway) words.push("--proxy-resolve-gateway no");
    if (s.proxy.scope === "gatewayAndUrls" && !s.proxy.resolveUrls) words.push("--proxy-resolve-urls no");
    if (s.proxy.exclusions) words.push("--proxy-exclusions " + quoted(s.proxy.exclusions));
    if (s.proxy.user) words.push("--proxy-user " + quoted(s.proxy.user));
  }
  return words.join(" \\\n    ");
}

function renderInstall() {
  $("proxy-settings").hidden = !$("proxy-manual").checked;
  const scope = document.querySelector("input[name=proxy-scope]:checked").value;
  $("proxy-resolve-urls-label").hidden = scope !== "gatewayAndUrls";
  $("proxy-auth-note").hidden = !$("proxy-auth").checked;
  const s = installSettings();
  // A file the endpoint would refuse is not offered: say what is missing instead.
  const port = s.proxy ? Number(s.proxy.port) : 1;
  const problem = s.proxy && (!s.proxy.host || !Number.isInteger(port) || port < 1 || port > 65535)
    ? "Enter the proxy host and a port from 1 to 65535 (or clear Manual configuration)." : "";
  message($("install-problem"), problem);
  $("install-problem").hidden = !problem;
  $("download-properties").disabled = !!problem;
  if (problem) {
    $("install-command").textContent = "";
    $("properties").value = "";
    return;
  }
  const linux = wizard.endpoint.platform === "linux";
  $("install-command").textContent = linux
    ? installCommand(s)
    : "Install manually on " + wizard.endpoint.platform + ": run ism-endpoint with the application.properties below.";
  $("properties").value = propertiesText(s);
}

async function waitForEndpoint() {
  if ($("step-connect").hidden || !wizard.endpoint) return;
  const e = await api("/api/v1/endpoints/" + id(wizard.endpoint.id));
  const detail = e.status === "Ready" ? `Ready (version ${e.agent_version}, on node ${e.node})` : e.status;
  text($("connect-status"), detail);
  $("connect-status").className = "status-" + e.status;
  $("connect-hint").hidden = e.status === "Ready";
}

// ----- scans -----

async function scanEndpoints() {
  const select = $("scan-endpoint");
  const chosen = select.value;
  select.replaceChildren();
  for (const g of await api("/api/v1/gateways")) {
    for (const e of await api("/api/v1/gateways/" + id(g.id) + "/endpoints")) {
      select.append(new Option(e.name + " (" + g.name + ", " + e.status + ")", e.id));
    }
  }
  if (chosen) select.value = chosen;
}

function scanState(s) {
  return s.state + (s.queue_position ? " (place " + s.queue_position + " in queue)" : "") + (s.reason ? ": " + s.reason : "");
}

function counts(f) {
  return [f.high, f.medium, f.low, f.info].join("/");
}

const active = (s) => s.state === "queued" || s.state === "running";

async function scans() {
  // The most recent first; a long history stays on the server (the CLI lists it all).
  const list = (await api("/api/v1/scans?limit=" + SCANS_SHOWN)).reverse();
  sync($("scans-table"), $("scans-empty"), list, (s) => s.id, 7,
    (row, s) => {
      row.scan = s;
      text(row.cells[1], s.endpoint_name);
      text(row.cells[2], scanState(s));
      text(row.cells[3], when(s.queued_ms));
      text(row.cells[4], s.pages + "/" + s.max_pages);
      text(row.cells[5], counts(s.findings));
      row.querySelector(".cancel-scan").hidden = !active(s);
    },
    (row, s) => {
      row.cells[0].append(link(s.id.slice(0, 8), "#scan/" + id(s.id)));
      row.cells[6].append(button("Cancel", "manage cancel-scan", () => cancelScan(row.scan), "scan " + s.id.slice(0, 8)));
    });
}

function cancelScan(s) {
  confirmThen(`Cancel scan ${s.id.slice(0, 8)} of "${s.endpoint_name}"?`, async () => {
    await api("/api/v1/scans/" + id(s.id) + "/cancel", "POST");
    await (location.hash.startsWith("#scan/") ? scan(s.id) : scans());
  }, "Cancel scan");
}

async function startScan() {
  const targets = $("scan-targets").value.split(/\s+/).filter((t) => t);
  const started = await api("/api/v1/scans", "POST", {
    endpoint: $("scan-endpoint").value,
    targets,
    max_pages: Number($("scan-max-pages").value),
  });
  location.hash = "#scan/" + id(started.id);
}

let shownScan = null;

// Nothing of the scan shown before stays while another loads (or fails to).
function scanCleared() {
  shownScan = null;
  for (const f of ["scan-title", "scan-endpoint-name", "scan-targets-shown", "scan-state", "scan-progress", "scan-queued", "scan-ended"]) {
    $(f).textContent = "";
  }
  $("findings-table").tBodies[0].replaceChildren();
  $("scan-actions").hidden = true;
}

async function scan(scanId) {
  const s = await api("/api/v1/scans/" + id(scanId));
  shownScan = s;
  text($("scan-title"), "Scan " + s.id);
  text($("scan-endpoint-name"), s.endpoint_name);
  text($("scan-targets-shown"), s.targets.join(", "));
  text($("scan-state"), scanState(s));
  text($("scan-progress"), `${s.pages} of at most ${s.max_pages} pages, ${s.requests} requests, findings ${counts(s.findings)} (high/medium/low/info)`);
  text($("scan-queued"), when(s.queued_ms) + (s.queued_by ? " by " + s.queued_by : ""));
  text($("scan-ended"), when(s.ended_ms));
  $("scan-cancel").hidden = !active(s);
  $("scan-actions").hidden = false;
  sync($("findings-table"), $("findings-empty"), s.finding_list, (f) => f.rule + " " + f.url + " " + f.evidence, 4, (row, f) => {
    text(row.cells[0], f.severity);
    row.cells[0].className = "severity-" + f.severity;
    text(row.cells[1], f.rule);
    text(row.cells[2], f.url);
    text(row.cells[3], f.evidence);
  });
}

async function report(format) {
  const response = await call("/api/v1/scans/" + id(shownScan.id) + "/report?format=" + format);
  const type = format === "sarif" ? "application/sarif+json" : "application/json";
  download("scan-" + shownScan.id + "." + format, type, await response.text());
}

// ----- audit -----

// Where the page shown starts: after a position (forward from the first entry), before one
// (back from the latest), or neither (the latest).
const audit = { after: null, before: null, first: 0, last: 0 };

async function auditPage() {
  $("audit-error").textContent = "";
  const q = new URLSearchParams({ limit: AUDIT_PAGE });
  const filters = { gateway: "audit-gateway", endpoint: "audit-endpoint", actor: "audit-actor", since: "audit-since", until: "audit-until" };
  for (const [name, field] of Object.entries(filters)) {
    const v = $(field).value.trim();
    if (v) q.set(name, v);
  }
  // The API's `until` is exclusive: the day chosen is included by asking until the next one.
  if (q.has("until")) {
    const next = new Date(q.get("until") + "T00:00:00Z");
    next.setUTCDate(next.getUTCDate() + 1);
    q.set("until", next.toISOString().slice(0, 10));
  }
  if (audit.after !== null) q.set("after", audit.after);
  if (audit.before !== null) q.set("before", audit.before);
  let answer;
  try {
    answer = await api("/api/v1/audit?" + q);
  } catch (e) {
    // A bad filter (say, a malformed endpoint id) is told beside the filters.
    $("audit-error").textContent = e.message;
    return;
  }
  const entries = answer.entries;
  const body = $("audit-table").tBodies[0];
  body.replaceChildren();
  for (const e of entries) {
    const row = body.insertRow();
    for (const v of [e.position, e.time, e.event, e.summary, e.actor]) text(row.insertCell(), v);
  }
  $("audit-empty").hidden = entries.length > 0;
  $("audit-table").hidden = entries.length === 0;
  audit.first = entries.length ? entries[0].position : 0;
  audit.last = entries.length ? entries[entries.length - 1].position : audit.after || 0;
  // Forward pages say whether more follow; the latest and earlier pages whether older ones exist.
  const forward = audit.after !== null;
  $("audit-next").hidden = !forward || !answer.truncated;
  $("audit-older").hidden = forward || !answer.truncated;
  const shown = forward ? `entries after #${audit.after}` : audit.before !== null ? `${entries.length} entries before #${audit.before}` : `the latest ${entries.length} entries`;
  text($("audit-page"), shown);
}

// Shows the audit page that starts `after` or ends `before` a position (both null: the latest).
function auditAt(after, before) {
  Object.assign(audit, { after, before });
  return auditPage();
}

async function auditStart() {
  Object.assign(audit, { after: null, before: null });
  const select = $("audit-gateway");
  const chosen = select.value;
  select.replaceChildren(new Option("Any", ""));
  for (const g of await api("/api/v1/gateways")) select.append(new Option(g.name, g.id));
  select.value = chosen;
  await auditPage();
}

// ----- notifications -----

// What `load` gives, or null when the caller's role may not see it (the note says so instead).
async function denied(load, deniedNote, table) {
  try {
    const rows = await load();
    deniedNote.hidden = true;
    return rows;
  } catch (e) {
    if (e.status !== 403) throw e;
    deniedNote.hidden = false;
    table.hidden = true;
    return null;
  }
}

async function notifications() {
  const users = await denied(() => api("/api/v1/users"), $("recipients-denied"), $("recipients-table"));
  if (users) {
    sync($("recipients-table"), $("recipients-empty"), users, (u) => u.name, 5,
      (row, u) => {
        text(row.cells[0], u.name);
        text(row.cells[1], u.role);
        row.cells[2].firstChild.value = u.email || "";
        text(row.cells[3], u.notified ? "yes" : "no");
      },
      (row, u) => {
        const field = document.createElement("input");
        field.type = "email";
        field.setAttribute("aria-label", "Email of " + u.name);
        row.cells[2].append(field);
        row.cells[4].append(button("Save email", "save-email", async () => {
          $("recipient-error").textContent = "";
          try {
            await api("/api/v1/users/" + id(u.name), "PATCH", { email: field.value.trim() });
            await notifications();
          } catch (e) {
            $("recipient-error").textContent = e.message;
          }
        }));
      });
  }
  const hooks = await denied(() => api("/api/v1/webhooks"), $("webhooks-denied"), $("webhooks-table"));
  if (hooks) {
    sync($("webhooks-table"), $("webhooks-empty"), hooks, (h) => h.id, 4,
      (row, h) => {
        text(row.cells[0], h.url);
        text(row.cells[1], h.events.length ? h.events.join(", ") : "all");
        text(row.cells[2], when(h.created_ms) + (h.created_by ? " by " + h.created_by : ""));
      },
      (row, h) => {
        row.cells[3].append(button("Remove", "manage remove-webhook", () =>
          confirmThen(`Remove the webhook ${h.url}?`, async () => {
            await api("/api/v1/webhooks/" + id(h.id), "DELETE");
            await notifications();
          }, "Remove webhook"), h.url));
      });
  } else {
    $("webhooks-empty").hidden = true;
  }
  if (!users) $("recipients-empty").hidden = true;
  const sent = await api("/api/v1/notifications?limit=20");
  sync($("sent-table"), $("sent-empty"), sent, (n) => n.id, 4, (row, n) => {
    text(row.cells[0], n.kind + (n.subject_name ? ": " + n.subject_name : ""));
    text(row.cells[1], n.state);
    text(row.cells[2], (n.sent[0] && n.sent[0].subject) || n.last_error || "");
    text(row.cells[3], when(n.last_ms));
  });
}

async function addWebhook() {
  const added = await api("/api/v1/webhooks", "POST", { url: $("webhook-url").value.trim() });
  $("webhook-url").value = "";
  $("webhook-secret-value").textContent = added.secret;
  $("webhook-secret").hidden = false;
  await notifications();
}

// ----- routing -----

function show(section) {
  for (const p of PAGES) $(p).hidden = p !== section;
  for (const a of document.querySelectorAll("#nav a")) {
    const current = a.getAttribute("href") === "#" + (section === "gateways" ? "" : section);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// `#<page>[/<id>]` -> the section shown, what loads it, and whether it refreshes itself.
function page(hash) {
  const [name, raw] = hash.replace(/^#/, "").split(/\/(.*)/);
  const arg = raw ? decodeURIComponent(raw) : null;
  // The wizard only adds things: a reviewer following a link to it gets the gateways.
  const manages = me && me.may_manage;
  switch (manages || (name !== "configure" && name !== "setup") ? name : "") {
    case "gateway": return { section: "gateway", load: () => gateway(arg), live: true };
    case "configure": return { section: "configure", enter: () => configure({ gateway: arg }), load: waitForEndpoint, live: true };
    case "setup": return { section: "configure", enter: () => configure({ setup: arg }), load: waitForEndpoint, live: true };
    case "scans": return { section: "scans", enter: scanEndpoints, load: scans, live: true };
    case "scan": return { section: "scan", enter: scanCleared, load: () => scan(arg), live: true };
    case "audit": return { section: "audit", enter: auditStart, live: false };
    case "notifications": return { section: "notifications", load: notifications, live: false };
    default: return { section: "gateways", load: gateways, live: true };
  }
}

async function route() {
  const mine = ++routed;
  clearTimeout(refresh);
  $("error").textContent = "";
  $("stale").textContent = "";
  for (const d of document.querySelectorAll("dialog[open]")) d.close();
  forgetSecrets();
  if (!sessionStorage.getItem(TOKEN) || !me) {
    show("sign-in");
    return;
  }
  const p = page(location.hash);
  show(p.section);
  said("");
  try {
    if (p.enter) await p.enter();
    if (p.load) await p.load();
  } catch (e) {
    failed(e);
  }
  if (p.live && mine === routed) keepCurrent(mine, p.load);
}

// Statuses change as endpoints come and go and scans run: the page shown is read again 2 s after
// its last reading ended (never two at once, so an older answer cannot undo a newer one), until
// another page is shown. A failed reading is told apart from a failed action, and clears itself.
function keepCurrent(mine, load) {
  refresh = setTimeout(async () => {
    if (mine !== routed) return;
    try {
      await load();
      message($("stale"), "");
    } catch (e) {
      message($("stale"), "Could not refresh this page: " + e.message);
    }
    if (mine === routed) keepCurrent(mine, load);
  }, REFRESH_MS);
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
  submits("create-gateway", "create-gateway-error", createGateway);
  submits("step-gateway", "step-gateway-error", wizardGateway);
  submits("step-endpoint", "step-endpoint-error", wizardEndpoint);
  $("step-install").addEventListener("input", renderInstall);
  $("step-install").addEventListener("change", renderInstall);
  $("step-install").addEventListener("submit", (event) => {
    event.preventDefault();
    $("connect-endpoint").textContent = wizard.endpoint.name;
    $("wizard-done").href = "#gateway/" + id(wizard.gateway.id);
    step("step-connect");
    waitForEndpoint().catch(failed);
  });
  $("copy-install-key").addEventListener("click", () => copy(wizard.key, $("install-key")));
  $("download-properties").addEventListener("click", () => download("application.properties", "text/plain", $("properties").value));
  $("download-ca").addEventListener("click", () => download("gateway-ca.pem", "application/x-pem-file", node.gateway_ca_pem));
  submits("start-scan", "start-scan-error", startScan);
  $("scan-cancel").addEventListener("click", () => shownScan && cancelScan(shownScan));
  $("scan-json").addEventListener("click", () => shownScan && report("json").catch(failed));
  $("scan-sarif").addEventListener("click", () => shownScan && report("sarif").catch(failed));
  $("audit-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    auditAt(null, null);
  });
  $("audit-first").addEventListener("click", () => auditAt(0, null));
  $("audit-next").addEventListener("click", () => auditAt(audit.last, null));
  $("audit-older").addEventListener("click", () => auditAt(null, audit.first));
  submits("add-webhook", "add-webhook-error", addWebhook);
  for (const close of document.querySelectorAll("dialog .close")) {
    close.addEventListener("click", () => close.closest("dialog").close());
  }
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
