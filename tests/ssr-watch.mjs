// For the server-rendering tests (tests/react/, tests/bindings/): watches every browser-only
// global, and every way to load the wasm, from the moment it is imported. An access counts
// when our package is on the stack (a framework itself may probe `typeof window`).
export const touched = [];
const ours = () => /node_modules\/tokenwarden\//.test(new Error().stack ?? "");
function watch(target, name, label) {
  const desc = Object.getOwnPropertyDescriptor(target, name);
  const original = desc ? (desc.get ? desc.get.call(target) : desc.value) : undefined;
  Object.defineProperty(target, name, {
    configurable: true,
    get() {
      if (ours()) touched.push(label);
      return original;
    },
  });
}
for (const name of ["window", "document", "navigator", "location", "localStorage", "sessionStorage", "indexedDB", "BroadcastChannel", "fetch"]) {
  watch(globalThis, name, name);
}
for (const name of ["instantiate", "instantiateStreaming", "compile", "compileStreaming", "Module", "Instance"]) {
  watch(WebAssembly, name, `WebAssembly.${name}`);
}
