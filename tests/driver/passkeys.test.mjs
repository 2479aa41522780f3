// tokenwarden/passkeys (src/web/passkeys.js) in Node, against the built package (pkg/): what it
// takes from the page's globals at import stays as it was then.
//   node --test tests/driver/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a conditional sign-in settles when a script patches isConditionalMediationAvailable to never answer", async () => {
  // A browser with conditional mediation, as the package finds it at import.
  globalThis.PublicKeyCredential = class { static isConditionalMediationAvailable = async () => true; };
  const { initSync, TokenManager } = await import("../../pkg/tokenwarden.js");
  await import("../../pkg/passkeys.js");
  initSync(readFileSync(fileURLToPath(new URL("../../pkg/tokenwarden_bg.wasm", import.meta.url))));
  // Nothing listens on port 9: the ceremony's first request fails at once.
  const auth = new TokenManager({ baseUrl: "http://127.0.0.1:9", dpop: false, sessionHintCookie: null });
  try {
    globalThis.PublicKeyCredential.isConditionalMediationAvailable = () => new Promise(() => {});
    const got = await Promise.race([
      auth.loginWithPasskey({ conditional: true }).then(() => "resolved", (e) => e),
      sleep(3000).then(() => "pending"),
    ]);
    assert.notEqual(got, "pending", "the sign-in hung on the patched check");
    assert.equal(got?.name, "NetworkError", `went on to the auth server: ${got?.name} ${got?.code}`);
  } finally {
    auth.free();
    delete globalThis.PublicKeyCredential;
  }
});
