// Server-side rendering, as Next.js, Remix or Vite SSR do it: importing `tokenwarden` and
// `tokenwarden/react` in Node (from the packed tarball, through the package's exports) does
// nothing browser-only, and a component using useAuth() renders the logged-out state without
// touching window, document, navigator or the wasm. Run by `make test` after build.sh:
//   node --test tests/react/
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createElement } from "react";
import { renderToString } from "react-dom/server";
import { touched } from "../ssr-watch.mjs"; // watches from here on


let tokenwarden, react;
before(async () => {
  tokenwarden = await import("tokenwarden");
  react = await import("tokenwarden/react");
});

test("importing tokenwarden and tokenwarden/react touches nothing browser-only", () => {
  assert.equal(typeof tokenwarden.default, "function", "init, to be called in the browser");
  assert.equal(typeof tokenwarden.TokenManager, "function");
  assert.equal(typeof react.TokenwardenProvider, "function");
  assert.equal(typeof react.useAuth, "function");
  assert.deepEqual(touched, []);
});

test("tokenwarden/react is a client module: Next.js's App Router imports it from a Server Component", async () => {
  // React Server Components (Next.js's app/layout.tsx) have no createContext or hooks: a module
  // that uses them must open with the "use client" directive, before any statement.
  const source = readFileSync(fileURLToPath(import.meta.resolve("tokenwarden/react")), "utf8");
  assert.match(source, /^(?:\s|\/\/[^\n]*\n|\/\*[^]*?\*\/)*(["'])use client\1;/);
});

test("the app's component, server-rendered, shows the logged-out state", async () => {
  // The fixture's own Session component, bundled by `vite build --ssr` (src/server.tsx).
  const { render } = await import("./dist-ssr/server.js");
  const html = render();
  assert.match(html, /<p data-testid="status">signed out<\/p>/);
  assert.match(html, /<button type="submit" disabled="">Log in<\/button>/, "disabled until the browser restores");
  assert.doesNotMatch(html, /signed in/);
  assert.deepEqual(touched, []);
});

test("useAuth() on the server: logged out, loading, and its functions reject", async () => {
  let state;
  const Probe = () => ((state = react.useAuth()), null);
  renderToString(createElement(react.TokenwardenProvider, { auth: null }, createElement(Probe)));
  assert.deepEqual(
    { ...state, login: undefined, logout: undefined, fetch: undefined },
    {
      isLoading: true, isAuthenticated: false, claims: null, expiresAt: null, endReason: null, error: null,
      login: undefined, logout: undefined, fetch: undefined,
    },
  );
  await assert.rejects(state.login({ email: "a@b.c", password: "x" }), /no TokenManager/);
  await assert.rejects(state.fetch("/api/me"), /no TokenManager/);
  assert.deepEqual(touched, []);
});

test("useAuth() outside a provider says so", () => {
  const Probe = () => (react.useAuth(), null);
  assert.throws(() => renderToString(createElement(Probe)), /outside <TokenwardenProvider>/);
});
