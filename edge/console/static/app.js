// kubegate console: the page. Login (password or OIDC), cluster picker, the browser shell
// (xterm.js), file upload into the shell, kubeconfig download, logout. All server calls go
// through api.js.

import { ApiError, KubegateApi } from "./api.js";
import { Terminal } from "./vendor/xterm/xterm.mjs";
import { FitAddon } from "./vendor/xterm/addon-fit.mjs";

const api = new KubegateApi({ storage: window.sessionStorage });
const $ = (id) => document.getElementById(id);

let me = null;
let shell = null;
let term = null;
let fit = null;

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

function explain(error) {
  if (error instanceof ApiError) return error.message;
  return `cannot reach kubegate: ${error.message || error}`;
}

function show(view) {
  $("login-view").hidden = view !== "login";
  $("main-view").hidden = view !== "main";
  $("whoami").hidden = view !== "main";
}

function selectedCluster() {
  const name = $("cluster").value;
  return me ? me.clusters.find((c) => c.name === name) : undefined;
}

function updateActions() {
  const cluster = selectedCluster();
  $("open-shell").disabled = !cluster;
  const browserOnly = !cluster || cluster.browser_only;
  $("download-kubeconfig").disabled = browserOnly;
  $("download-kubeconfig").title = browserOnly
    ? "your access to this cluster is browser-only: use the shell"
    : "a kubeconfig for kubectl and helm on your machine";
  $("cluster-note").replaceChildren();
  if (cluster && cluster.browser_only) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "browser only";
    $("cluster-note").append(badge);
  }
}

async function load() {
  try {
    me = await api.me();
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      api.token = "";
      show("login");
      return;
    }
    say(explain(error));
    show("login");
    return;
  }
  $("user-name").textContent = me.user;
  const select = $("cluster");
  select.replaceChildren();
  for (const cluster of me.clusters) {
    const option = document.createElement("option");
    option.value = cluster.name;
    option.textContent = cluster.display_name || cluster.name;
    select.append(option);
  }
  $("no-clusters").hidden = me.clusters.length > 0;
  updateActions();
  show("main");
}

function ensureTerminal() {
  if (term) return;
  term = new Terminal({ cursorBlink: true, convertEol: false, scrollback: 5000 });
  fit = new FitAddon();
  term.loadAddon(fit);
  term.open($("terminal"));
  term.onData((data) => shell && shell.send(data));
  term.onResize(({ cols, rows }) => shell && shell.resize(cols, rows));
  window.addEventListener("resize", () => fit.fit());
}

function openShell() {
  const cluster = selectedCluster();
  if (!cluster) return;
  if (shell) shell.close();
  ensureTerminal();
  term.reset();
  fit.fit();
  say("");
  const connection = api.openShell(cluster.name, {
    onOutput: (bytes) => term.write(bytes),
    onEvent: (event) => {
      if (event.type === "ready") {
        shell.resize(term.cols, term.rows);
        $("upload").disabled = false;
        term.focus();
      } else if (event.type === "uploaded") {
        say(`uploaded ${event.name} (${event.bytes} bytes) to the shell`, "info");
      } else if (event.type === "file") {
        saveFile(event.name, event.bytes, "application/octet-stream");
      } else if (event.type === "error") {
        say(event.message);
      }
    },
    onClose: ({ code, reason }) => {
      if (shell === connection) {
        shell = null;
        $("upload").disabled = true;
      }
      if (code === 4401 || code === 4410) {
        say(reason || "your session is over: log in again");
        api.token = "";
        load();
      } else if (code !== 1000 && reason) {
        say(`shell closed: ${reason}`, "info");
      }
    },
  });
  shell = connection;
}

function saveFile(name, data, type) {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function downloadKubeconfig() {
  const cluster = selectedCluster();
  if (!cluster) return;
  try {
    const issued = await api.kubeconfig([cluster.name]);
    saveFile(`kubeconfig-${me.user}-${cluster.name}.yaml`, issued.kubeconfig, "application/yaml");
    say(`kubeconfig for ${cluster.name}, valid until ${issued.not_after}`, "info");
  } catch (error) {
    say(explain(error));
  }
}

async function uploadFiles(event) {
  for (const file of event.target.files) {
    if (!shell) break;
    shell.upload(file.name, new Uint8Array(await file.arrayBuffer()));
  }
  event.target.value = "";
}

async function login(event) {
  event.preventDefault();
  say("");
  try {
    await api.login($("login-user").value, $("login-password").value);
    $("login-password").value = "";
    await load();
  } catch (error) {
    say(explain(error));
  }
}

async function logout() {
  if (shell) shell.close();
  shell = null;
  if (term) term.reset();
  try {
    await api.logout();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) say(explain(error));
  }
  me = null;
  show("login");
}

$("login-form").addEventListener("submit", login);
$("oidc-login").addEventListener("click", () => {
  window.location.href = api.oidcLoginUrl();
});
$("logout").addEventListener("click", logout);
$("cluster").addEventListener("change", updateActions);
$("open-shell").addEventListener("click", openShell);
$("download-kubeconfig").addEventListener("click", downloadKubeconfig);
$("upload").addEventListener("change", uploadFiles);
load();
