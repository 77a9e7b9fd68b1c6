//! `http.request`: one HTTP request, its answer as the step's output.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Method};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use enlace_core::duration::{format_duration, parse_duration};
use enlace_core::http::{HttpRequest, HttpResponse};
use enlace_core::{Action, ActionContext, ConnectorError, Idempotency};
use enlace_kit::Url;

/// The timeout when the step gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest timeout a step may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The response size cap when the step gives none (10 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;
/// The header that carries the idempotency key when the step names none.
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
const DEFAULT_IDEMPOTENCY_HEADER_LOWER: &str = "idempotency-key";

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[schemars(inline)]
pub enum HttpMethod {
    #[serde(rename = "GET", alias = "get")]
    Get,
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
    #[serde(rename = "PATCH", alias = "patch")]
    Patch,
    #[serde(rename = "DELETE", alias = "delete")]
    Delete,
    #[serde(rename = "HEAD", alias = "head")]
    Head,
    #[serde(rename = "OPTIONS", alias = "options")]
    Options,
}

impl HttpMethod {
    fn to_http(self) -> Method {
        match self {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
            HttpMethod::Head => Method::HEAD,
            HttpMethod::Options => Method::OPTIONS,
        }
    }

    /// Whether repeating a request with this method is harmless by HTTP's own rules.
    pub fn idempotent_by_default(self) -> bool {
        !matches!(self, HttpMethod::Post | HttpMethod::Patch)
    }
}

/// The `with` map of an `http.request` step.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The HTTP method: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS. When left out, POST if
    /// the step sends a body (`json`, `form` or `body`), GET otherwise.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// The address to call, in full: `https://api.example.com/v1/contacts`. Only http and
    /// https. Loopback, private-network and link-local addresses (including cloud metadata)
    /// are refused unless the installation sets ENLACE_ALLOW_PRIVATE_NETWORKS=true.
    pub url: String,
    /// Headers to send, name to value (`X-Api-Version: "2024-01"`). A header set here wins
    /// over the connection's credentials and over the headers Enlace adds itself.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query string parameters added to the URL, name to value: text, a number or true/false,
    /// or a list of those to repeat the parameter (`tag=a&tag=b`). A parameter whose value is
    /// null is left out.
    #[serde(default)]
    #[schemars(extend("additionalProperties" = {"type": ["string", "number", "boolean", "array", "null"], "items": {"type": ["string", "number", "boolean"]}}))]
    pub query: Map<String, Value>,
    /// A JSON body: any JSON value, sent with `Content-Type: application/json`. Give at most
    /// one of `json`, `form` and `body`.
    #[serde(default)]
    pub json: Option<Value>,
    /// A form body: fields sent as `application/x-www-form-urlencoded`, like an HTML form.
    /// Values are text, numbers, true/false or lists of those (the field is repeated); a null
    /// field is left out. Give at most one of `json`, `form` and `body`.
    #[serde(default)]
    #[schemars(extend("additionalProperties" = {"type": ["string", "number", "boolean", "array", "null"], "items": {"type": ["string", "number", "boolean"]}}))]
    pub form: Option<Map<String, Value>>,
    /// A text body, sent as written (XML, CSV, plain text...). Its content type is
    /// `content_type`. Give at most one of `json`, `form` and `body`.
    #[serde(default)]
    pub body: Option<String>,
    /// The content type of `body` (`application/xml`, `text/csv`...). Defaults to
    /// `text/plain; charset=utf-8`. Only with `body`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// How long to wait for the whole answer, like `10s` or `2m`. Defaults to 30s; at most 5m.
    #[serde(default)]
    #[schemars(extend("default" = "30s"))]
    pub timeout: Option<String>,
    /// The largest answer accepted, in bytes; a larger one fails the step. Defaults to
    /// 10485760 (10 MiB), which is also the most the installation reads by default.
    #[serde(default)]
    #[schemars(extend("default" = DEFAULT_MAX_RESPONSE_BYTES))]
    pub max_response_bytes: Option<u64>,
    /// Whether sending this request twice does no harm, so that it may be sent again when
    /// it left and no answer came. Defaults to true for GET, HEAD, PUT, DELETE and OPTIONS,
    /// false for POST and PATCH. Set true when the target deduplicates on the idempotency
    /// header.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// The header that carries this step's idempotency key, the same on every retry and
    /// replay of the step. Defaults to `Idempotency-Key`; an empty text sends none.
    #[serde(default)]
    #[schemars(extend("default" = DEFAULT_IDEMPOTENCY_HEADER))]
    pub idempotency_header: Option<String>,
    /// When true (the default), an answer with a 4xx or 5xx status fails the step: 429 is
    /// retried after the wait the server asks for, 408 and 5xx are retried with backoff,
    /// 401 and 403 hold the run until the connection is repaired, other 4xx fail for good.
    /// When false, any status is the step's output, for a later step to look at.
    #[serde(default)]
    #[schemars(extend("default" = true))]
    pub fail_on_status: Option<bool>,
}

impl Input {
    /// The method sent: the one given, else POST with a body and GET without.
    pub fn effective_method(&self) -> HttpMethod {
        self.method.unwrap_or(if self.has_body() { HttpMethod::Post } else { HttpMethod::Get })
    }

    fn has_body(&self) -> bool {
        self.json.is_some() || self.form.is_some() || self.body.is_some()
    }

    /// Whether the request may be sent again after an unknown outcome.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent.unwrap_or_else(|| self.effective_method().idempotent_by_default())
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The status code of the answer (200, 201, 404...).
    pub status: u16,
    /// The headers of the answer, names in lowercase; a header sent several times has its
    /// values joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The body of the answer: parsed JSON when the answer is JSON, the text otherwise
    /// (base64 when it is not text; then `body_encoding` is `base64`).
    pub body: Value,
    /// `base64` when the body was not text and is given base64-encoded; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_encoding: Option<String>,
}

/// `http.request`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request;

impl Action for Request {
    type Input = Input;
    type Output = Output;

    const ID: &'static str = "request";
    const NAME: &'static str = "Send an HTTP request";
    const DESCRIPTION: &'static str = "Sends one request to any web address or API, with a JSON, form or text body, headers and query parameters, and returns the status, headers and body of the answer.";
    const IDEMPOTENCY: Idempotency = Idempotency::PerCall;

    fn sample() -> Output {
        Output {
            status: 201,
            headers: BTreeMap::from([
                ("content-type".to_string(), "application/json; charset=utf-8".to_string()),
                ("date".to_string(), "Tue, 14 Apr 2026 09:30:00 GMT".to_string()),
                ("location".to_string(), "https://crm.example.com/api/greetings/grt_01J9Z7K2".to_string()),
                ("x-request-id".to_string(), "req_8f2c1a7d".to_string()),
            ]),
            body: json!({
                "id": "grt_01J9Z7K2",
                "email": "ana@example.com",
                "greeting": "Hi Ana!",
                "status": "queued",
                "created_at": "2026-04-14T09:30:00Z"
            }),
            body_encoding: None,
        }
    }

    fn idempotent_for(input: &Input) -> bool {
        input.is_idempotent()
    }

    async fn call(&self, ctx: &ActionContext, input: Input) -> Result<Output, ConnectorError> {
        let prepared = prepare(&input, ctx)?;
        let idempotent = input.is_idempotent();
        let resp = ctx.http.send(prepared.request).await.map_err(|e| enlace_kit::transport_error(e, idempotent))?;
        // An error status is reported as one, whatever its body's size.
        let resp = if prepared.fail_on_status { enlace_kit::classify(resp)? } else { resp };
        if resp.body.len() as u64 > prepared.max_response_bytes {
            return Err(ConnectorError::permanent(format!(
                "the answer is {} bytes, more than max_response_bytes ({})",
                resp.body.len(),
                prepared.max_response_bytes
            )));
        }
        Ok(output_of(resp))
    }
}

/// A request ready to send, and what to do with its answer.
#[derive(Debug)]
pub struct Prepared {
    pub request: HttpRequest,
    pub max_response_bytes: u64,
    pub fail_on_status: bool,
}

/// Checks the input and builds the request, credentials and idempotency key included. Every
/// problem is [`ConnectorError::BadInput`] with the path of the bad field.
pub fn prepare(input: &Input, ctx: &ActionContext) -> Result<Prepared, ConnectorError> {
    let method = input.effective_method();
    let url = build_url(&input.url, &input.query)?;

    let bodies: Vec<&str> = [("json", input.json.is_some()), ("form", input.form.is_some()), ("body", input.body.is_some())]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
    if bodies.len() > 1 {
        return Err(ConnectorError::bad_input(
            bodies[0],
            format!("give at most one of `json`, `form` and `body`; this step sets `{}`", bodies.join("` and `")),
        ));
    }

    let user_headers = parse_headers(&input.headers)?;
    if input.content_type.is_some() {
        if input.body.is_none() {
            return Err(ConnectorError::bad_input(
                "content_type",
                "`content_type` goes with `body`; for `json` and `form` the content type is set for you (a `Content-Type` header overrides it)",
            ));
        }
        if user_headers.iter().any(|(name, _)| name == CONTENT_TYPE) {
            return Err(ConnectorError::bad_input("content_type", "set either `content_type` or a `Content-Type` header, not both"));
        }
    }

    let (body, content_type) = if let Some(json) = &input.json {
        let bytes = serde_json::to_vec(json).map_err(|e| ConnectorError::bad_input("json", format!("could not be encoded: {e}")))?;
        (Bytes::from(bytes), Some(HeaderValue::from_static("application/json")))
    } else if let Some(form) = &input.form {
        let pairs = scalar_pairs(form, "form")?;
        (Bytes::from(form_urlencode(&pairs)), Some(HeaderValue::from_static("application/x-www-form-urlencoded")))
    } else if let Some(text) = &input.body {
        let content_type = match &input.content_type {
            Some(ct) => HeaderValue::from_str(ct.trim()).map_err(|_| {
                ConnectorError::bad_input("content_type", "contains a line break or another character not allowed in a header")
            })?,
            None => HeaderValue::from_static("text/plain; charset=utf-8"),
        };
        (Bytes::from(text.clone()), Some(content_type))
    } else {
        (Bytes::new(), None)
    };

    let timeout = match &input.timeout {
        None => DEFAULT_TIMEOUT,
        Some(text) => {
            let t = parse_duration(text).map_err(|e| ConnectorError::bad_input("timeout", e))?;
            if t.is_zero() {
                return Err(ConnectorError::bad_input("timeout", "must be longer than zero"));
            }
            if t > MAX_TIMEOUT {
                return Err(ConnectorError::bad_input(
                    "timeout",
                    format!("`{text}` is longer than the most allowed, {}", format_duration(MAX_TIMEOUT)),
                ));
            }
            t
        }
    };
    // The runner's limit for the whole call, when it has one, also bounds the request, so
    // that a timeout is reported as one (with whether the request left) rather than cut off.
    let timeout = if ctx.timeout.is_zero() { timeout } else { timeout.min(ctx.timeout) };

    let max_response_bytes = input.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
    if max_response_bytes == 0 {
        return Err(ConnectorError::bad_input("max_response_bytes", "must be at least 1"));
    }

    let idempotency_header = match input.idempotency_header.as_deref().map(str::trim) {
        None => Some(HeaderName::from_static(DEFAULT_IDEMPOTENCY_HEADER_LOWER)),
        Some("") => None,
        Some(name) => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConnectorError::bad_input(
                "idempotency_header",
                format!("`{name}` is not a valid header name; use letters, digits and `-`, or an empty text to send none"),
            )
        })?),
    };

    let mut request = HttpRequest::new(method.to_http(), url);
    request.body = body;
    request.timeout = Some(timeout);
    // In order of precedence, lowest first: credentials, Enlace's own headers, the step's.
    enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
    if let Some(ct) = content_type {
        request.headers.insert(CONTENT_TYPE, ct);
    }
    if let Some(name) = idempotency_header
        && !ctx.idempotency_key.is_empty()
    {
        // Keys are built from run ids and step ids, which are header-safe; one that is not
        // is left out rather than failing the step.
        if let Ok(value) = HeaderValue::from_str(&ctx.idempotency_key) {
            request.headers.insert(name, value);
        }
    }
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (name, value) in user_headers {
        if !replaced.contains(&name) {
            request.headers.remove(&name);
            replaced.push(name.clone());
        }
        request.headers.append(name, value);
    }

    Ok(Prepared { request, max_response_bytes, fail_on_status: input.fail_on_status.unwrap_or(true) })
}

/// Parses the URL (only http and https) and appends the query parameters.
fn build_url(raw: &str, query: &Map<String, Value>) -> Result<String, ConnectorError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ConnectorError::bad_input("url", "is empty; write a full address like https://api.example.com/v1/items"));
    }
    let mut url = Url::parse(raw).map_err(|e| {
        ConnectorError::bad_input(
            "url",
            format!("is not a valid address ({e}); write a full address like https://api.example.com/v1/items"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConnectorError::bad_input("url", format!("the scheme `{}` is not allowed; use http or https", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConnectorError::bad_input("url", "has no host name"));
    }
    let pairs = scalar_pairs(query, "query")?;
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    Ok(url.into())
}

/// Validates the step's headers.
fn parse_headers(headers: &BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, ConnectorError> {
    let mut out = Vec::with_capacity(headers.len());
    for (raw_name, raw_value) in headers {
        let path = format!("headers.{raw_name}");
        let name = HeaderName::from_bytes(raw_name.trim().as_bytes()).map_err(|_| {
            ConnectorError::bad_input(&path, format!("`{raw_name}` is not a valid header name; use letters, digits and `-`"))
        })?;
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            return Err(ConnectorError::bad_input(&path, format!("`{name}` is computed from the body; leave it out")));
        }
        let mut value = HeaderValue::from_str(raw_value.trim()).map_err(|_| {
            ConnectorError::bad_input(&path, "the value contains a line break or another character not allowed in a header")
        })?;
        if looks_secret(name.as_str()) {
            value.set_sensitive(true);
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Header names whose values are kept out of `Debug` output.
fn looks_secret(name: &str) -> bool {
    ["authorization", "cookie", "token", "secret", "key", "password", "signature"].iter().any(|word| name.contains(word))
}

/// A map of scalars (or lists of scalars) as name/value text pairs, nulls left out.
fn scalar_pairs(map: &Map<String, Value>, field: &str) -> Result<Vec<(String, String)>, ConnectorError> {
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in map {
        let bad = || {
            ConnectorError::bad_input(
                format!("{field}.{name}"),
                "must be text, a number, true/false, or a list of those; an object cannot be sent here",
            )
        };
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    pairs.push((name.clone(), scalar_text(item).ok_or_else(bad)?));
                }
            }
            other => pairs.push((name.clone(), scalar_text(other).ok_or_else(bad)?)),
        }
    }
    Ok(pairs)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded`, as browsers write it: everything but letters,
/// digits and `*-._` percent-encoded, spaces as `+`.
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

fn form_urlencode(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| utf8_percent_encode(s, FORM).to_string().replace("%20", "+");
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The step's output from the answer.
fn output_of(resp: HttpResponse) -> Output {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &resp.headers {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&text);
            })
            .or_insert(text);
    }
    let (body, body_encoding) = match enlace_kit::json_body(&resp) {
        Some(v) => (v, None),
        None => match std::str::from_utf8(&resp.body) {
            Ok(text) => (Value::String(text.to_string()), None),
            Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(&resp.body)), Some("base64".to_string())),
        },
    };
    Output { status: resp.status.as_u16(), headers, body, body_encoding }
}
