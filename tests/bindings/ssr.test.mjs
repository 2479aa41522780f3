// Server-side rendering (Angular SSR, Nuxt, SvelteKit): importing tokenwarden/angular,
// tokenwarden/vue and tokenwarden/svelte in Node, each from the packed tarball as its fixture
// installed it (tests/{angular,vue,svelte}/node_modules, so each framework is that fixture's
// own), touches no window, document, navigator or wasm; without a manager each is logged out
// and its functions reject. Run by `make test-e2e` after the fixtures' build.sh:
//   node --test tests/bindings/
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import { touched } from "../ssr-watch.mjs"; // watches from here on

const tests = fileURLToPath(new URL("..", import.meta.url));
/** `specifier` resolved from fixture `app`'s node_modules, imported. */
const from = (app, specifier) => {
  const require = createRequire(`${tests}${app}/package.json`);
  let path;
  try {
    path = require.resolve(specifier);
  } catch {
    // ESM-only exports (no "require" condition): the package's own file, by its exports' "default".
    const [, pkg, sub] = /^((?:@[^/]+\/)?[^/]+)(\/.*)?$/.exec(specifier);
    const dir = require.resolve(`${pkg}/package.json`).replace(/package\.json$/, "");
    const exp = require(`${pkg}/package.json`).exports[`.${sub ?? ""}`];
    path = dir + (typeof exp === "string" ? exp : exp.default);
  }
  return import(pathToFileURL(path).href);
};


let ng, vue, svelte;
before(async () => {
  ng = await from("angular", "tokenwarden/angular");
  vue = await from("vue", "tokenwarden/vue");
  svelte = await from("svelte", "tokenwarden/svelte");
});

test("importing the three bindings touches nothing browser-only", () => {
  assert.deepEqual(Object.keys(ng).sort(), ["authGuard", "injectAuth", "provideTokenwarden", "tokenwardenInterceptor"]);
  assert.deepEqual(Object.keys(vue).sort(), ["createTokenwarden", "useAuth"]);
  assert.deepEqual(Object.keys(svelte).sort(), ["createAuth"]);
  assert.deepEqual(touched, []);
});

test("importing tokenwarden/passkeys in Node only looks up navigator (its credentials, kept as they are then)", async () => {
  const before = touched.length;
  const passkeys = await from("vue", "tokenwarden/passkeys");
  assert.deepEqual(Object.keys(passkeys), []);
  const { TokenManager } = await from("vue", "tokenwarden");
  assert.equal(typeof TokenManager.prototype.loginWithPasskey, "function", "its methods are added");
  assert.deepEqual(touched.slice(before), ["navigator"]);
  touched.length = before;
});

test("angular without a manager: logged-out signals, requests pass as they are, the guard says no", async () => {
  const core = await from("angular", "@angular/core");
  // @angular/common ships partially compiled: in Node, as in Angular's own SSR, the compiler
  // finishes it.
  await from("angular", "@angular/compiler");
  const http = await from("angular", "@angular/common/http");
  const env = core.createEnvironmentInjector([ng.provideTokenwarden(null)], core.Injector.NULL);
  const s = core.runInInjectionContext(env, ng.injectAuth);
  assert.deepEqual(
    [s.isLoading(), s.isAuthenticated(), s.claims(), s.expiresAt(), s.endReason(), s.auth],
    [true, false, null, null, null, null],
  );
  const req = new http.HttpRequest("GET", "https://api.example/me");
  const passed = [];
  const out = core.runInInjectionContext(env, () => ng.tokenwardenInterceptor(req, (r) => (passed.push(r), "next")));
  assert.equal(out, "next");
  assert.equal(passed[0], req, "the very request, unchanged");
  assert.equal(await core.runInInjectionContext(env, ng.authGuard()), false);
  assert.equal(await core.runInInjectionContext(env, ng.authGuard(() => "/login")), "/login");
  assert.deepEqual(touched, []);
});

test("vue without a manager: a server-rendered component shows the logged-out state; functions reject", async () => {
  const { createSSRApp, h } = await from("vue", "vue");
  const { renderToString } = await from("vue", "vue/server-renderer");
  let state;
  const App = {
    setup() {
      state = vue.useAuth();
      return () => h("p", state.isAuthenticated.value ? "signed in" : `signed out${state.isLoading.value ? " (loading)" : ""}`);
    },
  };
  const html = await renderToString(createSSRApp(App).use(vue.createTokenwarden(null)));
  assert.equal(html, "<p>signed out (loading)</p>");
  assert.deepEqual(
    [state.isLoading.value, state.isAuthenticated.value, state.claims.value, state.expiresAt.value, state.endReason.value],
    [true, false, null, null, null],
  );
  await assert.rejects(state.login({ email: "a@b.c", password: "x" }), /no TokenManager/);
  await assert.rejects(state.fetch("/api/me"), /no TokenManager/);
  // Without the plugin, useAuth() says what is missing.
  const bare = createSSRApp({ setup: () => (vue.useAuth(), () => null) });
  bare.config.warnHandler = () => {};
  await assert.rejects(renderToString(bare), /needs app\.use\(createTokenwarden\(auth\)\)/);
  assert.deepEqual(touched, []);
});

test("svelte without a manager: the store and the fields are logged out; functions reject", async () => {
  const s = svelte.createAuth(null);
  const seen = [];
  const off = s.subscribe((v) => seen.push(v));
  off();
  const fields = (o) => [o.isLoading, o.isAuthenticated, o.claims, o.expiresAt, o.endReason];
  assert.deepEqual(seen.map(fields), [[true, false, null, null, null]]);
  assert.deepEqual(fields(s), [true, false, null, null, null]);
  await assert.rejects(s.login({ email: "a@b.c", password: "x" }), /no TokenManager/);
  await assert.rejects(s.logout(), /no TokenManager/);
  assert.deepEqual(touched, []);
});
