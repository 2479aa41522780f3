import init, { TokenManager } from "/pkg/tokenwarden.js";
const ready = init();
window.setup = async (options) => {
  await ready;
  window.events = [];
  window.auth = new TokenManager(options ?? {});
  for (const e of ["login", "refresh", "sessionExpired", "tokenReused", "logout"]) {
    auth.on(e, () => events.push(e));
  }
  return true;
};
// n concurrent auth.fetch calls; resolves to their statuses (or error names).
window.burst = (n, path = "/api/me") =>
  Promise.all(Array.from({ length: n }, () =>
    auth.fetch(path).then((r) => r.status, (e) => e.name)));
window.echo = () =>
  auth.fetch("/test/echo", { headers: { "x-test-hooks-secret": window.TW_TEST_HOOKS_SECRET } })
    .then((r) => r.json());
