//! Calling a declarative connector: rendering its request templates, sending them through
//! `ctx.http`, mapping answers to outputs or error classes, reading polled items.

use std::sync::Arc;

use bytes::Bytes;
use enlace_core::action::DynAction;
use enlace_core::http::{HeaderName, HeaderValue, HttpRequest, HttpResponse, Method};
use enlace_core::trigger::{DynPollingTrigger, PollPage, PolledItem};
use enlace_core::{ActionContext, ActionSpec, BoxFuture, ConnectorError, Credentials, ErrorClass, Idempotency, TriggerSpec};
use enlace_kit::schema::validate;
use enlace_kit::{JsonPath, Pager, Strategy, Url, apply_credentials, classify, json_body, retry_after, transport_error, vendor_message};
use enlace_recipe::model::Mapping;
use enlace_recipe::template::{Data, Template};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

/// What a path segment keeps unencoded (RFC 3986 unreserved characters).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// One request template.
#[derive(Clone)]
pub(crate) struct Request {
    pub method: Method,
    pub path: Template,
    pub query: Vec<(String, Mapping)>,
    pub headers: Vec<(String, Mapping)>,
    pub body: Body,
    pub idempotency_header: Option<String>,
}

#[derive(Clone)]
pub(crate) enum Body {
    None,
    Json(Mapping),
    Form(Vec<(String, Mapping)>),
}

/// A rule of `errors:`: when the status (and the body value) match, the answer is this class.
#[derive(Clone)]
pub(crate) struct ErrorRule {
    pub status: Vec<u16>,
    pub when: Option<(JsonPath, Value)>,
    pub class: ErrorClass,
    pub message: Option<JsonPath>,
    pub field: Option<String>,
}

/// What every call of one connector shares.
pub(crate) struct Runtime {
    pub base: String,
    pub auth_query: Option<String>,
    pub errors: Vec<ErrorRule>,
}

#[derive(Clone, Copy)]
pub(crate) enum Order {
    NewestFirst,
    OldestFirst,
}

/// How a polling trigger reads its items.
#[derive(Clone)]
pub(crate) struct Trigger {
    pub items: String,
    pub dedupe_key: JsonPath,
    pub cursor: Option<JsonPath>,
    pub order: Order,
    pub pagination: Option<Strategy>,
    pub max_pages: u32,
}

pub(crate) struct DeclAction {
    pub spec: ActionSpec,
    pub request: Request,
    pub output: Option<JsonPath>,
    pub rt: Arc<Runtime>,
}

pub(crate) struct DeclTrigger {
    pub spec: TriggerSpec,
    pub request: Request,
    pub trigger: Trigger,
    pub rt: Arc<Runtime>,
}

/// The input checked against the declared fields (unknown, missing, wrong type: bad input on
/// the field), with every declared field present (`null` when left out) so that templates
/// may name optional ones.
fn checked_input(input: Value, schema: &Value) -> Result<Value, ConnectorError> {
    let input = if input.is_null() { json!({}) } else { input };
    if let Some(problem) = validate(&input, schema).into_iter().next() {
        let (path, message) = problem.split_once(": ").unwrap_or(("", &problem));
        let path = if path == "$" { "" } else { path };
        return Err(ConnectorError::bad_input(path, message));
    }
    let mut obj = input.as_object().cloned().unwrap_or_default();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            if !obj.contains_key(k) {
                obj.insert(k.clone(), p.get("default").cloned().unwrap_or(Value::Null));
            }
        }
    }
    Ok(Value::Object(obj))
}

/// Drops `null` values, and maps left empty by that, from a rendered body or query.
fn prune(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(o) => {
            let was_empty = o.is_empty();
            let o: Map<String, Value> = o.into_iter().filter_map(|(k, v)| prune(v).map(|v| (k, v))).collect();
            if o.is_empty() && !was_empty { None } else { Some(Value::Object(o)) }
        }
        Value::Array(a) => Some(Value::Array(a.into_iter().filter_map(prune).collect())),
        other => Some(other),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn encode_strings(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(utf8_percent_encode(s, SEGMENT).to_string()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), encode_strings(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(encode_strings).collect()),
        other => other.clone(),
    }
}

fn render_error(e: enlace_recipe::model::MappingError) -> ConnectorError {
    ConnectorError::bad_input(e.path, e.message)
}

impl Request {
    /// The HTTP request for this data (`{input, idempotency_key, cursor}`), credentials on.
    fn build(&self, rt: &Runtime, data: &Value, ctx: &ActionContext) -> Result<HttpRequest, ConnectorError> {
        // Values inserted into the path are percent-encoded: an input cannot add a segment.
        let path = self.path.render_string(&encode_strings(data)).map_err(|e| ConnectorError::bad_input("", e.message))?;
        let mut url = Url::parse(&format!("{}{path}", rt.base))
            .map_err(|e| ConnectorError::permanent(format!("the connector's address `{}{path}` is not a URL: {e}", rt.base)))?;
        let wrapped = Data::new(data.clone());
        {
            let mut q = url.query_pairs_mut();
            for (k, m) in &self.query {
                match prune(m.eval(&wrapped, &format!("query.{k}")).map_err(render_error)?) {
                    None => {}
                    Some(Value::Array(items)) => items.iter().for_each(|i| {
                        q.append_pair(k, &text_of(i));
                    }),
                    Some(v) => {
                        q.append_pair(k, &text_of(&v));
                    }
                }
            }
            if let (Some(param), Credentials::ApiKey { key, .. }) = (&rt.auth_query, &ctx.credentials) {
                q.append_pair(param, key.expose());
            }
        }
        let mut url = url.to_string();
        if url.ends_with('?') {
            url.pop();
        }
        let mut req = HttpRequest::new(self.method.clone(), url);
        req.headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
        match &self.body {
            Body::None => {}
            Body::Json(m) => {
                let v = prune(m.eval(&wrapped, "json").map_err(render_error)?).unwrap_or(json!({}));
                req.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                req.body = Bytes::from(v.to_string());
            }
            Body::Form(pairs) => {
                let mut form = String::new();
                for (k, m) in pairs {
                    if let Some(v) = prune(m.eval(&wrapped, &format!("form.{k}")).map_err(render_error)?) {
                        if !form.is_empty() {
                            form.push('&');
                        }
                        form.push_str(&format!("{}={}", utf8_percent_encode(k, SEGMENT), utf8_percent_encode(&text_of(&v), SEGMENT)));
                    }
                }
                req.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
                req.body = Bytes::from(form);
            }
        }
        for (k, m) in &self.headers {
            if let Some(v) = prune(m.eval(&wrapped, &format!("headers.{k}")).map_err(render_error)?) {
                let name =
                    HeaderName::try_from(k.as_str()).map_err(|_| ConnectorError::permanent(format!("`{k}` is not a header name")))?;
                let value = HeaderValue::try_from(text_of(&v))
                    .map_err(|_| ConnectorError::bad_input("", format!("the header `{k}` cannot hold that value")))?;
                req.headers.insert(name, value);
            }
        }
        if let Some(h) = &self.idempotency_header {
            let name = HeaderName::try_from(h.as_str()).map_err(|_| ConnectorError::permanent(format!("`{h}` is not a header name")))?;
            req.headers.insert(
                name,
                HeaderValue::try_from(ctx.idempotency_key.as_str()).map_err(|_| ConnectorError::permanent("bad idempotency key"))?,
            );
        }
        if rt.auth_query.is_none() {
            apply_credentials(&mut req, &ctx.credentials)?;
        }
        Ok(req)
    }
}

impl Runtime {
    /// The answer's JSON (or `null` for an empty one) after the manifest's error rules, then
    /// the kit's classification.
    fn answer(&self, resp: HttpResponse) -> Result<Value, ConnectorError> {
        let body = json_body(&resp);
        let status = resp.status.as_u16();
        for rule in &self.errors {
            let status_ok = rule.status.is_empty() || rule.status.contains(&status);
            let when_ok = match &rule.when {
                None => status >= 400,
                Some((p, want)) => body.as_ref().and_then(|b| p.get(b)) == Some(want),
            };
            if status_ok && when_ok {
                return Err(rule.error(&resp, body.as_ref()));
            }
        }
        let resp = classify(resp)?;
        match body {
            Some(b) => Ok(b),
            None if resp.body.is_empty() => Ok(Value::Null),
            None => Ok(Value::String(String::from_utf8_lossy(&resp.body).into_owned())),
        }
    }
}

impl ErrorRule {
    fn error(&self, resp: &HttpResponse, body: Option<&Value>) -> ConnectorError {
        let vendor = self
            .message
            .as_ref()
            .and_then(|p| body.and_then(|b| p.get(b)))
            .map(text_of)
            .or_else(|| vendor_message(resp))
            .unwrap_or_else(|| "no message".into());
        let message = format!("HTTP {}: {vendor}", resp.status.as_u16());
        let wait = retry_after(&resp.headers);
        match self.class {
            ErrorClass::RateLimited => ConnectorError::RateLimited { retry_after: wait, message },
            ErrorClass::Transient => ConnectorError::Transient { message, retry_after: wait },
            ErrorClass::Auth => ConnectorError::Auth { message },
            ErrorClass::Permanent => ConnectorError::Permanent { message, status: Some(resp.status.as_u16()) },
            ErrorClass::BadInput => ConnectorError::bad_input(self.field.clone().unwrap_or_default(), message),
            ErrorClass::MaybeDelivered => ConnectorError::MaybeDelivered { message },
        }
    }
}

impl DynAction for DeclAction {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn idempotent_for(&self, _input: &Value) -> bool {
        matches!(self.spec.idempotency, Idempotency::Key | Idempotency::Natural)
    }

    fn call<'a>(&'a self, ctx: &'a ActionContext, input: Value) -> BoxFuture<'a, Result<Value, ConnectorError>> {
        Box::pin(async move {
            let input = checked_input(input, &self.spec.input_schema)?;
            let data = json!({"input": input, "idempotency_key": ctx.idempotency_key});
            let req = self.request.build(&self.rt, &data, ctx)?;
            let idempotent = self.idempotent_for(&Value::Null);
            let resp = ctx.http.send(req).await.map_err(|e| transport_error(e, idempotent))?;
            let body = self.rt.answer(resp)?;
            let out = match &self.output {
                None => body,
                Some(p) => p.get(&body).cloned().ok_or_else(|| {
                    let m = format!("the answer has nothing at `{}`", p.as_str());
                    if idempotent {
                        ConnectorError::permanent(m)
                    } else {
                        ConnectorError::MaybeDelivered { message: format!("{m}; the request may have taken effect") }
                    }
                })?,
            };
            Ok(out)
        })
    }
}

impl DynPollingTrigger for DeclTrigger {
    fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    fn poll<'a>(
        &'a self,
        ctx: &'a ActionContext,
        config: Value,
        cursor: Option<String>,
    ) -> BoxFuture<'a, Result<PollPage<PolledItem>, ConnectorError>> {
        Box::pin(async move {
            let config = checked_input(config, &self.spec.config_schema)?;
            let data = json!({"input": config, "idempotency_key": ctx.idempotency_key, "cursor": cursor});
            let req = self.request.build(&self.rt, &data, ctx)?;
            let t = &self.trigger;
            let mut items = match &t.pagination {
                Some(strategy) => {
                    Pager::new(req, strategy.clone(), &t.items)?
                        .max_pages(t.max_pages)
                        .missing_is_empty(true)
                        .fetch(ctx.http.as_ref())
                        .await?
                        .items
                }
                None => {
                    let resp = ctx.http.send(req).await.map_err(|e| transport_error(e, true))?;
                    let body = self.rt.answer(resp)?;
                    let at = JsonPath::parse(&t.items)?;
                    match at.get(&body) {
                        Some(Value::Array(a)) => a.clone(),
                        // An empty listing may leave the field out (X does).
                        Some(Value::Null) | None => vec![],
                        _ => return Err(ConnectorError::permanent(format!("the answer has no list of items at `{}`", at.as_str()))),
                    }
                }
            };
            if let Order::OldestFirst = t.order {
                items.reverse();
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let key = match t.dedupe_key.get(&item) {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        return Err(ConnectorError::permanent(format!(
                            "an item has no `{}` to tell it from the others",
                            t.dedupe_key.as_str()
                        )));
                    }
                };
                out.push(PolledItem { dedupe_key: key, event: item });
            }
            let next = match (&t.cursor, out.first()) {
                (Some(p), Some(newest)) => p.get(&newest.event).map(text_of),
                _ => None,
            };
            Ok(PollPage { items: out, cursor: next })
        })
    }
}
