// The package: `tokenwarden/verify` resolves through pkg/package.json's exports, importing it
// does no I/O (SSR-safe: nothing runs until createVerifier), and the browser entry points do not
// import it (the client does not grow).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const pkg = fileURLToPath(new URL("../../pkg/", import.meta.url));

test("import('tokenwarden/verify') resolves to pkg/verify.js and does no network I/O and leaves nothing running", () => {
  const probe = `
    import net from "node:net";
    import dns from "node:dns";
    import http from "node:http";
    const calls = [];
    const trap = (name) => function () { calls.push(name); throw new Error(name + " at import"); };
    net.Socket.prototype.connect = trap("net.connect");
    dns.lookup = trap("dns.lookup");
    http.request = trap("http.request");
    globalThis.fetch = trap("fetch");
    const m = await import("tokenwarden/verify");
    const resolved = import.meta.resolve("tokenwarden/verify");
    console.log(JSON.stringify({ calls, keys: Object.keys(m).sort(), resolved }));
  `;
  // The child must exit by itself: a timer or socket left open at import would hang it.
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", probe], { cwd: pkg, timeout: 10_000, encoding: "utf8" });
  const { calls, keys, resolved } = JSON.parse(out);
  assert.deepEqual(calls, []);
  assert.ok(resolved.endsWith("/pkg/verify.js"), resolved);
  for (const k of ["createVerifier", "VerifyError", "memoryReplayStore", "postgresReplayStore"]) assert.ok(keys.includes(k), k);
});

test("pkg/package.json exports ./verify with its types, ships it, and stays side-effect free", () => {
  const p = JSON.parse(readFileSync(new URL("package.json", `file://${pkg}`), "utf8"));
  assert.deepEqual(p.exports["./verify"], { types: "./verify.d.ts", node: "./verify.js", default: "./verify.js" });
  assert.ok(p.files.includes("verify.js") && p.files.includes("verify.d.ts"));
  // Only tokenwarden/passkeys has an effect when imported (it adds TokenManager's passkey
  // methods): bundlers may drop every other entry, the verifier included, when unused.
  assert.deepEqual(p.sideEffects, ["./passkeys.js"]);
  assert.deepEqual(p.dependencies ?? {}, {}, "no runtime dependency");
});

test("the browser entry points do not import the verifier", () => {
  for (const f of ["tokenwarden.js", "react.js"]) {
    let text;
    try {
      text = readFileSync(`${pkg}${f}`, "utf8");
    } catch {
      continue; // tokenwarden.js is built (scripts/build-pkg.sh)
    }
    assert.doesNotMatch(text, /(\bimport\s*\(?|\bfrom)\s*["'][^"']*verify(\.js)?["']/, f);
    assert.doesNotMatch(text, /node:crypto/, f);
  }
  const src = readFileSync(`${pkg}verify.js`, "utf8");
  const imports = [...src.matchAll(/^import .* from "([^"]+)";$/gm)].map((m) => m[1]);
  assert.deepEqual(imports.sort(), ["node:crypto", "node:net"], "node built-ins only");
});

test("CORS says what the crate's resource::CORS_* constants say (one list for both verifiers)", async () => {
  const { CORS } = await import("../../pkg/verify.js");
  const rust = readFileSync(new URL("../../dpop/src/resource.rs", import.meta.url), "utf8");
  const constant = (name) => {
    const body = rust.match(new RegExp(`pub const ${name}: \\[[^\\]]+\\] = \\[([^\\]]*)\\];`))?.[1];
    assert.ok(body, `${name} in dpop/src/resource.rs`);
    // `HeaderName::from_static("dpop")`, `header::CONTENT_TYPE` (content-type), `Method::GET`.
    return [...body.matchAll(/from_static\("([^"]+)"\)|(header|Method)::([A-Z_]+)\b/g)].map(
      ([, name, kind, id]) => name ?? (kind === "Method" ? id : id.toLowerCase().replaceAll("_", "-")),
    );
  };
  assert.deepEqual([...CORS.methods], constant("CORS_ALLOW_METHODS"));
  assert.deepEqual([...CORS.allowedHeaders], constant("CORS_ALLOW_HEADERS"));
  assert.deepEqual([...CORS.exposedHeaders], constant("CORS_EXPOSE_HEADERS"));
});
