// kubegate console: the admin API client. The only place the console talks to the server, so
// tests drive it directly (node) against a real admin API. No DOM here.
//
// The session token from a password login is kept in the given storage (sessionStorage in the
// browser: gone with the tab) and sent as a bearer token. After an OIDC browser login the
// server holds the session in an HttpOnly cookie instead; fetch and WebSocket send it on their
// own (same origin), so both ways work without the page ever seeing that cookie.

export const SHELL_PROTOCOL = "kubegate.shell.v1";
const TOKEN_KEY = "kubegate.session";

export class ApiError extends Error {
  constructor(status, message, code = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export class KubegateApi {
  /**
   * @param {object} options
   * @param {string} [options.base] the admin API origin ("" in the browser: this page's)
   * @param {Function} [options.fetch]
   * @param {Function} [options.WebSocket]
   * @param {Storage} [options.storage] where the session token lives (sessionStorage)
   */
  constructor({
    base = "",
    fetch = globalThis.fetch.bind(globalThis),
    WebSocket = globalThis.WebSocket,
    storage = null,
  } = {}) {
    this.base = base.replace(/\/$/, "");
    this.fetch = fetch;
    this.WebSocket = WebSocket;
    this.storage = storage;
    this._token = "";
  }

  get token() {
    return (this.storage ? this.storage.getItem(TOKEN_KEY) : this._token) || "";
  }

  set token(value) {
    if (this.storage) {
      if (value) this.storage.setItem(TOKEN_KEY, value);
      else this.storage.removeItem(TOKEN_KEY);
    } else {
      this._token = value || "";
    }
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await this.fetch(this.base + path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      data = { error: text.trim() };
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        (data && data.error) || `${method} ${path}: HTTP ${response.status}`,
        (data && data.code) || "",
      );
    }
    return data;
  }

  /** Password login: POST /v1/login; keeps the session token. */
  async login(user, password) {
    const session = await this.request("POST", "/v1/login", { user, password });
    this.token = session.token;
    return session;
  }

  /** Where the OIDC button goes: the server redirects to the identity provider and back. */
  oidcLoginUrl() {
    return `${this.base}/v1/oidc/login?response=browser`;
  }

  /** POST /v1/logout; the token is dropped whatever the answer. */
  async logout() {
    try {
      return await this.request("POST", "/v1/logout");
    } finally {
      this.token = "";
    }
  }

  /** GET /v1/me/clusters: {user, admin, session_id, clusters: [{name, display_name,
   * browser_only}]}; an ApiError with status 401 when nobody is logged in. */
  me() {
    return this.request("GET", "/v1/me/clusters");
  }

  /** POST /v1/me/kubeconfig: {kubeconfig, serial, not_after, clusters}; 403 browser-only. */
  kubeconfig(clusters = [], ttlSeconds = undefined) {
    const body = { clusters };
    if (ttlSeconds !== undefined) body.ttl_seconds = ttlSeconds;
    return this.request("POST", "/v1/me/kubeconfig", body);
  }

  shellUrl(cluster) {
    const here = this.base || globalThis.location.origin;
    const url = new URL("/v1/shell", here);
    url.protocol = url.protocol === "http:" ? "ws:" : "wss:";
    url.searchParams.set("cluster", cluster);
    return url.toString();
  }

  /** Open the browser shell on a cluster; see ShellConnection for the handlers. */
  openShell(cluster, handlers = {}) {
    return new ShellConnection(this, cluster, handlers);
  }
}

function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * One shell WebSocket. Handlers: onOutput(Uint8Array) for terminal output; onEvent(message)
 * for the server's JSON messages ({type: ready|uploaded|file|error|closed, ...}; a `file`
 * message carries `bytes` decoded); onClose({code, reason}).
 */
export class ShellConnection {
  constructor(api, cluster, handlers) {
    this.handlers = handlers;
    this.encoder = new TextEncoder();
    const ws = new api.WebSocket(api.shellUrl(cluster), [SHELL_PROTOCOL]);
    ws.binaryType = "arraybuffer";
    const token = api.token;
    ws.onopen = () => {
      // Browsers cannot set headers on a WebSocket: the token is the first message. (A
      // session cookie, if any, was already checked on the upgrade; then this is ignored.)
      if (token) ws.send(JSON.stringify({ type: "auth", token }));
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message.type === "file") message.bytes = fromBase64(message.data);
        if (this.handlers.onEvent) this.handlers.onEvent(message);
      } else if (this.handlers.onOutput) {
        this.handlers.onOutput(new Uint8Array(event.data));
      }
    };
    ws.onclose = (event) => {
      if (this.handlers.onClose) this.handlers.onClose({ code: event.code, reason: event.reason });
    };
    this.ws = ws;
  }

  get open() {
    return this.ws.readyState === 1;
  }

  /** Keystrokes (a string from the terminal, or bytes). */
  send(data) {
    if (!this.open) return;
    this.ws.send(typeof data === "string" ? this.encoder.encode(data) : data);
  }

  resize(cols, rows) {
    if (this.open) this.ws.send(JSON.stringify({ type: "resize", cols, rows }));
  }

  /** Put a file into the shell's scratch directory (answered by an `uploaded` event). */
  upload(name, bytes) {
    if (this.open) this.ws.send(JSON.stringify({ type: "upload", name, data: toBase64(bytes) }));
  }

  /** Ask for a file from the scratch directory (answered by a `file` event). */
  download(name) {
    if (this.open) this.ws.send(JSON.stringify({ type: "download", name }));
  }

  close() {
    this.ws.close(1000, "closed by the user");
  }
}
