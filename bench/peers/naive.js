// The interceptor people write by hand (fetch flavour): token in a variable, refresh on 401,
// retry once, no deduplication. Counted as a logout: a refresh the server refused.
let token = null;
let logouts = 0;

async function login(email, password) {
  const res = await fetch("/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password }),
    credentials: "include",
  });
  token = (await res.json()).access_token;
}

async function refresh() {
  const res = await fetch("/auth/refresh", {
    method: "POST",
    headers: { "X-Tokenwarden": "1" },
    credentials: "include",
  });
  if (!res.ok) {
    logouts++;
    token = null;
    throw new Error("logged out");
  }
  token = (await res.json()).access_token;
}

async function get(url) {
  const send = () => fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  let res = await send();
  if (res.status === 401) {
    await refresh();
    res = await send();
  }
  return res.status;
}

window.peer = { name: "naive interceptor", login, get, logouts: () => logouts };
