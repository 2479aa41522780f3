// The account flows' answers (requestCode, signup, requestPasswordReset, changePassword) are
// classified as the core classifies a refresh's: a 408 or 5xx is NetworkError (the server's
// trouble), a refusal with the protocol's `error` is LoginError with that code, and one without
// (a proxy's HTML page) is LoginError `unexpected_response`, never a code of `undefined`. Run in
// Node against the built package (pkg/), over real HTTP to a server that answers as a proxy in
// front of the auth server might.
//   node --test tests/driver/
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { initSync, TokenManager } from "../../pkg/tokenwarden.js";

initSync(readFileSync(fileURLToPath(new URL("../../pkg/tokenwarden_bg.wasm", import.meta.url))));

let server, base;
/** The status and body each email gets (the address picks the answer). */
const ANSWERS = {
  "timeout@example.com": [408, "", "text/plain"],
  "busy@example.com": [503, "<h1>Service Unavailable</h1>", "text/html"],
  "proxy@example.com": [403, "<h1>Forbidden</h1>", "text/html"],
  "slow@example.com": [429, '{"error":"too_many_attempts"}', "application/json", { "Retry-After": "7" }],
  "ok@example.com": [202, '{"expires_in":600}', "application/json"],
  // Bodies read up to 64 KiB (MAX_REPLY), in pieces: one just under is read whole, one over is
  // not read past the cap (as if it had no body).
  "under@example.com": [401, JSON.stringify({ error: "invalid_credentials", pad: "x".repeat(65000) }), "chunked"],
  "over@example.com": [401, JSON.stringify({ error: "invalid_credentials", pad: "x".repeat(66000) }), "chunked"],
  "declared@example.com": [401, JSON.stringify({ error: "invalid_credentials", pad: "x".repeat(66000) }), "application/json"],
};
before(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const [status, text, type, extra = {}] = ANSWERS[JSON.parse(body).email];
      if (type === "chunked") {
        // No Content-Length: the client learns the size only by reading, 16 KiB at a time.
        res.writeHead(status, { "Content-Type": "application/json" });
        for (let i = 0; i < text.length; i += 16384) res.write(text.slice(i, i + 16384));
        return res.end();
      }
      res.writeHead(status, { "Content-Type": type, ...extra }).end(text);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${server.address().port}`;
});
after(() => server.close());

const manager = () => new TokenManager({ baseUrl: base, dpop: false, sessionHintCookie: null, autoRefresh: false });

test("408 and 5xx are NetworkError; a refusal without the protocol's words is unexpected_response; the server's code otherwise", async () => {
  const auth = manager();
  try {
    await auth.requestCode({ email: "ok@example.com" });
    await assert.rejects(auth.requestCode({ email: "timeout@example.com" }), { name: "NetworkError", code: "server_error", status: 408 });
    await assert.rejects(auth.requestCode({ email: "busy@example.com" }), { name: "NetworkError", code: "server_error", status: 503 });
    await assert.rejects(auth.signup({ email: "proxy@example.com", password: "correct horse battery" }), { name: "LoginError", code: "unexpected_response", status: 403 });
    await assert.rejects(auth.requestPasswordReset({ email: "slow@example.com" }), { name: "LoginError", code: "too_many_attempts", retryAfter: 7 });
  } finally {
    auth.free();
  }
});

test("an answer's body is read up to 64 KiB: whole below, not at all above (declared or streamed)", async () => {
  const auth = manager();
  try {
    await assert.rejects(auth.signup({ email: "under@example.com", password: "correct horse battery" }), { name: "LoginError", code: "invalid_credentials" });
    for (const email of ["over@example.com", "declared@example.com"]) {
      await assert.rejects(auth.signup({ email, password: "correct horse battery" }), { name: "LoginError", code: "unexpected_response" }, email);
    }
  } finally {
    auth.free();
  }
});
