// For the server-rendering tests (tests/react/, tests/bindings/): watches every browser-only
// global, and every way to load the wasm, from the moment it is imported. An access counts
// when our package is on the stack (a framework itself may probe `typeof window`). `fetch` and
// the wasm loaders count when called (or constructed): the driver keeps references to them at
// load, so that a script that patches them later cannot hand it another core; keeping a
// reference does nothing.
export const touched = [];
const ours = () => /node_modules\/tokenwarden\//.test(new Error().stack ?? "");
function watch(target, name, label, calls = false) {
  const desc = Object.getOwnPropertyDescriptor(target, name);
  const original = desc ? (desc.get ? desc.get.call(target) : desc.value) : undefined;
  const seen = () => {
    if (ours()) touched.push(label);
  };
  const value =
    calls && typeof original === "function"
      ? new Proxy(original, {
          apply: (f, self, args) => (seen(), Reflect.apply(f, self, args)),
          construct: (f, args, target) => (seen(), Reflect.construct(f, args, target)),
        })
      : original;
  Object.defineProperty(target, name, {
    configurable: true,
    get() {
      if (!calls) seen();
      return value;
    },
  });
}
for (const name of ["window", "document", "navigator", "location", "localStorage", "sessionStorage", "indexedDB", "BroadcastChannel"]) {
  watch(globalThis, name, name);
}
watch(globalThis, "fetch", "fetch", true);
for (const name of ["instantiate", "instantiateStreaming", "compile", "compileStreaming", "Module", "Instance"]) {
  watch(WebAssembly, name, `WebAssembly.${name}`, true);
}
