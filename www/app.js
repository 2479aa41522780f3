// The demo SPA: everything authenticated goes through auth.fetch; no token is ever stored.
import init, { TokenManager } from "/pkg/tokenwarden.js";
import "/pkg/passkeys.js"; // adds auth.registerPasskey(), loginWithPasskey(), stepUp(), ...

const $ = (id) => document.getElementById(id);
const DEMO = { email: "demo@tokenwarden.dev", password: "correct horse battery staple" };
/** The autofill's passkey request while signed out ({abort, done}); the action a step-up is
 * asked for. */
let conditional = null, pending = null;

function log(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  const time = new Date().toLocaleTimeString();
  li.innerHTML = `<time></time><b></b> <span></span>`;
  li.querySelector("time").textContent = time;
  li.querySelector("b").textContent = kind;
  li.querySelector("span").textContent = text;
  $("log").prepend(li);
  while ($("log").children.length > 40) $("log").lastChild.remove();
}

await init();
const auth = new TokenManager();
window.auth = auth; // for the curious, in the console

auth.on("login", () => { log("login", "logged in"); show(); });
// Signed out: the passkeys offered in the email field's autofill; signed in: none.
for (const e of ["login", "logout", "sessionExpired"]) auth.on(e, () => autofill());
auth.on("refresh", ({ expiresIn }) => { log("refresh", `new access token, ${Math.round(expiresIn)} s`); renderClaims(); });
auth.on("logout", () => { log("logout", "logged out"); show(); });
auth.on("tokenReused", () => log("tokenReused", "refresh token reuse detected: session revoked"));
auth.on("sessionExpired", ({ reason }) => { log("sessionExpired", reason); show(); });

function show() {
  const inSession = auth.isAuthenticated;
  $("login-card").hidden = inSession;
  $("session").hidden = !inSession;
  if (inSession) {
    renderClaims();
    loadProfile();
    loadSessions();
    loadPasskeys();
  }
}

function renderClaims() {
  const c = auth.claims();
  $("claims").textContent = JSON.stringify(c, null, 2);
  // auth_time and amr: when and how the user last proved who they are (sign-in or step-up).
  $("signed-in-how").textContent = c?.auth_time
    ? `Signed in or confirmed at ${new Date(c.auth_time * 1000).toLocaleTimeString()} with ${(c.amr ?? []).join(", ") || "?"} (amr: pwd password, otp emailed code, hwk passkey, mfa two factors).`
    : "";
}

// The countdown: remaining life of the in-memory access token.
setInterval(() => {
  const at = auth.expiresAt;
  const claims = auth.claims();
  if (at === null || !claims) return;
  const left = Math.max(0, (at - Date.now()) / 1000);
  const lifetime = Math.max(1, (claims.exp ?? 0) - (claims.iat ?? 0));
  $("remaining").textContent = left.toFixed(0);
  $("bar-fill").style.width = `${Math.min(100, (left / lifetime) * 100)}%`;
}, 250);

async function api(path, init, quiet = false) {
  try {
    const res = await auth.fetch(path, init);
    if (!quiet || !res.ok) log("fetch", `${init?.method ?? "GET"} ${path} → ${res.status}`);
    return res;
  } catch (e) {
    log("error", `${path}: ${e.name} (${e.code ?? e.message})`);
    throw e;
  }
}

async function loadProfile() {
  const res = await api("/api/me");
  if (!res.ok) return;
  const me = await res.json();
  const dl = $("profile");
  dl.replaceChildren();
  for (const [k, v] of Object.entries({ Email: me.email, Name: me.name, Phone: me.phone ?? "—", Roles: me.roles.join(", ") })) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.dataset.field = k.toLowerCase();
    dl.append(dt, dd);
  }
  $("name").value = me.name;
  $("phone").value = me.phone ?? "";
}

async function loadSessions() {
  const res = await api("/auth/sessions");
  if (!res.ok) return;
  const { sessions } = await res.json();
  const ul = $("sessions");
  ul.replaceChildren();
  for (const s of sessions) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    const agent = s.user_agent.replace(/^Mozilla\/5.0 /, "").slice(0, 60) || "unknown device";
    label.textContent = `${agent} · since ${new Date(s.created_at * 1000).toLocaleString()}`;
    li.append(label);
    if (s.current) {
      const b = document.createElement("em");
      b.textContent = "this browser";
      li.append(b);
    } else {
      const btn = document.createElement("button");
      btn.className = "small danger";
      btn.textContent = "Revoke";
      btn.onclick = async () => {
        await api(`/auth/sessions/${encodeURIComponent(s.id)}`, { method: "DELETE" });
        loadSessions();
      };
      li.append(btn);
    }
    ul.append(li);
  }
}

$("email").value = DEMO.email;
$("password").value = DEMO.password;

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  $("second-factor").hidden = true;
  // The demo mailbox before: a second factor's code is the message after these.
  const before = (await mailbox($("email").value))?.length ?? 0;
  try {
    await auth.login({ email: $("email").value, password: $("password").value });
  } catch (err) {
    if (err.code === "second_factor_required") return askSecondFactor(err, before);
    $("login-error").textContent = err.code === "too_many_attempts"
      ? `Too many attempts; try again in ${err.retryAfter ?? "a few"} s.`
      : err.code === "email_not_verified" ? "Verify your email address first."
      : err.name === "LoginError" ? "Wrong email or password." : `Could not reach the server (${err.name}).`;
    log("error", `login: ${err.name} ${err.code}`);
  }
});

// Sign-in with an emailed code. With `--demo` and no SMTP server the server keeps "sent" codes
// in a demo-only mailbox (GET /demo/mailbox, loopback only) that this page shows; with a real
// SMTP server that route does not exist and the code is in the inbox.
async function mailbox(email) {
  const res = await fetch(`/demo/mailbox?email=${encodeURIComponent(email)}`);
  return res.ok ? (await res.json()).messages : null;
}

/** The newest of `messages` (newest first) after the `before` oldest that carries a code: a
 * notice (a password changed, a passkey added, …) has none, and may arrive beside it. */
function newCode(messages, before) {
  return messages.slice(0, Math.max(0, messages.length - before)).find((m) => m.code);
}

/** Shows the code mailed to `email` after `ask()` in the box `boxId` (and fills `inputId`):
 * from the demo mailbox, or "check your inbox" when the server mails for real. */
async function codeTo(email, boxId, inputId, ask, what) {
  const box = $(boxId);
  const before = (await mailbox(email))?.length ?? 0;
  await ask();
  log("code", `${what} for ${email} (the answer is the same for any address)`);
  // The message is sent after the answer: wait for it to reach the demo mailbox.
  for (let i = 0; i < 20; i++) {
    const messages = await mailbox(email);
    if (messages === null) {
      box.textContent = "Check your inbox for the code.";
      box.hidden = false;
      return;
    }
    // A message without a code is the answer itself only if no code follows it (a sign-up of
    // an address that has an account).
    const m = newCode(messages, before) ?? (i >= 6 ? messages.length > before && messages[0] : undefined);
    if (m) {
      box.replaceChildren(`Demo mailbox: “${m.subject}”`, ...(m.code
        ? [" — your code is ", Object.assign(document.createElement("code"), { id: `${boxId}-code`, textContent: m.code })]
        : []));
      box.hidden = false;
      if (m.code) $(inputId).value = m.code;
      return;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  box.textContent = "Demo mailbox: nothing arrived.";
  box.hidden = false;
}

/** What a refused request means, for a person. */
function explain(err) {
  return err.code === "invalid_code" ? (err.attemptsLeft > 0
      ? `Wrong code: ${err.attemptsLeft} ${err.attemptsLeft === 1 ? "try" : "tries"} left.`
      : "That code is used up; a new one is on its way (or ask for one).")
    : err.code === "code_expired" ? "The code has expired; ask for a new one."
    : err.code === "too_many_attempts" ? `Too many attempts; try again in ${err.retryAfter ?? "a while"} s.`
    : err.code === "weak_password" ? `${err.message}: at least 8 characters, not a common password.`
    : err.code === "invalid_credentials" ? "The password is wrong."
    : err.name === "LoginError" ? `Refused (${err.code}).` : `Could not reach the server (${err.name}).`;
}

$("code-request").onclick = async () => {
  $("code-error").textContent = "";
  const email = $("email").value;
  try {
    await codeTo(email, "mailbox", "code", () => auth.requestCode({ email }), "a sign-in code was asked");
  } catch (err) {
    $("code-error").textContent = explain(err);
    log("error", `requestCode: ${err.name} ${err.code}`);
  }
};

$("signup-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("signup-error").textContent = "";
  const email = $("signup-email").value;
  const request = { email, password: $("signup-password").value };
  if ($("signup-name").value.trim()) request.name = $("signup-name").value.trim();
  try {
    await codeTo(email, "signup-mailbox", "signup-code", () => auth.signup(request), "a sign-up was asked");
  } catch (err) {
    $("signup-error").textContent = explain(err);
    log("error", `signup: ${err.name} ${err.code}`);
  }
});

$("signup-verify").onclick = async () => {
  $("signup-error").textContent = "";
  try {
    await auth.verifySignup({ email: $("signup-email").value, code: $("signup-code").value.trim() });
    log("signup", "account created");
  } catch (err) {
    $("signup-error").textContent = explain(err);
    log("error", `verifySignup: ${err.name} ${err.code}`);
  }
};

$("reset-request").onclick = async () => {
  $("reset-error").textContent = "";
  const email = $("email").value;
  try {
    await codeTo(email, "reset-mailbox", "reset-code", () => auth.requestPasswordReset({ email }), "a password reset was asked");
  } catch (err) {
    $("reset-error").textContent = explain(err);
    log("error", `requestPasswordReset: ${err.name} ${err.code}`);
  }
};

$("reset-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("reset-error").textContent = "";
  try {
    await auth.resetPassword({ email: $("email").value, code: $("reset-code").value.trim(),
      newPassword: $("reset-password").value });
    log("reset", "password changed: every other session of the account has ended");
  } catch (err) {
    // An account with a passkey as its second factor: the password is reset, the passkey signs in.
    if (err.code === "second_factor_required") return askSecondFactor(err, 0);
    $("reset-error").textContent = explain(err);
    log("error", `resetPassword: ${err.name} ${err.code}`);
  }
});

$("password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("password-error").textContent = "";
  try {
    await auth.changePassword({ currentPassword: $("current-password").value, newPassword: $("new-password").value });
    $("current-password").value = $("new-password").value = "";
    log("password", "changed: your other devices are signed out");
    loadSessions();
  } catch (err) {
    $("password-error").textContent = explain(err);
    log("error", `changePassword: ${err.name} ${err.code}`);
  }
});

$("code-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("code-error").textContent = "";
  try {
    await auth.loginWithCode({ email: $("email").value, code: $("code").value.trim() });
    $("mailbox").hidden = true;
    $("code").value = "";
  } catch (err) {
    // An account with a passkey as its second factor: the code proved the mailbox only.
    if (err.code === "second_factor_required") return askSecondFactor(err, 0);
    $("code-error").textContent = explain(err);
    log("error", `loginWithCode: ${err.name} ${err.code}`);
  }
});

// Sign-in with an OpenID Connect provider: a button per provider the server has. An older
// server without the endpoint answers 404: no buttons.
const FEDERATION_ERRORS = new Map([
  ["access_denied", "Sign-in with the provider was cancelled."],
  ["provider_unavailable", "The provider could not be reached; try again in a moment."],
  ["federation_failed", "Sign-in with the provider failed."],
  ["account_not_linked", "An account with that email address exists already: sign in to it another way."],
]);

async function showProviders() {
  const res = await fetch("/auth/oidc/providers").catch(() => null);
  const providers = (res?.ok && (await res.json().catch(() => null))?.providers) || [];
  const box = $("provider-buttons");
  box.replaceChildren();
  for (const { name } of providers) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = `Sign in with ${name}`;
    // Never resolves: the page goes to the provider (and returns to restore() below).
    button.onclick = () => auth.loginWithRedirect({ provider: name }).catch((err) => {
      $("login-error").textContent = `Could not start the sign-in (${err.name}).`;
      log("error", `loginWithRedirect: ${err.name} ${err.code}`);
    });
    box.append(button);
  }
  $("providers").hidden = providers.length === 0;
}

$("call-api").onclick = () => loadProfile();
setInterval(() => {
  if ($("auto").checked && auth.isAuthenticated) api("/api/me", undefined, true).catch(() => {});
}, 3000);
$("force-refresh").onclick = () => auth.refresh({ force: true }).catch((e) => log("error", `${e.name} ${e.code}`));
$("logout").onclick = () => auth.logout().catch((e) => log("error", `logout: ${e.name}`));

$("profile-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("profile-error").textContent = "";
  const phone = $("phone").value.trim();
  const res = await api("/api/me", {
    method: "PATCH",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: $("name").value, phone: phone === "" ? null : phone }),
  });
  if (!res.ok) {
    $("profile-error").textContent = (await res.json()).error_description;
    return;
  }
  // The access token still carries the old claims: get a new one now.
  await auth.refresh({ force: true });
  log("claims", `name in token: ${auth.claims().name}`);
  loadProfile();
});

let restored;
try {
  restored = await auth.restore();
} catch (err) {
  if (err.name !== "LoginError") throw err;
  // Back from a provider without signing in (restore() took tw_error out of the address).
  $("login-error").textContent = FEDERATION_ERRORS.get(err.code) ?? `Sign-in with the provider failed (${err.code}).`;
  log("error", `sign-in with the provider: ${err.code}`);
  restored = await auth.restore(); // a session from before the attempt goes on
}
log("start", restored ? "session restored from the refresh cookie" : "no session yet");
show();
showProviders();

// ---- passkeys (tokenwarden/passkeys) ------------------------------------------------------

/** What a refused passkey action means, for a person. */
function explainPasskey(err) {
  return err.code === "cancelled" ? "Cancelled (or no passkey for this site on this device)."
    : err.code === "exists" ? "This device has a passkey for the account already."
    : err.code === "unsupported" ? "This browser cannot use passkeys here."
    : err.code === "no_credential" ? "The account has no passkey: use the emailed code."
    : err.code === "passkeys_unavailable" ? "No passkey to use (add one first), or passkeys are off on this server."
    : err.code === "invalid_credentials" ? "The server did not accept that passkey."
    : explain(err);
}

/** One WebAuthn request at a time: the autofill's stops before another starts. */
async function quiet() {
  conditional?.abort.abort();
  await conditional?.done;
  conditional = null;
}

// The email field's autofill offers the passkeys while signed out (conditional mediation);
// a sign-in another way aborts it.
let autofills = 0;
async function autofill() {
  const mine = ++autofills;
  await quiet();
  if (mine !== autofills || auth.isAuthenticated) return;
  const abort = new AbortController();
  const done = auth.loginWithPasskey({ conditional: true, signal: abort.signal }).catch((err) => {
    if (abort.signal.aborted) return;
    if (err.name === "PasskeyError") return log("autofill", `no passkey autofill (${err.code})`);
    $("login-error").textContent = explainPasskey(err);
    log("error", `loginWithPasskey (autofill): ${err.name} ${err.code}`);
  });
  conditional = { abort, done };
}

// WebAuthn refuses IP addresses as RP IDs (`make demo` prints http://127.0.0.1:8080).
if (/^[\d.]+$|^\[/.test(location.hostname)) {
  $("passkey-here").href = `${location.protocol}//localhost:${location.port}/`;
  $("passkey-where").hidden = false;
}

$("passkey-login").onclick = async () => {
  $("login-error").textContent = "";
  await quiet();
  try {
    await auth.loginWithPasskey();
  } catch (err) {
    $("login-error").textContent = explainPasskey(err);
    log("error", `loginWithPasskey: ${err.name} ${err.code}`);
    autofill();
  }
};

/** A password sign-in that asks for a second factor: a passkey, or the code mailed to it. */
async function askSecondFactor(err, before) {
  const { passkey, email_code } = err.secondFactor;
  log("second factor", `asked: ${[passkey && "a passkey", email_code && "the emailed code"].filter(Boolean).join(" or ")}`);
  $("second-factor").hidden = false;
  $("second-error").textContent = "";
  $("second-mailbox").hidden = true;
  $("second-mailbox").replaceChildren();
  $("second-passkey").hidden = !passkey;
  $("second-code-form").hidden = !email_code;
  const complete = async (answer) => {
    $("second-error").textContent = "";
    try {
      await auth.completeSignIn(err, answer);
      $("second-factor").hidden = true;
      $("second-code").value = "";
    } catch (e) {
      $("second-error").textContent = explainPasskey(e);
      log("error", `completeSignIn: ${e.name} ${e.code}`);
    }
  };
  $("second-passkey").onclick = async () => (await quiet(), complete({ passkey: true }));
  $("second-code-form").onsubmit = (e) => (e.preventDefault(), complete({ code: $("second-code").value.trim() }));
  if (email_code) {
    // The code is mailed after the server's answer: show it from the demo mailbox.
    const box = $("second-mailbox");
    for (let i = 0; i < 20; i++) {
      const messages = await mailbox($("email").value);
      if (messages === null) {
        box.textContent = "Check your inbox for the code.";
        box.hidden = false;
        break;
      }
      const m = newCode(messages, before);
      if (m) {
        box.replaceChildren("Demo mailbox: your code is ",
          Object.assign(document.createElement("code"), { id: "second-mailbox-code", textContent: m.code }));
        box.hidden = false;
        $("second-code").value = m.code;
        break;
      }
      await new Promise((r) => setTimeout(r, 150));
    }
  }
}

async function loadPasskeys() {
  let list;
  try {
    list = await auth.listPasskeys();
  } catch (err) {
    log("error", `listPasskeys: ${err.name} ${err.code}`);
    return;
  }
  const ul = $("passkeys");
  ul.replaceChildren();
  if (!list.length) ul.append(Object.assign(document.createElement("li"), { textContent: "No passkey yet." }));
  for (const k of list) {
    const li = document.createElement("li");
    const used = k.last_used_at ? `last used ${new Date(k.last_used_at * 1000).toLocaleString()}` : "never used";
    li.append(Object.assign(document.createElement("span"), { textContent: `${k.name} · ${used}` }));
    const btn = Object.assign(document.createElement("button"), { className: "small danger", textContent: "Remove" });
    btn.onclick = () => sensitive(`passkey “${k.name}” removed`, () => auth.removePasskey(k.id));
    li.append(btn);
    ul.append(li);
  }
}

/** An action that needs a recent sign-in: on step_up_required the page asks the user to
 * confirm who they are (a passkey), then does it again. Never a logout. */
async function sensitive(done, action) {
  $("passkey-error").textContent = "";
  $("passkey-status").textContent = "";
  try {
    await action();
    $("passkey-status").textContent = done;
    log("passkeys", done);
    loadPasskeys();
  } catch (err) {
    if (err.code !== "step_up_required") {
      $("passkey-error").textContent = explainPasskey(err);
      log("error", `${done}: ${err.name} ${err.code}`);
      return;
    }
    log("step-up", `asked: the sign-in is older than ${err.maxAge} s`);
    $("step-up-why").textContent = `This needs a sign-in from the last ${Math.round(err.maxAge / 60)} minutes.`;
    $("step-up-prompt").hidden = false;
    pending = () => sensitive(done, action);
  }
}
$("step-up").onclick = async () => {
  $("passkey-error").textContent = "";
  try {
    await auth.stepUp();
    log("step-up", `confirmed: amr ${auth.claims().amr.join(", ")}`);
    $("step-up-prompt").hidden = true;
    const again = pending;
    pending = null;
    await again?.();
  } catch (err) {
    $("passkey-error").textContent = err.code === "passkeys_unavailable"
      ? "The account has no passkey: log out and sign in again to confirm." : explainPasskey(err);
    log("error", `stepUp: ${err.name} ${err.code}`);
  }
};

$("passkey-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("passkey-name").value.trim() || undefined;
  sensitive(`passkey “${name ?? "Passkey"}” added`, () => auth.registerPasskey({ name }));
});
$("second-on").onclick = () => sensitive("a second factor is now required at sign-in", () => auth.setSecondFactor(true));
$("second-off").onclick = () => sensitive("a second factor is no longer required", () => auth.setSecondFactor(false));
autofill();
