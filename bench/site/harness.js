// ?peer=tokenwarden|naive|aar loads that contender; `burst` times n concurrent GETs.
const which = new URLSearchParams(location.search).get("peer") ?? "tokenwarden";
const src = which === "tokenwarden" ? "/peers/tokenwarden.js" : `/dist/${which}.js`;
await import(src);
window.burst = async (n, path = "/api/me") => {
  const one = async () => {
    const t0 = performance.now();
    const status = await peer.get(path).catch((e) => e?.message ?? "error");
    return [status, performance.now() - t0];
  };
  const results = await Promise.all(Array.from({ length: n }, one));
  return { statuses: results.map((r) => r[0]), latencies: results.map((r) => r[1]) };
};
window.ready = true;
