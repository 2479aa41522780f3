// tokenwarden, the same surface as the peers.
import init, { TokenManager } from "/pkg/tokenwarden.js";

await init();
// ?dpop=0: plain Bearer tokens, for comparing like with like against a hand-attached Bearer.
const auth = new TokenManager({ dpop: new URLSearchParams(location.search).get("dpop") !== "0" });
let logouts = 0;
auth.on("sessionExpired", () => logouts++);

window.auth = auth;
window.peer = {
  name: "tokenwarden",
  login: (email, password) => auth.login({ email, password }),
  get: (url) => auth.fetch(url).then((r) => r.status, (e) => e.name),
  logouts: () => logouts,
};
