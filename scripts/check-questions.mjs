#!/usr/bin/env node
// Keeps docs/QUESTIONS.md true (issue 15): every link into the repository resolves, every link
// whose text names a test (`rust_fn_name` or "a JS test's title") points at a file that declares
// a test of exactly that name, every question of the issue has a section with at least one such
// test link, and every `data-question` reference of the demo page (www/index.html) names a
// section. Exits 1 listing each problem.
//
//   node scripts/check-questions.mjs                   check docs/QUESTIONS.md and www/index.html
//   node scripts/check-questions.mjs --file F [--base D] [--www W]
//                                                      check a copy F, its links resolved from D
//   node scripts/check-questions.mjs --self-test       break the page in known ways; each must fail
//
// Tests are recognised as declared:
//   .rs   `fn name` after `#[test]`, `#[tokio::test…]` or `#[wasm_bindgen_test]` (other attributes
//         and comments may sit between them);
//   .ts .mjs .js  `test("…")`, `test('…')`, `test(`…`)`, `it(…)`, `scenario(…)` and their
//         `.only`/`.skip`/`.fixme` forms, not `test.describe` or `test.step`. A template literal
//         title matches a link whose text fits it with each `${…}` standing for some text.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

// The questions of issue 15, each of which must be a `## ` heading with at least one test link.
const QUESTIONS = [
  "Where do I keep the access token and the refresh token?",
  "How does a user stay logged in across a browser restart?",
  "How does my SPA know it is logged in when the refresh cookie is HttpOnly?",
  "How do I revoke a JWT, or log out for real?",
  "What happens when several requests find the token expired at once?",
  "What should happen with a malformed or expired token?",
  "How do I update the claims after a profile change?",
  "Sliding or fixed sessions?",
  "How is a stolen refresh token detected?",
  "How do I rotate the signing key without logging everyone out?",
  "How does a user on a bad network not get logged out?",
  "Banking app or social app: what changes?",
  "Can an XSS steal my in-memory token?",
  "Can users sign in with an emailed code instead of a password?",
  "How do my other services verify tokens and see a logout?",
  "Can my users sign in with Google or our company SSO?",
  "How do I move my existing users?",
  "How do I add 2FA or passkeys?",
];

/** GitHub's anchor for a heading: inline markup and punctuation dropped, spaces to hyphens. */
function slug(heading) {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

/** The lines of a Markdown text outside fenced code blocks, with their numbers. */
function proseLines(text) {
  const out = [];
  let fence = null;
  text.split("\n").forEach((line, i) => {
    const m = line.match(/^\s*(```+|~~~+)/);
    if (m) {
      if (!fence) fence = m[1][0];
      else if (m[1][0] === fence) fence = null;
      return;
    }
    if (!fence) out.push({ line, n: i + 1 });
  });
  return out;
}

/** `## Heading` lines of a Markdown text: [{level, text, n, anchor}], anchors made unique as GitHub does. */
function headings(text) {
  const seen = new Map();
  const out = [];
  for (const { line, n } of proseLines(text)) {
    const m = line.match(/^(#{1,6})\s+(.*?)\s*#*\s*$/);
    if (!m) continue;
    const base = slug(m[2]);
    const k = seen.get(base) ?? 0;
    seen.set(base, k + 1);
    out.push({ level: m[1].length, text: m[2], n, anchor: k ? `${base}-${k}` : base });
  }
  return out;
}

const fileCache = new Map();
function read(path) {
  if (!fileCache.has(path)) fileCache.set(path, readFileSync(path, "utf8"));
  return fileCache.get(path);
}

/** The tests a file declares: {names: Set, templates: RegExp[]}, or null for a kind of file without tests. */
const testCache = new Map();
function declaredTests(path) {
  if (testCache.has(path)) return testCache.get(path);
  const text = read(path);
  const names = new Set();
  const templates = [];
  const ext = extname(path);
  if (ext === ".rs") {
    let pending = false;
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (/^#\[(?:test|tokio::test|wasm_bindgen_test)(?:\(.*\))?\]/.test(line)) {
        pending = true;
        continue;
      }
      if (!pending) continue;
      if (line === "" || line.startsWith("#[") || line.startsWith("//")) continue;
      const fn = line.match(/^(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+([A-Za-z0-9_]+)/);
      if (fn) names.add(fn[1]);
      pending = false;
    }
  } else if ([".ts", ".mjs", ".js", ".mts", ".cjs"].includes(ext)) {
    const call =
      /(?<![.\w$])(?:test|it|scenario)(?:\.(?:only|skip|fixme|fail|slow))?\(\s*(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|`((?:[^`\\]|\\.)*)`)/g;
    for (const m of text.matchAll(call)) {
      const unescape = (s) => s.replace(/\\(.)/g, "$1");
      if (m[1] !== undefined) names.add(unescape(m[1]));
      else if (m[2] !== undefined) names.add(unescape(m[2]));
      else if (!m[3].includes("${")) names.add(unescape(m[3]));
      else {
        const parts = m[3].split(/\$\{[^}]*\}/).map((p) => unescape(p).replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
        templates.push(new RegExp(`^${parts.join(".+?")}$`));
      }
    }
  } else {
    testCache.set(path, null);
    return null;
  }
  const found = { names, templates };
  testCache.set(path, found);
  return found;
}

/** The test a link's text names: `name` or "title", or null. */
function namedTest(text) {
  const m = text.match(/^`([^`]+)`$/) ?? text.match(/^"(.+)"$/);
  return m ? m[1] : null;
}

/**
 * Checks a QUESTIONS.md text whose links resolve from `base`, and the demo page's references to it.
 * Returns {problems: string[], links, tests}.
 */
function check(text, { base, label = "QUESTIONS.md", www = null } = {}) {
  const problems = [];
  const own = headings(text);
  const ownAnchors = new Set(own.map((h) => h.anchor));
  let links = 0;
  const tests = new Set();
  const testLinesBySection = new Map(); // heading line number -> count of resolved test links
  const sections = own.filter((h) => h.level === 2);
  const sectionOf = (n) => sections.filter((h) => h.n < n).at(-1);

  for (const { line, n } of proseLines(text)) {
    for (const m of line.matchAll(/\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)/g)) {
      const [, linkText, target] = m;
      const where = `${label}:${n}: [${linkText}](${target})`;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:: not in the repository
      links++;
      const [pathPart, anchor] = target.split("#");
      let file = null;
      if (pathPart === "") {
        if (anchor && !ownAnchors.has(anchor)) problems.push(`${where}: no heading with the anchor #${anchor}`);
      } else {
        file = resolve(base, decodeURIComponent(pathPart));
        if (relative(ROOT, file).startsWith("..")) {
          problems.push(`${where}: points outside the repository`);
          continue;
        }
        if (!existsSync(file)) {
          problems.push(`${where}: no such file ${relative(ROOT, file)}`);
          continue;
        }
        if (anchor && statSync(file).isFile() && extname(file) === ".md") {
          const anchors = new Set(headings(read(file)).map((h) => h.anchor));
          if (!anchors.has(anchor)) problems.push(`${where}: ${relative(ROOT, file)} has no heading with the anchor #${anchor}`);
        }
      }
      const name = namedTest(linkText);
      if (name === null) continue;
      if (!file || !statSync(file).isFile()) {
        problems.push(`${where}: names a test but does not point at a file`);
        continue;
      }
      const declared = declaredTests(file);
      if (declared === null) {
        problems.push(`${where}: names a test, but ${relative(ROOT, file)} is not a kind of file tests are declared in`);
        continue;
      }
      if (!declared.names.has(name) && !declared.templates.some((t) => t.test(name))) {
        problems.push(`${where}: no test named ${JSON.stringify(name)} is declared in ${relative(ROOT, file)}`);
        continue;
      }
      tests.add(`${relative(ROOT, file)}::${name}`);
      const section = sectionOf(n);
      if (section) testLinesBySection.set(section.n, (testLinesBySection.get(section.n) ?? 0) + 1);
    }
  }

  for (const q of QUESTIONS) {
    const section = sections.find((h) => h.text === q);
    if (!section) problems.push(`${label}: the question "${q}" has no "## " section`);
    else if (!testLinesBySection.get(section.n))
      problems.push(`${label}:${section.n}: the section "${q}" links to no existing test`);
  }

  if (www) {
    const html = typeof www === "string" ? read(www) : www.html;
    const name = typeof www === "string" ? relative(ROOT, www) : www.label;
    // <cite data-question="anchor" title="docs/QUESTIONS.md#anchor">the section's heading</cite>
    const refs = [...html.matchAll(/<cite data-question="([^"]*)"(?: title="([^"]*)")?>([^<]*)<\/cite>/g)];
    if (refs.length === 0) problems.push(`${name}: refers to no question (<cite data-question="…">)`);
    if ((html.match(/data-question=/g) ?? []).length !== refs.length)
      problems.push(`${name}: a data-question attribute outside the <cite data-question="…" title="…">…</cite> form`);
    const entity = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'" };
    for (const [, anchor, title, body] of refs) {
      const section = sections.find((h) => h.anchor === anchor);
      const shown = body.replace(/&(?:amp|lt|gt|quot|#39);/g, (e) => entity[e]).trim();
      if (!section) problems.push(`${name}: data-question="${anchor}" is no section of ${label}`);
      else if (shown !== section.text) problems.push(`${name}: data-question="${anchor}" shows "${shown}", the section is "${section.text}"`);
      if (title !== `docs/QUESTIONS.md#${anchor}`) problems.push(`${name}: data-question="${anchor}" has the title "${title}"`);
    }
  }
  return { problems, links, tests: tests.size };
}

/** Breaks the page in known ways: each break must be reported. */
function selfTest(text, base) {
  const section = (heading) => {
    const start = text.indexOf(`## ${heading}\n`);
    const end = text.indexOf("\n## ", start + 3);
    return [start, end === -1 ? text.length : end];
  };
  const once = (from, to) => {
    if (!text.includes(from)) throw new Error(`self-test: the page no longer contains ${from}`);
    return text.replace(from, to);
  };
  const [s0, s1] = section("Sliding or fixed sessions?");
  const cases = [
    ["a Rust test renamed", once("[`no_token_is_left_in_any_storage`]", "[`no_token_is_left_in_any_storage_renamed`]"), 'no test named "no_token_is_left_in_any_storage_renamed"'],
    ["a Playwright test renamed", once('["logout in one tab reaches every tab"](../tests/e2e/', '["logout in one tab reaches every other tab"](../tests/e2e/'), 'no test named "logout in one tab reaches every other tab"'],
    ["a template-literal title that does not fit", once('["over plain http the session does not survive a reload"]', '["over plain https the session does not survive a reload"]'), "over plain https"],
    ["a test in the wrong file", once("[`sessions_survive_a_restart`](../server/tests/binary.rs)", "[`sessions_survive_a_restart`](../server/tests/protocol.rs)"), 'no test named "sessions_survive_a_restart" is declared in server/tests/protocol.rs'],
    ["a missing file", once("](../tests/browser.rs)", "](../tests/browsers.rs)"), "no such file tests/browsers.rs"],
    ["a dangling anchor", once("](#can-an-xss-steal-my-in-memory-token)", "](#can-xss-steal-my-token)"), "no heading with the anchor #can-xss-steal-my-token"],
    ["a dangling anchor in another page", once("](PROTOCOL.md#rotation-rules)", "](PROTOCOL.md#rotation-rule)"), "docs/PROTOCOL.md has no heading with the anchor #rotation-rule"],
    ["a question without a section", once("## Sliding or fixed sessions?\n", "## Sliding or fixed?\n"), 'the question "Sliding or fixed sessions?" has no "## " section'],
    ["a section without a test link", text.slice(0, s0) + "## Sliding or fixed sessions?\n\nBoth.\n" + text.slice(s1), 'the section "Sliding or fixed sessions?" links to no existing test'],
    ["a non-test attribute", once("[`sessions_survive_a_restart`](../server/tests/binary.rs)", "[`db_url`](../server/tests/binary.rs)"), 'no test named "db_url"'],
  ];
  const demo = (from, to) => ({ html: `<p><cite data-question="${from}" title="docs/QUESTIONS.md#${from}">${to}</cite></p>`, label: "broken demo" });
  cases.push(
    ["a demo reference to no section", text, 'data-question="sliding-sessions" is no section', demo("sliding-sessions", "Sliding or fixed sessions?")],
    ["a demo reference showing another title", text, 'shows "Sliding sessions?"', demo("sliding-or-fixed-sessions", "Sliding sessions?")],
  );
  const failed = [];
  for (const [what, broken, expected, www = null] of cases) {
    const { problems } = check(broken, { base, label: "broken copy", www });
    if (!problems.some((p) => p.includes(expected))) failed.push(`${what}: expected a problem with ${JSON.stringify(expected)}, got ${JSON.stringify(problems)}`);
  }
  return { failed, count: cases.length };
}

function main(argv) {
  const arg = (name) => {
    const i = argv.indexOf(name);
    return i === -1 ? undefined : argv[i + 1];
  };
  const file = resolve(arg("--file") ?? join(ROOT, "docs/QUESTIONS.md"));
  const base = resolve(arg("--base") ?? dirname(file));
  const wwwArg = arg("--www");
  const www = wwwArg === "none" ? null : resolve(wwwArg ?? join(ROOT, "www/index.html"));
  const text = read(file);
  const label = relative(ROOT, file).startsWith("..") ? file : relative(ROOT, file);

  if (argv.includes("--self-test")) {
    const { failed, count } = selfTest(text, base);
    if (failed.length) {
      console.error(`check-questions self-test: ${failed.length} of ${count} broken copies were not caught:`);
      for (const f of failed) console.error(`  ${f}`);
      return 1;
    }
    console.log(`check-questions self-test: all ${count} broken copies of ${label} were caught`);
    return 0;
  }

  const { problems, links, tests } = check(text, { base, label, www });
  if (problems.length) {
    console.error(`${label}: ${problems.length} problem(s):`);
    for (const p of problems) console.error(`  ${p}`);
    return 1;
  }
  console.log(`${label}: ${QUESTIONS.length} questions, ${links} links into the repository, ${tests} distinct tests, all resolve${www ? `; ${relative(ROOT, www)}'s references too` : ""}`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
