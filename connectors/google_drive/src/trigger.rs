//! `google_drive.new_file`: a polling trigger over Drive's Changes API.
//!
//! The cursor is a Changes API page token. Without one (a recipe being enabled), the poll asks
//! `changes/startPageToken` and returns no item with that token as the cursor, so files that
//! exist already never fire. With one, it reads `changes` page after page until the last
//! page, whose `newStartPageToken` becomes the next cursor, and keeps the files (not
//! folders, not trashed) whose parents include the configured folder, newest first, each
//! with its file ID as the dedupe key.
//!
//! A poll reads at most [`MAX_PAGES_PER_POLL`] pages and stops once it holds
//! [`MAX_ITEMS_PER_POLL`] files, always at a page boundary: the cursor is then that page's
//! `nextPageToken`, and the next poll goes on from there, so nothing is skipped.
//!
//! The kit's `Pager` is not used: it returns where to resume but not the last page's body,
//! and Drive's next cursor (`newStartPageToken`) is only on that last page; asking
//! `getStartPageToken` again afterwards would skip changes made in between.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use enlace_core::http::{HttpRequest, Method};
use enlace_core::trigger::{PollPage, PollingTrigger};
use enlace_core::{ActionContext, ConnectorError, Credentials};

use crate::folder::folder_id_of;
use crate::google::{self, FOLDER_MIME};

/// The most files one poll returns (it stops at the end of the page that reaches it).
pub const MAX_ITEMS_PER_POLL: usize = 100;

/// The most pages of changes one poll reads (100 changes a page, Drive's default).
pub const MAX_PAGES_PER_POLL: u32 = 20;

/// The fields of `changes.list` the trigger asks for (a partial response).
pub const CHANGE_FIELDS: &str = "nextPageToken,newStartPageToken,changes(fileId,removed,time,file(id,name,mimeType,parents,createdTime,modifiedTime,webViewLink,size,trashed))";

/// The `with` map of a `google_drive.new_file` trigger.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The folder to watch: its ID (the last part of the folder's address in Drive,
    /// `https://drive.google.com/drive/folders/<ID>`) or that whole address. Only files
    /// directly in this folder fire, not those in its subfolders.
    pub folder_id: String,
}

/// A file that appeared in the folder.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Item {
    /// The file's ID in Drive.
    pub id: String,
    /// The file's name.
    pub name: String,
    /// The file's media type, like `application/pdf` (or
    /// `application/vnd.google-apps.document` for a Google Doc).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The IDs of the folders the file is in.
    pub parents: Vec<String>,
    /// When the file was created (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    /// When the file was last modified (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<String>,
    /// The link that opens the file in Drive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_view_link: Option<String>,
    /// The file's size in bytes (Google Docs, Sheets and Slides have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// When Drive recorded the change that brought the file (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_time: Option<String>,
}

/// `google_drive.new_file`.
#[derive(Debug, Clone)]
pub struct NewFile {
    api_base: Arc<str>,
}

impl NewFile {
    /// The trigger against the Drive API at `api_base`.
    pub fn new(api_base: &str) -> Self {
        NewFile { api_base: Arc::from(api_base.trim_end_matches('/')) }
    }
}

/// `GET changes/startPageToken`.
pub fn start_token_request(api_base: &str, credentials: &Credentials) -> Result<HttpRequest, ConnectorError> {
    google::require_connection(credentials)?;
    let mut request = HttpRequest::new(Method::GET, google::url(api_base, "/changes/startPageToken", &[])?);
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

/// `GET changes?pageToken=...` with the fields the trigger reads.
pub fn changes_request(api_base: &str, page_token: &str, credentials: &Credentials) -> Result<HttpRequest, ConnectorError> {
    google::require_connection(credentials)?;
    let url = google::url(
        api_base,
        "/changes",
        &[("pageToken", page_token), ("fields", CHANGE_FIELDS), ("includeRemoved", "false"), ("spaces", "drive")],
    )?;
    let mut request = HttpRequest::new(Method::GET, url);
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

/// An error on page `n`, class kept.
fn on_page(err: ConnectorError, n: u32) -> ConnectorError {
    let prefix = format!("page {n} of Drive's changes: ");
    match err {
        ConnectorError::RateLimited { retry_after, message } => ConnectorError::RateLimited { retry_after, message: prefix + &message },
        ConnectorError::Transient { message, retry_after } => ConnectorError::Transient { message: prefix + &message, retry_after },
        ConnectorError::Auth { message } => ConnectorError::Auth { message: prefix + &message },
        ConnectorError::Permanent { message, status } => ConnectorError::Permanent { message: prefix + &message, status },
        ConnectorError::BadInput { path, message } => ConnectorError::BadInput { path, message: prefix + &message },
        ConnectorError::MaybeDelivered { message } => ConnectorError::MaybeDelivered { message: prefix + &message },
    }
}

impl PollingTrigger for NewFile {
    type Config = Config;
    type Item = Item;

    const ID: &'static str = "new_file";
    const NAME: &'static str = "New file in folder";
    const DESCRIPTION: &'static str =
        "Starts the recipe for each new file that appears directly in a Drive folder (uploaded, created or moved there), newest first.";

    fn sample() -> Item {
        Item {
            id: "1ZyXwVuTsRqPoNmLkJiHgFeDcBa987654".into(),
            name: "invoice-2026-04.pdf".into(),
            mime_type: Some("application/pdf".into()),
            parents: vec!["1AbCdEfGhIjKlMnOpQrStUvWxYz012345".into()],
            created_time: Some("2026-11-25T09:12:44.120Z".into()),
            modified_time: Some("2026-11-25T09:12:44.120Z".into()),
            web_view_link: Some("https://drive.google.com/file/d/1ZyXwVuTsRqPoNmLkJiHgFeDcBa987654/view?usp=drivesdk".into()),
            size: Some(48213),
            change_time: Some("2026-11-25T09:12:45.002Z".into()),
        }
    }

    fn dedupe_key(item: &Item) -> String {
        item.id.clone()
    }

    async fn poll(&self, ctx: &ActionContext, config: Config, cursor: Option<String>) -> Result<PollPage<Item>, ConnectorError> {
        let folder = folder_id_of(&config.folder_id, "folder_id")?;
        let Some(mut token) = cursor.filter(|c| !c.is_empty()) else {
            return self.seed(ctx).await;
        };
        let mut items = Vec::new();
        let mut page = 0u32;
        loop {
            page += 1;
            let request = google::authorized(changes_request(&self.api_base, &token, &ctx.credentials)?, &ctx.credentials, ctx.timeout)?;
            let resp = ctx.http.send(request).await.map_err(|e| on_page(enlace_kit::transport_error(e, true), page))?;
            let resp = google::check(resp, None).map_err(|e| on_page(e, page))?;
            let body = google::json_object(&resp)
                .map_err(|what| on_page(ConnectorError::permanent(format!("Google Drive answered with {what}")), page))?;
            items.extend(files_in(&body, &folder).map_err(|e| on_page(e, page))?);
            let next = token_at(&body, "nextPageToken").map_err(|e| on_page(e, page))?;
            let new_start = token_at(&body, "newStartPageToken").map_err(|e| on_page(e, page))?;
            match (next, new_start) {
                (Some(next), _) if next == token => {
                    return Err(on_page(
                        ConnectorError::permanent(format!(
                            "Google Drive gave the same page token twice (`{next}`); stopping instead of looping"
                        )),
                        page,
                    ));
                }
                (Some(next), _) if page >= MAX_PAGES_PER_POLL || items.len() >= MAX_ITEMS_PER_POLL => {
                    return Ok(PollPage { items: newest_first(items), cursor: Some(next) });
                }
                (Some(next), _) => token = next,
                (None, Some(new_start)) => return Ok(PollPage { items: newest_first(items), cursor: Some(new_start) }),
                (None, None) => {
                    return Err(on_page(
                        ConnectorError::permanent(
                            "Google Drive answered without `nextPageToken` or `newStartPageToken`, so there is no cursor to go on from",
                        ),
                        page,
                    ));
                }
            }
        }
    }
}

impl NewFile {
    /// The first poll: the current start page token, no items.
    async fn seed(&self, ctx: &ActionContext) -> Result<PollPage<Item>, ConnectorError> {
        let request = google::authorized(start_token_request(&self.api_base, &ctx.credentials)?, &ctx.credentials, ctx.timeout)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let resp = google::check(resp, None)?;
        let body = google::json_object(&resp)
            .map_err(|what| ConnectorError::permanent(format!("Google Drive answered changes.getStartPageToken with {what}")))?;
        match token_at(&body, "startPageToken")? {
            Some(token) => Ok(PollPage { items: Vec::new(), cursor: Some(token) }),
            None => Err(ConnectorError::permanent("Google Drive answered changes.getStartPageToken without `startPageToken`")),
        }
    }
}

/// A page token: a non-empty string (Drive's tokens are numbers in a string), if present.
fn token_at(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ConnectorError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ConnectorError::permanent(format!("`{key}` is {} instead of a string", google::kind(other)))),
    }
}

/// The new files of one page that belong to `folder`.
fn files_in(body: &Map<String, Value>, folder: &str) -> Result<Vec<Item>, ConnectorError> {
    let changes = match body.get("changes") {
        // Google leaves empty lists out of partial responses.
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(ConnectorError::permanent(format!("`changes` is {} instead of a list", google::kind(other))));
        }
    };
    let mut items = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let Some(change) = change.as_object() else {
            return Err(ConnectorError::permanent(format!("`changes[{i}]` is {} instead of an object", google::kind(change))));
        };
        if change.get("removed").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let Some(file) = change.get("file").and_then(Value::as_object) else { continue };
        if file.get("trashed").and_then(Value::as_bool) == Some(true) || file.get("mimeType").and_then(Value::as_str) == Some(FOLDER_MIME) {
            continue;
        }
        let parents: Vec<String> = file
            .get("parents")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if !parents.iter().any(|p| p == folder) {
            continue;
        }
        let Some(id) = google::text(file, "id").or_else(|| google::text(change, "fileId")) else {
            return Err(ConnectorError::permanent(format!("`changes[{i}].file` has no `id`")));
        };
        items.push(Item {
            id,
            name: google::text(file, "name").unwrap_or_default(),
            mime_type: google::text(file, "mimeType"),
            parents,
            created_time: google::text(file, "createdTime"),
            modified_time: google::text(file, "modifiedTime"),
            web_view_link: google::text(file, "webViewLink"),
            size: google::int64(file, "size"),
            change_time: google::text(change, "time"),
        });
    }
    Ok(items)
}

/// Newest first, by creation time (the change's time when Drive gives none), each file once.
fn newest_first(mut items: Vec<Item>) -> Vec<Item> {
    let when = |item: &Item| -> Option<DateTime<Utc>> {
        item.created_time
            .as_deref()
            .or(item.change_time.as_deref())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    items.sort_by_key(|item| std::cmp::Reverse(when(item)));
    // A file changed twice within one poll appears once.
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.id.clone()));
    items
}
