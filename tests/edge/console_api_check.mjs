// Drives the console's api.js (the real file the page loads) against a running admin API and
// prints what happened as JSON. Run by tests/edge/test_console_e2e.py with node.
//   node --experimental-websocket console_api_check.mjs API_JS BASE TOKEN CLUSTER NAMESPACE
const [apiPath, base, token, cluster, namespace] = process.argv.slice(2);
const { ApiError, KubegateApi } = await import(apiPath);

const out = {};
const api = new KubegateApi({ base });

try {
  await api.me();
  out.anonymous = "answered";
} catch (error) {
  out.anonymous = { apiError: error instanceof ApiError, status: error.status };
}

api.token = token;
out.me = await api.me();
try {
  out.kubeconfig = await api.kubeconfig([cluster]);
} catch (error) {
  out.kubeconfig = { apiError: error instanceof ApiError, status: error.status, code: error.code };
}

const decoder = new TextDecoder();
out.shell = await new Promise((resolve) => {
  let text = "";
  let asked = false;
  let uploaded = false;
  let exited = false;
  const events = [];
  // `exit` only once kubectl's run is over (the second prompt): keys typed while a command
  // runs belong to that command's terminal, as in any shell.
  const maybeExit = () => {
    if (!exited && out.downloaded !== undefined && text.split(" $ ").length > 2) {
      exited = true;
      shell.send("exit\r");
    }
  };
  const shell = api.openShell(cluster, {
    onOutput: (bytes) => {
      text += decoder.decode(bytes);
      process.stderr.write(`output: ${JSON.stringify(decoder.decode(bytes))}\n`);
      if (!asked && text.includes(" $ ")) {
        asked = true;
        shell.resize(90, 20);
        shell.send(`kubectl get pods -n ${namespace} -o name\r`);
      }
      if (asked && !uploaded && text.includes("pod/box")) {
        uploaded = true;
        shell.upload("note.txt", new TextEncoder().encode("hello from node"));
      }
      maybeExit();
    },
    onEvent: (event) => {
      events.push(event.type);
      process.stderr.write(`event: ${JSON.stringify(event).slice(0, 200)}\n`);
      if (event.type === "uploaded") shell.download("note.txt");
      if (event.type === "file") {
        out.downloaded = decoder.decode(event.bytes);
        maybeExit();
      }
    },
    onClose: ({ code, reason }) => {
      process.stderr.write(`closed: ${code} ${reason}\n`);
      resolve({ code, events, text });
    },
  });
});
console.log(JSON.stringify(out));
