//! Reading a listing page after page.
//!
//! [`Pager`] sends a first request, takes the items out of each page (a JSON pointer such as
//! `/results`, or a simple JSONPath such as `$.results[*]`), and follows the vendor's
//! [`Strategy`] to the next page until the last one, or until `max_pages` or `max_items`. It
//! returns the items and where to resume ([`Resume`]). Every page goes through
//! [`classify()`](crate::classify()), so a 429 on page 3 is a `RateLimited` error that says
//! "page 3". Like the rest of the kit it never sleeps or retries.
//!
//! Listing is a read: transport failures are classified as idempotent.

use enlace_core::ConnectorError;
use enlace_core::http::{HttpRequest, HttpResponse, HttpTransport};
use reqwest::Url;
use serde_json::Value;

use crate::classify::{classify, json_body, transport_error};

/// How a vendor says where the next page is.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// A cursor in the body, sent back as a query parameter. Absent, `null` or `""`: the
    /// last page. HubSpot: `Strategy::cursor("$.paging.next.after", "after")`; Slack:
    /// `Strategy::cursor("/response_metadata/next_cursor", "cursor")`; Google Drive's page
    /// tokens are the same thing: `Strategy::cursor("$.nextPageToken", "pageToken")`.
    Cursor { at: JsonPath, param: String },
    /// RFC 8288 `Link: <https://…?page=2>; rel="next"` (GitHub, Shopify). No `next` link: the
    /// last page. A link to another origin than the first request is refused: the request's
    /// credentials would go with it.
    LinkHeader,
    /// `offset` and `limit` query parameters (Mailchimp: `offset` and `count`, with
    /// `total_items` in the body). The last page is the first one shorter than `page_size`,
    /// or the one that reaches `total` when the body has it.
    Offset { offset_param: String, limit_param: String, page_size: u64, total: Option<JsonPath> },
}

impl Strategy {
    /// [`Strategy::Cursor`], with `at` a JSON pointer or a JSONPath.
    pub fn cursor(at: &str, param: &str) -> Result<Self, ConnectorError> {
        Ok(Strategy::Cursor { at: JsonPath::parse(at)?, param: param.to_string() })
    }

    /// [`Strategy::Offset`]; `total`, a JSON pointer or a JSONPath, is optional.
    pub fn offset(offset_param: &str, limit_param: &str, page_size: u64, total: Option<&str>) -> Result<Self, ConnectorError> {
        if page_size == 0 {
            return Err(ConnectorError::permanent("pagination: the page size of an offset strategy must be at least 1"));
        }
        Ok(Strategy::Offset {
            offset_param: offset_param.to_string(),
            limit_param: limit_param.to_string(),
            page_size,
            total: total.map(JsonPath::parse).transpose()?,
        })
    }
}

/// A place in a JSON document: a JSON pointer (`/paging/next/after`) or the JSONPath subset
/// `$`, `.name`, `['name']`, `[0]`, with an optional final `[*]` (`$.results[*]`: the array
/// itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    pointer: String,
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<Self, ConnectorError> {
        let bad = |why: &str| ConnectorError::permanent(format!("pagination: `{text}` is not a JSON pointer or a simple JSONPath: {why}"));
        let pointer = if text.is_empty() || text.starts_with('/') {
            text.to_string()
        } else if let Some(mut rest) = text.strip_prefix('$') {
            rest = rest.strip_suffix("[*]").unwrap_or(rest);
            let mut pointer = String::new();
            while !rest.is_empty() {
                let segment;
                if let Some(after) = rest.strip_prefix('.') {
                    let end = after.find(['.', '[']).unwrap_or(after.len());
                    segment = &after[..end];
                    rest = &after[end..];
                } else if let Some(after) = rest.strip_prefix("['") {
                    let end = after.find("']").ok_or_else(|| bad("an unclosed `['`"))?;
                    segment = &after[..end];
                    rest = &after[end + 2..];
                } else if let Some(after) = rest.strip_prefix('[') {
                    let end = after.find(']').ok_or_else(|| bad("an unclosed `[`"))?;
                    segment = &after[..end];
                    if segment.parse::<usize>().is_err() {
                        return Err(bad("only array indexes, names and a final `[*]` are supported"));
                    }
                    rest = &after[end + 1..];
                } else {
                    return Err(bad("expected `.name`, `['name']` or `[index]`"));
                }
                if segment.is_empty() {
                    return Err(bad("an empty name"));
                }
                pointer.push('/');
                pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
            }
            pointer
        } else {
            return Err(bad("it must start with `/` or `$`"));
        };
        Ok(JsonPath { text: text.to_string(), pointer })
    }

    /// The value at this place, if any.
    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        doc.pointer(&self.pointer)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Where to pick a listing up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The last page was read.
    Done,
    /// Start over from the first request (`max_items` struck inside the first page of a
    /// cursor or link listing).
    FromStart,
    /// Continue from this cursor with [`Pager::resume_from`]: the vendor's cursor, the next
    /// page's URL ([`Strategy::LinkHeader`]) or the next offset ([`Strategy::Offset`]). A
    /// next-page URL may repeat the first request's query string: if that holds an API key,
    /// store the cursor as carefully as the key and never log it.
    From(String),
}

/// What a [`Pager`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged {
    pub items: Vec<Value>,
    /// How many pages were fetched.
    pub pages: u32,
    pub resume: Resume,
}

/// Fetches pages of a listing. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Pager {
    first: HttpRequest,
    strategy: Strategy,
    items: JsonPath,
    max_pages: u32,
    max_items: usize,
    start: Option<String>,
    missing_is_empty: bool,
}

impl Pager {
    /// A pager from `first` (credentials already applied: every page reuses its headers),
    /// taking the items of each page at `items` (a JSON pointer or a JSONPath). By default at
    /// most 100 pages and 10,000 items.
    pub fn new(first: HttpRequest, strategy: Strategy, items: &str) -> Result<Self, ConnectorError> {
        Ok(Pager {
            first,
            strategy,
            items: JsonPath::parse(items)?,
            max_pages: 100,
            max_items: 10_000,
            start: None,
            missing_is_empty: false,
        })
    }

    /// Read a page without the items' field as an empty page (X leaves `data` out of an
    /// empty listing) instead of an error.
    pub fn missing_is_empty(mut self, yes: bool) -> Self {
        self.missing_is_empty = yes;
        self
    }

    /// Stop after this many pages (at least 1).
    pub fn max_pages(mut self, n: u32) -> Self {
        self.max_pages = n.max(1);
        self
    }

    /// Stop once this many items are read. When the cap falls inside a page, the rest of
    /// that page is dropped and [`Paged::resume`] points at that page again (for offsets,
    /// at the first item not returned), so resuming loses nothing but may repeat items: dedupe
    /// by the items' ids.
    pub fn max_items(mut self, n: usize) -> Self {
        self.max_items = n;
        self
    }

    /// Start from a cursor a previous [`Paged::resume`] gave instead of the first page.
    pub fn resume_from(mut self, cursor: impl Into<String>) -> Self {
        self.start = Some(cursor.into());
        self
    }

    /// Fetches pages until the last one or a cap. An error names the page it happened on
    /// (counted from 1 in this call); the items read before it are not returned.
    pub async fn fetch(&self, http: &dyn HttpTransport) -> Result<Paged, ConnectorError> {
        let mut items: Vec<Value> = Vec::new();
        let mut cursor = self.start.clone();
        let mut pages = 0u32;
        loop {
            if pages >= self.max_pages {
                return Ok(Paged { items, pages, resume: Resume::From(cursor.unwrap_or_default()) });
            }
            pages += 1;
            let page = pages;
            let request = self.request_for(cursor.as_deref()).map_err(|e| on_page(e, page))?;
            let url = request.url.clone();
            let resp = http.send(request).await.map_err(|e| on_page(transport_error(e, true), page))?;
            let resp = classify(resp).map_err(|e| on_page(e, page))?;
            let body = json_body(&resp).ok_or_else(|| {
                on_page(ConnectorError::permanent(format!("the answer is not JSON (HTTP {})", resp.status.as_u16())), page)
            })?;
            let found = match self.items.get(&body) {
                Some(Value::Array(found)) => found.clone(),
                Some(Value::Null) => Vec::new(),
                None if self.missing_is_empty => Vec::new(),
                Some(other) => {
                    return Err(on_page(
                        ConnectorError::permanent(format!("expected a list of items at `{}`, found {}", self.items.as_str(), kind(other))),
                        page,
                    ));
                }
                None => {
                    return Err(on_page(ConnectorError::permanent(format!("no list of items at `{}`", self.items.as_str())), page));
                }
            };
            let found_len = found.len();
            let next = self.next_cursor(&resp, &body, &url, cursor.as_deref(), found_len).map_err(|e| on_page(e, page))?;
            let room = self.max_items.saturating_sub(items.len());
            if found_len > room {
                items.extend(found.into_iter().take(room));
                let resume = match &self.strategy {
                    Strategy::Offset { .. } => Resume::From((current_offset(cursor.as_deref()) + room as u64).to_string()),
                    _ => cursor.map_or(Resume::FromStart, Resume::From),
                };
                return Ok(Paged { items, pages, resume });
            }
            items.extend(found);
            match next {
                None => return Ok(Paged { items, pages, resume: Resume::Done }),
                Some(n) if items.len() >= self.max_items => return Ok(Paged { items, pages, resume: Resume::From(n) }),
                Some(n) => cursor = Some(n),
            }
        }
    }

    /// The request for the page at `cursor` (`None`: the first page).
    fn request_for(&self, cursor: Option<&str>) -> Result<HttpRequest, ConnectorError> {
        let mut request = self.first.clone();
        match (&self.strategy, cursor) {
            (Strategy::Cursor { param, .. }, Some(c)) => request.url = with_query(&request.url, &[(param, c)])?,
            (Strategy::LinkHeader, Some(next)) => request.url = next.to_string(),
            (Strategy::Offset { offset_param, limit_param, page_size, .. }, c) => {
                let offset = match c {
                    Some(c) => c.parse::<u64>().map_err(|_| {
                        ConnectorError::permanent(format!("cannot resume an offset listing from `{c}`: it is not a number"))
                    })?,
                    None => 0,
                };
                request.url = with_query(&request.url, &[(offset_param, &offset.to_string()), (limit_param, &page_size.to_string())])?;
            }
            (_, None) => {}
        }
        Ok(request)
    }

    /// The cursor of the page after this one, or `None` on the last page.
    fn next_cursor(
        &self,
        resp: &HttpResponse,
        body: &Value,
        url: &str,
        cursor: Option<&str>,
        found: usize,
    ) -> Result<Option<String>, ConnectorError> {
        let next = match &self.strategy {
            Strategy::Cursor { at, .. } => match at.get(body) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(other) => {
                    return Err(ConnectorError::permanent(format!(
                        "expected the next cursor at `{}` to be a string, found {}",
                        at.as_str(),
                        kind(other)
                    )));
                }
            },
            Strategy::LinkHeader => next_link(resp, url)?,
            Strategy::Offset { page_size, total, .. } => {
                let next = current_offset(cursor) + found as u64;
                let total = total.as_ref().and_then(|t| t.get(body)).and_then(Value::as_u64);
                let last = found == 0 || (found as u64) < *page_size || total.is_some_and(|t| next >= t);
                (!last).then(|| next.to_string())
            }
        };
        if next.is_some() && next.as_deref() == cursor {
            return Err(ConnectorError::permanent(format!(
                "the app gave the same next-page cursor twice (`{}`); stopping instead of looping",
                next.unwrap_or_default()
            )));
        }
        Ok(next)
    }
}

fn current_offset(cursor: Option<&str>) -> u64 {
    cursor.and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `url` with each `(name, value)` query parameter set, replacing any of the same name.
fn with_query(url: &str, set: &[(&String, &str)]) -> Result<String, ConnectorError> {
    let mut parsed = Url::parse(url).map_err(|e| ConnectorError::bad_input("url", format!("not a valid URL: {e}")))?;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !set.iter().any(|(name, _)| k == name.as_str()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        query.extend_pairs(kept);
        query.extend_pairs(set.iter().map(|(k, v)| (k.as_str(), *v)));
    }
    Ok(parsed.to_string())
}

/// The `rel="next"` target of the response's `Link` headers, resolved against the page's
/// URL and refused when it leaves the first request's origin.
fn next_link(resp: &HttpResponse, url: &str) -> Result<Option<String>, ConnectorError> {
    let base = Url::parse(url).map_err(|e| ConnectorError::bad_input("url", format!("not a valid URL: {e}")))?;
    for value in resp.headers.get_all(http::header::LINK) {
        let Ok(text) = value.to_str() else { continue };
        for (target, params) in link_values(text) {
            let is_next = params.split(';').any(|p| {
                let Some((k, v)) = p.split_once('=') else { return false };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
            });
            if !is_next {
                continue;
            }
            let next =
                base.join(target).map_err(|e| ConnectorError::permanent(format!("the next page's link `{target}` is not a URL: {e}")))?;
            if next.origin() != base.origin() {
                return Err(ConnectorError::permanent(format!(
                    "the next page's link points to another site ({}) than the listing ({}); not following it, as the request's credentials would go with it",
                    next.origin().ascii_serialization(),
                    base.origin().ascii_serialization()
                )));
            }
            return Ok(Some(next.to_string()));
        }
    }
    Ok(None)
}

/// The `<target>; params` pairs of one `Link` header value. Commas inside `<…>` and inside
/// quoted strings do not split links.
fn link_values(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|c| open + c) else { break };
        let target = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let mut in_quotes = false;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    in_quotes = !in_quotes;
                }
                c == ',' && !in_quotes
            })
            .map_or(after.len(), |(i, _)| i);
        out.push((target.trim(), &after[..end]));
        rest = &after[end..];
    }
    out
}

/// The error with "page N: " before its message, class and wait kept.
fn on_page(err: ConnectorError, page: u32) -> ConnectorError {
    let prefix = |m: String| format!("page {page} of the listing: {m}");
    match err {
        ConnectorError::RateLimited { retry_after, message } => ConnectorError::RateLimited { retry_after, message: prefix(message) },
        ConnectorError::Transient { message, retry_after } => ConnectorError::Transient { message: prefix(message), retry_after },
        ConnectorError::Auth { message } => ConnectorError::Auth { message: prefix(message) },
        ConnectorError::Permanent { message, status } => ConnectorError::Permanent { message: prefix(message), status },
        ConnectorError::BadInput { path, message } => ConnectorError::BadInput { path, message: prefix(message) },
        ConnectorError::MaybeDelivered { message } => ConnectorError::MaybeDelivered { message: prefix(message) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use enlace_core::ErrorClass;
    use enlace_core::http::Method;
    use serde_json::json;

    use crate::{ReqwestTransport, TransportConfig};

    type Params = Query<HashMap<String, String>>;

    /// The query strings the server saw, in order, and the `authorization` header of each.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(String, String)>>>);

    impl Seen {
        fn record(&self, q: &HashMap<String, String>, headers: &HeaderMap) {
            let mut keys: Vec<_> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
            keys.sort();
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            self.0.lock().unwrap().push((keys.join("&"), auth));
        }
        fn queries(&self) -> Vec<String> {
            self.0.lock().unwrap().iter().map(|(q, _)| q.clone()).collect()
        }
    }

    /// Items `from..to` as `{"id": n}`.
    fn ids(from: u64, to: u64) -> Vec<Value> {
        (from..to).map(|n| json!({"id": n})).collect()
    }

    fn got_ids(paged: &Paged) -> Vec<u64> {
        paged.items.iter().map(|i| i["id"].as_u64().unwrap()).collect()
    }

    // Response shapes follow each vendor's public documentation (HubSpot CRM v3 lists, Slack
    // `conversations.list`, Google Drive `files.list`, GitHub's `Link` header, Mailchimp's
    // list members).
    async fn serve() -> (SocketAddr, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            // HubSpot: `paging.next.after`, absent on the last page. Three pages of two.
            .route(
                "/crm/v3/objects/contacts",
                get(|State(seen): State<Seen>, Query(q): Params, headers: HeaderMap| async move {
                    seen.record(&q, &headers);
                    let after: u64 = q.get("after").map_or(0, |a| a.parse().unwrap());
                    let mut body = json!({"results": ids(after, after + 2)});
                    if after < 4 {
                        body["paging"] = json!({"next": {"after": (after + 2).to_string(), "link": "?after=x"}});
                    }
                    axum::Json(body)
                }),
            )
            // Slack: `response_metadata.next_cursor`, "" on the last page.
            .route(
                "/api/conversations.list",
                get(|State(seen): State<Seen>, Query(q): Params, headers: HeaderMap| async move {
                    seen.record(&q, &headers);
                    let (channels, next) = match q.get("cursor").map(String::as_str) {
                        None => (ids(1, 3), "dXNlcjpVMDYxTkZUVDI="),
                        Some("dXNlcjpVMDYxTkZUVDI=") => (ids(3, 4), ""),
                        Some(other) => panic!("unexpected cursor {other}"),
                    };
                    axum::Json(json!({"ok": true, "channels": channels, "response_metadata": {"next_cursor": next}}))
                }),
            )
            // Google Drive: `nextPageToken` → `pageToken`, absent on the last page.
            .route(
                "/drive/v3/files",
                get(|State(seen): State<Seen>, Query(q): Params, headers: HeaderMap| async move {
                    seen.record(&q, &headers);
                    match q.get("pageToken").map(String::as_str) {
                        None => axum::Json(json!({"kind": "drive#fileList", "nextPageToken": "tok2", "files": ids(1, 2)})),
                        Some("tok2") => axum::Json(json!({"kind": "drive#fileList", "files": ids(2, 4)})),
                        Some(other) => panic!("unexpected token {other}"),
                    }
                }),
            )
            // GitHub-style Link headers: an absolute next link, then a relative one.
            .route(
                "/repos/o/r/issues",
                get(|State(seen): State<Seen>, Query(q): Params, headers: HeaderMap| async move {
                    seen.record(&q, &headers);
                    let host = headers.get("host").unwrap().to_str().unwrap().to_string();
                    let page: u64 = q.get("page").map_or(1, |p| p.parse().unwrap());
                    let link = match page {
                        1 => format!(
                            r#"<http://{host}/repos/o/r/issues?per_page=2&page=2>; rel="next", <http://{host}/repos/o/r/issues?per_page=2&page=3>; rel="last""#
                        ),
                        2 => r#"</repos/o/r/issues?per_page=2&page=1>; rel="prev first", </repos/o/r/issues?per_page=2&page=3>; rel=next"#
                            .to_string(),
                        _ => r#"</repos/o/r/issues?per_page=2&page=2>; rel="prev""#.to_string(),
                    };
                    ([("link", link)], axum::Json(ids(page * 10, page * 10 + 2))).into_response()
                }),
            )
            // Mailchimp: `offset` and `count`, `total_items` in the body; five members.
            .route(
                "/3.0/lists/abc/members",
                get(|State(seen): State<Seen>, Query(q): Params, headers: HeaderMap| async move {
                    seen.record(&q, &headers);
                    let offset: u64 = q["offset"].parse().unwrap();
                    let count: u64 = q["count"].parse().unwrap();
                    axum::Json(json!({"members": ids(offset, (offset + count).min(5)), "list_id": "abc", "total_items": 5}))
                }),
            )
            // Fine for two pages, then a 429 with Retry-After on page 3.
            .route(
                "/flaky",
                get(|State(seen): State<Seen>, Query(q): Params, headers: HeaderMap| async move {
                    seen.record(&q, &headers);
                    let after: u64 = q.get("after").map_or(0, |a| a.parse().unwrap());
                    if after >= 2 {
                        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], axum::Json(json!({"message": "slow down"})))
                            .into_response();
                    }
                    axum::Json(json!({"results": ids(after, after + 1), "paging": {"next": {"after": (after + 1).to_string()}}}))
                        .into_response()
                }),
            )
            .route("/broken", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response() }))
            .route("/same-cursor", get(|| async { axum::Json(json!({"results": [1], "next": "again"})) }))
            .route("/not-a-list", get(|| async { axum::Json(json!({"results": {"id": 1}})) }))
            .route("/html", get(|| async { ([("content-type", "text/html")], "<html>").into_response() }))
            .route(
                "/elsewhere",
                get(|| async { ([("link", r#"<https://attacker.example/steal?page=2>; rel="next""#)], axum::Json(json!([1]))).into_response() }),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, seen)
    }

    fn transport() -> ReqwestTransport {
        ReqwestTransport::new(TransportConfig { allow_private_networks: true, ..TransportConfig::default() }).unwrap()
    }

    fn first(addr: SocketAddr, path: &str) -> HttpRequest {
        let mut req = HttpRequest::new(Method::GET, format!("http://{addr}{path}"));
        req.headers.insert("authorization", "Bearer tok".parse().unwrap());
        req
    }

    async fn fetch(pager: Pager) -> Result<Paged, ConnectorError> {
        pager.fetch(&transport()).await
    }

    #[tokio::test]
    async fn hubspot_cursor_in_the_body() {
        let (addr, seen) = serve().await;
        let strategy = Strategy::cursor("$.paging.next.after", "after").unwrap();
        let paged = fetch(Pager::new(first(addr, "/crm/v3/objects/contacts?limit=2"), strategy, "$.results[*]").unwrap()).await.unwrap();
        assert_eq!(got_ids(&paged), [0, 1, 2, 3, 4, 5]);
        assert_eq!((paged.pages, &paged.resume), (3, &Resume::Done));
        assert_eq!(seen.queries(), ["limit=2", "after=2&limit=2", "after=4&limit=2"], "the cursor is added, other parameters kept");
        assert!(seen.0.lock().unwrap().iter().all(|(_, auth)| auth == "Bearer tok"), "every page carries the credentials");
    }

    #[tokio::test]
    async fn slack_cursor_ends_on_an_empty_string() {
        let (addr, seen) = serve().await;
        let strategy = Strategy::cursor("/response_metadata/next_cursor", "cursor").unwrap();
        let paged = fetch(Pager::new(first(addr, "/api/conversations.list"), strategy, "/channels").unwrap()).await.unwrap();
        assert_eq!(got_ids(&paged), [1, 2, 3]);
        assert_eq!((paged.pages, paged.resume), (2, Resume::Done));
        assert_eq!(seen.queries(), ["", "cursor=dXNlcjpVMDYxTkZUVDI="]);
    }

    #[tokio::test]
    async fn google_drive_page_tokens() {
        let (addr, seen) = serve().await;
        let strategy = Strategy::cursor("$.nextPageToken", "pageToken").unwrap();
        let paged = fetch(Pager::new(first(addr, "/drive/v3/files?pageSize=2"), strategy, "$.files").unwrap()).await.unwrap();
        assert_eq!(got_ids(&paged), [1, 2, 3]);
        assert_eq!(paged.resume, Resume::Done);
        assert_eq!(seen.queries(), ["pageSize=2", "pageSize=2&pageToken=tok2"]);
    }

    #[tokio::test]
    async fn link_headers_absolute_and_relative() {
        let (addr, seen) = serve().await;
        let paged = fetch(Pager::new(first(addr, "/repos/o/r/issues?per_page=2"), Strategy::LinkHeader, "").unwrap()).await.unwrap();
        assert_eq!(got_ids(&paged), [10, 11, 20, 21, 30, 31]);
        assert_eq!((paged.pages, paged.resume), (3, Resume::Done));
        assert_eq!(seen.queries(), ["per_page=2", "page=2&per_page=2", "page=3&per_page=2"]);
    }

    #[tokio::test]
    async fn link_to_another_origin_is_refused() {
        let (addr, _) = serve().await;
        let err = fetch(Pager::new(first(addr, "/elsewhere"), Strategy::LinkHeader, "").unwrap()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(
            err.message().starts_with("page 1 of the listing: the next page's link points to another site (https://attacker.example)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn mailchimp_offset_and_count_with_total_items() {
        let (addr, seen) = serve().await;
        let strategy = Strategy::offset("offset", "count", 2, Some("/total_items")).unwrap();
        let paged = fetch(Pager::new(first(addr, "/3.0/lists/abc/members"), strategy.clone(), "/members").unwrap()).await.unwrap();
        assert_eq!(got_ids(&paged), [0, 1, 2, 3, 4]);
        assert_eq!((paged.pages, paged.resume), (3, Resume::Done));
        assert_eq!(seen.queries(), ["count=2&offset=0", "count=2&offset=2", "count=2&offset=4"]);

        // A page size that divides the total: `total_items` ends it without an empty page.
        let (addr, seen) = serve().await;
        let strategy5 = Strategy::offset("offset", "count", 5, Some("$.total_items")).unwrap();
        let paged = fetch(Pager::new(first(addr, "/3.0/lists/abc/members"), strategy5, "/members").unwrap()).await.unwrap();
        assert_eq!((paged.items.len(), paged.pages), (5, 1));
        assert_eq!(seen.queries(), ["count=5&offset=0"]);

        // Without the total, the first empty or short page ends it.
        let (addr, _) = serve().await;
        let no_total = Strategy::offset("offset", "count", 5, None).unwrap();
        let paged = fetch(Pager::new(first(addr, "/3.0/lists/abc/members"), no_total, "/members").unwrap()).await.unwrap();
        assert_eq!((paged.items.len(), paged.pages), (5, 2));

        assert!(Strategy::offset("offset", "count", 0, None).unwrap_err().message().contains("at least 1"));
    }

    #[tokio::test]
    async fn max_pages_stops_with_a_cursor_to_resume_from() {
        let (addr, seen) = serve().await;
        let strategy = Strategy::cursor("$.paging.next.after", "after").unwrap();
        let pager = Pager::new(first(addr, "/crm/v3/objects/contacts"), strategy, "/results").unwrap();
        let paged = fetch(pager.clone().max_pages(2)).await.unwrap();
        assert_eq!(got_ids(&paged), [0, 1, 2, 3]);
        assert_eq!((paged.pages, &paged.resume), (2, &Resume::From("4".into())));
        assert_eq!(seen.queries().len(), 2, "the third page is not fetched");
        let rest = fetch(pager.resume_from("4")).await.unwrap();
        assert_eq!((got_ids(&rest), rest.resume), (vec![4, 5], Resume::Done));
    }

    #[tokio::test]
    async fn max_items_cuts_a_page_and_resumes_without_losing_items() {
        let (addr, _) = serve().await;
        // Cursor listing: the cut page is fetched again on resume.
        let strategy = Strategy::cursor("$.paging.next.after", "after").unwrap();
        let pager = Pager::new(first(addr, "/crm/v3/objects/contacts"), strategy, "/results").unwrap();
        let paged = fetch(pager.clone().max_items(3)).await.unwrap();
        assert_eq!(got_ids(&paged), [0, 1, 2]);
        assert_eq!((paged.pages, &paged.resume), (2, &Resume::From("2".into())));
        let paged = fetch(pager.clone().max_items(1)).await.unwrap();
        assert_eq!((got_ids(&paged), paged.resume), (vec![0], Resume::FromStart));
        // Exactly at a page boundary: the next page's cursor.
        let paged = fetch(pager.max_items(4)).await.unwrap();
        assert_eq!((got_ids(&paged), paged.resume), (vec![0, 1, 2, 3], Resume::From("4".into())));

        // Offset listing: resumes at the first item not returned.
        let strategy = Strategy::offset("offset", "count", 2, Some("/total_items")).unwrap();
        let pager = Pager::new(first(addr, "/3.0/lists/abc/members"), strategy, "/members").unwrap();
        let paged = fetch(pager.clone().max_items(3)).await.unwrap();
        assert_eq!((got_ids(&paged), &paged.resume), (vec![0, 1, 2], &Resume::From("3".into())));
        let rest = fetch(pager.resume_from("3")).await.unwrap();
        assert_eq!((got_ids(&rest), rest.resume), (vec![3, 4], Resume::Done));
    }

    #[tokio::test]
    async fn an_error_on_page_three_is_classified_and_names_the_page() {
        let (addr, seen) = serve().await;
        let strategy = Strategy::cursor("$.paging.next.after", "after").unwrap();
        let err = fetch(Pager::new(first(addr, "/flaky"), strategy, "/results").unwrap()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::RateLimited);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(err.message(), "page 3 of the listing: HTTP 429 Too Many Requests: slow down");
        assert_eq!(seen.queries().len(), 3);

        let err = fetch(Pager::new(first(addr, "/broken"), Strategy::LinkHeader, "").unwrap()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(err.message(), "page 1 of the listing: HTTP 503 Service Unavailable: maintenance");
    }

    #[tokio::test]
    async fn unreadable_pages_give_clear_errors() {
        let (addr, _) = serve().await;
        let cursor = Strategy::cursor("/next", "cursor").unwrap();
        let err =
            fetch(Pager::new(first(addr, "/same-cursor"), cursor.clone(), "/results").unwrap().resume_from("again")).await.unwrap_err();
        assert!(err.message().contains("page 1 of the listing: the app gave the same next-page cursor twice (`again`)"), "{err}");
        let err = fetch(Pager::new(first(addr, "/same-cursor"), cursor.clone(), "/items").unwrap()).await.unwrap_err();
        assert_eq!(err.message(), "page 1 of the listing: no list of items at `/items`");
        let err = fetch(Pager::new(first(addr, "/not-a-list"), cursor.clone(), "$.results").unwrap()).await.unwrap_err();
        assert_eq!(err.message(), "page 1 of the listing: expected a list of items at `$.results`, found an object");
        let err = fetch(Pager::new(first(addr, "/html"), cursor, "/results").unwrap()).await.unwrap_err();
        assert_eq!(err.message(), "page 1 of the listing: the answer is not JSON (HTTP 200)");
        // A transport failure is classified as a read: transient.
        let cursor = Strategy::cursor("/next", "cursor").unwrap();
        let err =
            Pager::new(HttpRequest::new(Method::GET, "http://127.0.0.1:1/x"), cursor, "/r").unwrap().fetch(&transport()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(err.message().starts_with("page 1 of the listing: could not connect"), "{err}");
    }

    #[test]
    fn json_paths_and_pointers() {
        let doc = json!({"paging": {"next": {"after": "9"}}, "a.b": [1, {"c": 2}], "x/y": 3});
        for (path, want) in [
            ("$.paging.next.after", Some(json!("9"))),
            ("/paging/next/after", Some(json!("9"))),
            ("$['a.b'][1].c", Some(json!(2))),
            ("$['a.b'][*]", Some(json!([1, {"c": 2}]))),
            ("$['x/y']", Some(json!(3))),
            ("$", Some(doc.clone())),
            ("", Some(doc.clone())),
            ("$.missing", None),
        ] {
            assert_eq!(JsonPath::parse(path).unwrap().get(&doc).cloned(), want, "{path}");
        }
        for (bad, why) in [
            ("results", "must start with `/` or `$`"),
            ("$..deep", "an empty name"),
            ("$.a[?(@.x)]", "only array indexes"),
            ("$['a", "unclosed"),
            ("$a", "expected `.name`"),
        ] {
            let err = JsonPath::parse(bad).unwrap_err();
            assert!(err.message().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn link_header_values() {
        let text = r#"<https://x.test/a?q="1,2">; rel="next"; title="a, b", <https://x.test/b>; rel=last"#;
        assert_eq!(
            link_values(text),
            [("https://x.test/a?q=\"1,2\"", r#"; rel="next"; title="a, b""#), ("https://x.test/b", "; rel=last")]
        );
    }
}
