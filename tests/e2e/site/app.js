// The app: its TokenManager lives in this module's closure. The page gets a few actions, as a
// real app's buttons would be, but never the manager or a token.
import init, { TokenManager } from "/pkg/tokenwarden.js";

await init();
const auth = new TokenManager();
const status = (p) => p.then((r) => r.status, (e) => e.name);
window.app = Object.freeze({
  restore: () => auth.restore().then((v) => v, (e) => e.name),
  login: (email, password) => auth.login({ email, password }).then(() => true, (e) => e.name),
  me: () => status(auth.fetch("/api/me")),
  burst: (n) => Promise.all(Array.from({ length: n }, () => status(auth.fetch("/api/me")))),
  logout: () => auth.logout().then(() => true, (e) => e.name),
  authenticated: () => auth.isAuthenticated,
});
document.title = "ready";
