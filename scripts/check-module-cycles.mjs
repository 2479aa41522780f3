#!/usr/bin/env node
// No import cycle among the top-level modules of a crate (server/src by default): module A
// depends on B when any file of A names `crate::B` (in a `use`, a path, or `crate::{B, ...}`).
// A cycle is printed with the files that make each of its edges, and fails.
//   node scripts/check-module-cycles.mjs [--self-test] [SRC_DIR]
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

/** Every .rs file under dir. */
function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : name.endsWith(".rs") ? [p] : [];
  });
}

/** Source without comments and string literals (a doc comment naming crate::x is no edge). */
function code(text) {
  return text
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\/\/.*$/gm, "")
    .replace(/r#*"[\s\S]*?"#*/g, '""')
    .replace(/"(?:\\.|[^"\\])*"/g, '""');
}

/** The modules `text` names through `crate::`. */
function names(text) {
  const out = new Set();
  for (const m of text.matchAll(/\bcrate::(\{[^}]*\}|[a-z_][a-z0-9_]*)/g)) {
    if (m[1].startsWith("{")) {
      for (const part of m[1].slice(1, -1).split(",")) {
        const head = part.trim().split("::")[0].trim();
        if (/^[a-z_][a-z0-9_]*$/.test(head) && head !== "self") out.add(head);
      }
    } else {
      out.add(m[1]);
    }
  }
  return out;
}

/** module -> Map(dependency -> [files]) from a list of {path, text}. */
function graph(sources, src) {
  const modules = new Map();
  for (const { path, text } of sources) {
    const rel = relative(src, path);
    const top = rel.split("/")[0].replace(/\.rs$/, "");
    if (top === "lib" || top === "main") continue;
    if (!modules.has(top)) modules.set(top, new Map());
    for (const dep of names(code(text))) {
      if (dep === top) continue;
      const edges = modules.get(top);
      if (!edges.has(dep)) edges.set(dep, []);
      edges.get(dep).push(rel);
    }
  }
  for (const edges of modules.values()) {
    for (const dep of [...edges.keys()]) if (!modules.has(dep)) edges.delete(dep);
  }
  return modules;
}

/** The strongly connected components of more than one module (Tarjan). */
function cycles(modules) {
  let index = 0;
  const stack = [], on = new Set(), idx = new Map(), low = new Map(), out = [];
  const visit = (v) => {
    idx.set(v, index); low.set(v, index); index++;
    stack.push(v); on.add(v);
    for (const w of modules.get(v).keys()) {
      if (!idx.has(w)) { visit(w); low.set(v, Math.min(low.get(v), low.get(w))); }
      else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const comp = [];
      let w;
      do { w = stack.pop(); on.delete(w); comp.push(w); } while (w !== v);
      if (comp.length > 1) out.push(comp.sort());
    }
  };
  for (const v of [...modules.keys()].sort()) if (!idx.has(v)) visit(v);
  return out;
}

function report(modules, found) {
  return found.map((comp) => {
    const lines = [`cycle among ${comp.length} modules: ${comp.join(", ")}`];
    for (const a of comp) for (const [b, where] of modules.get(a)) {
      if (comp.includes(b)) lines.push(`  ${a} -> ${b}  (${[...new Set(where)].join(", ")})`);
    }
    return lines.join("\n");
  }).join("\n");
}

function check(src, extra = []) {
  const sources = files(src).map((path) => ({ path, text: readFileSync(path, "utf8") })).concat(extra);
  const modules = graph(sources, src);
  return { modules, found: cycles(modules) };
}

const args = process.argv.slice(2);
const selfTest = args.includes("--self-test");
const src = args.find((a) => !a.startsWith("--")) ?? new URL("../server/src", import.meta.url).pathname;

if (selfTest) {
  const { modules, found } = check(src);
  if (found.length) { console.error(report(modules, found)); process.exit(1); }
  // Add a cycle the way a newcomer would: the lowest module reaching for the top one.
  const lowest = [...modules.entries()].find(([, deps]) => deps.size === 0)?.[0];
  const top = [...modules.entries()].sort((a, b) => b[1].size - a[1].size)[0][0];
  const broken = [
    { path: join(src, `${lowest}_extra.rs`), text: "" },
    { path: join(src, `${lowest}.rs`), text: `use crate::${top}::Thing;` },
  ];
  const again = check(src, broken);
  if (!again.found.length) { console.error(`self-test: a cycle ${lowest} -> ${top} was not caught`); process.exit(1); }
  // Doc comments and strings are not edges.
  const quiet = check(src, [{ path: join(src, `${lowest}.rs`), text: `//! see crate::${top}\nconst S: &str = "crate::${top}";` }]);
  if (quiet.found.length) { console.error("self-test: a comment or a string was taken for an edge"); process.exit(1); }
  console.log(`check-module-cycles self-test: a ${lowest} -> ${top} cycle is caught; comments and strings are not edges`);
  process.exit(0);
}

const { modules, found } = check(src);
if (found.length) {
  console.error(report(modules, found));
  process.exit(1);
}
const edges = [...modules.values()].reduce((n, m) => n + m.size, 0);
console.log(`${relative(process.cwd(), src) || src}: ${modules.size} modules, ${edges} dependencies, no cycle`);
