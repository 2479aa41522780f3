// The browser entry: one TokenManager for the app, under StrictMode (built in development mode
// by build.sh, so StrictMode really mounts every component twice).
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";
import init, { TokenManager, type TokenManagerEvent, type TokenManagerEventMap } from "tokenwarden";
import { TokenwardenProvider } from "tokenwarden/react";
import { Session, mounts } from "./Session";

/** What the end-to-end test reads: the manager's live listeners, and Session's mounts. */
const probe = { listeners: 0, subscribed: 0, mounts };
declare global {
  interface Window {
    probe: typeof probe;
  }
}
window.probe = probe;

function App({ auth }: { auth: TokenManager }) {
  const [shown, setShown] = useState(true);
  return (
    <>
      <button type="button" onClick={() => setShown((s) => !s)}>
        {shown ? "Unmount" : "Mount"}
      </button>
      {shown && (
        <TokenwardenProvider auth={auth}>
          <Session />
        </TokenwardenProvider>
      )}
    </>
  );
}

async function main() {
  await init();
  const auth = new TokenManager();
  // Counts subscriptions through the public on()/off(), to show none is left after an unmount.
  const on = auth.on.bind(auth);
  auth.on = <K extends TokenManagerEvent>(event: K, handler: (d: TokenManagerEventMap[K]) => void) => {
    const off = on(event, handler);
    probe.listeners++;
    probe.subscribed++;
    let done = false;
    return () => {
      if (!done) probe.listeners--;
      done = true;
      off();
    };
  };
  const root = document.getElementById("root");
  if (!root) throw new Error("no #root");
  createRoot(root).render(
    <StrictMode>
      <App auth={auth} />
    </StrictMode>,
  );
}

void main();
