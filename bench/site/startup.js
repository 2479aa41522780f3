// import + instantiate + construct, from the first byte of this module.
const t0 = performance.now();
const { default: init, TokenManager } = await import("/pkg/tokenwarden.js");
const t1 = performance.now();
await init();
const t2 = performance.now();
new TokenManager();
const t3 = performance.now();
window.startup = { import: t1 - t0, instantiate: t2 - t1, construct: t3 - t2, total: t3 - t0 };
