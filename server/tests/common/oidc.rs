//! The OpenID provider side of the federated sign-in tests: panva's `oidc-provider` in a Node
//! process (tests/oidc/provider.mjs) and a browser that walks through its forms.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenwarden_server::config::OidcProvider;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{REFRESH_COOKIE, TestServer, cookie, set_cookies};

pub const CLIENT_ID: &str = "tokenwarden-test";
pub const CLIENT_SECRET: &str = "tokenwarden-test-secret-0123456789";
pub const FLOW_COOKIE: &str = "__Host-tw_oidc";

/// A port free now, for a provider started later on it. Below Linux's ephemeral range
/// (32768-60999): a port the kernel handed out and took back could meanwhile become the local
/// port of one of the many outgoing connections the suites make, and the provider would then
/// fail to listen on it.
pub fn free_port() -> u16 {
    use rand::Rng;
    loop {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn provider(name: &str, issuer: &str) -> OidcProvider {
    OidcProvider {
        name: name.into(),
        issuer: issuer.into(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        link_verified_email: false,
        prompt: None,
    }
}

/// The real provider, in a Node process of its own (killed when dropped).
pub struct Idp {
    pub issuer: String,
    _child: tokio::process::Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Idp {
    pub async fn start(port: u16, rp: &str) -> Self {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut child = tokio::process::Command::new("node")
            .args(["tests/oidc/provider.mjs", &port.to_string(), rp])
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node (npm ci has installed oidc-provider)");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .expect("the provider starts within 20 s")
            .unwrap()
            .expect("a line from the provider");
        assert!(first.starts_with("ready "), "{first}");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                l.lock().unwrap().push(line);
            }
        });
        Idp {
            issuer: format!("http://127.0.0.1:{port}"),
            _child: child,
            lines,
        }
    }
}

/// A browser: the provider's cookies in a jar, redirects followed by hand.
pub struct Browser {
    pub http: reqwest::Client,
    /// The flow cookie our server set (`__Host-` cookies are `Secure`: kept by hand here, as
    /// a browser keeps them for http://127.0.0.1).
    pub flow: Option<String>,
}

pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
    tag[at..].split('"').next()
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            flow: None,
        }
    }

    /// `GET /auth/oidc/{name}/start?...` on our server: the answer.
    pub async fn start(&mut self, s: &TestServer, query: &str) -> reqwest::Response {
        let res = self
            .http
            .get(s.url(&format!("/auth/oidc/idp/start?{query}")))
            .send()
            .await
            .unwrap();
        for c in set_cookies(res.headers()) {
            if let Some(v) = c.strip_prefix(&format!("{FLOW_COOKIE}=")) {
                self.flow = Some(v.split(';').next().unwrap().to_owned());
            }
        }
        res
    }

    /// Follows the provider's redirects and submits its forms (login as `login`, consent)
    /// until it sends the browser back to `rp`: that callback URL. `deny`: abort at the
    /// login form instead.
    pub async fn through_provider(
        &self,
        mut url: String,
        rp: &str,
        login: &str,
        deny: bool,
    ) -> String {
        for _ in 0..20 {
            if url.starts_with(rp) {
                return url;
            }
            let res = self.http.get(&url).send().await.unwrap();
            if let Some(loc) = res.headers().get("location") {
                url = absolute(&url, loc.to_str().unwrap());
                continue;
            }
            let html = res.text().await.unwrap();
            if deny && let Some(abort) = html.find("/abort") {
                let start = html[..abort].rfind('"').unwrap() + 1;
                let end = abort + html[abort..].find('"').unwrap();
                url = absolute(&url, &html[start..end]);
                continue;
            }
            let form_at = html.find("<form").expect("a form on the provider's page");
            let form = &html[form_at..html[form_at..].find("</form>").unwrap() + form_at];
            let action = attr(form, "action").unwrap();
            let mut fields: Vec<(String, String)> = Vec::new();
            for input in form.split("<input").skip(1) {
                if let (Some(n), Some(v)) = (attr(input, "name"), attr(input, "value")) {
                    fields.push((n.into(), v.into()));
                }
            }
            if form.contains("name=\"login\"") {
                fields.retain(|(n, _)| n != "login" && n != "password");
                fields.push(("login".into(), login.into()));
                fields.push(("password".into(), "any password".into()));
            }
            let res = self
                .http
                .post(absolute(&url, action))
                .form(&fields)
                .send()
                .await
                .unwrap();
            url = absolute(
                &url,
                res.headers()
                    .get("location")
                    .expect("the provider redirects after a form")
                    .to_str()
                    .unwrap(),
            );
        }
        panic!("the provider never sent the browser back");
    }

    /// Our callback, with the flow cookie: the answer. A browser obeys the answer's
    /// `Set-Cookie` for the flow cookie (an empty value or `Max-Age=0` deletes it): so does this.
    pub async fn callback(&mut self, url: &str) -> reqwest::Response {
        let mut req = self.http.get(url);
        if let Some(f) = &self.flow {
            req = req.header("cookie", format!("{FLOW_COOKIE}={f}"));
        }
        let res = req.send().await.unwrap();
        if let Some(v) = cookie(res.headers(), FLOW_COOKIE) {
            self.flow = Some(v).filter(|v| !v.is_empty());
        }
        res
    }
}

pub fn absolute(base: &str, loc: &str) -> String {
    reqwest::Url::parse(base)
        .unwrap()
        .join(loc)
        .unwrap()
        .to_string()
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn refresh_cookie_of(res: &reqwest::Response) -> Option<String> {
    cookie(res.headers(), REFRESH_COOKIE)
}

/// The session a callback's answer `res` opened, taken up by `tab` (its refresh cookie, then a
/// refresh, with `tab`'s proof if it is bound): the tokens.
pub async fn take_up(tab: &mut super::Client, res: &reqwest::Response) -> super::Tokens {
    tab.refresh = refresh_cookie_of(res);
    let a = tab.refresh().await;
    tab.tokens_of(&a)
}

pub fn urlencode(s: &str) -> String {
    url_escape(s)
}

pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
