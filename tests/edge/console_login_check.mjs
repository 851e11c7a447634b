// The console's password login and logout through api.js against a running admin API.
//   node console_login_check.mjs API_JS BASE USER PASSWORD
const [apiPath, base, user, password] = process.argv.slice(2);
const { ApiError, KubegateApi } = await import(apiPath);

const memory = new Map();
const storage = {
  getItem: (k) => (memory.has(k) ? memory.get(k) : null),
  setItem: (k, v) => memory.set(k, String(v)),
  removeItem: (k) => memory.delete(k),
};
const api = new KubegateApi({ base, storage });
const out = {};
const status = async (call) => {
  try {
    await call();
    return 200;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return error.status;
  }
};
out.wrongPassword = await status(() => api.login(user, `${password}-not`));
const session = await api.login(user, password);
out.session = { user: session.user, stored: storage.getItem("kubegate.session") === session.token };
out.me = (await api.me()).user;
out.oidcUrl = api.oidcLoginUrl();
await api.logout();
out.storedAfterLogout = storage.getItem("kubegate.session");
api.token = session.token; // the old token is dead server-side too
out.meAfterLogout = await status(() => api.me());
console.log(JSON.stringify(out));
