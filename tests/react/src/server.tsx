// Server-side rendering (built by `vite build --ssr`, run by ssr.test.mjs in Node): no
// TokenManager exists on the server, so the provider gets none and useAuth() is logged out.
import { StrictMode } from "react";
import { renderToString } from "react-dom/server";
import { TokenwardenProvider } from "tokenwarden/react";
import { Session } from "./Session";

export function render(): string {
  return renderToString(
    <StrictMode>
      <TokenwardenProvider auth={null}>
        <Session />
      </TokenwardenProvider>
    </StrictMode>,
  );
}
