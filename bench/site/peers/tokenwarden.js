// tokenwarden, the same surface as the peers.
import init, { TokenManager } from "/pkg/tokenwarden.js";

await init();
const auth = new TokenManager();
let logouts = 0;
auth.on("sessionExpired", () => logouts++);

window.auth = auth;
window.peer = {
  name: "tokenwarden",
  login: (email, password) => auth.login({ email, password }),
  get: (url) => auth.fetch(url).then((r) => r.status, (e) => e.name),
  logouts: () => logouts,
};
