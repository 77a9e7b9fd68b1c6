//! The `google_ads_audiences` app: Google Ads Customer Match through offline user data jobs
//! (`OfflineUserDataJobService`, REST: `customers/{cid}/offlineUserDataJobs:create`, then
//! `{job}:addOperations`, then `{job}:run`;
//! <https://developers.google.com/google-ads/api/docs/remarketing/audience-segments/customer-match/get-started>).
//!
//! [`AddUsers`] (`google_ads_audiences.add_users`) hashes each person the way Google matches
//! ([`enlace_core::audience::google`]: email trimmed and lowercased, phone in E.164 with its
//! `+`, names trimmed and lowercased; SHA-256 hex; country and postal code in clear) and
//! uploads them as `create` operations. Google requires the EU user consent signals
//! (`ad_user_data`, `ad_personalization`) on the job's `customer_match_user_list_metadata`:
//! people are grouped by their consent and each group goes in a job of its own. It declares
//! [`Audience::Adds`] (the runner records each membership, hashed) and reaches people on the
//! `ads` channel (the send policy lets nobody through without `ads` consent). [`RemoveUsers`]
//! (`google_ads_audiences.remove_users`) takes a person out with a `remove` operation, by the
//! hashes the membership kept. Every call carries the OAuth2 access token, the installation's
//! `developer-token` and, for a manager account, `login-customer-id`. What the app does for
//! end users is in README.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::audience::{Audience, AudienceRemoval, Hashing, google, sha256_hex};
use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::policy::{Reach, RecipientKind};
use enlace_core::{Action, ActionContext, ClientAuth, Connector, ConnectorError, Idempotency, OAuth2App, RateLimit};

/// The app id recipes use (`app: google_ads_audiences`).
pub const APP_ID: &str = "google_ads_audiences";

/// The Google Ads API (REST); paths carry the version.
pub const API_BASE: &str = "https://googleads.googleapis.com";

/// The API version the paths and bodies follow (the protos in the vendor descriptions).
pub const VERSION: &str = "v25";

/// The environment variable holding the installation's developer token (Google Ads API
/// Center of the manager account that owns the OAuth client).
pub const DEVELOPER_TOKEN_ENV: &str = "ENLACE_GOOGLE_ADS_DEVELOPER_TOKEN";

/// The most operations sent in one `addOperations` request.
pub const OPERATIONS_PER_REQUEST: usize = 10_000;

/// The most people one step uploads.
pub const MAX_PEOPLE: usize = 100_000;

/// The `google_ads_audiences` connector, talking to Google, with the developer token of
/// [`DEVELOPER_TOKEN_ENV`].
pub fn connector() -> Connector {
    let token = std::env::var(DEVELOPER_TOKEN_ENV).ok().filter(|t| !t.trim().is_empty());
    connector_at(API_BASE, token.as_deref())
}

/// The connector with another API base address and developer token, for tests only (a fake
/// vendor on 127.0.0.1); the installation always uses [`connector`].
pub fn connector_at(api_base: &str, developer_token: Option<&str>) -> Connector {
    let api = Api { base: Arc::from(api_base.trim_end_matches('/')), developer_token: developer_token.map(Arc::from) };
    Connector::builder(
        APP_ID,
        "Google Ads Customer Match",
        "Add people to a Google Ads Customer Match list for retargeting (with Google's EU consent signals), and take them out again when they unsubscribe or are erased.",
    )
    // Google's OAuth 2.0 for web server apps; the `adwords` scope is the Google Ads API's.
    .oauth2(OAuth2App {
        authorize_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
        token_url: "https://oauth2.googleapis.com/token".into(),
        scopes: vec!["https://www.googleapis.com/auth/adwords".into()],
        authorize_params: [("access_type", "offline"), ("prompt", "consent")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        client_auth: ClientAuth::Basic,
    })
    // Google Ads limits requests per developer token per day and throttles bursts with
    // RESOURCE_EXHAUSTED (429, which the runner waits out); one step makes three requests
    // per job, so a few per second per connection is plenty.
    .rate_limit(RateLimit { calls: 5, per: Duration::from_secs(1) })
    .action(AddUsers { api: api.clone() })
    .action(RemoveUsers { api })
    .build()
}

#[derive(Debug, Clone)]
struct Api {
    base: Arc<str>,
    developer_token: Option<Arc<str>>,
}

/// Which Customer Match list: the advertiser's customer id and the list's id, and the
/// manager account the connection signs in through, if any.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserList {
    /// The advertiser's customer id (`123-456-7890`, at the top of Google Ads).
    pub customer_id: String,
    /// The Customer Match list's id (digits; Tools > Audience manager > the list's details).
    pub user_list_id: String,
    /// The manager account's customer id, when the connection's Google account reaches the
    /// advertiser through a manager account (`login-customer-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_customer_id: Option<String>,
}

/// A consent signal, as Google names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ConsentStatus {
    Granted,
    Denied,
    Unspecified,
}

/// The EU user consent signals Google requires for people in the EEA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Consent to send the person's data to Google for advertising (`GRANTED`, `DENIED` or
    /// `UNSPECIFIED`).
    pub ad_user_data: ConsentStatus,
    /// Consent to personalised advertising (`GRANTED`, `DENIED` or `UNSPECIFIED`).
    pub ad_personalization: ConsentStatus,
}

impl Default for Consent {
    fn default() -> Self {
        Consent { ad_user_data: ConsentStatus::Granted, ad_personalization: ConsentStatus::Granted }
    }
}

/// One person to add.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// The person's email (`ana@example.com`), hashed before it leaves; Enlace checks the
    /// `ads` consent of the contact with this email before the upload.
    pub email: String,
    /// The phone in international form (`+14155552671`), hashed.
    #[serde(default)]
    pub phone: Option<String>,
    /// The first name, hashed. With `last_name`, `country_code` and `postal_code` it makes an
    /// address match (all four or none).
    #[serde(default)]
    pub first_name: Option<String>,
    /// The last name, hashed.
    #[serde(default)]
    pub last_name: Option<String>,
    /// The country, a two-letter ISO code (`US`), sent in clear.
    #[serde(default)]
    pub country_code: Option<String>,
    /// The postal code (`94016`), sent in clear.
    #[serde(default)]
    pub postal_code: Option<String>,
    /// This person's consent signals, instead of the step's `consent`.
    #[serde(default)]
    pub consent: Option<Consent>,
}

/// The `with` map of `google_ads_audiences.add_users`: one person (`email` and the fields
/// beside it) or a list (`users`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddInput {
    /// The Customer Match list: `{customer_id, user_list_id, login_customer_id?}`.
    pub audience: UserList,
    /// One person's email. Give `email` (with the fields beside it) or `users`, not both.
    #[serde(default)]
    pub email: Option<String>,
    /// The person's phone in international form (`+14155552671`).
    #[serde(default)]
    pub phone: Option<String>,
    /// The person's first name (address match: with `last_name`, `country_code`, `postal_code`).
    #[serde(default)]
    pub first_name: Option<String>,
    /// The person's last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// The person's country, two letters (`US`).
    #[serde(default)]
    pub country_code: Option<String>,
    /// The person's postal code.
    #[serde(default)]
    pub postal_code: Option<String>,
    /// The consent signals of the people of this step (each person's own `consent` wins);
    /// `GRANTED` for both when absent: the send policy only lets through people who gave
    /// `ads` consent. People with different signals go in different jobs.
    #[serde(default)]
    pub consent: Option<Consent>,
    /// Several people at once (at most 100,000), each `{email, phone?, first_name?,
    /// last_name?, country_code?, postal_code?, consent?}`.
    #[serde(default)]
    pub users: Option<Vec<Person>>,
}

/// One offline user data job the step ran.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Job {
    /// The job (`customers/1234567890/offlineUserDataJobs/555`).
    pub resource_name: String,
    /// The consent signals of everyone in this job (absent for a removal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    /// How many people it carries.
    pub people: u64,
    /// Google's message when some operations were refused (partial failure), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_failure: Option<String>,
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The list (`customers/1234567890/userLists/987654321`).
    pub user_list: String,
    /// The jobs created and run, one per consent state. Google processes a job in up to 24
    /// hours after it runs.
    pub jobs: Vec<Job>,
}

/// `google_ads_audiences.add_users`.
#[derive(Debug, Clone)]
pub struct AddUsers {
    api: Api,
}

/// `google_ads_audiences.remove_users`.
#[derive(Debug, Clone)]
pub struct RemoveUsers {
    api: Api,
}

impl Action for AddUsers {
    type Input = AddInput;
    type Output = Output;

    const ID: &'static str = "add_users";
    const NAME: &'static str = "Add people to a Customer Match list";
    const DESCRIPTION: &'static str = "Adds one person or a list to a Google Ads Customer Match list (hashed email, phone and name), with Google's EU consent signals, through offline user data jobs.";
    // Adding people already in the list changes nothing (a retry makes a new job with the
    // same people).
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const AUDIENCE: Option<Audience> = Some(Audience::Adds {
        audience_field: "audience",
        email_field: Some("email"),
        phone_field: Some("phone"),
        remove_action: "remove_users",
        people_field: Some("users"),
        hashing: Hashing::Standard,
    });

    /// Everyone uploaded is a person the send policy decides about, on the `ads` channel.
    fn reaches() -> Option<Reach> {
        Some(Reach::new("ads", RecipientKind::Email, &["email", "users"]))
    }

    fn sample() -> Output {
        Output {
            user_list: "customers/1234567890/userLists/987654321".into(),
            jobs: vec![Job {
                resource_name: "customers/1234567890/offlineUserDataJobs/555".into(),
                consent: Some(Consent::default()),
                people: 1,
                partial_failure: None,
            }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: AddInput) -> Result<Output, ConnectorError> {
        let plan = add_plan(&input)?;
        let list = plan.list.clone();
        let mut jobs = vec![];
        for (consent, ops) in plan.groups {
            jobs.push(self.api.run_job(ctx, &list, Some(consent), ops).await?);
        }
        Ok(Output { user_list: list.resource_name(), jobs })
    }
}

impl Action for RemoveUsers {
    type Input = AudienceRemoval;
    type Output = Output;

    const ID: &'static str = "remove_users";
    const NAME: &'static str = "Remove a person from a Customer Match list";
    const DESCRIPTION: &'static str = "Removes a person, by the SHA-256 hashes of their email and phone, from a Google Ads Customer Match list. Enlace calls it when a person withdraws their ads consent or is erased.";
    // Removing a person who is not in the list changes nothing.
    const IDEMPOTENCY: Idempotency = Idempotency::Natural;
    const AUDIENCE: Option<Audience> = Some(Audience::Removes);

    fn sample() -> Output {
        Output {
            user_list: "customers/1234567890/userLists/987654321".into(),
            jobs: vec![Job {
                resource_name: "customers/1234567890/offlineUserDataJobs/556".into(),
                consent: None,
                people: 1,
                partial_failure: None,
            }],
        }
    }

    async fn call(&self, ctx: &ActionContext, input: AudienceRemoval) -> Result<Output, ConnectorError> {
        let (list, op) = remove_plan(&input)?;
        let job = self.api.run_job(ctx, &list, None, vec![op]).await?;
        Ok(Output { user_list: list.resource_name(), jobs: vec![job] })
    }
}

/// A list checked: ids as digits.
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    pub customer_id: String,
    pub user_list_id: String,
    pub login_customer_id: Option<String>,
}

impl List {
    pub fn resource_name(&self) -> String {
        format!("customers/{}/userLists/{}", self.customer_id, self.user_list_id)
    }
}

/// `123-456-7890` -> `1234567890`.
fn customer_id(field: &str, raw: &str) -> Result<String, ConnectorError> {
    let id: String = raw.trim().chars().filter(|c| *c != '-').collect();
    if id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(ConnectorError::bad_input(field, format!("`{raw}` is not a Google Ads customer id: ten digits, like 123-456-7890")))
    }
}

fn list_of(path: &str, l: &UserList) -> Result<List, ConnectorError> {
    let id = l.user_list_id.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnectorError::bad_input(
            format!("{path}.user_list_id"),
            format!("`{}` is not a user list id: digits only, as the Audience manager shows it", l.user_list_id),
        ));
    }
    Ok(List {
        customer_id: customer_id(&format!("{path}.customer_id"), &l.customer_id)?,
        user_list_id: id.to_string(),
        login_customer_id: l.login_customer_id.as_deref().map(|m| customer_id(&format!("{path}.login_customer_id"), m)).transpose()?,
    })
}

/// What an add will send: the list, and the operations per consent state.
#[derive(Debug)]
pub struct AddPlan {
    pub list: List,
    pub groups: BTreeMap<Consent, Vec<Value>>,
}

/// One person's `UserData` (its `userIdentifiers`), hashed as Google documents.
fn user_data(path: &str, p: &Person) -> Result<Value, ConnectorError> {
    let bad = |f: &str, e: String| ConnectorError::bad_input(format!("{path}{f}"), e);
    let given = |o: &Option<String>| o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let mut ids = vec![json!({"hashedEmail": sha256_hex(&google::email(&p.email).map_err(|e| bad("email", e))?)})];
    if let Some(phone) = given(&p.phone) {
        ids.push(json!({"hashedPhoneNumber": sha256_hex(&google::phone(&phone, None).map_err(|e| bad("phone", e))?)}));
    }
    let address = [given(&p.first_name), given(&p.last_name), given(&p.country_code), given(&p.postal_code)];
    let names = ["first_name", "last_name", "country_code", "postal_code"];
    if address.iter().any(Option::is_some) {
        if let Some(i) = address.iter().position(Option::is_none) {
            return Err(bad(
                names[i],
                "is missing: an address match takes the first name, last name, country code and postal code together (give all four, or none)".into(),
            ));
        }
        let [f, l, c, z] = address.map(Option::unwrap_or_default);
        let first = google::name(&f).map(|x| sha256_hex(&x)).unwrap_or_default();
        let last = google::name(&l).map(|x| sha256_hex(&x)).unwrap_or_default();
        let country = google::country(&c).map_err(|e| bad("country_code", e))?;
        ids.push(json!({"addressInfo": {"hashedFirstName": first, "hashedLastName": last, "countryCode": country, "postalCode": z}}));
    }
    Ok(json!({"userIdentifiers": ids}))
}

/// Checks an add and groups its people by consent.
pub fn add_plan(input: &AddInput) -> Result<AddPlan, ConnectorError> {
    let list = list_of("audience", &input.audience)?;
    let top = input.email.is_some()
        || input.phone.is_some()
        || input.first_name.is_some()
        || input.last_name.is_some()
        || input.country_code.is_some()
        || input.postal_code.is_some();
    let people: Vec<(String, Person)> = match (&input.users, top) {
        (Some(_), true) => {
            return Err(ConnectorError::bad_input(
                "users",
                "give one person (`email` and the fields beside it) or a list (`users`), not both",
            ));
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
            list.iter().enumerate().map(|(i, p)| (format!("users[{i}]."), p.clone())).collect()
        }
        (None, _) => {
            let Some(email) = input.email.clone().filter(|e| !e.trim().is_empty()) else {
                return Err(ConnectorError::bad_input(
                    "email",
                    "give the person's email (Enlace checks their ads consent by it), or a list in `users`",
                ));
            };
            vec![(
                String::new(),
                Person {
                    email,
                    phone: input.phone.clone(),
                    first_name: input.first_name.clone(),
                    last_name: input.last_name.clone(),
                    country_code: input.country_code.clone(),
                    postal_code: input.postal_code.clone(),
                    consent: None,
                },
            )]
        }
    };
    let step_consent = input.consent.unwrap_or_default();
    let mut groups: BTreeMap<Consent, Vec<Value>> = BTreeMap::new();
    for (path, p) in &people {
        let data = user_data(path, p)?;
        groups.entry(p.consent.unwrap_or(step_consent)).or_default().push(json!({"create": data}));
    }
    Ok(AddPlan { list, groups })
}

/// Checks a removal: the list from the membership's audience, one `remove` operation.
pub fn remove_plan(input: &AudienceRemoval) -> Result<(List, Value), ConnectorError> {
    let l: UserList = serde_json::from_value(input.audience.clone()).map_err(|e| {
        ConnectorError::bad_input(
            "audience",
            format!("is not a Customer Match list `{{customer_id, user_list_id, login_customer_id?}}`: {e}"),
        )
    })?;
    let list = list_of("audience", &l)?;
    let hash = |f: &str, v: &str| {
        let h = v.trim().to_ascii_lowercase();
        if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(h)
        } else {
            Err(ConnectorError::bad_input(f, format!("`{v}` is not a SHA-256 hex digest (64 hexadecimal characters)")))
        }
    };
    let mut ids = vec![];
    if let Some(e) = &input.email_sha256 {
        ids.push(json!({"hashedEmail": hash("email_sha256", e)?}));
    }
    if let Some(p) = &input.phone_sha256 {
        ids.push(json!({"hashedPhoneNumber": hash("phone_sha256", p)?}));
    }
    if ids.is_empty() {
        return Err(ConnectorError::bad_input("email_sha256", "give the person's `email_sha256`, `phone_sha256` or both"));
    }
    Ok((list, json!({"remove": {"userIdentifiers": ids}})))
}

fn consent_json(c: Consent) -> Value {
    json!({"adUserData": c.ad_user_data, "adPersonalization": c.ad_personalization})
}

/// The body of `offlineUserDataJobs:create` for a list (and its consent, for an add).
pub fn create_body(list: &List, consent: Option<Consent>) -> Value {
    let mut metadata = json!({"userList": list.resource_name()});
    if let Some(c) = consent {
        metadata["consent"] = consent_json(c);
    }
    json!({"job": {"type": "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata": metadata}})
}

impl Api {
    fn request(&self, ctx: &ActionContext, list: &List, path: &str, body: &Value) -> Result<HttpRequest, ConnectorError> {
        let mut r = HttpRequest::new(Method::POST, format!("{}/{VERSION}/{path}", self.base));
        r.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let header = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| ConnectorError::auth(format!("the value of {DEVELOPER_TOKEN_ENV} is not a valid header value")))
        };
        // Without one Google refuses the call; its answer is then reported with the fix.
        if let Some(token) = &self.developer_token {
            r.headers.insert(HeaderName::from_static("developer-token"), header(token.as_ref())?);
        }
        if let Some(m) = &list.login_customer_id {
            r.headers.insert(HeaderName::from_static("login-customer-id"), header(m.as_str())?);
        }
        r.body = Bytes::from(body.to_string());
        enlace_kit::apply_credentials(&mut r, &ctx.credentials)?;
        if !ctx.timeout.is_zero() {
            r.timeout = Some(ctx.timeout);
        }
        Ok(r)
    }

    async fn send(&self, ctx: &ActionContext, list: &List, path: &str, body: &Value) -> Result<Value, ConnectorError> {
        let r = self.request(ctx, list, path, body)?;
        let resp = ctx.http.send(r).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        match answer(resp) {
            Err(e @ (ConnectorError::Permanent { .. } | ConnectorError::Auth { .. } | ConnectorError::BadInput { .. }))
                if self.developer_token.is_none() =>
            {
                Err(ConnectorError::auth(format!(
                    "{e}; no Google Ads developer token is configured: set {DEVELOPER_TOKEN_ENV} to the developer token of your manager account's API Center and restart Enlace"
                )))
            }
            other => other,
        }
    }

    /// Creates a job, adds its operations (in requests of at most
    /// [`OPERATIONS_PER_REQUEST`]) and runs it.
    async fn run_job(&self, ctx: &ActionContext, list: &List, consent: Option<Consent>, ops: Vec<Value>) -> Result<Job, ConnectorError> {
        let created = self
            .send(ctx, list, &format!("customers/{}/offlineUserDataJobs:create", list.customer_id), &create_body(list, consent))
            .await?;
        let job = created.get("resourceName").and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
            ConnectorError::transient("Google Ads created a job but its answer has no `resourceName`; the step is retried (a new job)")
        })?;
        let mut failures = vec![];
        for chunk in ops.chunks(OPERATIONS_PER_REQUEST) {
            let body = json!({"enablePartialFailure": true, "operations": chunk});
            let added = self.send(ctx, list, &format!("{job}:addOperations"), &body).await?;
            if let Some(m) = added.get("partialFailureError").and_then(|e| e.get("message")).and_then(Value::as_str) {
                failures.push(m.to_string());
            }
        }
        self.send(ctx, list, &format!("{job}:run"), &json!({})).await?;
        Ok(Job {
            resource_name: job,
            consent,
            people: ops.len() as u64,
            partial_failure: (!failures.is_empty()).then(|| failures.join("; ")),
        })
    }
}

/// A 2xx JSON answer, or Google's error classified (the first `GoogleAdsFailure` error
/// named in the message).
fn answer(resp: HttpResponse) -> Result<Value, ConnectorError> {
    let status = resp.status.as_u16();
    if status >= 400 {
        let body = enlace_kit::json_body(&resp).unwrap_or(Value::Null);
        let detail = body["error"]["details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["errors"].as_array().cloned().unwrap_or_default())
            .next()
            .map(|e| format!(" ({}: {})", e["errorCode"], e["message"].as_str().unwrap_or("")));
        let quota = body["error"]["details"].to_string().contains("quotaError");
        return Err(match enlace_kit::classify(resp) {
            Err(ConnectorError::Permanent { message, .. }) if quota => {
                ConnectorError::RateLimited { retry_after: None, message: format!("{message}{}", detail.unwrap_or_default()) }
            }
            Err(ConnectorError::Permanent { message, status }) => {
                ConnectorError::Permanent { message: format!("{message}{}", detail.unwrap_or_default()), status }
            }
            Err(ConnectorError::Auth { message }) => ConnectorError::auth(format!("{message}{}", detail.unwrap_or_default())),
            Err(e) => e,
            Ok(_) => ConnectorError::permanent(format!("Google Ads answered HTTP {status}")),
        });
    }
    enlace_kit::json_body(&resp).filter(Value::is_object).ok_or_else(|| {
        ConnectorError::transient(format!("Google Ads answered HTTP {status} with a body that is not a JSON object; the step is retried"))
    })
}

#[cfg(test)]
mod tests;
