// strongroom web console: the user interface (sign-in, folders, a secret's
// page, create/edit with check-and-set, expiry, API keys, audit trail, live
// updates). Builds the DOM with createElement/textContent only; keeps values
// and the credential in memory, never in the URL, the title or storage. The
// URL hash holds only the current view and key or folder name.

import * as api from "./api.js";

const $ = (id) => document.getElementById(id);
const viewEl = $("view");
const announcer = $("announce");

// ---- small helpers ------------------------------------------------------

/** createElement with properties; children are nodes or text (never HTML). */
function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "style") throw new Error("no inline styles (CSP)");
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), safe(v));
    else if (k === "value") el.value = v;
    else if (k === "checked" || k === "disabled" || k === "hidden" || k === "selected") el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(typeof kid === "string" || typeof kid === "number" ? document.createTextNode(String(kid)) : kid);
  }
}

/** Wraps an event handler so a failure is shown, never an unhandled rejection. */
function safe(fn) {
  return (...args) => {
    try {
      const r = fn(...args);
      if (r && typeof r.catch === "function") r.catch(showUnexpected);
    } catch (e) {
      showUnexpected(e);
    }
  };
}

function showUnexpected(e) {
  const area = viewEl.querySelector(".messages") || $("signin-error");
  if (area) showError(area, e, {});
}

function announce(text) {
  announcer.textContent = "";
  setTimeout(() => { announcer.textContent = text; }, 50);
}

function folderOf(key) { return key.slice(0, key.lastIndexOf("/") + 1); }
function baseName(key) { return key.slice(key.lastIndexOf("/") + 1); }

function keyProblem(key) {
  if (!key) return "Give the secret a key, such as team/app/db.password.";
  if (new TextEncoder().encode(key).length > 256) return "A key is at most 256 bytes long.";
  if (/[^A-Za-z0-9\-_=./]/.test(key)) return "A key may hold only letters, digits and the characters - _ = . / (no spaces).";
  if (/^[./]|[./]$/.test(key)) return "A key may not start or end with . or /.";
  if (key.includes("..") || key.includes("//")) return "A key may not contain .. or //.";
  return null;
}

const dateFmt = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const relFmt = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

function relative(iso) {
  const ms = Date.parse(iso) - Date.now();
  const abs = Math.abs(ms);
  const units = [["day", 86400000], ["hour", 3600000], ["minute", 60000], ["second", 1000]];
  for (const [unit, size] of units) {
    if (abs >= size || unit === "second") return relFmt.format(Math.round(ms / size), unit);
  }
  return "";
}

function timeEl(iso, withRelative = false) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h("span", null, iso);
  return h("time", { datetime: iso, title: iso },
    dateFmt.format(d), withRelative ? " (" + relative(iso) + ")" : "");
}

function statusText(code) {
  const words = {
    200: "OK", 201: "Created", 400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    409: "Conflict", 410: "Gone", 412: "Version mismatch", 413: "Too large", 415: "Unsupported media type",
    429: "Rate limited", 500: "Server error", 503: "Unavailable",
  };
  return code + " " + (words[code] || "");
}

function setTitle(text) { document.title = text + " · strongroom console"; }

function messages() { return h("div", { class: "messages" }); }

function showMessage(area, kind, text, ...extra) {
  area.replaceChildren(h("p", { class: "msg " + kind, role: kind === "error" ? "alert" : "status" }, text, " ", extra));
}

function showError(area, err, ctx) {
  const extra = err instanceof api.ApiError && err.status === 401
    ? h("button", { type: "button", class: "inline", onclick: () => signOut() }, "Sign in again")
    : null;
  showMessage(area, "error", api.describeError(err, ctx), extra);
}

function isStatus(err, ...codes) { return err instanceof api.ApiError && codes.includes(err.status); }

function button(text, onclick, props = {}) {
  return h("button", { type: "button", class: props.class || "secondary", onclick, ...props }, text);
}

// ---- routing and views -------------------------------------------------

let session = null; // { label, keyId }
let flash = null; // a message handed to the next view
let watchUnsupported = false;
let current = { gen: 0, cleanup: [] };

function beginView(navKey) {
  for (const f of current.cleanup) { try { f(); } catch { /* ignore */ } }
  current = { gen: current.gen + 1, cleanup: [] };
  viewEl.replaceChildren();
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === navKey) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  return current;
}

function alive(v) { return v === current && session !== null; }

function routeHash(view, arg) { return "#/" + view + "/" + api.keyPath(arg || ""); }

function decodePath(s) {
  try { return s.split("/").map(decodeURIComponent).join("/"); } catch { return ""; }
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  if (!session) return;
  const hash = location.hash;
  let focusTarget;
  if (hash.startsWith("#/secret/") && hash.length > 9) focusTarget = viewSecret(decodePath(hash.slice(9)));
  else if (hash.startsWith("#/new/")) focusTarget = viewNew(decodePath(hash.slice(6)));
  else if (hash === "#/expiring") focusTarget = viewExpiring();
  else if (hash === "#/apikeys") focusTarget = viewApiKeys();
  else if (hash === "#/audit") focusTarget = viewAudit();
  else focusTarget = viewBrowse(hash.startsWith("#/browse/") ? decodePath(hash.slice(9)) : "");
  if (focusTarget) focusTarget.focus();
}

function heading(text) { return h("h1", { tabindex: "-1", class: "view-title" }, text); }

function takeFlash(area) {
  if (!flash) return null;
  const f = flash;
  flash = null;
  showMessage(area, f.kind, f.text);
  return f;
}

function breadcrumb(dir, last) {
  const items = [];
  const parts = dir.split("/").filter(Boolean);
  const isLastFolder = (i) => last === undefined && i === parts.length - 1;
  items.push(h("li", null, last === undefined && parts.length === 0
    ? h("span", { "aria-current": "page" }, "All secrets")
    : h("a", { href: "#/browse/" }, "All secrets")));
  let acc = "";
  parts.forEach((seg, i) => {
    acc += seg + "/";
    items.push(h("li", null, isLastFolder(i)
      ? h("span", { "aria-current": "page" }, seg)
      : h("a", { href: routeHash("browse", acc) }, seg)));
  });
  if (last !== undefined) items.push(h("li", null, h("span", { "aria-current": "page" }, last)));
  return h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("ol", null, items));
}

// ---- live updates --------------------------------------------------------

/** Follows /watch for `prefix` while the view lives; `status` shows the state. */
function watch(v, prefix, status, onChange) {
  const say = (text, kind = "") => { status.textContent = text; status.className = "live-status " + kind; };
  if (watchUnsupported) { say("Live updates: not available on this server", "off"); return; }
  const w = new api.Watcher(prefix, (change) => { if (alive(v)) onChange(change); }, (state, detail) => {
    if (state === "unsupported") watchUnsupported = true;
    if (!alive(v)) return;
    if (state === "live") say("Live updates: on", "on");
    else if (state === "connecting") say("Live updates: connecting…");
    else if (state === "reconnecting") say("Live updates: reconnecting in " + Math.round(detail / 1000) + " s", "off");
    else if (state === "reset") onChange(null);
    else if (state === "unsupported") { say("Live updates: not available on this server", "off"); }
    else if (state === "error") say("Live updates: off. " + api.describeError(detail, { op: "watch", prefix }), "off");
  });
  w.start();
  v.cleanup.push(() => w.stop());
}

// ---- the folder view -----------------------------------------------------

function viewBrowse(prefix) {
  const v = beginView("browse");
  const dir = folderOf(prefix);
  setTitle(dir || "All secrets");
  const title = heading(dir ? "Secrets in " + dir : "All secrets");
  const msg = messages();
  takeFlash(msg);
  const live = h("p", { class: "live-status", id: "live-status" });
  const filter = h("input", { id: "prefix-filter", type: "text", value: prefix, autocomplete: "off", spellcheck: "false",
    placeholder: "team/app/" });
  const tbody = h("tbody");
  const count = h("p", { class: "count", id: "browse-count", role: "status" });
  const more = button("Load more keys", () => load(false), { id: "load-more", hidden: true });
  const refresh = button("Refresh", () => reload());
  viewEl.append(
    breadcrumb(dir), title, msg,
    h("div", { class: "toolbar" },
      h("a", { class: "button primary", href: routeHash("new", dir), id: "new-secret" }, "New secret"),
      h("form", { class: "inline-form", role: "search", onsubmit: (e) => { e.preventDefault(); go(routeHash("browse", filter.value.trim())); } },
        h("label", { for: "prefix-filter" }, "Key prefix"), filter, h("button", { type: "submit", class: "secondary" }, "Go")),
      refresh, live),
    h("table", { class: "list", id: "secret-list" },
      h("caption", { class: "visually-hidden" }, "Folders and keys under " + (prefix || "the tenant")),
      h("thead", null, h("tr", null, ["Name", "Version", "Updated", "Expires"].map((t) => h("th", { scope: "col" }, t)))),
      tbody),
    h("div", { class: "list-footer" }, count, more));

  let entries = [];
  let next = null;
  let pages = 0;
  const changed = new Set();

  /** Folder rows and key rows of what is loaded. */
  function grouped() {
    const folders = new Map();
    const keys = [];
    for (const s of entries) {
      const rest = s.key.slice(dir.length);
      const at = rest.indexOf("/");
      if (at >= 0) {
        const name = rest.slice(0, at + 1);
        const f = folders.get(name) || { name, count: 0, updated: "" };
        f.count += 1;
        if (s.updated_at > f.updated) f.updated = s.updated_at;
        folders.set(name, f);
      } else keys.push(s);
    }
    return { folders, keys };
  }

  function render() {
    const { folders, keys } = grouped();
    const rows = [];
    for (const f of [...folders.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      rows.push(h("tr", { class: "folder-row" },
        h("td", { "data-label": "Name" }, h("a", { href: routeHash("browse", dir + f.name), class: "folder" }, f.name),
          h("span", { class: "muted small" }, " " + f.count + (next ? "+" : "") + (f.count === 1 ? " key" : " keys"))),
        h("td", { "data-label": "Version" }, h("span", { class: "muted" }, "—")),
        h("td", { "data-label": "Updated" }, timeEl(f.updated)),
        h("td", { "data-label": "Expires" }, h("span", { class: "muted" }, "—"))));
    }
    for (const s of keys) {
      rows.push(h("tr", { class: changed.has(s.key) ? "changed" : null },
        h("td", { "data-label": "Name" }, h("a", { href: routeHash("secret", s.key), class: "secret-link" }, s.key.slice(dir.length))),
        h("td", { "data-label": "Version" }, String(s.version)),
        h("td", { "data-label": "Updated" }, timeEl(s.updated_at)),
        h("td", { "data-label": "Expires" }, s.expires_at ? timeEl(s.expires_at, true) : h("span", { class: "muted" }, "never"))));
    }
    if (rows.length === 0) {
      rows.push(h("tr", null, h("td", { colspan: "4", class: "empty" },
        prefix ? "No keys under " + prefix + ". " : "No secrets yet. ",
        h("a", { href: routeHash("new", dir) }, "Create one"), ".")));
    }
    tbody.replaceChildren(...rows);
    count.textContent = entries.length === 0 ? "" :
      "Showing " + entries.length + (entries.length === 1 ? " key" : " keys") + (next ? "; more follow." : ".");
    more.hidden = !next;
  }

  async function load(reset, keepPages = 1) {
    more.disabled = true;
    try {
      if (reset) {
        const got = [];
        let cursor = null;
        let n = 0;
        do {
          const page = await api.listSecrets(prefix, cursor);
          got.push(...page.secrets);
          cursor = page.next;
          n += 1;
        } while (cursor && n < keepPages);
        if (!alive(v)) return;
        entries = got;
        next = cursor;
        pages = n;
      } else {
        const page = await api.listSecrets(prefix, next);
        if (!alive(v)) return;
        entries = entries.concat(page.secrets);
        next = page.next;
        pages += 1;
      }
      // The API lists keys, not folders: a big folder can fill whole pages
      // with rows that add nothing to this view. While the view shows few
      // rows, fetch on (at most 4 more pages per step).
      for (let extra = 0; next && extra < 4; extra += 1) {
        const { folders, keys } = grouped();
        if (folders.size + keys.length >= 50) break;
        render();
        const page = await api.listSecrets(prefix, next);
        if (!alive(v)) return;
        entries = entries.concat(page.secrets);
        next = page.next;
        pages += 1;
      }
      render();
    } catch (e) {
      if (!alive(v)) return;
      showError(msg, e, { op: "list", prefix });
      tbody.replaceChildren();
      count.textContent = "";
    } finally {
      more.disabled = false;
    }
  }

  let pending = null;
  function reload() {
    return load(true, Math.max(pages, 1));
  }

  watch(v, prefix, live, (change) => {
    if (change && typeof change.key === "string") {
      changed.add(change.key);
      announce(change.key + ": " + (change.action || "changed") + (change.version ? ", version " + change.version : ""));
      live.textContent = "Live updates: on. Last change: " + change.key + " (" + (change.action || "changed") + ")";
    }
    clearTimeout(pending);
    pending = setTimeout(() => { if (alive(v)) reload().catch(() => {}); }, 250);
  });
  v.cleanup.push(() => clearTimeout(pending));
  load(true).catch(() => {});
  return title;
}

// ---- expiry fields ---------------------------------------------------------

function pad(n) { return String(n).padStart(2, "0"); }
function localInputValue(d) {
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
}

/** The expiry choice of a form: none, after a duration, or at a date. */
function expiryFields(idp, currentIso) {
  const name = idp + "-expiry";
  const radio = (value, checked) => h("input", { type: "radio", name, id: idp + "-exp-" + value, value, checked });
  const none = radio("none", !currentIso);
  const ttl = radio("ttl", false);
  const at = radio("at", Boolean(currentIso));
  const amount = h("input", { type: "number", id: idp + "-ttl", min: "1", step: "1", value: "30", inputmode: "numeric" });
  const unit = h("select", { id: idp + "-ttl-unit" },
    h("option", { value: "60" }, "minutes"), h("option", { value: "3600" }, "hours"),
    h("option", { value: "86400", selected: true }, "days"));
  const date = h("input", { type: "datetime-local", id: idp + "-at",
    value: localInputValue(currentIso ? new Date(currentIso) : new Date(Date.now() + 7 * 86400000)) });
  const pick = (r) => () => { r.checked = true; };
  amount.addEventListener("focus", pick(ttl));
  unit.addEventListener("focus", pick(ttl));
  date.addEventListener("focus", pick(at));
  const el = h("fieldset", { class: "expiry" },
    h("legend", null, "Expiry"),
    h("div", { class: "choice" }, none, h("label", { for: none.id }, "Never expires")),
    h("div", { class: "choice" }, ttl, h("label", { for: ttl.id }, "Expires after"),
      h("label", { for: amount.id, class: "visually-hidden" }, "Amount of time"), amount,
      h("label", { for: unit.id, class: "visually-hidden" }, "Unit of time"), unit),
    h("div", { class: "choice" }, at, h("label", { for: at.id }, "Expires at"),
      h("label", { for: date.id, class: "visually-hidden" }, "Expiry date and time (local time)"), date),
    currentIso ? h("p", { class: "hint" }, "It now expires ", timeEl(currentIso, true), ". Saving without an expiry removes it.")
      : h("p", { class: "hint" }, "When it expires, the secret is soft-deleted: it can still be undeleted."));
  function read() {
    if (ttl.checked) {
      const n = Number(amount.value);
      const secs = Math.round(n * Number(unit.value));
      if (!Number.isFinite(n) || n <= 0 || secs < 1) return { error: "Give the expiry a positive amount of time." };
      if (secs > 3650 * 86400) return { error: "An expiry can be at most 10 years away." };
      return { ttlSeconds: secs };
    }
    if (at.checked) {
      const when = new Date(date.value);
      if (!date.value || Number.isNaN(when.getTime())) return { error: "Give the expiry a date and time." };
      if (when.getTime() <= Date.now()) return { error: "The expiry date must be in the future." };
      return { expiresAt: when.toISOString() };
    }
    return {};
  }
  return { el, read };
}

// ---- create ---------------------------------------------------------------

function viewNew(dir) {
  const v = beginView("browse");
  setTitle("New secret");
  const title = heading("New secret");
  const msg = messages();
  const keyIn = h("input", { id: "new-key", type: "text", value: dir, autocomplete: "off", spellcheck: "false",
    "aria-describedby": "new-key-hint", required: true });
  const valueIn = h("textarea", { id: "new-value", rows: "4", autocomplete: "off", spellcheck: "false", required: true });
  const expiry = expiryFields("new");
  const submit = h("button", { type: "submit", class: "primary", id: "new-create" }, "Create secret");
  const form = h("form", { class: "card stack", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    const key = keyIn.value.trim();
    const problem = keyProblem(key);
    if (problem) { showMessage(msg, "error", problem); keyIn.focus(); return; }
    const exp = expiry.read();
    if (exp.error) { showMessage(msg, "error", exp.error); return; }
    submit.disabled = true;
    try {
      const r = await api.putSecret(key, valueIn.value, { createOnly: true, ...exp });
      if (!alive(v)) return;
      valueIn.value = "";
      flash = { kind: "ok", text: "Created " + key + " (version " + (r.version ?? 1) + ").", expectExpiry: Boolean(exp.ttlSeconds || exp.expiresAt) };
      go(routeHash("secret", key));
    } catch (err) {
      if (alive(v)) showError(msg, err, { op: isStatus(err, 412, 409) ? "create" : "write", key });
    } finally {
      submit.disabled = false;
    }
  } },
    h("label", { for: "new-key" }, "Key"), keyIn,
    h("p", { id: "new-key-hint", class: "hint" }, "Letters, digits and - _ = . / — a / makes folders, as in team/app/db.password."),
    h("label", { for: "new-value" }, "Value"), valueIn,
    expiry.el,
    h("div", { class: "buttons" }, submit, h("a", { class: "button secondary", href: routeHash("browse", dir) }, "Cancel")));
  viewEl.append(breadcrumb(dir, "New secret"), title, msg, form);
  return dir ? valueIn : keyIn;
}

// ---- one secret -------------------------------------------------------------

function viewSecret(key) {
  const v = beginView("browse");
  setTitle(key);
  const title = heading(baseName(key));
  const msg = messages();
  const f = takeFlash(msg);
  const live = h("p", { class: "live-status", id: "live-status" });
  const summary = h("section", { class: "card", "aria-labelledby": "summary-title" });
  const valueSec = h("section", { class: "card", "aria-labelledby": "value-title" });
  const editSec = h("section", { class: "card", "aria-labelledby": "edit-title", hidden: true });
  const dangerSec = h("section", { class: "card", "aria-labelledby": "manage-title" });
  const versionsSec = h("section", { class: "card", "aria-labelledby": "versions-title" });
  viewEl.append(breadcrumb(folderOf(key), baseName(key)), title,
    h("p", { class: "fullkey" }, "Key: ", h("code", { id: "secret-key" }, key)), msg, live,
    summary, valueSec, editSec, dangerSec, versionsSec);

  let meta = null;
  let shown = null; // { value, version } while revealed
  const recent = []; // own actions, to tell them from other people's in /watch
  const markOwn = (action) => recent.push({ action, at: Date.now() });

  // value section, built once
  const valueBox = h("div", { class: "value-box", id: "value-box" });
  const revealBtn = button("Reveal value", () => (shown ? hide() : reveal(null)), { id: "reveal", "aria-controls": "value-box" });
  const copyBtn = button("Copy value", () => copy(), { id: "copy" });
  const valueMsg = h("div", { class: "messages" });
  valueSec.append(h("h2", { id: "value-title" }, "Value"), valueBox,
    h("div", { class: "buttons" }, revealBtn, copyBtn), valueMsg,
    h("p", { class: "hint" }, "Revealing or copying reads the value from the server, and the read is recorded in the audit trail."));

  function renderValue() {
    if (meta && meta.deleted) {
      valueBox.replaceChildren(h("p", { class: "muted" }, "This secret is deleted. Undelete it to read its value."));
      revealBtn.hidden = true;
      copyBtn.hidden = true;
      return;
    }
    revealBtn.hidden = false;
    copyBtn.hidden = false;
    if (shown) {
      const label = meta && shown.version !== meta.current_version ? "Version " + shown.version + " (an older version)" : "Version " + shown.version + " (current)";
      valueBox.replaceChildren(h("p", { class: "small muted", id: "value-label" }, label),
        h("pre", { class: "value", id: "secret-value", tabindex: "0", "aria-labelledby": "value-label" }, shown.value));
      revealBtn.textContent = "Hide value";
      revealBtn.setAttribute("aria-expanded", "true");
    } else {
      valueBox.replaceChildren(h("p", { class: "concealed", id: "value-hidden" }, "Hidden"));
      revealBtn.textContent = "Reveal value";
      revealBtn.setAttribute("aria-expanded", "false");
    }
  }

  async function reveal(version) {
    try {
      const r = await api.getSecret(key, version);
      if (!alive(v)) return;
      shown = { value: r.value, version: r.version ?? version ?? (meta && meta.current_version) };
      valueMsg.replaceChildren();
      renderValue();
    } catch (e) {
      if (alive(v)) showError(valueMsg, e, { op: "read", key });
    }
  }

  function hide() {
    shown = null;
    valueMsg.replaceChildren();
    renderValue();
  }
  v.cleanup.push(() => { shown = null; });

  async function copy() {
    let text = shown ? shown.value : null;
    try {
      if (text === null) text = (await api.getSecret(key)).value;
    } catch (e) {
      if (alive(v)) showError(valueMsg, e, { op: "read", key });
      return;
    }
    const ok = await copyToClipboard(text);
    if (!alive(v)) return;
    showMessage(valueMsg, ok ? "ok" : "error", ok
      ? (shown ? "Copied to the clipboard." : "Copied the current value to the clipboard (it stays hidden here).")
      : "The browser refused to copy. Reveal the value, select it and press Ctrl+C.");
  }

  function renderSummary() {
    const m = meta;
    const badges = [];
    if (m.deleted) badges.push(h("span", { class: "badge deleted", id: "badge-deleted" }, "Deleted"));
    if (m.expires_at) badges.push(h("span", { class: "badge expiring" }, "Expires " + relative(m.expires_at)));
    summary.replaceChildren(
      h("h2", { id: "summary-title" }, "Details", " ", badges),
      h("dl", { class: "facts" },
        h("dt", null, "Current version"), h("dd", { id: "current-version" }, String(m.current_version)),
        h("dt", null, "State"), h("dd", { id: "secret-state" }, m.deleted ? "Deleted (can be undeleted)" : "Active"),
        h("dt", null, "Created"), h("dd", null, timeEl(m.created_at)),
        h("dt", null, "Updated"), h("dd", null, timeEl(m.updated_at)),
        h("dt", null, "Expires"), h("dd", { id: "secret-expires" }, m.expires_at ? timeEl(m.expires_at, true) : "Never")));
  }

  function renderManage() {
    const m = meta;
    const parts = [h("h2", { id: "manage-title" }, "Manage")];
    const row = h("div", { class: "buttons" });
    if (!m.deleted) {
      row.append(button("Edit", () => openEdit(), { id: "edit", class: "primary" }),
        button("Delete", () => del(), { id: "delete" }));
    } else {
      row.append(button("Undelete", () => undelete(), { id: "undelete", class: "primary" }));
    }
    row.append(button("Destroy…", () => openDestroy(), { id: "destroy", class: "danger" }));
    parts.push(row, h("p", { class: "hint" },
      "Delete hides the secret and can be undone. Destroy erases every version for good."), destroyBox);
    dangerSec.replaceChildren(...parts);
  }

  function renderVersions() {
    const m = meta;
    const rows = [...(m.versions || [])].sort((a, b) => b.version - a.version).map((ver) => {
      const state = ver.deleted ? "deleted" : ver.version === m.current_version ? "current" : "older";
      return h("tr", null,
        h("td", { "data-label": "Version" }, String(ver.version)),
        h("td", { "data-label": "Created" }, timeEl(ver.created_at)),
        h("td", { "data-label": "State" }, state),
        h("td", { "data-label": "Value" }, ver.deleted || m.deleted ? h("span", { class: "muted" }, "—")
          : button("Reveal", () => reveal(ver.version), { "aria-label": "Reveal version " + ver.version, class: "secondary small" })));
    });
    versionsSec.replaceChildren(h("h2", { id: "versions-title" }, "Versions"),
      h("table", { class: "list", id: "versions" },
        h("caption", { class: "visually-hidden" }, "Versions of " + key + ", newest first"),
        h("thead", null, h("tr", null, ["Version", "Created", "State", "Value"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", null, rows)),
      h("p", { class: "hint" }, "The server keeps a limited number of versions per key; older ones are dropped."));
  }

  function renderAll() {
    renderSummary();
    renderValue();
    renderManage();
    renderVersions();
  }

  async function loadMeta() {
    try {
      const m = await api.getMetadata(key);
      if (!alive(v)) return false;
      meta = m;
      if (shown && meta.deleted) shown = null;
      renderAll();
      return true;
    } catch (e) {
      if (!alive(v)) return false;
      showError(msg, e, { op: "metadata", key });
      for (const s of [summary, valueSec, dangerSec, versionsSec]) s.hidden = true;
      return false;
    }
  }

  // ---- edit with If-Match, and the conflict choice
  let editBase = null;
  let editForm = null;

  function openEdit() {
    editBase = meta.current_version;
    const valueIn = h("textarea", { id: "edit-value", rows: "4", autocomplete: "off", spellcheck: "false" });
    if (shown && shown.version === meta.current_version) valueIn.value = shown.value;
    const expiry = expiryFields("edit", meta.expires_at || null);
    const editMsg = messages();
    const conflict = h("div", { id: "conflict", hidden: true });
    const save = h("button", { type: "submit", class: "primary", id: "edit-save" }, "Save");
    const form = h("form", { class: "stack", novalidate: true, onsubmit: (e) => { e.preventDefault(); return submit(editBase); } },
      h("p", { id: "edit-base" }, "You are editing version " + editBase + ". Saving makes a new version, unless someone else saved first: then you choose."),
      h("label", { for: "edit-value" }, "New value"), valueIn, expiry.el,
      editMsg, conflict,
      h("div", { class: "buttons" }, save, button("Cancel", () => closeEdit(), { id: "edit-cancel" })));
    editForm = { valueIn, expiry, editMsg, conflict, save };
    editSec.replaceChildren(h("h2", { id: "edit-title" }, "Edit " + baseName(key)), form);
    editSec.hidden = false;
    valueIn.focus();

    async function submit(ifMatch) {
      const exp = expiry.read();
      if (exp.error) { showMessage(editMsg, "error", exp.error); return; }
      save.disabled = true;
      try {
        const r = await api.putSecret(key, valueIn.value, { ifMatch, ...exp });
        if (!alive(v)) return;
        markOwn("put");
        const wanted = Boolean(exp.ttlSeconds || exp.expiresAt);
        closeEdit();
        shown = null;
        await loadMeta();
        showMessage(msg, "ok", "Saved version " + (r.version ?? meta.current_version) + "." +
          (wanted && meta && !meta.expires_at ? " The server did not record the expiry: it may be an older strongroom without expiry support." : ""));
      } catch (err) {
        if (!alive(v)) return;
        if (isStatus(err, 412, 409)) await showConflict(ifMatch);
        else showError(editMsg, err, { op: "write", key });
      } finally {
        save.disabled = false;
      }
    }

    async function showConflict(mine) {
      editMsg.replaceChildren();
      let theirs;
      try {
        theirs = await api.getMetadata(key);
      } catch (e) {
        if (alive(v)) showError(editMsg, e, { op: "metadata", key });
        return;
      }
      if (!alive(v)) return;
      meta = theirs;
      renderSummary();
      renderVersions();
      const now = theirs.current_version;
      const title = h("h3", { id: "conflict-title", tabindex: "-1" }, "Someone else saved this secret first");
      conflict.replaceChildren(h("div", { class: "conflict", role: "alert", "aria-labelledby": "conflict-title" },
        title,
        h("p", { id: "conflict-text" }, "You were editing version " + mine + ", but it is now at version " + now +
          ", saved ", timeEl(theirs.updated_at, true), ". Your change has not been saved." +
          (theirs.deleted ? " The secret has also been deleted since." : "")),
        h("div", { class: "buttons" },
          theirs.deleted ? null : button("Show their value", () => reveal(now), { id: "conflict-show" }),
          button("Reload theirs (discard mine)", () => {
            closeEdit();
            shown = null;
            return loadMeta().then(() => showMessage(msg, "ok", "Showing version " + now + " as saved by someone else; your change was discarded."));
          }, { id: "conflict-reload" }),
          button("Overwrite version " + now + " with mine", () => { conflict.hidden = true; return submit(now); },
            { id: "conflict-overwrite", class: "danger" }))));
      conflict.hidden = false;
      title.focus();
    }
  }

  function closeEdit() {
    editSec.hidden = true;
    editSec.replaceChildren();
    editForm = null;
    editBase = null;
  }

  async function del() {
    try {
      await api.deleteSecret(key, meta.current_version);
      if (!alive(v)) return;
      markOwn("delete");
      shown = null;
      closeEdit();
      await loadMeta();
      showMessage(msg, "ok", "Deleted " + key + ". It can be undeleted.");
      $("undelete")?.focus();
    } catch (e) {
      if (!alive(v)) return;
      showError(msg, e, { op: "delete", key });
      if (isStatus(e, 412, 409)) await loadMeta();
    }
  }

  async function undelete() {
    try {
      await api.undeleteSecret(key);
      if (!alive(v)) return;
      markOwn("undelete");
      await loadMeta();
      showMessage(msg, "ok", "Undeleted " + key + ": version " + meta.current_version + " is current again.");
      $("edit")?.focus();
    } catch (e) {
      if (alive(v)) showError(msg, e, { op: "undelete", key });
    }
  }

  // ---- destroy, confirmed by typing the key
  const destroyBox = h("div", { id: "destroy-box", hidden: true });
  function openDestroy() {
    const confirmIn = h("input", { id: "destroy-confirm", type: "text", autocomplete: "off", spellcheck: "false",
      "aria-describedby": "destroy-text" });
    const go2 = h("button", { type: "submit", class: "danger", id: "destroy-go", disabled: true }, "Destroy forever");
    const dMsg = messages();
    confirmIn.addEventListener("input", () => { go2.disabled = confirmIn.value !== key; });
    destroyBox.replaceChildren(h("form", { class: "stack destroy", novalidate: true, onsubmit: async (e) => {
      e.preventDefault();
      if (confirmIn.value !== key) return;
      go2.disabled = true;
      try {
        await api.destroySecret(key);
        if (!alive(v)) return;
        flash = { kind: "ok", text: "Destroyed " + key + " and all its versions for good." };
        go(routeHash("browse", folderOf(key)));
      } catch (err) {
        if (alive(v)) showError(dMsg, err, { op: "destroy", key });
        go2.disabled = false;
      }
    } },
      h("h3", null, "Destroy " + key + "?"),
      h("p", { id: "destroy-text" }, "Every version is erased for good; this cannot be undone. Type the key's full name, ",
        h("code", null, key), ", to confirm."),
      h("label", { for: "destroy-confirm" }, "Key to destroy"), confirmIn, dMsg,
      h("div", { class: "buttons" }, go2, button("Cancel", () => { destroyBox.hidden = true; $("destroy")?.focus(); }, { id: "destroy-cancel" }))));
    destroyBox.hidden = false;
    confirmIn.focus();
  }

  watch(v, key, live, (change) => {
    if (change && change.key !== key) return;
    const own = change && recent.some((r) => r.action === change.action && Date.now() - r.at < 5000);
    if (own) return;
    if (change && meta && change.action === "put" && change.version && change.version <= meta.current_version) return;
    showMessage(msg, "info", change
      ? "This secret changed elsewhere (" + change.action + (change.version ? ", version " + change.version : "") + ")."
      : "This secret may have changed elsewhere.",
    button("Reload", () => loadMeta().then((ok) => { if (ok) msg.replaceChildren(); }), { class: "inline" }));
  });

  loadMeta().then((ok) => {
    if (ok && f && f.expectExpiry && !meta.expires_at) {
      showMessage(msg, "info", f.text + " The server did not record the expiry: it may be an older strongroom without expiry support.");
    }
  });
  return title;
}

async function copyToClipboard(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall back below
  }
  const ta = h("textarea", { class: "offscreen", "aria-hidden": "true", tabindex: "-1", readonly: true });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch { ok = false; }
  ta.value = "";
  ta.remove();
  return ok;
}

// ---- expiring soon ----------------------------------------------------------

function viewExpiring() {
  const v = beginView("expiring");
  setTitle("Expiring soon");
  const title = heading("Expiring soon");
  const msg = messages();
  const windowSel = h("select", { id: "exp-window" },
    h("option", { value: "1" }, "1 day"), h("option", { value: "7", selected: true }, "7 days"),
    h("option", { value: "30" }, "30 days"), h("option", { value: "90" }, "90 days"));
  const prefixIn = h("input", { id: "exp-prefix", type: "text", autocomplete: "off", spellcheck: "false", placeholder: "team/" });
  const tbody = h("tbody");
  const count = h("p", { class: "count", role: "status" });
  const more = button("Load more", () => load(false), { id: "exp-more", hidden: true });
  let entries = [];
  let next = null;
  let cutoff = null;
  let ignored = false;

  function render() {
    const rows = entries.map((s) => h("tr", null,
      h("td", { "data-label": "Key" }, h("a", { href: routeHash("secret", s.key) }, s.key)),
      h("td", { "data-label": "Expires" }, timeEl(s.expires_at, true)),
      h("td", { "data-label": "Version" }, String(s.version)),
      h("td", { "data-label": "Updated" }, timeEl(s.updated_at))));
    if (!rows.length) rows.push(h("tr", null, h("td", { colspan: "4", class: "empty" }, "Nothing expires in that time.")));
    tbody.replaceChildren(...rows);
    count.textContent = entries.length + (entries.length === 1 ? " key expires" : " keys expire") + " before " + dateFmt.format(cutoff) + (next ? "; more follow." : ".");
    more.hidden = !next;
    if (ignored) {
      showMessage(msg, "info", "This server ignored the expiry filter: it is probably an older strongroom without expiry support, so nothing can be listed here.");
    }
  }

  async function load(reset) {
    if (reset) {
      cutoff = new Date(Date.now() + Number(windowSel.value) * 86400000);
      entries = [];
      next = null;
      ignored = false;
      msg.replaceChildren();
    }
    try {
      const page = await api.listSecrets(prefixIn.value.trim(), reset ? null : next, { expiring_before: cutoff.toISOString() });
      if (!alive(v)) return;
      const cut = cutoff.getTime();
      const keep = page.secrets.filter((s) => s.expires_at && Date.parse(s.expires_at) < cut);
      if (keep.length < page.secrets.length) ignored = true;
      entries = entries.concat(keep);
      next = ignored ? null : page.next;
      render();
    } catch (e) {
      if (alive(v)) showError(msg, e, { op: "list", prefix: prefixIn.value.trim() });
    }
  }

  viewEl.append(title,
    h("p", { class: "lede" }, "Secrets whose expiry falls within the chosen time. At expiry a secret is soft-deleted and can be undeleted."),
    h("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); return load(true); } },
      h("label", { for: "exp-window" }, "Expiring within"), windowSel,
      h("label", { for: "exp-prefix" }, "Under prefix (optional)"), prefixIn,
      h("button", { type: "submit", class: "primary" }, "Show")),
    msg,
    h("table", { class: "list", id: "expiring-list" },
      h("caption", { class: "visually-hidden" }, "Keys expiring soon"),
      h("thead", null, h("tr", null, ["Key", "Expires", "Version", "Updated"].map((t) => h("th", { scope: "col" }, t)))),
      tbody),
    h("div", { class: "list-footer" }, count, more));
  load(true).catch(() => {});
  return title;
}

// ---- API keys ---------------------------------------------------------------

const SCOPE_INFO = [
  ["secrets:read", "read values"],
  ["secrets:list", "list keys and read metadata"],
  ["secrets:write", "create, edit and undelete"],
  ["secrets:delete", "delete and destroy"],
  ["apikeys:admin", "create, list and revoke API keys"],
  ["audit:read", "read the audit trail"],
  ["keys:admin", "rotate the tenant's data key"],
];

function viewApiKeys() {
  const v = beginView("apikeys");
  setTitle("API keys");
  const title = heading("API keys");
  const msg = messages();
  const listMsg = messages();
  const tbody = h("tbody");

  // create form
  const nameIn = h("input", { id: "ak-name", type: "text", autocomplete: "off", spellcheck: "false", required: true, placeholder: "ci-deploy" });
  const boxes = SCOPE_INFO.map(([scope, what], i) => {
    const cb = h("input", { type: "checkbox", id: "ak-scope-" + i, value: scope });
    return { cb, el: h("div", { class: "check" }, cb, h("label", { for: cb.id }, h("code", null, scope), " — " + what)) };
  });
  const prefixIn = h("input", { id: "ak-prefix", type: "text", autocomplete: "off", spellcheck: "false", placeholder: "team/app/",
    "aria-describedby": "ak-prefix-hint" });
  const daysIn = h("input", { id: "ak-days", type: "number", min: "1", max: "3650", step: "1", value: "90", inputmode: "numeric" });
  const createBtn = h("button", { type: "submit", class: "primary", id: "ak-create" }, "Create key");
  const createMsg = messages();
  const newKey = h("div", { id: "ak-new", hidden: true });

  let fresh = null; // the new key's text, until Done
  v.cleanup.push(() => { fresh = null; });

  function showNewKey(rec) {
    fresh = rec.key;
    const text = h("code", { id: "ak-new-key", class: "secret-text", tabindex: "0", "aria-labelledby": "ak-new-title" }, rec.key);
    const copyMsg = messages();
    newKey.replaceChildren(h("div", { class: "newkey", role: "region", "aria-labelledby": "ak-new-title" },
      h("h3", { id: "ak-new-title", tabindex: "-1" }, "New key “" + rec.name + "”: copy it now"),
      h("p", null, "This is the only time strongroom shows this key. Store it somewhere safe before you leave this page."),
      text,
      h("div", { class: "buttons" },
        button("Copy key", async () => {
          const ok = fresh !== null && await copyToClipboard(fresh);
          showMessage(copyMsg, ok ? "ok" : "error", ok ? "Copied to the clipboard." : "The browser refused to copy; select the key and press Ctrl+C.");
        }, { id: "ak-new-copy", class: "primary" }),
        button("Done, hide it", () => { fresh = null; newKey.replaceChildren(); newKey.hidden = true; nameIn.focus(); }, { id: "ak-new-done" })),
      copyMsg));
    newKey.hidden = false;
    $("ak-new-title").focus();
  }

  const form = h("form", { class: "stack", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    const name = nameIn.value.trim();
    if (!name) { showMessage(createMsg, "error", "Give the key a name, so you can tell it apart in the list and the audit trail."); nameIn.focus(); return; }
    const days = Number(daysIn.value);
    if (!Number.isInteger(days) || days < 1 || days > 3650) { showMessage(createMsg, "error", "The key's lifetime must be a whole number of days from 1 to 3650."); daysIn.focus(); return; }
    const narrow = prefixIn.value.trim();
    if (narrow && keyProblem(narrow.replace(/\/$/, ""))) { showMessage(createMsg, "error", "The prefix must be a valid key prefix, such as team/app/."); prefixIn.focus(); return; }
    let scopes = boxes.filter((b) => b.cb.checked).map((b) => b.cb.value);
    if (narrow) {
      if (!scopes.some((s) => s.startsWith("secrets:"))) scopes = scopes.concat(["secrets:read", "secrets:list", "secrets:write", "secrets:delete"]);
      scopes = scopes.map((s) => (s.startsWith("secrets:") ? s + ":" + narrow : s));
    }
    const spec = { name, expires_in_days: days };
    if (scopes.length) spec.scopes = scopes;
    createBtn.disabled = true;
    try {
      const rec = await api.createApiKey(spec);
      if (!alive(v)) return;
      createMsg.replaceChildren();
      nameIn.value = "";
      for (const b of boxes) b.cb.checked = false;
      prefixIn.value = "";
      daysIn.value = "90";
      showNewKey(rec);
      await loadList();
    } catch (err) {
      if (alive(v)) showError(createMsg, err, { op: "apikeys-create" });
    } finally {
      createBtn.disabled = false;
    }
  } },
    h("label", { for: "ak-name" }, "Name"), nameIn,
    h("fieldset", { class: "scopes" }, h("legend", null, "Scopes"), boxes.map((b) => b.el),
      h("p", { class: "hint" }, "Tick none to give every secrets:* scope (and no admin scope). Nobody can grant a scope their own key lacks.")),
    h("label", { for: "ak-prefix" }, "Limit the secrets scopes to keys starting with (optional)"), prefixIn,
    h("p", { id: "ak-prefix-hint", class: "hint" }, "For example team/app/: the key then reaches only secrets under that prefix."),
    h("label", { for: "ak-days" }, "Expires after (days)"), daysIn,
    createMsg, h("div", { class: "buttons" }, createBtn));

  function renderList(keys) {
    const rows = keys.map((k) => {
      const mine = session && session.keyId === k.id;
      const actions = h("td", { "data-label": "Actions" });
      const plain = () => actions.replaceChildren(button("Revoke", () => confirmRevoke(), { class: "danger small", "aria-label": "Revoke key " + k.name, "data-revoke": k.id }));
      const confirmRevoke = () => {
        const yes = button("Yes, revoke", () => revoke(), { class: "danger small", id: "ak-revoke-yes" });
        actions.replaceChildren(h("span", { class: "small" }, mine ? "This is the key you are signed in with. Revoke it?" : "Revoke “" + k.name + "”?"), " ",
          yes, " ", button("Cancel", () => plain(), { class: "secondary small" }));
        yes.focus();
      };
      const revoke = async () => {
        try {
          await api.revokeApiKey(k.id);
          if (!alive(v)) return;
          if (mine) { signOut("You revoked the key you were signed in with."); return; }
          showMessage(listMsg, "ok", "Revoked “" + k.name + "” (" + k.id + "). It stops working at once.");
          await loadList();
        } catch (e) {
          if (alive(v)) showError(listMsg, e, { op: isStatus(e, 404) ? "apikeys-revoke" : "apikeys" });
        }
      };
      plain();
      return h("tr", { "data-id": k.id },
        h("td", { "data-label": "Name" }, k.name, mine ? h("span", { class: "badge" }, "this session") : null),
        h("td", { "data-label": "ID" }, h("code", null, k.id)),
        h("td", { "data-label": "Scopes" }, h("ul", { class: "scope-list" }, (k.scopes || []).map((s) => h("li", null, h("code", null, s))))),
        h("td", { "data-label": "Created" }, timeEl(k.created_at)),
        h("td", { "data-label": "Expires" }, k.expires_at ? timeEl(k.expires_at, true) : "never"),
        h("td", { "data-label": "Last used" }, k.last_used_at ? timeEl(k.last_used_at, true) : h("span", { class: "muted" }, "never")),
        actions);
    });
    if (!rows.length) rows.push(h("tr", null, h("td", { colspan: "7", class: "empty" }, "No API keys.")));
    tbody.replaceChildren(...rows);
  }

  async function loadList() {
    try {
      const keys = await api.listApiKeys();
      if (alive(v)) renderList(keys);
    } catch (e) {
      if (alive(v)) showError(listMsg, e, { op: "apikeys" });
    }
  }

  // data key rotation
  const rotateMsg = messages();
  const rotateBox = h("div", { class: "buttons" });
  const rotatePlain = () => rotateBox.replaceChildren(button("Rotate the data key…", () => {
    const yes = button("Rotate now", async () => {
      try {
        const r = await api.rotateDataKey();
        if (!alive(v)) return;
        showMessage(rotateMsg, "ok", "New data key " + r.dek_id + " is in use since " + dateFmt.format(new Date(r.created_at)) + ".");
      } catch (e) {
        if (alive(v)) showError(rotateMsg, e, { op: "rotate" });
      }
      rotatePlain();
    }, { class: "danger", id: "rotate-yes" });
    rotateBox.replaceChildren(h("span", null, "Start a new data key for this tenant?"), yes, button("Cancel", () => rotatePlain()));
    yes.focus();
  }, { id: "rotate" }));
  rotatePlain();

  viewEl.append(title, msg,
    h("section", { class: "card", "aria-labelledby": "ak-list-title" },
      h("h2", { id: "ak-list-title" }, "Keys of this tenant"),
      h("div", { class: "toolbar" }, button("Refresh", () => loadList())),
      listMsg,
      h("table", { class: "list", id: "apikey-list" },
        h("caption", { class: "visually-hidden" }, "API keys of this tenant"),
        h("thead", null, h("tr", null, ["Name", "ID", "Scopes", "Created", "Expires", "Last used", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        tbody)),
    h("section", { class: "card", "aria-labelledby": "ak-create-title" }, h("h2", { id: "ak-create-title" }, "Create an API key"), form, newKey),
    h("section", { class: "card", "aria-labelledby": "rotate-title" },
      h("h2", { id: "rotate-title" }, "Data key"),
      h("p", null, "Rotating starts a new encryption key for this tenant's new writes; older versions stay readable. Needs the keys:admin scope."),
      rotateBox, rotateMsg));
  loadList();
  return title;
}

// ---- audit trail -----------------------------------------------------------

function viewAudit() {
  const v = beginView("audit");
  setTitle("Audit trail");
  const title = heading("Audit trail");
  const msg = messages();
  const filterIn = h("input", { id: "audit-filter", type: "search", autocomplete: "off", spellcheck: "false", placeholder: "secrets.write or team/" });
  const tbody = h("tbody");
  const count = h("p", { class: "count", role: "status", id: "audit-count" });
  const more = button("Load more lines", () => load(false), { id: "audit-more", hidden: true });
  const toEnd = button("Load to the end", () => loadToEnd(), { id: "audit-end", hidden: true });
  const newest = h("input", { type: "checkbox", id: "audit-newest" });
  const table = h("table", { class: "list", id: "audit-list" },
    h("caption", { class: "visually-hidden" }, "Audit lines, oldest first"),
    h("thead", null, h("tr", null, ["Time", "Action", "Key", "Outcome", "Subject", "Client"].map((t) => h("th", { scope: "col" }, t)))),
    tbody);
  let lines = [];
  let next = null;

  function render() {
    const q = filterIn.value.trim().toLowerCase();
    const shownLines = q ? lines.filter((l) => [l.action, l.key, l.subject, String(l.status)].some((x) => x && String(x).toLowerCase().includes(q))) : lines;
    const ordered = newest.checked ? [...shownLines].reverse() : shownLines;
    const rows = ordered.map((l) => h("tr", { class: "audit-row" },
      h("td", { "data-label": "Time" }, timeEl(l.time)),
      h("td", { "data-label": "Action" }, h("code", null, String(l.action ?? "—"))),
      h("td", { "data-label": "Key" }, l.key ? String(l.key) : h("span", { class: "muted" }, "—")),
      h("td", { "data-label": "Outcome", class: Number(l.status) < 400 ? "ok-text" : "bad-text" }, l.status !== undefined ? statusText(Number(l.status)) : "—"),
      h("td", { "data-label": "Subject" }, String(l.subject ?? "—")),
      h("td", { "data-label": "Client" }, String(l.client ?? "—"))));
    if (!rows.length) rows.push(h("tr", null, h("td", { colspan: "6", class: "empty" }, q ? "No loaded line matches." : "No audit lines yet.")));
    tbody.replaceChildren(...rows);
    count.textContent = "Loaded " + lines.length + (lines.length === 1 ? " line" : " lines") + (q ? ", " + shownLines.length + " match" : "") + (next !== null ? "; more follow." : ".");
    more.hidden = next === null;
    toEnd.hidden = next === null;
  }

  /** Follows `next` until the end (at most 25 pages, 5,000 lines, a click). */
  async function loadToEnd() {
    for (let i = 0; i < 25 && next !== null && alive(v); i += 1) {
      if (!(await load(false))) break;
    }
  }

  async function load(reset) {
    more.disabled = true;
    try {
      const page = await api.readAudit(reset ? undefined : next, 200);
      if (!alive(v)) return;
      lines = reset ? page.lines : lines.concat(page.lines);
      next = page.next;
      msg.replaceChildren();
      render();
      return true;
    } catch (e) {
      if (!alive(v)) return false;
      showError(msg, e, { op: "audit" });
      if (isStatus(e, 404)) table.hidden = true;
      return false;
    } finally {
      more.disabled = false;
    }
  }
  filterIn.addEventListener("input", () => render());
  newest.addEventListener("change", () => render());

  viewEl.append(title,
    h("p", { class: "lede" }, "Every request that reached a secret or an API key, allowed or refused, in the order it was written (tick Newest first to turn the loaded lines around). Values and credentials are never recorded."),
    h("div", { class: "toolbar" },
      h("label", { for: "audit-filter" }, "Filter the loaded lines"), filterIn,
      h("div", { class: "check" }, newest, h("label", { for: "audit-newest" }, "Newest first")),
      button("Reload", () => load(true), { id: "audit-reload" })),
    msg, table, h("div", { class: "list-footer" }, count, more, toEnd));
  load(true).catch(() => {});
  return title;
}

// ---- sign-in and sign-out --------------------------------------------------

const signinSec = $("signin");
const signinForm = $("signin-form");
const credIn = $("credential");
const signinErr = $("signin-error");
const signinBtn = $("signin-submit");

function signinMessage(text, kind = "error") {
  signinErr.textContent = text;
  signinErr.className = kind === "error" ? "error" : "msg info";
  signinErr.setAttribute("role", kind === "error" ? "alert" : "status");
  signinErr.hidden = !text;
}

// A sign-in at the identity provider leaves this page and comes back to
// /ui/ with ?code=&state= (or ?error=). The client nonce survives the trip
// in sessionStorage (a value of no use without the code and state, and
// removed on return); the token itself only ever lives in memory.
const OIDC_PENDING = "strongroom.oidc.pending";

function oidcMessage(text) {
  const el = $("oidc-error");
  el.textContent = text;
  el.hidden = !text;
}

async function oidcBegin() {
  const tenant = $("oidc-tenant").value.trim();
  const role = $("oidc-role").value.trim();
  if (!tenant || !role) {
    oidcMessage("Enter the tenant and the role your administrator gave you.");
    return;
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const nonce = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const redirect = location.origin + "/ui/";
  let url;
  try {
    url = await api.oidcAuthUrl(tenant, role, redirect, nonce);
  } catch (e) {
    const detail = e && e.detail ? " (" + e.detail + ")" : "";
    oidcMessage("The sign-in could not begin" + detail + ". Check the tenant and role.");
    return;
  }
  sessionStorage.setItem(OIDC_PENDING, nonce);
  location.assign(url);
}

/** Finishes a sign-in the provider sent back here, if it did. */
async function oidcReturn() {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return;
  // The code and state leave the address bar and the history at once.
  history.replaceState(null, "", location.pathname);
  const nonce = sessionStorage.getItem(OIDC_PENDING);
  sessionStorage.removeItem(OIDC_PENDING);
  if (params.has("error")) {
    const why = params.get("error") === "access_denied" ? "it was cancelled or refused at the provider" : "the provider said " + params.get("error");
    oidcMessage("The sign-in did not finish: " + why + ".");
    return;
  }
  if (!nonce) {
    oidcMessage("The sign-in did not finish: this tab did not begin it. Sign in again.");
    return;
  }
  let done;
  try {
    done = await api.oidcCallback(params.get("state"), params.get("code"), nonce);
  } catch (e) {
    const detail = e && e.detail ? " (" + e.detail + ")" : "";
    oidcMessage("The sign-in did not finish" + detail + ". Sign in again.");
    return;
  }
  await finishSignIn({ kind: "token", text: done.token }, "Token for " + done.subject + " (tenant " + done.tenant + ")");
}

async function signIn() {
  let cred;
  try {
    cred = api.parseCredential(credIn.value);
  } catch (e) {
    signinMessage(e.message);
    credIn.focus();
    return;
  }
  if (cred.kind === "jwt" && cred.claims && typeof cred.claims.exp === "number" && cred.claims.exp * 1000 < Date.now()) {
    signinMessage("This token expired at " + dateFmt.format(new Date(cred.claims.exp * 1000)) + ". Get a fresh one.");
    return;
  }
  await finishSignIn(cred);
}

/** Signs in with `cred` once the server accepts it; `label` names it. */
async function finishSignIn(cred, label) {
  signinBtn.disabled = true;
  api.setCredential(cred);
  try {
    await api.listSecrets("", null, { limit: 1 });
  } catch (e) {
    if (!isStatus(e, 403)) {
      api.clearCredential();
      signinMessage(api.describeError(e, { op: "list", prefix: "" }));
      signinBtn.disabled = false;
      credIn.focus();
      return;
    }
  }
  signinBtn.disabled = false;
  credIn.value = "";
  signinMessage("");
  oidcMessage("");
  const c = cred.claims || {};
  session = {
    keyId: cred.keyId || null,
    label: label || (cred.kind === "apikey" ? "API key " + cred.keyId
      : cred.kind === "token" ? "a login token"
      : "Token" + (c.sub ? " for " + String(c.sub) : "") + (c.tenant ? " (tenant " + String(c.tenant) + ")" : "")),
  };
  $("session-label").textContent = "Signed in with " + session.label;
  signinSec.hidden = true;
  viewEl.hidden = false;
  $("mainnav").hidden = false;
  $("session").hidden = false;
  route();
}

function signOut(reason) {
  session = null;
  api.clearCredential();
  beginView(null);
  viewEl.hidden = true;
  $("mainnav").hidden = true;
  $("session").hidden = true;
  $("session-label").textContent = "";
  signinSec.hidden = false;
  document.title = "Sign in · strongroom console";
  signinMessage(typeof reason === "string" ? reason : "You are signed out. The key was forgotten.", "info");
  credIn.focus();
}

signinForm.addEventListener("submit", (e) => { e.preventDefault(); safe(signIn)(); });
credIn.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); safe(signIn)(); }
});
$("credential-show").addEventListener("change", (e) => { credIn.classList.toggle("masked", !e.target.checked); });
$("signout").addEventListener("click", () => signOut());
$("skip-link").addEventListener("click", (e) => { e.preventDefault(); $("main").focus(); });
window.addEventListener("hashchange", () => { if (session) route(); });
window.addEventListener("pagehide", () => { api.clearCredential(); });
$("oidc-form").addEventListener("submit", (e) => { e.preventDefault(); safe(oidcBegin)(); });
$("signin-fieldset").disabled = false;
credIn.focus();
safe(oidcReturn)();
