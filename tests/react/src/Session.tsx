// The part of the app that uses tokenwarden/react: what a React developer writes.
import { useEffect, useState, type FormEvent } from "react";
import { useAuth, type AuthEndReason, type AuthState } from "tokenwarden/react";
import type { TokenwardenError } from "tokenwarden";

/** How often a Session mounted (StrictMode mounts it twice in development). */
export const mounts = { count: 0 };

export function Session() {
  const auth: AuthState = useAuth();
  useEffect(() => {
    mounts.count++;
  }, []);
  if (!auth.isAuthenticated) {
    return <LoginForm busy={auth.isLoading} endReason={auth.endReason} restoreError={auth.error} login={auth.login} />;
  }
  return <Profile auth={auth} />;
}

function LoginForm(props: {
  busy: boolean;
  endReason: AuthEndReason | null;
  restoreError: TokenwardenError | null;
  login: AuthState["login"];
}) {
  const [error, setError] = useState<string | null>(null);
  async function submit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    try {
      await props.login({ email: String(form.get("email")), password: String(form.get("password")) });
      setError(null);
    } catch (err) {
      const { name, code } = err as TokenwardenError;
      setError(`${name}:${code}`);
    }
  }
  return (
    <form onSubmit={submit}>
      <p data-testid="status">signed out</p>
      {props.endReason && <p data-testid="end-reason">{props.endReason}</p>}
      {props.restoreError && <p data-testid="restore-error">{`${props.restoreError.name}:${props.restoreError.code}`}</p>}
      <input name="email" type="email" aria-label="email" />
      <input name="password" type="password" aria-label="password" />
      <button type="submit" disabled={props.busy}>Log in</button>
      {error && <p data-testid="error">{error}</p>}
    </form>
  );
}

function Profile({ auth }: { auth: AuthState }) {
  const [name, setName] = useState<string | null>(null);
  async function load() {
    const res: Response = await auth.fetch("/api/me");
    const me = (await res.json()) as { name: string };
    setName(me.name);
  }
  const email = auth.claims?.email ?? "";
  return (
    <section>
      <p data-testid="status">signed in as {email}</p>
      <p data-testid="expires">{auth.expiresAt === null ? "" : String(auth.expiresAt)}</p>
      <button type="button" onClick={() => void load()}>Load profile</button>
      {name !== null && <p data-testid="name">{name}</p>}
      <button type="button" onClick={() => void auth.logout()}>Log out</button>
    </section>
  );
}
