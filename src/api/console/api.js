// strongroom web console: the HTTP client. It holds the credential in one
// module variable (never storage, cookies or URLs), sends it as a header on
// every call, turns API errors into sentences a person understands, and reads
// the /watch Server-Sent Events stream with fetch() (EventSource cannot send
// an auth header). Nothing here logs a value or a credential.

let credential = null; // { kind: "apikey" | "token" | "jwt", text, keyId?, claims? }

const API_KEY_RE = /^sr_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/;
const LOGIN_TOKEN_RE = /^srt_[A-Za-z0-9_-]{43}$/;
const JWT_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Reads pasted text as an API key or a JWT; throws an Error in words. */
export function parseCredential(raw) {
  const text = raw.trim();
  if (text === "") throw new Error("Paste an API key, a login token or a JWT first.");
  const key = API_KEY_RE.exec(text);
  if (key) return { kind: "apikey", text, keyId: key[1] };
  if (text.startsWith("sr_")) {
    throw new Error(
      "This looks like a strongroom API key but it is incomplete: a key is sr_, 16 hex digits, _ and 43 more characters. Paste the whole key.");
  }
  // A login token (POST /auth/login/jwt) is sent as a bearer token.
  if (LOGIN_TOKEN_RE.test(text)) return { kind: "token", text };
  if (text.startsWith("srt_")) {
    throw new Error(
      "This looks like a strongroom login token but it is incomplete: a token is srt_ and 43 more characters. Paste the whole token.");
  }
  if (JWT_RE.test(text)) {
    let claims = null;
    try {
      const part = text.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    } catch {
      claims = null;
    }
    return { kind: "jwt", text, claims: claims && typeof claims === "object" ? claims : null };
  }
  throw new Error(
    "This is neither a strongroom API key (it starts with sr_) nor a JWT (three parts separated by dots).");
}

export function setCredential(c) { credential = c; }
export function clearCredential() { credential = null; }
export function credentialKind() { return credential ? credential.kind : null; }
export function credentialKeyId() { return credential && credential.kind === "apikey" ? credential.keyId : null; }
export function credentialClaims() { return credential && credential.kind === "jwt" ? credential.claims : null; }

function authHeaders() {
  if (!credential) throw new ApiError(401, { error: "unauthorized" }, null);
  return credential.kind === "apikey"
    ? { "X-Api-Key": credential.text }
    : { Authorization: "Bearer " + credential.text };
}

/** A failed API call: HTTP status, the body's error and detail, Retry-After. */
export class ApiError extends Error {
  constructor(status, body, headers) {
    super((body && body.error) || "HTTP " + status);
    this.status = status;
    this.error = body && typeof body.error === "string" ? body.error : "";
    this.detail = body && typeof body.detail === "string" ? body.detail : "";
    this.retryAfter = headers ? headers.get("Retry-After") : null;
    this.requestId = headers ? headers.get("X-Request-Id") : null;
  }
}

/** The server could not be reached at all. */
export class NetworkError extends Error {}

/** A key in a path: each segment percent-encoded, the slashes kept. */
export function keyPath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

function withQuery(path, query) {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? path + "?" + s : path;
}

function fetchOptions(method, headers, body, signal) {
  return {
    method,
    headers,
    body,
    signal,
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
    referrerPolicy: "no-referrer",
  };
}

async function call(method, path, { query, body, headers } = {}) {
  const h = { Accept: "application/json", ...authHeaders(), ...(headers || {}) };
  if (body !== undefined) h["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(withQuery(path, query),
      fetchOptions(method, h, body === undefined ? undefined : JSON.stringify(body)));
  } catch {
    throw new NetworkError("network");
  }
  let data = null;
  if ((res.headers.get("Content-Type") || "").includes("json")) {
    try { data = await res.json(); } catch { data = null; }
  }
  if (!res.ok) throw new ApiError(res.status, data, res.headers);
  return { status: res.status, data, version: parseEtag(res.headers.get("ETag")) };
}

function parseEtag(tag) {
  if (!tag) return null;
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(tag.trim());
  return m ? Number(m[1]) : null;
}

// ---- the endpoints ----------------------------------------------------

/** A call that carries no credential (a login's own requests). */
async function anonymous(method, path, body) {
  let res;
  try {
    res = await fetch(path, fetchOptions(method,
      { Accept: "application/json", "Content-Type": "application/json" }, JSON.stringify(body)));
  } catch {
    throw new NetworkError("network");
  }
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) throw new ApiError(res.status, data, res.headers);
  return data;
}

/** Begins a sign-in at the role's identity provider: the URL to open. */
export async function oidcAuthUrl(tenant, role, redirectUri, clientNonce) {
  const data = await anonymous("POST", "/auth/oidc/auth_url",
    { tenant, role, redirect_uri: redirectUri, client_nonce: clientNonce });
  return data.auth_url;
}

/** Finishes a sign-in with the provider's code: the login's answer. */
export async function oidcCallback(state, code, clientNonce) {
  return anonymous("POST", "/auth/oidc/callback", { state, code, client_nonce: clientNonce });
}

export async function listSecrets(prefix, cursor, extra = {}) {
  const r = await call("GET", "/secrets", { query: { prefix, limit: 1000, cursor, ...extra } });
  return { secrets: r.data.secrets || [], next: r.data.next_cursor || null };
}

export async function getSecret(key, version) {
  const r = await call("GET", "/secrets/" + keyPath(key), { query: { version } });
  return { value: r.data.value, version: r.version };
}

/** Writes a value; `opts`: ifMatch (a version), createOnly, expiresAt, ttlSeconds. */
export async function putSecret(key, value, opts = {}) {
  const body = { key, value };
  if (opts.expiresAt) body.expires_at = opts.expiresAt;
  else if (opts.ttlSeconds) body.ttl_seconds = opts.ttlSeconds;
  const headers = {};
  if (opts.ifMatch != null) headers["If-Match"] = '"' + opts.ifMatch + '"';
  if (opts.createOnly) headers["If-None-Match"] = "*";
  const r = await call("PUT", "/secrets", { body, headers });
  return { version: r.version };
}

export async function deleteSecret(key, ifMatch) {
  const headers = ifMatch != null ? { "If-Match": '"' + ifMatch + '"' } : {};
  await call("DELETE", "/secrets/" + keyPath(key), { headers });
}
export async function undeleteSecret(key) { await call("POST", "/undelete/" + keyPath(key)); }
export async function destroySecret(key) { await call("DELETE", "/metadata/" + keyPath(key)); }
export async function getMetadata(key) { return (await call("GET", "/metadata/" + keyPath(key))).data; }

export async function listApiKeys() {
  // Every page: the server answers at most 1,000 keys at once.
  const all = [];
  let cursor = null;
  do {
    const query = "/apikeys?limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
    const data = (await call("GET", query)).data;
    all.push(...(data.apikeys || []));
    cursor = data.next_cursor || null;
  } while (cursor);
  return all;
}
export async function createApiKey(spec) { return (await call("POST", "/apikeys", { body: spec })).data; }
export async function revokeApiKey(id) { await call("DELETE", "/apikeys/" + encodeURIComponent(id)); }
export async function readAudit(after, limit) {
  const r = await call("GET", "/audit", { query: { after, limit } });
  return { lines: r.data.lines || [], next: r.data.next ?? null };
}
export async function rotateDataKey() { return (await call("POST", "/keys/rotate")).data; }

// ---- errors in words --------------------------------------------------

const SCOPES = {
  read: "secrets:read",
  list: "secrets:list",
  write: "secrets:write",
  delete: "secrets:delete",
  destroy: "secrets:delete",
  undelete: "secrets:write",
  metadata: "secrets:read or secrets:list",
  watch: "secrets:list",
  apikeys: "apikeys:admin",
  audit: "audit:read",
  rotate: "keys:admin",
};

function folderOf(key) {
  const at = key.lastIndexOf("/");
  return at < 0 ? "" : key.slice(0, at + 1);
}

/** What scope an operation needed, as a sentence; `ctx` = {op, key?, prefix?}. */
function forbidden(ctx) {
  const who = credentialKind() === "apikey" ? "This key" : "This token";
  const op = ctx.op || "read";
  if (op === "apikeys-create") {
    return who + " may not create that API key: it needs the apikeys:admin scope, and nobody can grant a scope they do not hold themselves.";
  }
  const scope = SCOPES[op] || "secrets:" + op;
  if (ctx.key !== undefined) {
    const folder = folderOf(ctx.key);
    const narrowed = scope.split(" or ")[0] + ":" + (folder || ctx.key);
    return who + " lacks the " + scope + " scope for " + ctx.key +
      " (" + scope.split(" or ")[0] + ", or a scope narrowed to it such as " + narrowed + ", would allow it).";
  }
  if (ctx.prefix !== undefined) {
    return who + " lacks the " + scope + " scope for " + (ctx.prefix === "" ? "all keys (the whole tenant)" : ctx.prefix) + ".";
  }
  return who + " lacks the " + scope + " scope.";
}

function seconds(retryAfter) {
  if (!retryAfter) return null;
  const n = Number(retryAfter);
  if (Number.isFinite(n)) return Math.max(0, Math.ceil(n));
  const at = Date.parse(retryAfter);
  return Number.isFinite(at) ? Math.max(0, Math.ceil((at - Date.now()) / 1000)) : null;
}

/** Turns any error from the calls above into a sentence (never raw JSON). */
export function describeError(err, ctx = {}) {
  if (err instanceof NetworkError) {
    return "Could not reach the strongroom server. Check that it is running and that this page was loaded from it, then try again.";
  }
  if (!(err instanceof ApiError)) return "Something went wrong in the console: " + (err && err.message ? err.message : String(err));
  const what = ctx.key !== undefined ? ctx.key : ctx.prefix !== undefined ? (ctx.prefix || "all keys") : "";
  const rid = err.requestId ? " (request id " + err.requestId + ")" : "";
  switch (err.status) {
    case 400:
      return "The server refused the request as invalid" + (err.detail ? ": " + err.detail : ".") ;
    case 401:
      return "The key or token was not accepted (unknown, expired or revoked). Sign in again.";
    case 403:
      return forbidden(ctx);
    case 404:
      if (ctx.op === "apikeys-revoke") return "That API key no longer exists (it may have been revoked already).";
      if (ctx.op === "audit" || ctx.op === "watch" || ctx.op === "rotate") {
        return "This strongroom server does not offer this yet (it is an older version).";
      }
      return what ? "There is no secret named " + what + " (it may have been deleted, destroyed or expired)." : "Not found.";
    case 409:
    case 412:
      if (ctx.op === "create") return "A secret named " + what + " already exists. Open it to edit it instead.";
      return "Someone else changed " + (what || "this") + " since you loaded it (version mismatch). Nothing was overwritten.";
    case 410:
      return "The change stream no longer reaches that far back; the list was reloaded.";
    case 413:
      return err.error === "value too large"
        ? "The value is larger than this server accepts (64 KiB unless the server was configured otherwise)."
        : "The request is larger than this server accepts.";
    case 415:
      return "The server did not accept the request's content type (a console bug)" + rid + ".";
    case 429: {
      const s = seconds(err.retryAfter);
      return "Too many requests; try again in " + (s === null ? "a few" : s) + " s.";
    }
    case 503: {
      const s = seconds(err.retryAfter);
      return "The server is unavailable right now (overloaded, or its store or audit trail is down). Try again" +
        (s === null ? " shortly." : " in " + s + " s.");
    }
    default:
      return "The server failed with HTTP " + err.status + (err.error ? " (" + err.error + ")" : "") + rid + ".";
  }
}

// ---- /watch -----------------------------------------------------------

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/**
 * Follows GET /watch?prefix=P. `onEvent(change)` gets each parsed data
 * object; `onState(state, detail)` gets "connecting", "live",
 * "reconnecting" (detail: ms), "reset" (the resume point was gone),
 * "unsupported" (404) or "error" (detail: ApiError; the watcher stops).
 * Reconnects with backoff, resuming with Last-Event-ID.
 */
export class Watcher {
  constructor(prefix, onEvent, onState) {
    this.prefix = prefix;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.stopper = new AbortController();
  }

  start() { this.run().catch(() => {}); return this; }

  stop() {
    this.stopper.abort();
    if (this.conn) this.conn.abort();
  }

  get stopped() { return this.stopper.signal.aborted; }

  async run() {
    let delay = 1000;
    while (!this.stopped) {
      this.conn = new AbortController();
      this.onState("connecting");
      let res = null;
      try {
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
        res = await fetch(withQuery("/watch", { prefix: this.prefix }),
          fetchOptions("GET", headers, undefined, this.conn.signal));
      } catch {
        res = null;
      }
      if (this.stopped) return;
      if (res && res.status === 404) { this.onState("unsupported"); return; }
      if (res && res.status === 410) { this.lastId = null; this.onState("reset"); continue; }
      if (res && (res.status === 401 || res.status === 403)) {
        this.onState("error", new ApiError(res.status, null, res.headers));
        return;
      }
      if (res && res.ok && res.body) {
        this.onState("live");
        const opened = Date.now();
        await this.read(res.body);
        if (Date.now() - opened > 10000) delay = 1000; // only a stream that lasted resets the backoff
        if (this.stopped) return;
      } else if (res) {
        const s = seconds(res.headers.get("Retry-After"));
        if (s !== null) delay = Math.max(delay, s * 1000);
      }
      this.onState("reconnecting", delay);
      await sleep(delay, this.stopper.signal);
      delay = Math.min(delay * 2, 30000);
    }
  }

  /** Parses the stream as SSE until it ends, fails or goes 45 s silent. */
  async read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let data = [];
    let pendingId = null;
    let idle = null;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => this.conn.abort(), 45000);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) buf += "\n"; // ends a line held back for a possible \r\n
        else {
          arm();
          buf += decoder.decode(value, { stream: true });
        }
        let m;
        while ((m = /\r\n|\r|\n/.exec(buf)) !== null) {
          if (!done && m[0] === "\r" && m.index === buf.length - 1) break; // maybe \r\n split
          const line = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          if (line === "") {
            if (pendingId !== null) { this.lastId = pendingId; pendingId = null; }
            if (data.length) {
              const text = data.join("\n");
              data = [];
              let change = null;
              try { change = JSON.parse(text); } catch { change = null; }
              if (change && typeof change === "object") this.onEvent(change);
            }
            continue;
          }
          if (line[0] === ":") continue; // heartbeat or comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val[0] === " ") val = val.slice(1);
          if (field === "data") data.push(val);
          else if (field === "id" && !val.includes("\0")) pendingId = val;
        }
        if (done) break;
      }
    } catch {
      // aborted or the connection broke: the caller reconnects
    } finally {
      clearTimeout(idle);
      try { reader.releaseLock(); } catch { /* already released */ }
    }
  }
}
