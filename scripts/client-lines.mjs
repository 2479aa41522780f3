#!/usr/bin/env node
// The client's lines as issue 23 counts them: non-blank, non-comment lines of code, tests left
// out (Rust `#[cfg(test)]` items and the test directories). The core decides (src/core/); the
// web side carries out (src/web/: the wasm glue in Rust, the JS driver and the passkeys entry);
// the shared tables (src/proto.rs, src/iface.rs) are listed apart. Prints a table and the core's
// share. Usage: node scripts/client-lines.mjs
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

/** Lines of code in `file`: no blank line, no line or block comment, no `#[cfg(test)]` item. */
export function count(text) {
  let n = 0, inBlock = false, skipping = false, pending = false, depth = 0;
  for (const line of text.split("\n")) {
    const s = line.trim();
    if (skipping) {
      depth += (line.match(/\{/g) ?? []).length - (line.match(/\}/g) ?? []).length;
      if (depth <= 0) skipping = false;
      continue;
    }
    if (s.startsWith("#[cfg(test)]")) {
      pending = true;
      continue;
    }
    if (pending) {
      pending = false;
      depth = (line.match(/\{/g) ?? []).length - (line.match(/\}/g) ?? []).length;
      skipping = depth > 0;
      continue;
    }
    if (inBlock) {
      if (s.includes("*/")) inBlock = false;
      continue;
    }
    if (s.startsWith("/*")) {
      inBlock = !s.includes("*/");
      continue;
    }
    if (!s || s.startsWith("//") || s.startsWith("*")) continue;
    n++;
  }
  return n;
}

function files(dir, ext) {
  return readdirSync(path.join(root, dir))
    .filter((f) => ext.some((e) => f.endsWith(e)))
    .map((f) => path.join(dir, f));
}

if (process.argv.includes("--self-test")) {
  const sample = "// c\nfn a() {}\n/* b\n c */\n\n#[cfg(test)]\nmod t {\n  fn x() {}\n}\nlet y = 1;\n";
  if (count(sample) !== 2) throw new Error(`self-test: counted ${count(sample)}, not 2`);
  console.log("client-lines self-test: ok");
  process.exit(0);
}

const groups = {
  core: files("src/core", [".rs"]),
  web: [...files("src/web", [".rs"]), "src/web/tokenwarden.js", "src/web/passkeys.js"],
  shared: ["src/proto.rs", "src/iface.rs"],
};
const total = {};
for (const [group, list] of Object.entries(groups)) {
  total[group] = 0;
  for (const f of list) {
    const n = count(readFileSync(path.join(root, f), "utf8"));
    total[group] += n;
    console.log(`${String(n).padStart(6)}  ${group.padEnd(6)}  ${f}`);
  }
}
const share = (100 * total.core) / (total.core + total.web);
console.log(`\ncore ${total.core}, web ${total.web} (goal <= 1,000), shared tables ${total.shared}`);
console.log(`core's share of core + web: ${share.toFixed(1)} % (goal >= 60 %)`);
