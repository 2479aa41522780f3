// How the WebDriver tests (tests/engines/) call into a test page: the page's `calls` run by name
// from a `tw:call` event (its id, function and arguments in data-tw-call), the answer left in
// data-tw-reply-<id> with a `tw:reply` event; data-tw-ready once the page listens.
export function serve(calls) {
  document.addEventListener("tw:call", () => {
    const root = document.documentElement;
    const { id, fn, args } = JSON.parse(root.getAttribute("data-tw-call"));
    root.removeAttribute("data-tw-call");
    Promise.resolve()
      .then(() => calls[fn](...args))
      .then((value) => ({ value: value ?? null }), (e) => ({ error: `${e?.name}: ${e?.message}` }))
      .then((reply) => {
        root.setAttribute(`data-tw-reply-${id}`, JSON.stringify(reply));
        document.dispatchEvent(new Event("tw:reply"));
      });
  });
  document.documentElement.dataset.twReady = "1";
}
