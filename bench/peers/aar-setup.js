// axios + axios-auth-refresh as a storm contender, with the interceptor `options` given (the
// token kept in a variable rather than localStorage, to compare like with like). A refused
// refresh counts as a logout. aar.js and aar-best.js are its two configurations.
import axios from "axios";
import createAuthRefreshInterceptor from "axios-auth-refresh";

export function installPeer(name, options) {
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

  createAuthRefreshInterceptor(axios, refreshAuthLogic, options);
  axios.interceptors.request.use((request) => {
    request.headers["Authorization"] = `Bearer ${token}`;
    return request;
  });

  async function login(email, password) {
    const res = await axios.post("/auth/login", { email, password }, { skipAuthRefresh: true });
    token = res.data.access_token;
  }

  const get = (url) => axios.get(url).then((r) => r.status, (e) => e.response?.status ?? e.name);

  window.peer = { name, login, get, logouts: () => logouts };
}
