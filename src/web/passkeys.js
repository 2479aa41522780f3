// tokenwarden/passkeys (types and docs: passkeys.d.ts; minified into pkg/ by scripts/build-pkg.sh):
// importing it adds the passkey methods to TokenManager.prototype, so the base package stays as
// small for apps without them.
import { TokenManager } from "./tokenwarden.js";

const G = globalThis, P = TokenManager.prototype, J = JSON.stringify, PE = "PasskeyError";
// The credentials container and its methods as they are at import: a script that patches them
// later cannot make a ceremony hang or see its options.
const CC = G.navigator?.credentials, CP = G.CredentialsContainer?.prototype ?? {}, M = { get: CP.get, create: CP.create };
// And whether conditional mediation is there, asked as it is at import (a patch that never
// answers would hang a conditional sign-in before the app's signal reached the ceremony).
const PKC = G.PublicKeyCredential, canConditional = PKC?.isConditionalMediationAvailable, apply = Reflect.apply;

const fail = (name, code, more) => Object.assign(Error(code, more), { name, code }, more);
// base64url <-> bytes, as the server's JSON has them.
const bin = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
const b64 = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=/g, "");
const ids = (l) => l?.map((c) => ({ ...c, id: bin(c.id) }));

// Every request goes through `auth._post`, the core's way to the auth server: it resolves with
// the answer's JSON and words a refusal as a sign-in's (NetworkError, LoginError with the
// server's code; step_up_required with `maxAge`, the recent sign-in it needs).

function session(auth) {
  if (!auth.isAuthenticated) throw fail("SessionExpiredError", "no_session");
}

/** navigator.credentials[how] ("create", "get") with the server's options; the credential as
 * JSON (toJSON() by hand: not in every browser yet). */
async function ask(how, { publicKey: p }, o = {}) {
  if (!G.PublicKeyCredential) throw fail(PE, "unsupported");
  p = { ...p, challenge: bin(p.challenge), excludeCredentials: ids(p.excludeCredentials), allowCredentials: ids(p.allowCredentials) };
  // (A registration's options ask for a discoverable credential: the server's rule.)
  if (p.user) p.user = { ...p.user, id: bin(p.user.id) };
  let c, r = {};
  try {
    c = await apply(M[how], CC, [{ ...o, publicKey: p }]);
  } catch (e) {
    // Dismissed, timed out, or no passkey for the site: browsers do not say which.
    const n = e?.name;
    throw fail(PE, /^(NotAllowed|Abort)Error$/.test(n) ? "cancelled" : n == "InvalidStateError" ? "exists" : "unsupported", { cause: e });
  }
  for (const k of ["clientDataJSON", "attestationObject", "authenticatorData", "signature", "userHandle"]) {
    if (c.response[k]) r[k] = b64(c.response[k]);
  }
  return { id: c.id, rawId: b64(c.rawId), type: c.type, response: r, clientExtensionResults: c.getClientExtensionResults() };
}

P.registerPasskey = async function (o) {
  session(this);
  const { ceremony, options } = await this._post("passkeys/register/start");
  const credential = await ask("create", options);
  return this._post("passkeys/register/finish", J({ ceremony, credential, name: o?.name }));
};

P.loginWithPasskey = async function (o = {}) {
  const mediation = o.conditional ? "conditional" : undefined;
  if (mediation && !(canConditional && (await apply(canConditional, PKC, [])))) throw fail(PE, "unsupported");
  const { ceremony, options } = await this._post("passkeys/login/start", undefined, 0, 1);
  const credential = await ask("get", options, { signal: o.signal, mediation });
  return this._signIn(J({ ceremony, credential }), "passkeys/login/finish");
};

P.stepUp = async function () {
  session(this);
  const { ceremony, options } = await this._post("step-up/start");
  const credential = await ask("get", options);
  await this._post("step-up/finish", J({ ceremony, credential }));
  // The next token carries the new auth_time and amr.
  await this.refresh({ force: true });
};

P.completeSignIn = async function (error, a = {}) {
  const s = error?.secondFactor, b = { ceremony: s?.ceremony, code: a.code };
  if (!s || (a.code === undefined) == !a.passkey) throw fail("ConfigError", "invalid_option", { message: "bad secondFactor" });
  if (a.passkey) {
    if (!s.passkey) throw fail(PE, "no_credential");
    b.credential = await ask("get", s.passkey);
  }
  // By the key that sent the password: only it can complete the sign-in.
  return this._signIn(J(b), "login/second-factor", s.ceremony);
};

P.setSecondFactor = async function (required) {
  session(this);
  await this._post("second-factor", J({ required: !!required }), "PUT");
};

P.listPasskeys = async function () {
  session(this);
  return (await this._post("passkeys", undefined, "GET")).passkeys;
};

P.removePasskey = async function (id) {
  session(this);
  // A credential id is base64url: anything else is no passkey of the account (and `..` would
  // be a dot segment, another path).
  if (!/^[\w-]{1,1366}$/.test(id)) throw fail("LoginError", "not_found");
  await this._post("passkeys/" + encodeURIComponent(id), undefined, "DELETE");
};
