//! The shell of Enlace's public pages (forms, preferences): plain HTML with a small inline
//! style sheet, no script, nothing from another host, readable on a 390px phone. Every page
//! carries a Content-Security-Policy that allows no script at all, and is neither cached nor
//! framed.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// HTML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "*{box-sizing:border-box}\
body{font:1rem/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#f6f6f4}\
main{max-width:36rem;margin:0 auto;padding:1.25rem 1rem 3rem;background:#fff;min-height:100vh}\
h1{font-size:1.5rem;line-height:1.25;margin:.5rem 0 1rem}\
.f{margin:0 0 1.25rem;border:0;padding:0}\
label,legend{display:block;font-weight:600;margin:0 0 .25rem}\
fieldset label,.c label{font-weight:400;display:flex;gap:.6rem;align-items:flex-start;padding:.45rem 0;min-height:44px}\
input[type=text],input[type=email],input[type=tel],textarea{width:100%;font:inherit;padding:.7rem;border:1px solid #767676;border-radius:.4rem}\
input[type=checkbox],input[type=radio]{width:1.35rem;height:1.35rem;margin:.1rem 0 0;flex:none}\
input:focus,textarea:focus,button:focus{outline:3px solid #1a5fb4;outline-offset:2px}\
.help{margin:0 0 .35rem;color:#4a4a4a;font-size:.95rem}\
.err{margin:0 0 .35rem;color:#b00020;font-weight:600}\
[aria-invalid=true]{border-color:#b00020!important;border-width:2px!important}\
.summary{border:2px solid #b00020;border-radius:.4rem;padding:.75rem 1rem;margin:0 0 1.25rem}\
.summary a{color:#b00020}\
.ok{border:2px solid #26734d;border-radius:.4rem;padding:.75rem 1rem;margin:0 0 1.25rem}\
button{font:inherit;font-weight:600;padding:.8rem 1.4rem;border:0;border-radius:.4rem;background:#1a5fb4;color:#fff;min-height:44px;cursor:pointer;width:100%}\
button.secondary{background:#fff;color:#1a5fb4;border:2px solid #1a5fb4;margin-top:.75rem}\
.hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}\
table{border-collapse:collapse;width:100%;margin:0 0 1rem}td,th{text-align:left;padding:.4rem .25rem;border-bottom:1px solid #ddd;vertical-align:top}\
@media (min-width:40rem){button{width:auto}}";

/// A whole page.
pub fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{t}</title><style>{STYLE}</style></head>\
         <body><main>{body_html}</main></body></html>",
        t = escape(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static header"));
    h.insert(header::REFERRER_POLICY, "no-referrer".parse().expect("static header"));
    h.insert(header::X_FRAME_OPTIONS, "DENY".parse().expect("static header"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            .parse()
            .expect("static header"),
    );
    r
}

/// A page that says one thing (a refused link, a thank-you).
pub fn notice(status: StatusCode, title: &str, text_html: &str) -> Response {
    page(status, title, &format!("<h1>{}</h1>{text_html}", escape(title)))
}

/// The visitor's address as the connection gives it (`None` without connection info).
/// Enlace behind a proxy sees the proxy's address: the rate limit is then per proxy.
pub struct PeerIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())))
    }
}

/// The `User-Agent`, cut to 300 characters.
pub fn user_agent(h: &HeaderMap) -> Option<String> {
    h.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(300).collect())
}

/// A form-encoded body as each name's values, in order.
pub fn form_values(body: &[u8]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut m: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        m.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    m
}
