//! `google_drive.create_folder`, and the connection test.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::http::{HttpRequest, HttpResponse, Method};
use enlace_core::{Action, ActionContext, ConnectionContext, ConnectionTest, ConnectorError, Credentials, Idempotency};

use crate::google::{self, FOLDER_MIME, IDEMPOTENCY_PROPERTY, NotFound};

/// The `with` map of a `google_drive.create_folder` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The new folder's name, like `Invoices 2026`. Drive allows several folders with the
    /// same name side by side, so running the step twice makes two folders.
    pub name: String,
    /// The folder to create it in: its ID (the last part of the folder's address in Drive,
    /// `https://drive.google.com/drive/folders/<ID>`) or that whole address. Leave it out to
    /// create the folder at the top of My Drive.
    #[serde(default)]
    pub parent_id: Option<String>,
}

/// The created folder.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The folder's ID: give it as `folder_id` to `google_drive.upload_file` or as
    /// `parent_id` to another `create_folder`.
    pub id: String,
    /// The folder's name as Drive stored it.
    pub name: String,
    /// The link that opens the folder in Drive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_view_link: Option<String>,
}

/// `google_drive.create_folder`.
#[derive(Debug, Clone)]
pub struct CreateFolder {
    api_base: Arc<str>,
}

impl CreateFolder {
    /// The action against the Drive API at `api_base` (`https://www.googleapis.com/drive/v3`).
    pub fn new(api_base: &str) -> Self {
        CreateFolder { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

impl Action for CreateFolder {
    type Input = Input;
    type Output = Output;

    const ID: &'static str = "create_folder";
    const NAME: &'static str = "Create a folder";
    const DESCRIPTION: &'static str =
        "Creates a folder in Google Drive, at the top of My Drive or inside another folder, and returns its ID and link.";
    // Drive takes no idempotency key: a folder created twice exists twice. A request that
    // left without an answer is "maybe delivered"; the folder carries the step's idempotency
    // key in its appProperties so that it can be found before replaying.
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    fn sample() -> Output {
        Output {
            id: "1AbCdEfGhIjKlMnOpQrStUvWxYz012345".into(),
            name: "Leads 2026-11".into(),
            web_view_link: Some("https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz012345".into()),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: Input) -> Result<Output, ConnectorError> {
        let request = build_request(&self.api_base, &input, &ctx.credentials, &ctx.idempotency_key)?;
        let request = google::authorized(request, &ctx.credentials, ctx.timeout)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, false))?;
        output_of(resp)
    }
}

/// Checks the input and builds the `files.create` request for a folder, without credentials
/// (see [`google::authorized`]).
pub fn build_request(
    api_base: &str,
    input: &Input,
    credentials: &Credentials,
    idempotency_key: &str,
) -> Result<HttpRequest, ConnectorError> {
    let name = input.name.trim();
    if name.is_empty() {
        return Err(ConnectorError::bad_input("name", "is empty; give the folder a name"));
    }
    let mut metadata = json!({
        "name": name,
        "mimeType": FOLDER_MIME,
        "appProperties": {IDEMPOTENCY_PROPERTY: google::idempotency_property(idempotency_key)},
    });
    if let Some(parent) = &input.parent_id {
        metadata["parents"] = json!([folder_id_of(parent, "parent_id")?]);
    }
    google::require_connection(credentials)?;
    let url = google::url(api_base, "/files", &[("fields", "id,name,webViewLink"), ("supportsAllDrives", "true")])?;
    let mut request = HttpRequest::new(Method::POST, url);
    request.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    request.body = Bytes::from(metadata.to_string());
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

/// A folder ID from what users paste: the ID, `root`, or the folder's Drive address.
pub fn folder_id_of(text: &str, field: &str) -> Result<String, ConnectorError> {
    let text = text.trim();
    let id = match text.split_once("/folders/") {
        Some((_, rest)) => rest.split(['?', '/', '#']).next().unwrap_or_default(),
        None => text,
    };
    if id.is_empty() {
        return Err(ConnectorError::bad_input(field, "is empty; give the folder's ID (the last part of its address in Drive)"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ConnectorError::bad_input(
            field,
            format!(
                "`{text}` is not a Drive folder ID; open the folder in Drive and copy the last part of its address (https://drive.google.com/drive/folders/<ID>)"
            ),
        ));
    }
    Ok(id.to_string())
}

/// The output from Drive's answer to `files.create`.
pub fn output_of(resp: HttpResponse) -> Result<Output, ConnectorError> {
    let resp = google::check(resp, Some(NotFound { field: "parent_id", hint: "no such folder, or the connected account cannot see it" }))?;
    let file = google::json_object(&resp).map_err(|what| ConnectorError::MaybeDelivered {
        message: format!(
            "Google Drive answered HTTP {} with {what}; the folder may have been created: look for it before replaying",
            resp.status.as_u16()
        ),
    })?;
    let Some(id) = google::text(&file, "id") else {
        return Err(ConnectorError::permanent(format!(
            "Google Drive answered HTTP {} without the folder's `id`; the folder may exist, but later steps cannot refer to it",
            resp.status.as_u16()
        )));
    };
    Ok(Output { id, name: google::text(&file, "name").unwrap_or_default(), web_view_link: google::text(&file, "webViewLink") })
}

/// The connection test: `about?fields=user`, which reads the account and changes nothing.
#[derive(Debug, Clone)]
pub struct AboutUser {
    api_base: Arc<str>,
}

impl AboutUser {
    /// The test against the Drive API at `api_base`.
    pub fn new(api_base: &str) -> Self {
        AboutUser { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

/// The connection test's request.
pub fn about_request(api_base: &str, credentials: &Credentials) -> Result<HttpRequest, ConnectorError> {
    google::require_connection(credentials)?;
    let mut request = HttpRequest::new(Method::GET, google::url(api_base, "/about", &[("fields", "user")])?);
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

impl ConnectionTest for AboutUser {
    async fn test(&self, ctx: &ConnectionContext) -> Result<String, ConnectorError> {
        let request = google::authorized(about_request(&self.api_base, &ctx.credentials)?, &ctx.credentials, ctx.timeout)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let resp = google::check(resp, None)?;
        let about =
            google::json_object(&resp).map_err(|what| ConnectorError::permanent(format!("Google Drive answered about.get with {what}")))?;
        let user = about.get("user").and_then(Value::as_object);
        let who = user.and_then(|u| google::text(u, "emailAddress").or_else(|| google::text(u, "displayName")));
        match who {
            Some(who) => Ok(format!("Connected as {who}")),
            None => Err(ConnectorError::permanent("Google Drive answered about.get without the account's `user`")),
        }
    }
}
