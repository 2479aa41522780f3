// axios + axios-auth-refresh in its best configuration for a storm: `deduplicateRefresh: false`.
// With the default (true), a 401 that arrives while a refresh is in flight is rejected
// (axios-auth-refresh #307); with false, every 401 passes the interceptor and joins the one
// refresh call it caches while in flight, and its retry picks up the new token. Otherwise as
// aar.js (token in a variable, a refused refresh counts as a logout).
import axios from "axios";
import createAuthRefreshInterceptor from "axios-auth-refresh";

let token = null;
let logouts = 0;

const refreshAuthLogic = (failedRequest) =>
  axios
    .post("/auth/refresh", null, { headers: { "X-Tokenwarden": "1" }, skipAuthRefresh: true })
    .then((res) => {
      token = res.data.access_token;
      failedRequest.response.config.headers["Authorization"] = "Bearer " + token;
      return Promise.resolve();
    })
    .catch((e) => {
      if (e.response?.status === 401) {
        logouts++;
        token = null;
      }
      return Promise.reject(e);
    });

createAuthRefreshInterceptor(axios, refreshAuthLogic, { deduplicateRefresh: false });
axios.interceptors.request.use((request) => {
  request.headers["Authorization"] = `Bearer ${token}`;
  return request;
});

async function login(email, password) {
  const res = await axios.post("/auth/login", { email, password }, { skipAuthRefresh: true });
  token = res.data.access_token;
}

const get = (url) => axios.get(url).then((r) => r.status, (e) => e.response?.status ?? e.name);

window.peer = { name: "axios + axios-auth-refresh (best configuration)", login, get, logouts: () => logouts };
