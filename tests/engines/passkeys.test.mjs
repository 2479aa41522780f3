// Passkeys (tokenwarden/passkeys) in every engine through its WebDriver, against the server
// configured with `--webauthn-rp-id localhost --webauthn-origin https://localhost:<port>` over
// HTTPS. Chromium (chromedriver) and Firefox ESR (geckodriver) have the WebDriver virtual
// authenticator (`POST /session/{id}/webauthn/authenticator`): register, step up, sign in with
// the passkey (the other window told), a second factor after the password, a cancelled
// ceremony, a removal. WebKitGTK has neither WebAuthn (no PublicKeyCredential) nor the
// command: there the methods reject with PasskeyError `unsupported` and the session goes on.
//
//   node --test tests/engines/passkeys.test.mjs
//   TW_ENGINES=firefox node --test tests/engines/passkeys.test.mjs
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { eachEngine, PageError, Server, certificate, freePort, root, scratch, sleep } from "./webdriver.mjs";


let server, dir, page;
before(async () => {
  dir = scratch("passkeys");
  const tls = certificate(dir);
  const port = await freePort();
  // WebAuthn refuses IP addresses as RP IDs: the pages are opened as localhost.
  const origin = `https://localhost:${port}`;
  server = new Server({
    tls, ttl: 60, db: "sqlite::memory:", www: path.join(root, "tests/e2e/site"),
    extra: ["--webauthn-rp-id", "localhost", "--webauthn-origin", origin],
  });
  server.port = port;
  await server.start();
  page = `${origin}/passkeys.html`;
});
after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What a call in the page rejected with ("Name: code"), or null if it resolved. */
const refusal = (p) => p.then(() => null, (e) => {
  if (!(e instanceof PageError)) throw e;
  return e.message;
});

async function until(what, f, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(50);
  }
}

eachEngine((engine, browser) => {

  if (engine === "webkit") {
    test("no WebAuthn here: every passkey method is PasskeyError unsupported, the session goes on", async () => {
      // WebKitWebDriver has no virtual authenticator either.
      await assert.rejects(browser.cmd("POST", "/webauthn/authenticator", { protocol: "ctap2", transport: "internal" }), /unknown command/);
      const tab = await browser.open(page);
      await tab.call("login", await server.newUser());
      assert.equal((await tab.call("state")).webauthn, "undefined");
      assert.equal(await refusal(tab.call("registerPasskey", "x")), "PasskeyError: unsupported");
      assert.equal(await refusal(tab.call("loginWithPasskey")), "PasskeyError: unsupported");
      assert.deepEqual(await tab.call("listPasskeys"), []);
      assert.equal((await tab.call("state")).isAuthenticated, true);
    });
    return;
  }

  test("register, step up, sign in with the passkey (the other window told), a second factor, a cancelled prompt, a removal", async () => {
    const user = await server.newUser();
    const tab = await browser.open(page);
    // The window's own authenticator (a WebDriver command acts on the current window).
    const key = await browser.cmd("POST", "/webauthn/authenticator", {
      protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true,
    });
    const authenticator = async (method, p, body) => {
      await tab.focus();
      return browser.cmd(method, `/webauthn/authenticator/${key}${p}`, body);
    };
    const other = await browser.open(page);
    await tab.call("login", user);
    assert.deepEqual((await tab.call("state")).amr, ["pwd"]);

    const added = await tab.call("registerPasskey", `${engine} key`);
    assert.equal(added.name, `${engine} key`);
    const creds = await authenticator("GET", "/credentials");
    assert.equal(creds.length, 1);
    assert.equal(creds[0].isResidentCredential, true);
    assert.equal(creds[0].rpId, "localhost");

    await tab.call("stepUp");
    assert.deepEqual((await tab.call("state")).amr, ["pwd", "hwk", "mfa"]);

    // Signed out in both windows; the passkey signs in with no username; the other is told.
    await tab.call("logout");
    await until("the other window signed out", async () => !(await other.call("state")).isAuthenticated);
    await tab.call("loginWithPasskey");
    const signedIn = await tab.call("state");
    assert.deepEqual(signedIn.amr, ["hwk", "mfa"]);
    assert.deepEqual(signedIn.events.slice(-2), ["logout", "login"]);
    await until("the other window signed in", async () => (await other.call("state")).sid === signedIn.sid);
    assert.deepEqual((await other.call("state")).events.slice(-2), ["logout", "login"]);

    // A second factor after the password: nothing signed in until the passkey answers.
    await tab.call("setSecondFactor", true);
    await tab.call("logout");
    assert.equal(await refusal(tab.call("login", user)), "LoginError: second_factor_required");
    assert.equal((await tab.call("state")).isAuthenticated, false);
    await tab.call("completeWithPasskey");
    assert.deepEqual((await tab.call("state")).amr, ["pwd", "hwk", "mfa"]);

    // The user cancels: a typed error, still signed in.
    await authenticator("POST", "/uv", { isUserVerified: false });
    assert.equal(await refusal(tab.call("stepUp")), "PasskeyError: cancelled");
    assert.equal((await tab.call("state")).isAuthenticated, true);
    await authenticator("POST", "/uv", { isUserVerified: true });
    await tab.call("stepUp"); // and the next one goes through

    // The only passkey is the second factor (this server mails no codes): removing it would
    // lock the owner out, so it is refused until the second factor is off.
    const [listed] = await tab.call("listPasskeys");
    assert.equal(listed.id, added.id);
    assert.equal(await refusal(tab.call("removePasskey", added.id)), "LoginError: passkeys_unavailable");
    assert.equal((await tab.call("listPasskeys")).length, 1);
    await tab.call("setSecondFactor", false);
    // This session was signed in by that passkey (as the second factor): removing it ends every
    // session it signed in, this one too. The next call finds none, and the tab is told.
    const seen = (await tab.call("state")).events.length;
    await tab.call("removePasskey", added.id);
    assert.match(await refusal(tab.call("listPasskeys")), /^SessionExpiredError: /);
    const ended = await tab.call("state");
    assert.equal(ended.isAuthenticated, false);
    assert.ok(ended.events.slice(seen).includes("sessionExpired"), JSON.stringify(ended));
    // The password alone signs in again (the second factor is off): the passkey is gone.
    await tab.call("login", user);
    assert.deepEqual(await tab.call("listPasskeys"), []);
    assert.equal(await refusal(tab.call("removePasskey", added.id)), "LoginError: not_found");
  });
});
