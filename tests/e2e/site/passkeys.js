// tokenwarden and tokenwarden/passkeys for the WebDriver scenarios (tests/engines/), called
// through the DOM bridge of bridge.js (a WebDriver script cannot call the page's
// functions in every engine).
import init, { TokenManager } from "/pkg/tokenwarden.js";
import { serve } from "/bridge.js";
import "/pkg/passkeys.js";

await init();
const auth = (window.auth = new TokenManager());
const events = [];
for (const e of ["login", "logout", "sessionExpired"]) auth.on(e, () => events.push(e));
/** The last `second_factor_required` of a login: what completeSignIn answers. */
let second = null;
const calls = {
  login: (c) => auth.login(c).catch((e) => {
    second = e.secondFactor ? e : null;
    throw e;
  }),
  logout: () => auth.logout(),
  registerPasskey: (name) => auth.registerPasskey({ name }),
  loginWithPasskey: () => auth.loginWithPasskey(),
  stepUp: () => auth.stepUp(),
  completeWithPasskey: () => auth.completeSignIn(second, { passkey: true }),
  setSecondFactor: (on) => auth.setSecondFactor(on),
  listPasskeys: () => auth.listPasskeys(),
  removePasskey: (id) => auth.removePasskey(id),
  state: () => {
    const c = auth.claims();
    return { isAuthenticated: auth.isAuthenticated, sid: c?.sid ?? null, amr: c?.amr ?? null, events, webauthn: typeof PublicKeyCredential };
  },
};
serve(calls);
