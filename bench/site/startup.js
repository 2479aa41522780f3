// Start-up, two ways.
// page: from the first byte of this module: import the glue, fetch + compile + instantiate the
//       .wasm (init), construct a TokenManager; the HTTP cache revalidates each file (no-cache).
// bytes: the .wasm already in memory (as when a bundler inlines it or the cache serves it):
//       compile + instantiate + construct only.
const t0 = performance.now();
const { default: init, initSync, TokenManager } = await import("/pkg/tokenwarden.js");
const t1 = performance.now();
await init();
const t2 = performance.now();
new TokenManager();
const t3 = performance.now();

const bytes = await (await fetch("/pkg/tokenwarden_bg.wasm")).arrayBuffer();
const b0 = performance.now();
const module = await WebAssembly.compile(bytes);
const b1 = performance.now();
initSync({ module });
new TokenManager();
const b2 = performance.now();

window.startup = {
  import: t1 - t0, instantiate: t2 - t1, construct: t3 - t2, total: t3 - t0,
  compile: b1 - b0, fromBytes: b2 - b0,
};
