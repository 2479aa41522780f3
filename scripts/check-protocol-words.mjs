#!/usr/bin/env node
// No protocol word written as a literal in the client where src/proto.rs has it: the Rust of the
// client (src/, tests and src/proto.rs itself aside) names the enum's word (`ErrorCode::X.as_str()`,
// `error_code::X` in a pattern), and the driver (src/web/tokenwarden.js) the constants of its
// generated interface block (src/iface.rs). A word is every text of a `words!` enum and every
// `pub const NAME: &str` of proto.rs. Prints each literal found with where it is, and fails.
//   node scripts/check-protocol-words.mjs [--self-test] [ROOT]
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Every word of proto.rs. */
export function words(proto) {
  const out = new Set();
  for (const block of proto.matchAll(/words!\s*\{([\s\S]*?)\n\}/g)) {
    for (const m of block[1].matchAll(/^\s*[A-Z]\w*\s*=\s*"([^"]+)",/gm)) out.add(m[1]);
  }
  for (const m of proto.matchAll(/pub const \w+: &str = "([^"]+)";/g)) out.add(m[1]);
  return out;
}

/** Rust source without comments and without its `#[cfg(test)]` items (tests spell the wire). */
function rustCode(text) {
  let t = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, (c) => " ".repeat(c.length));
  // A `#[cfg(test)]` item: from the attribute to the end of its braces.
  for (;;) {
    const at = t.search(/#\[cfg\(test\)\]/);
    if (at < 0) return t;
    const open = t.indexOf("{", at);
    const semi = t.indexOf(";", at);
    if (open < 0 || (semi >= 0 && semi < open)) {
      t = t.slice(0, at) + " ".repeat(semi + 1 - at) + t.slice(semi + 1);
      continue;
    }
    let depth = 0, end = open;
    for (; end < t.length; end++) {
      if (t[end] === "{") depth++;
      else if (t[end] === "}" && --depth === 0) break;
    }
    t = t.slice(0, at) + t.slice(at, end + 1).replace(/[^\n]/g, " ") + t.slice(end + 1);
  }
}

/** JavaScript without comments and without the generated interface block. */
function jsCode(text) {
  return text
    .replace(/\/\/ ---- iface:[\s\S]*?\/\/ ---- end of iface ----/, (b) => b.replace(/[^\n]/g, " "))
    .replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, " "))
    .replace(/(^|[^:"'`\\])\/\/.*$/gm, (c, p) => p + " ".repeat(c.length - p.length));
}

/** [{file, line, word}] for each string literal of `code` that is one of `words`. */
export function literals(file, code, words) {
  const found = [];
  for (const m of code.matchAll(/"((?:\\.|[^"\\\n])*)"|'((?:\\.|[^'\\\n])*)'/g)) {
    const s = m[1] ?? m[2];
    if (words.has(s)) found.push({ file, line: code.slice(0, m.index).split("\n").length, word: s });
  }
  return found;
}

function rustFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return name === "tests" ? [] : rustFiles(p);
    return name.endsWith(".rs") ? [p] : [];
  });
}

/** Every literal protocol word in the client of the repository at `root`. */
export function check(root) {
  const w = words(readFileSync(join(root, "src/proto.rs"), "utf8"));
  const found = [];
  for (const f of rustFiles(join(root, "src"))) {
    if (f.endsWith("proto.rs")) continue;
    found.push(...literals(relative(root, f), rustCode(readFileSync(f, "utf8")), w));
  }
  const driver = join(root, "src/web/tokenwarden.js");
  found.push(...literals(relative(root, driver), jsCode(readFileSync(driver, "utf8")), w));
  return found;
}

function selfTest() {
  const proto = `words! {\n    /// x\n    ErrorCode in error_code {\n        /// y\n        InvalidGrant = "invalid_grant",\n    }\n}\npub const CSRF_HEADER: &str = "X-Tokenwarden";\n`;
  const w = words(proto);
  const must = (ok, what) => {
    if (!ok) {
      console.error(`check-protocol-words self-test: ${what}`);
      process.exit(1);
    }
  };
  must(w.has("invalid_grant") && w.has("X-Tokenwarden") && w.size === 2, `words: ${[...w]}`);
  const rust = `fn f(e: &str) -> bool {\n    e == "invalid_grant" // "X-Tokenwarden" in a comment\n}\n#[cfg(test)]\nmod tests {\n    const A: &str = "invalid_grant";\n}\n`;
  const r = literals("a.rs", rustCode(rust), w);
  must(r.length === 1 && r[0].line === 2 && r[0].word === "invalid_grant", `rust: ${JSON.stringify(r)}`);
  const js = `// ---- iface: generated\nconst E = "invalid_grant";\n// ---- end of iface ----\n/* "invalid_grant" */\nconst h = 'X-Tokenwarden'; // "invalid_grant"\nconst u = "https://a/b"; const ok = "grant";\n`;
  const j = literals("a.js", jsCode(js), w);
  must(j.length === 1 && j[0].line === 5 && j[0].word === "X-Tokenwarden", `js: ${JSON.stringify(j)}`);
  console.log("check-protocol-words self-test: a literal in code is caught; comments, tests and the generated block are not");
}

const args = process.argv.slice(2);
if (args.includes("--self-test")) selfTest();
else if (import.meta.url === `file://${process.argv[1]}`) {
  const root = args.find((a) => !a.startsWith("--")) ?? ROOT;
  const found = check(root);
  for (const f of found) console.error(`${f.file}:${f.line}: "${f.word}" is a word of src/proto.rs: name it`);
  if (found.length) process.exit(1);
  console.log("check-protocol-words: no protocol word written as a literal in the client");
}
