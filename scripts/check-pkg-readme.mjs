#!/usr/bin/env node
// Keeps pkg/README.md (the npm page) true to the package `make pkg` built. Exits 1 naming each
// claim the built package does not back:
//   - a size in KB in a sentence that says gzip: the .wasm + the JS (gzip -9 of each, summed) or,
//     in a sentence about React, Angular, Vue or Svelte, that binding (pkg/react.js, angular.js,
//     vue.js, svelte.js; every binding a sentence names); "about N KB" / "N KB" within 0.5 KB,
//     "under N KB" below it (1 KB = 1024 B, as `make pkg` prints);
//   - each `Authorization: <scheme>` named: the driver (pkg/tokenwarden.js) must emit the literal
//     "<scheme> "; and if the package defaults to DPoP (tokenwarden.d.ts), a README naming Bearer
//     must name DPoP too, and `dpop: false` beside it;
//   - option names: keys of `new TokenManager({...})` in code blocks and code spans used as an
//     option (`name` in a sentence that says "option", or `name: value`) must be declared in
//     tokenwarden.d.ts (TokenManagerOptions; a `name: value` span may name any member declared in the
//     .d.ts files of the client, React, passkeys or the verifier);
//   - every `auth.member` in code (blocks and spans) must be a member of class TokenManager (or
//     of what passkeys.d.ts adds to it), and every name taken from `useAuth()` a member of
//     react.d.ts's AuthState;
//   - every entry point imported ("tokenwarden", "tokenwarden/react", ...) or named in a code span
//     must be a key of package.json "exports".
//
//   node scripts/check-pkg-readme.mjs [--pkg DIR] [--readme FILE]
//        DIR: the built package (default: pkg/ of this repository);
//        FILE: the README to check (default: pkg/README.md of this repository)
//   node scripts/check-pkg-readme.mjs --self-test [--pkg DIR] [--readme FILE]
//        the README must pass, and each of several broken copies (a wrong size, an unknown
//        scheme, a Bearer-only claim, an unknown option, an unknown method, an unknown entry
//        point, ...) must fail for the reason it was broken
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const KB = 1024;
/** The framework bindings, each pkg/<name>.js, hand-written. */
const BINDINGS = ["react", "angular", "vue", "svelte"];

// ---- the README's text ------------------------------------------------------------------------

/** Line number (1-based) of offset `i` in `text`. */
const lineOf = (text, i) => text.slice(0, i).split("\n").length;

/** Fenced code blocks: [{code, start}] (start: offset of the code's first character). The prose
 * is the text with every block blanked (same offsets). */
function split(text) {
  const blocks = [];
  let prose = "";
  let fence = null;
  let code = "";
  let start = 0;
  let off = 0;
  for (const line of text.split("\n")) {
    const m = line.match(/^\s*(```+|~~~+)/);
    if (m && !fence) {
      fence = m[1];
      code = "";
      start = off + line.length + 1;
      prose += " ".repeat(line.length) + "\n";
    } else if (m && fence && m[1][0] === fence[0] && m[1].length >= fence.length) {
      fence = null;
      blocks.push({ code, start });
      prose += " ".repeat(line.length) + "\n";
    } else if (fence) {
      code += line + "\n";
      prose += " ".repeat(line.length) + "\n";
    } else {
      prose += line + "\n";
    }
    off += line.length + 1;
  }
  return { blocks, prose: prose.slice(0, text.length) };
}

/** Inline code spans of the prose: [{span, at}]. */
function spans(prose) {
  const out = [];
  for (const m of prose.matchAll(/(`+)([^`][\s\S]*?)\1(?!`)/g)) {
    out.push({ span: m[2].trim(), at: m.index });
  }
  return out;
}

/** The sentence of the prose around offset `i`: from the last sentence end (". ", ": ", "; ",
 * "! ", "? "), list-item start or blank line before it, to the next one. */
function sentence(prose, i) {
  const before = prose.slice(0, i);
  const after = prose.slice(i);
  const ends = /[.!?;:](?=\s)|\n\s*\n|\n\s*[-*+]\s|\n\s*\d+\.\s/g;
  let from = 0;
  for (const m of before.matchAll(ends)) from = m.index + m[0].length;
  const next = after.search(/[.!?;:](?=\s)|\n\s*\n|\n\s*[-*+]\s|\n\s*\d+\.\s/);
  return prose.slice(from, next < 0 ? prose.length : i + next).replace(/\s+/g, " ");
}

/** Code with its string literals and comments blanked, offsets kept (so `"https://x"` is no
 * `https:` key, and `// a comment's quote` opens no string). */
function stripCode(code) {
  return code.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*|(["'`])(?:\\.|(?!\1)[^\\\n])*\1/g, (m, q) =>
    q ? q + " ".repeat(m.length - 2) + q : m.replace(/[^\n]/g, " "),
  );
}

/** The text inside the parentheses that open at `open` (an index of "("), or null. */
function parenBody(code, open) {
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    if ("([{".includes(code[i])) depth++;
    else if (")]}".includes(code[i]) && --depth === 0) return code.slice(open + 1, i);
  }
  return null;
}

// ---- the built package ------------------------------------------------------------------------

/** Members declared in the body of `kind name` (interface or class) of a .d.ts, or null. */
function members(dts, kind, name) {
  const m = dts.match(new RegExp(`\\b${kind}\\s+${name}\\b[^{]*\\{`));
  if (!m) return null;
  const open = m.index + m[0].length - 1;
  let depth = 0;
  let end = open;
  for (let i = open; i < dts.length; i++) {
    if (dts[i] === "{") depth++;
    else if (dts[i] === "}" && --depth === 0) {
      end = i;
      break;
    }
  }
  const body = dts.slice(open + 1, end).replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
  const out = new Set();
  // Top-level members only: `readonly x: T;`, `x?: T;`, `f(...)`, `f<K>(...)`, `constructor(`.
  let d = 0;
  let line = "";
  for (const ch of body) {
    if (ch === "{" || ch === "(") d++;
    if (ch === "}" || ch === ")") d--;
    if (d === 0 && (ch === ";" || ch === "\n")) {
      const mm = line.match(/^\s*(?:readonly\s+|static\s+)*([A-Za-z_$][\w$]*)\s*\??\s*[(<:]/);
      if (mm) out.add(mm[1]);
      line = "";
    } else line += ch;
  }
  const mm = line.match(/^\s*(?:readonly\s+|static\s+)*([A-Za-z_$][\w$]*)\s*\??\s*[(<:]/);
  if (mm) out.add(mm[1]);
  return out;
}

/** Everything the checks need from the built package in `dir`; throws if something is missing. */
function loadPackage(dir) {
  const need = ["tokenwarden_bg.wasm", "tokenwarden.js", "tokenwarden.d.ts", "package.json"];
  const missing = need.filter((f) => !existsSync(join(dir, f)));
  if (missing.length) {
    throw new Error(`${dir} has no ${missing.join(", ")}: build the package first (make pkg)`);
  }
  const read = (f) => readFileSync(join(dir, f));
  const gz = (f) => gzipSync(read(f), { level: 9 }).length;
  const dts = read("tokenwarden.d.ts").toString();
  const reactDts = existsSync(join(dir, "react.d.ts")) ? read("react.d.ts").toString() : "";
  // tokenwarden/passkeys adds its methods to TokenManager (module augmentation).
  const passkeysDts = existsSync(join(dir, "passkeys.d.ts")) ? read("passkeys.d.ts").toString() : "";
  const js = read("tokenwarden.js").toString();
  const pkg = JSON.parse(read("package.json").toString());
  // Every interface/class member of the .d.ts files (the client's, React's, passkeys' and the
  // verifier's): what a `name: value` span may name.
  const verifyDts = existsSync(join(dir, "verify.d.ts")) ? read("verify.d.ts").toString() : "";
  const declared = new Set();
  for (const src of [dts, reactDts, passkeysDts, verifyDts]) {
    for (const m of src.matchAll(/\b(interface|class)\s+([A-Za-z_$][\w$]*)/g)) {
      for (const n of members(src, m[1], m[2]) ?? []) declared.add(n);
    }
  }
  // The `dpop` option's documented default.
  const dpopDoc = dts.match(/\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*dpop\??\s*:/);
  const dpopDefault = dpopDoc ? (dpopDoc[1].match(/Default\s+(true|false)\b/)?.[1] ?? null) : null;
  return {
    dir,
    name: pkg.name,
    mainGzip: gz("tokenwarden_bg.wasm") + gz("tokenwarden.js"),
    reactGzip: existsSync(join(dir, "react.js")) ? gz("react.js") : null,
    bindingGzip: Object.fromEntries(BINDINGS.map((b) => [b, existsSync(join(dir, `${b}.js`)) ? gz(`${b}.js`) : null])),
    emits: (scheme) => new RegExp(`["'\`]${scheme.replace(/[^\w-]/g, "")} `).test(js),
    options: members(dts, "interface", "TokenManagerOptions") ?? new Set(),
    manager: new Set([...(members(dts, "class", "TokenManager") ?? []), ...(members(passkeysDts, "interface", "TokenManager") ?? [])]),
    authState: members(reactDts, "interface", "AuthState"),
    declared,
    dpopDefault,
    exports: new Set(Object.keys(typeof pkg.exports === "object" && pkg.exports ? pkg.exports : { ".": pkg.exports })),
  };
}

// ---- the checks -------------------------------------------------------------------------------

/** Problems of README text `text` against package `p`: [{line, kind, msg}]. */
function check(text, p) {
  const problems = [];
  const at = (i, kind, msg) => problems.push({ line: lineOf(text, i), kind, msg });
  const { blocks, prose } = split(text);
  const codeSpans = spans(prose);
  const kb = (b) => `${(b / KB).toFixed(2)} KB (${b} B)`;

  // Sizes.
  for (const m of prose.matchAll(/(\d+(?:\.\d+)?)\s?(?:KB|kB|KiB)\b/g)) {
    const s = sentence(prose, m.index);
    if (!/gzip/i.test(s)) continue;
    const n = Number(m[1]);
    const named = BINDINGS.filter((b) => new RegExp(`\\b${b}\\b`, "i").test(s));
    const targets = named.length
      ? named.map((b) => [b === "react" ? p.reactGzip : p.bindingGzip[b], `${b}.js`])
      : [[p.mainGzip, "the .wasm + tokenwarden.js"]];
    const pre = prose.slice(Math.max(0, m.index - 24), m.index);
    for (const [actual, what] of targets) {
      if (actual == null) {
        at(m.index, "size", `"${m[0]}" for ${what}, which the package does not have`);
      } else if (/\b(under|below|less than|at most|within)\s+$|<\s*$|≤\s*$/i.test(pre)) {
        if (actual > n * KB) at(m.index, "size", `"under ${m[0]}" gzip for ${what}, which is ${kb(actual)}`);
      } else if (/\b(over|above|more than)\s+$|>\s*$/i.test(pre)) {
        if (actual <= n * KB) at(m.index, "size", `"over ${m[0]}" gzip for ${what}, which is ${kb(actual)}`);
      } else if (Math.abs(actual - n * KB) > KB / 2) {
        at(m.index, "size", `"${m[0]}" gzip for ${what}, which is ${kb(actual)} (more than 0.5 KB off)`);
      }
    }
  }

  // Authorization schemes.
  const schemes = new Map();
  for (const m of text.matchAll(/Authorization:\s*([A-Za-z][\w-]*)/g)) {
    if (!schemes.has(m[1])) schemes.set(m[1], m.index);
    if (!p.emits(m[1])) {
      at(m.index, "scheme", `"Authorization: ${m[1]}", a scheme the driver never sends (no "${m[1]} " in tokenwarden.js)`);
    }
  }
  if (p.dpopDefault === "true" && schemes.has("Bearer")) {
    if (!schemes.has("DPoP")) {
      at(schemes.get("Bearer"), "scheme", `"Authorization: Bearer" but never "Authorization: DPoP", which the package sends by default (dpop: Default true)`);
    }
    if (!/`\s*dpop\s*:\s*false\s*`|\bdpop\s*:\s*false\b/.test(text)) {
      at(schemes.get("Bearer"), "scheme", `"Authorization: Bearer" without \`dpop: false\`, the option that sends it (the default is DPoP)`);
    }
  }

  // Options.
  const optionCheck = (name, i, how) => {
    if (!p.options.has(name)) at(i, "option", `option \`${name}\` (${how}) is not in tokenwarden.d.ts's TokenManagerOptions`);
  };
  for (const { code, start } of blocks) {
    const c = stripCode(code);
    for (const m of c.matchAll(/new\s+TokenManager\s*\(/g)) {
      const body = parenBody(c, m.index + m[0].length - 1);
      const obj = body?.trim().startsWith("{") ? body.trim().slice(1, -1) : "";
      // Keys at the object's top level.
      let d = 0;
      let seg = "";
      for (const ch of obj + ",") {
        if ("([{".includes(ch)) d++;
        if (")]}".includes(ch)) d--;
        if (d === 0 && ch === ",") {
          const k = seg.match(/^\s*([A-Za-z_$][\w$]*)\s*(:|$)/);
          if (k) optionCheck(k[1], start + m.index, "new TokenManager({...})");
          seg = "";
        } else seg += ch;
      }
    }
  }
  for (const { span, at: i } of codeSpans) {
    const kv = span.match(/^\{?\s*([a-z][\w$]*)\s*:\s*[^:{}]+?\s*\}?$/);
    if (kv && !/^(https?|wss?)$/.test(kv[1])) {
      if (/\boptions?\b/i.test(sentence(prose, i))) optionCheck(kv[1], i, `\`${span}\``);
      else if (!p.declared.has(kv[1])) at(i, "option", `\`${span}\`: \`${kv[1]}\` is declared nowhere in the package's .d.ts`);
    } else if (/^[a-z][\w$]*$/.test(span) && !/^(true|false|null|undefined)$/.test(span) &&
      /\boptions?\b/i.test(sentence(prose, i))) {
      optionCheck(span, i, "named as an option");
    }
  }

  // Methods on `auth.`, and what useAuth() returns.
  const memberCheck = (name, i) => {
    if (!p.manager.has(name)) at(i, "method", `\`auth.${name}\` is not a member of TokenManager in tokenwarden.d.ts`);
  };
  for (const { code, start } of blocks) {
    const c = stripCode(code);
    for (const m of c.matchAll(/\bauth\.([A-Za-z_$][\w$]*)/g)) memberCheck(m[1], start + m.index);
    if (p.authState) {
      for (const m of c.matchAll(/\{([^{}]*)\}\s*=\s*useAuth\s*\(/g)) {
        for (const n of m[1].split(",").map((s) => s.trim().split(/\s*:\s*/)[0]).filter(Boolean)) {
          if (!p.authState.has(n)) at(start + m.index, "method", `\`${n}\` from useAuth() is not in react.d.ts's AuthState`);
        }
      }
    }
  }
  for (const { span, at: i } of codeSpans) {
    for (const m of span.matchAll(/\bauth\.([A-Za-z_$][\w$]*)/g)) memberCheck(m[1], i);
  }

  // Entry points.
  const entry = (spec, i) => {
    if (spec !== p.name && !spec.startsWith(p.name + "/")) return;
    const sub = spec === p.name ? "." : "./" + spec.slice(p.name.length + 1);
    if (!p.exports.has(sub)) at(i, "entry", `entry point "${spec}" is not in package.json "exports" (no "${sub}")`);
  };
  for (const { code, start } of blocks) {
    const re = /\b(?:from|import|require)\s*\(?\s*(["'])([^"']+)\1/g;
    for (const m of code.matchAll(re)) entry(m[2], start + m.index);
  }
  for (const { span, at: i } of codeSpans) {
    if (/^[@\w.-]+(\/[\w.-]+)*$/.test(span) && span.startsWith(p.name)) entry(span, i);
  }
  return problems;
}

// ---- self-test --------------------------------------------------------------------------------

/** Broken copies of `text`: [name, kind the check must report, mutate(text) → text]. */
function mutations(p) {
  const wrong = (p.mainGzip / KB + 2).toFixed(1);
  const sub = (a, b) => (t) => t.replace(a, b);
  return [
    ["a size 2 KB off", "size", (t) => t.replace(/(\d+(?:\.\d+)?)(\s?KB gzip for the `\.wasm`)/, `${wrong}$2`)],
    ["the old 15 KB claim", "size", (t) => t.replace(/About [\d.]+ KB gzip/, "15 KB gzip")],
    ["a new size sentence far off", "size", (t) => `${t}\nThe package is 9 KB gzip.\n`],
    ["React over its size", "size", sub(/under 1 KB gzip/, "under 0.5 KB gzip")],
    ["Vue, Angular and Svelte over their size", "size", sub(/Angular, Vue and Svelte bindings, each under 1 KB gzip/, "Angular, Vue and Svelte bindings, each under 0.5 KB gzip")],
    ["an unknown scheme", "scheme", (t) => `${t}\nSome backends get \`Authorization: Token <token>\`.\n`],
    ["Bearer only (the package defaults to DPoP)", "scheme", (t) => t.replaceAll("Authorization: DPoP", "Authorization: Bearer")],
    ["Bearer without dpop: false", "scheme", (t) => t.replaceAll("dpop: false", "a setting")],
    ["an unknown option in a span", "option", sub("`dpop: false`", "`dpopMode: false`")],
    ["an unknown constructor option", "option", sub("new TokenManager({ allowedOrigins:", "new TokenManager({ allowOrigins:")],
    ["an unknown option named as one", "option", sub("the `crossTab` option", "the `shareTabs` option")],
    ["an unknown method", "method", sub("auth.restore()", "auth.restoreSession()")],
    ["an unknown method in a span", "method", sub("`auth.install()`", "`auth.patchFetch()`")],
    ["an unknown useAuth() field", "method", sub("isLoading, isAuthenticated", "isLoading, isReady")],
    ["an unknown entry point", "entry", sub('from "tokenwarden/react"', 'from "tokenwarden/hooks"')],
    ["an unknown entry point in a span", "entry", sub("`tokenwarden/react`", "`tokenwarden/preact`")],
    ["a dynamic import of an unknown entry point", "entry", (t) => `${t}\n\`\`\`js\nconst m = await import("tokenwarden/ssr");\n\`\`\`\n`],
  ].map(([name, kind, f]) => ({ name, kind, f }));
}

function selfTest(text, p, file) {
  let failed = 0;
  const base = check(text, p);
  if (base.length) {
    console.error(`self-test: ${file} itself fails, so the broken copies prove nothing:`);
    for (const q of base) console.error(`  ${file}:${q.line}: ${q.msg}`);
    return 1;
  }
  const ms = mutations(p);
  for (const { name, kind, f } of ms) {
    const t = f(text);
    if (t === text) {
      console.error(`self-test: "${name}" changed nothing (${file} no longer has the text it breaks)`);
      failed++;
      continue;
    }
    const got = check(t, p);
    if (!got.some((q) => q.kind === kind)) {
      console.error(`self-test: "${name}" was not caught (expected a ${kind} problem; got ${got.map((q) => q.kind).join(", ") || "none"})`);
      failed++;
    }
  }
  if (failed) return 1;
  console.log(`check-pkg-readme self-test: all ${ms.length} broken copies of ${file} were caught`);
  return 0;
}

// ---- main -------------------------------------------------------------------------------------

function main(argv) {
  const arg = (flag, dflt) => {
    const i = argv.indexOf(flag);
    if (i < 0) return dflt;
    if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
    return resolve(argv[i + 1]);
  };
  const dir = arg("--pkg", join(ROOT, "pkg"));
  const readme = arg("--readme", join(ROOT, "pkg", "README.md"));
  const show = (f) => (relative(process.cwd(), f).startsWith("..") ? f : relative(process.cwd(), f) || f);
  const p = loadPackage(dir);
  const text = readFileSync(readme, "utf8");
  if (argv.includes("--self-test")) return selfTest(text, p, show(readme));
  const problems = check(text, p);
  for (const q of problems) console.error(`${show(readme)}:${q.line}: ${q.msg}`);
  if (problems.length) {
    console.error(`check-pkg-readme: ${problems.length} claim(s) of ${show(readme)} not backed by the package in ${show(dir)}`);
    return 1;
  }
  const rg = BINDINGS.filter((b) => p.bindingGzip[b] != null).map((b) => `, ${b}.js ${p.bindingGzip[b]} B`).join("");
  console.log(
    `${show(readme)}: every size, scheme, option, method and entry point matches the package in ${show(dir)} ` +
      `(.wasm + JS ${p.mainGzip} B gzip -9${rg})`,
  );
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  console.error(`check-pkg-readme: ${e.message}`);
  process.exitCode = 1;
}
