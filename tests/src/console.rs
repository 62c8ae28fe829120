//! A small browser for the console's HTTP tests: keeps cookies, posts forms, never follows
//! redirects (tests assert them), and reads the CSRF token a page carries.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// One answer.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// Where a redirect sends.
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The value of the first `name="csrf"` hidden input.
    pub fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        let rest = &self.body[at..];
        Some(rest[..rest.find('"')?].to_owned())
    }
}

/// A cookie-keeping HTTP/1 client of one console.
#[derive(Debug)]
pub struct ConsoleClient {
    base: String,
    cookies: BTreeMap<String, String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// Headers every request sends (say, `Accept-Language`).
    pub extra: Vec<(String, String)>,
}

/// `application/x-www-form-urlencoded` of `fields`.
pub fn form(fields: &[(&str, &str)]) -> String {
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl ConsoleClient {
    /// A client of the console at `addr`, with no cookies.
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            cookies: BTreeMap::new(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            extra: Vec::new(),
        }
    }

    /// The cookies it holds, as a `Cookie` header would send them.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Forgets or replaces the cookies.
    pub fn set_cookies(&mut self, cookies: BTreeMap<String, String>) {
        self.cookies = cookies;
    }

    /// The cookies it holds.
    pub fn cookies(&self) -> BTreeMap<String, String> {
        self.cookies.clone()
    }

    /// GET `path`.
    pub async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None, &[]).await
    }

    /// POST `fields` as a form to `path`, from the console's own origin.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_from(path, fields, &origin).await
    }

    /// POST `fields` to `path` as if from a page of `origin`.
    pub async fn post_from(&mut self, path: &str, fields: &[(&str, &str)], origin: &str) -> Page {
        let body = form(fields);
        self.send(Method::POST, path, Some(body), &[("origin", origin)])
            .await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            request = request.header(header::COOKIE, self.cookie_header());
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        for (k, v) in &self.extra {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a request");
        let response = self
            .client
            .request(request)
            .await
            .expect("the console answers");
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all(header::SET_COOKIE) {
            let Ok(set) = set.to_str() else { continue };
            let pair = set.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                let expired = set.contains("Max-Age=0");
                if expired || value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies
                        .insert(name.trim().to_owned(), value.to_owned());
                }
            }
        }
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
