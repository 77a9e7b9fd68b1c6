//! The `meta_audiences` app: people in and out of a Meta (Facebook, Instagram) Customer File
//! Custom Audience through the Marketing API's `/{custom-audience-id}/users` edge
//! (<https://developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences>).
//!
//! [`AddUsers`] (`meta_audiences.add_users`) uploads one person or a list, each hashed the
//! way Meta matches ([`enlace_core::audience::meta`]: email trimmed and lowercased, phone as
//! digits with the country code and no `+`, names lowercased without punctuation, country as a
//! lowercase two-letter code; SHA-256 hex), in a multi-key schema, at most 10,000 rows per
//! request: a longer list is sent as one upload session (`session_id`, `batch_seq`,
//! `last_batch_flag`, `estimated_num_total`). It declares [`Audience::Adds`], so the runner
//! records each person's membership (hashed) and, on erasure or a withdrawn `ads` consent,
//! calls [`RemoveUsers`] (`meta_audiences.remove_users`, `DELETE` on the same edge) with the
//! hashes it kept. It reaches people on the `ads` channel, so the send policy lets nobody
//! through without `ads` consent. Both calls are idempotent: adding or removing a person twice
//! changes nothing. The Graph API's usage headers (`X-App-Usage`,
//! `X-Business-Use-Case-Usage`) drive the connection's rate budget through the runner. What
//! the app does for end users is in README.md.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::audience::{Audience, AudienceRemoval, Hashing, meta, sha256_hex};
use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::policy::{Reach, RecipientKind};
use enlace_core::{Action, ActionContext, AuthKind, ConnectionContext, ConnectionTest, Connector, ConnectorError, Idempotency, RateLimit};

/// The app id recipes use (`app: meta_audiences`).
pub const APP_ID: &str = "meta_audiences";

/// The Graph API, at the version this connector was written against.
pub const API_BASE: &str = "https://graph.facebook.com/v21.0";

/// The most rows Meta takes in one request.
pub const BATCH_ROWS: usize = 10_000;

/// The most people one step uploads (ten requests of one session).
pub const MAX_PEOPLE: usize = 100_000;

/// The multi-key schema's columns, in the order they are sent (Meta's key names; every
/// value SHA-256 hex of the normalised identifier).
pub const COLUMNS: [&str; 5] = ["EMAIL", "PHONE", "FN", "LN", "COUNTRY"];

/// The `meta_audiences` connector, talking to Meta.
pub fn connector() -> Connector {
    connector_at(API_BASE)
}

/// The connector with another Graph API base address, for tests only (a fake vendor on
/// 127.0.0.1); the installation always uses [`connector`].
pub fn connector_at(api_base: &str) -> Connector {
    let base: Arc<str> = Arc::from(api_base.trim_end_matches('/'));
    Connector::builder(
        APP_ID,
        "Meta Custom Audiences",
        "Add people to a Meta (Facebook and Instagram) Custom Audience for retargeting, and take them out again when they unsubscribe or are erased.",
    )
    .auth(AuthKind::Bearer)
    // Custom Audience uploads are throttled per ad account by Meta's business use case limits
    // (reported in `X-Business-Use-Case-Usage`, which the runner reads and waits on); a few
    // requests per second per connection keeps one connection from burning the budget.
    .rate_limit(RateLimit { calls: 5, per: Duration::from_secs(1) })
    .connection_test(FetchMe { base: base.clone() })
    .action(AddUsers { base: base.clone() })
    .action(RemoveUsers { base })
    .build()
}

/// One person to add.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// The person's email (`ana@example.com`): it is hashed before it leaves, and Enlace checks
    /// the `ads` consent of the contact with this email before the upload.
    pub email: String,
    /// The phone in international form, with the country code (`+14155552671`).
    #[serde(default)]
    pub phone: Option<String>,
    /// The first name (`Ana`), hashed.
    #[serde(default)]
    pub first_name: Option<String>,
    /// The last name (`Lima`), hashed.
    #[serde(default)]
    pub last_name: Option<String>,
    /// The country, a two-letter ISO code (`PT`), hashed.
    #[serde(default)]
    pub country: Option<String>,
}

/// The `with` map of `meta_audiences.add_users`: one person (`email` and the fields beside
/// it) or a list (`users`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddInput {
    /// The Custom Audience's id (digits, in Ads Manager under Audiences; a Customer List
    /// audience).
    pub audience_id: String,
    /// One person's email (`ana@example.com`). Give `email` (with the optional fields beside
    /// it) or `users`, not both.
    #[serde(default)]
    pub email: Option<String>,
    /// The person's phone in international form (`+14155552671`).
    #[serde(default)]
    pub phone: Option<String>,
    /// The person's first name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// The person's last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// The person's country, a two-letter ISO code (`PT`).
    #[serde(default)]
    pub country: Option<String>,
    /// Several people at once (at most 100,000), each `{email, phone?, first_name?,
    /// last_name?, country?}`; sent in requests of at most 10,000 rows, one upload session.
    #[serde(default)]
    pub users: Option<Vec<Person>>,
}

/// What Meta answered about an upload or a removal.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The Custom Audience's id.
    pub audience_id: String,
    /// The upload session's id (the same for every request of one step).
    pub session_id: String,
    /// How many requests were sent (one per 10,000 rows).
    pub batches: u32,
    /// How many rows Meta received.
    pub num_received: u64,
    /// How many rows Meta found invalid (a hash that is not one, an empty row).
    pub num_invalid_entries: u64,
}

/// `meta_audiences.add_users`.
#[derive(Debug, Clone)]
pub struct AddUsers {
    base: Arc<str>,
}

/// `meta_audiences.remove_users`.
#[derive(Debug, Clone)]
pub struct RemoveUsers {
    base: Arc<str>,
}

impl Action for AddUsers {
    type Input = AddInput;
    type Output = Output;

    const ID: &'static str = "add_users";
    const NAME: &'static str = "Add people to a Custom Audience";
    const DESCRIPTION: &'static str = "Adds one person or a list to a Meta Custom Audience (hashed email, phone, name and country), for retargeting on Facebook and Instagram.";
    // Adding a person who is in the audience already changes nothing.
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const AUDIENCE: Option<Audience> = Some(Audience::Adds {
        audience_field: "audience_id",
        email_field: Some("email"),
        phone_field: Some("phone"),
        remove_action: "remove_users",
        people_field: Some("users"),
        hashing: Hashing::Meta,
    });

    /// Everyone uploaded is a person the send policy decides about, on the `ads` channel.
    fn reaches() -> Option<Reach> {
        Some(Reach::new("ads", RecipientKind::Email, &["email", "users"]))
    }

    fn sample() -> Output {
        Output {
            audience_id: "23851234567890123".into(),
            session_id: "4503599627370497".into(),
            batches: 1,
            num_received: 1,
            num_invalid_entries: 0,
        }
    }

    async fn call(&self, ctx: &ActionContext, input: AddInput) -> Result<Output, ConnectorError> {
        let requests = add_requests(&self.base, &input, &ctx.idempotency_key)?;
        send_all(ctx, requests, &input.audience_id, session_id(&ctx.idempotency_key)).await
    }
}

impl Action for RemoveUsers {
    type Input = AudienceRemoval;
    type Output = Output;

    const ID: &'static str = "remove_users";
    const NAME: &'static str = "Remove a person from a Custom Audience";
    const DESCRIPTION: &'static str = "Removes a person, by the SHA-256 hashes of their email and phone, from a Meta Custom Audience. Enlace calls it when a person withdraws their ads consent or is erased.";
    // Removing a person who is not in the audience changes nothing.
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const AUDIENCE: Option<Audience> = Some(Audience::Removes);

    fn sample() -> Output {
        Output {
            audience_id: "23851234567890123".into(),
            session_id: "4503599627370498".into(),
            batches: 1,
            num_received: 1,
            num_invalid_entries: 0,
        }
    }

    async fn call(&self, ctx: &ActionContext, input: AudienceRemoval) -> Result<Output, ConnectorError> {
        let (audience, request) = remove_request(&self.base, &input, &ctx.idempotency_key)?;
        send_all(ctx, vec![request], &audience, session_id(&ctx.idempotency_key)).await
    }
}

/// The upload session's id: a positive number below 2^53 derived from the step's
/// idempotency key, so every attempt of one step continues the same session.
pub fn session_id(idempotency_key: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(idempotency_key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) & ((1 << 53) - 1)).max(1)
}

/// An audience id: digits only.
fn audience_id(field: &str, raw: &str) -> Result<String, ConnectorError> {
    let id = raw.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnectorError::bad_input(
            field,
            format!("`{raw}` is not a Custom Audience id: digits only, as Ads Manager shows it under Audiences"),
        ));
    }
    Ok(id.to_string())
}

/// One row of hashes, in [`COLUMNS`] order (`None` where the person has no such value).
fn row(path: &str, p: &Person) -> Result<[Option<String>; 5], ConnectorError> {
    let bad = |f: &str, e: String| ConnectorError::bad_input(format!("{path}{f}"), e);
    let given = |o: &Option<String>| o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let email = meta::email(&p.email).map_err(|e| bad("email", e))?;
    let phone = given(&p.phone).map(|x| meta::phone(&x, None)).transpose().map_err(|e| bad("phone", e))?;
    let country = given(&p.country).map(|x| meta::country(&x)).transpose().map_err(|e| bad("country", e))?;
    Ok([
        Some(sha256_hex(&email)),
        phone.map(|x| sha256_hex(&x)),
        given(&p.first_name).and_then(|x| meta::name(&x)).map(|x| sha256_hex(&x)),
        given(&p.last_name).and_then(|x| meta::name(&x)).map(|x| sha256_hex(&x)),
        country.map(|x| sha256_hex(&x)),
    ])
}

/// The people of the input, checked: one at the top level or a list.
fn people(input: &AddInput) -> Result<Vec<(String, Person)>, ConnectorError> {
    let top = input.email.is_some()
        || input.phone.is_some()
        || input.first_name.is_some()
        || input.last_name.is_some()
        || input.country.is_some();
    match (&input.users, top) {
        (Some(_), true) => {
            Err(ConnectorError::bad_input("users", "give one person (`email` and the fields beside it) or a list (`users`), not both"))
        }
        (Some(list), false) => {
            if list.is_empty() {
                return Err(ConnectorError::bad_input("users", "is empty: give at least one person"));
            }
            if list.len() > MAX_PEOPLE {
                return Err(ConnectorError::bad_input(
                    "users",
                    format!("has {} people; one step uploads at most {MAX_PEOPLE}: split the list", list.len()),
                ));
            }
            Ok(list.iter().enumerate().map(|(i, p)| (format!("users[{i}]."), p.clone())).collect())
        }
        (None, _) => {
            let Some(email) = input.email.clone().filter(|e| !e.trim().is_empty()) else {
                return Err(ConnectorError::bad_input(
                    "email",
                    "give the person's email (Enlace checks their ads consent by it), or a list in `users`",
                ));
            };
            Ok(vec![(
                String::new(),
                Person {
                    email,
                    phone: input.phone.clone(),
                    first_name: input.first_name.clone(),
                    last_name: input.last_name.clone(),
                    country: input.country.clone(),
                },
            )])
        }
    }
}

/// The `POST /{audience}/users` requests of an upload: the rows hashed, the columns any
/// person has, at most [`BATCH_ROWS`] rows per request, one session.
pub fn add_requests(base: &str, input: &AddInput, idempotency_key: &str) -> Result<Vec<HttpRequest>, ConnectorError> {
    let audience = audience_id("audience_id", &input.audience_id)?;
    let rows = people(input)?.iter().map(|(path, p)| row(path, p)).collect::<Result<Vec<_>, _>>()?;
    let used: Vec<usize> = (0..COLUMNS.len()).filter(|&c| rows.iter().any(|r| r[c].is_some())).collect();
    let schema: Vec<&str> = used.iter().map(|&c| COLUMNS[c]).collect();
    let session = session_id(idempotency_key);
    let chunks: Vec<_> = rows.chunks(BATCH_ROWS).collect();
    let n = chunks.len();
    Ok(chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let data: Vec<Vec<String>> = chunk.iter().map(|r| used.iter().map(|&c| r[c].clone().unwrap_or_default()).collect()).collect();
            let body = json!({
                "payload": {"schema": schema, "data": data},
                "session": {
                    "session_id": session,
                    "batch_seq": i + 1,
                    "last_batch_flag": i + 1 == n,
                    "estimated_num_total": rows.len(),
                },
            });
            json_request(Method::POST, format!("{base}/{audience}/users"), &body)
        })
        .collect())
}

/// A SHA-256 hex digest, lowercase.
fn hash(field: &str, v: &str) -> Result<String, ConnectorError> {
    let h = v.trim().to_ascii_lowercase();
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(ConnectorError::bad_input(field, format!("`{v}` is not a SHA-256 hex digest (64 hexadecimal characters)")))
    }
}

/// The `DELETE /{audience}/users` request of a removal: the person's hashes, as the add
/// sent them (`EMAIL`, `PHONE`).
pub fn remove_request(base: &str, input: &AudienceRemoval, idempotency_key: &str) -> Result<(String, HttpRequest), ConnectorError> {
    let raw = match &input.audience {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(ConnectorError::bad_input("audience", format!("`{other}` is not a Custom Audience id (digits)")));
        }
    };
    let audience = audience_id("audience", &raw)?;
    let mut schema = vec![];
    let mut row = vec![];
    if let Some(e) = &input.email_sha256 {
        schema.push("EMAIL");
        row.push(hash("email_sha256", e)?);
    }
    if let Some(p) = &input.phone_sha256 {
        schema.push("PHONE");
        row.push(hash("phone_sha256", p)?);
    }
    if row.is_empty() {
        return Err(ConnectorError::bad_input("email_sha256", "give the person's `email_sha256`, `phone_sha256` or both"));
    }
    let body = json!({
        "payload": {"schema": schema, "data": [row]},
        "session": {"session_id": session_id(idempotency_key), "batch_seq": 1, "last_batch_flag": true, "estimated_num_total": 1},
    });
    Ok((audience.clone(), json_request(Method::DELETE, format!("{base}/{audience}/users"), &body)))
}

fn json_request(method: Method, url: String, body: &Value) -> HttpRequest {
    let mut r = HttpRequest::new(method, url);
    r.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.body = Bytes::from(body.to_string());
    r
}

/// Sends the requests in order; the first failure stops the step (a retry sends them all
/// again, in the same session: adding and removing are idempotent).
async fn send_all(ctx: &ActionContext, requests: Vec<HttpRequest>, audience: &str, session: u64) -> Result<Output, ConnectorError> {
    let mut out =
        Output { audience_id: audience.to_string(), session_id: session.to_string(), batches: 0, num_received: 0, num_invalid_entries: 0 };
    for mut request in requests {
        enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let body = answer(resp)?;
        out.batches += 1;
        out.num_received += body.get("num_received").and_then(Value::as_u64).unwrap_or(0);
        out.num_invalid_entries += body.get("num_invalid_entries").and_then(Value::as_u64).unwrap_or(0);
    }
    Ok(out)
}

/// A 2xx JSON answer, or the Graph API's error classified.
fn answer(resp: HttpResponse) -> Result<Value, ConnectorError> {
    if resp.status.as_u16() >= 400 {
        return Err(enlace_kit::graph_error(resp, None));
    }
    let status = resp.status.as_u16();
    let body = enlace_kit::json_body(&resp).filter(Value::is_object).ok_or_else(|| {
        ConnectorError::transient(format!(
            "the Graph API answered HTTP {status} with a body that is not a JSON object; the step is retried"
        ))
    })?;
    if body.get("error").is_some() {
        return Err(enlace_kit::graph_error(resp, None));
    }
    Ok(body)
}

/// The connection test: `GET /me` (the token's user or system user), which changes nothing.
#[derive(Debug, Clone)]
pub struct FetchMe {
    base: Arc<str>,
}

impl ConnectionTest for FetchMe {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        let mut request = HttpRequest::new(Method::GET, format!("{}/me?fields=id,name", self.base));
        if !ctx.timeout.is_zero() {
            request.timeout = Some(ctx.timeout);
        }
        enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let body = answer(resp)?;
        let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        Ok(format!("the token works: it acts as `{}` ({})", field("name"), field("id")))
    }
}

#[cfg(test)]
mod tests;
