//! `google_drive.upload_file`: one multipart upload (`files.create` with
//! `uploadType=multipart`): a `multipart/related` body holding the file's metadata as JSON,
//! then its bytes.

use std::sync::Arc;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use enlace_core::http::{HttpRequest, HttpResponse, Method, TransportError};
use enlace_core::{Action, ActionContext, ConnectorError, Credentials, Idempotency};

use crate::folder::folder_id_of;
use crate::google::{self, IDEMPOTENCY_PROPERTY, NotFound};

/// The largest file the action uploads: 10 MiB, whatever the source. It is also the
/// transport's default cap on a response, which bounds a file fetched from `url`. Google
/// advises multipart uploads for files of 5 MB or less and resumable uploads beyond; this
/// connector does multipart only (see the README).
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;

/// The fields of the created file Drive returns (a partial response).
pub const UPLOAD_FIELDS: &str = "id,name,mimeType,webViewLink,parents,size";

/// A file another step produced: the shape of `smtp.send_email`'s attachments and of the
/// attachments an email trigger emits, so that a recipe can write `attachment: "{{item}}"`
/// in a loop over `trigger.attachments`. Other fields (such as `size`) are ignored.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Attachment {
    /// The file's name, like `invoice-2026-04.pdf`. Used as the Drive file's name when the
    /// step gives no `name`.
    pub name: String,
    /// The file's media type, like `application/pdf`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The file's bytes, base64-encoded (line breaks and spaces are ignored). Give this or
    /// `content_text`.
    #[serde(default)]
    pub content_base64: Option<String>,
    /// The file's content as text. Give this or `content_base64`.
    #[serde(default)]
    pub content_text: Option<String>,
}

/// The `with` map of a `google_drive.upload_file` step. Give exactly one source:
/// `content_text`, `content_base64`, `url` or `attachment`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The file's name in Drive, like `lead-ana.csv`. Defaults to the attachment's name, or
    /// to the last part of `url`'s path; required for `content_text` and `content_base64`.
    #[serde(default)]
    pub name: Option<String>,
    /// The folder to save the file in: its ID (the last part of the folder's address in
    /// Drive, `https://drive.google.com/drive/folders/<ID>`), that whole address, or the
    /// `id` output of a `google_drive.create_folder` step. Leave it out to save at the top of
    /// My Drive.
    #[serde(default)]
    pub folder_id: Option<String>,
    /// The file's media type, like `text/csv` or `application/pdf`. Defaults to the
    /// attachment's type, the type `url` answered with, `text/plain` for `content_text`, and
    /// `application/octet-stream` otherwise.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The file's content as text (a CSV, a note, JSON). Saved as UTF-8.
    #[serde(default)]
    pub content_text: Option<String>,
    /// The file's bytes, base64-encoded (line breaks and spaces are ignored).
    #[serde(default)]
    pub content_base64: Option<String>,
    /// An http(s) address to fetch the file from, like a link to a PDF. Only public
    /// addresses: local and private network addresses are refused. At most 10 MiB.
    #[serde(default)]
    pub url: Option<String>,
    /// A file produced by another step, as `{name, content_type, content_base64}` (for
    /// example one item of an email trigger's `attachments`: `"{{item}}"` in a loop).
    #[serde(default)]
    pub attachment: Option<Attachment>,
}

/// The uploaded file.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    /// The file's ID in Drive.
    pub id: String,
    /// The file's name as Drive stored it.
    pub name: String,
    /// The file's media type as Drive stored it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The link that opens the file in Drive (for people with access to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_view_link: Option<String>,
    /// The IDs of the folders the file is in.
    pub parents: Vec<String>,
    /// The file's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `google_drive.upload_file`.
#[derive(Debug, Clone)]
pub struct UploadFile {
    upload_base: Arc<str>,
}

impl UploadFile {
    /// The action against Drive's upload endpoint at `upload_base`
    /// (`https://www.googleapis.com/upload/drive/v3`).
    pub fn new(upload_base: &str) -> Self {
        UploadFile { upload_base: Arc::from(upload_base.trim_end_matches('/')) }
    }
}

/// The file to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub name: String,
    pub content_type: String,
    pub bytes: Bytes,
}

/// Where the bytes come from, once the input is checked.
enum Source {
    Ready { bytes: Bytes, content_type: Option<String>, name: Option<String> },
    Url(enlace_kit::Url),
}

impl Action for UploadFile {
    type Input = Input;
    type Output = Output;

    const ID: &'static str = "upload_file";
    const NAME: &'static str = "Upload a file";
    const DESCRIPTION: &'static str =
        "Saves a file to Google Drive, from text, base64 bytes, a URL or another step's attachment, and returns its ID and link.";
    // Drive takes no idempotency key for files.create: a file uploaded twice exists twice. A
    // request that left without an answer is therefore "maybe delivered" and not sent again
    // blindly. The file carries the step's idempotency key in
    // appProperties.enlace_idempotency_key, so it can be looked for before a replay.
    const IDEMPOTENCY: Idempotency = Idempotency::None;

    fn sample() -> Output {
        Output {
            id: "1ZyXwVuTsRqPoNmLkJiHgFeDcBa987654".into(),
            name: "invoice-2026-04.pdf".into(),
            mime_type: Some("application/pdf".into()),
            web_view_link: Some("https://drive.google.com/file/d/1ZyXwVuTsRqPoNmLkJiHgFeDcBa987654/view?usp=drivesdk".into()),
            parents: vec!["1AbCdEfGhIjKlMnOpQrStUvWxYz012345".into()],
            size: Some(48213),
        }
    }

    async fn call(&self, ctx: &ActionContext, input: Input) -> Result<Output, ConnectorError> {
        google::require_connection(&ctx.credentials)?;
        let folder_id = input.folder_id.as_deref().map(|f| folder_id_of(f, "folder_id")).transpose()?;
        let explicit_type = input.content_type.as_deref().map(|t| checked_content_type(t, "content_type")).transpose()?;
        let explicit_name = match input.name.as_deref().map(str::trim) {
            Some("") => return Err(ConnectorError::bad_input("name", "is empty; give the file's name, like `report.csv`")),
            other => other.map(str::to_string),
        };
        let media = match source_of(&input)? {
            Source::Ready { bytes, content_type, name } => {
                let name = explicit_name.or(name).ok_or_else(|| {
                    ConnectorError::bad_input(
                        "name",
                        "is required with `content_text` and `content_base64`: give the file's name, like `report.csv`",
                    )
                })?;
                Media { name, content_type: explicit_type.or(content_type).unwrap_or_else(|| "application/octet-stream".into()), bytes }
            }
            Source::Url(url) => {
                let (bytes, answered_type) = fetch(ctx, &url).await?;
                let name = explicit_name.or_else(|| last_segment(&url)).ok_or_else(|| {
                    ConnectorError::bad_input("name", "`url` has no file name in its path; give the file's name, like `report.pdf`")
                })?;
                let content_type = explicit_type.or(answered_type).unwrap_or_else(|| "application/octet-stream".into());
                Media { name, content_type, bytes }
            }
        };
        let request = build_request(&self.upload_base, &media, folder_id.as_deref(), &ctx.credentials, &ctx.idempotency_key)?;
        let request = google::authorized(request, &ctx.credentials, ctx.timeout)?;
        let resp = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, false))?;
        output_of(resp)
    }
}

/// Checks that exactly one source is given and reads it (all but `url`, which is fetched).
fn source_of(input: &Input) -> Result<Source, ConnectorError> {
    let given: Vec<&str> = [
        ("content_text", input.content_text.is_some()),
        ("content_base64", input.content_base64.is_some()),
        ("url", input.url.is_some()),
        ("attachment", input.attachment.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match given.as_slice() {
        [] => {
            return Err(ConnectorError::bad_input(
                "content_text",
                "the file has no content: give one of `content_text`, `content_base64`, `url` or `attachment`",
            ));
        }
        [_] => {}
        [first, second, ..] => {
            return Err(ConnectorError::bad_input(
                *second,
                format!("give only one source of content: `{first}` and `{second}` are both given"),
            ));
        }
    }
    if let Some(text) = &input.content_text {
        let bytes = Bytes::from(text.clone());
        check_size(bytes.len(), "content_text")?;
        return Ok(Source::Ready { bytes, content_type: Some("text/plain; charset=UTF-8".into()), name: None });
    }
    if let Some(b64) = &input.content_base64 {
        return Ok(Source::Ready { bytes: decode_base64(b64, "content_base64")?, content_type: None, name: None });
    }
    if let Some(url) = &input.url {
        let parsed =
            enlace_kit::Url::parse(url.trim()).map_err(|e| ConnectorError::bad_input("url", format!("is not a valid address: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConnectorError::bad_input("url", format!("must be an http or https address, not `{}:`", parsed.scheme())));
        }
        return Ok(Source::Url(parsed));
    }
    let Some(a) = &input.attachment else { unreachable!("one source is given") };
    let name = a.name.trim();
    if name.is_empty() {
        return Err(ConnectorError::bad_input("attachment.name", "is empty; the attachment needs a file name"));
    }
    let content_type = a.content_type.as_deref().map(|t| checked_content_type(t, "attachment.content_type")).transpose()?;
    let bytes = match (&a.content_base64, &a.content_text) {
        (Some(b64), None) => decode_base64(b64, "attachment.content_base64")?,
        (None, Some(text)) => {
            let bytes = Bytes::from(text.clone());
            check_size(bytes.len(), "attachment.content_text")?;
            bytes
        }
        (Some(_), Some(_)) => {
            return Err(ConnectorError::bad_input(
                "attachment.content_text",
                "give the attachment's `content_base64` or `content_text`, not both",
            ));
        }
        (None, None) => {
            return Err(ConnectorError::bad_input("attachment.content_base64", "is missing; the attachment has no content"));
        }
    };
    let content_type = content_type.or_else(|| a.content_text.is_some().then(|| "text/plain; charset=UTF-8".to_string()));
    Ok(Source::Ready { bytes, content_type, name: Some(name.to_string()) })
}

fn check_size(len: usize, field: &str) -> Result<(), ConnectorError> {
    if len > MAX_FILE_BYTES {
        return Err(ConnectorError::bad_input(
            field,
            format!("is {len} bytes; the most this action uploads is {MAX_FILE_BYTES} bytes (10 MiB)"),
        ));
    }
    Ok(())
}

fn decode_base64(text: &str, field: &str) -> Result<Bytes, ConnectorError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    // Checked before decoding: base64 is 4/3 of the bytes.
    check_size(compact.len() / 4 * 3, field)?;
    let decoded = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD].iter().find_map(|engine| engine.decode(&compact).ok());
    match decoded {
        Some(bytes) => Ok(Bytes::from(bytes)),
        None => Err(ConnectorError::bad_input(
            field,
            format!("is not valid base64: {}", STANDARD.decode(&compact).err().map(|e| e.to_string()).unwrap_or_default()),
        )),
    }
}

/// A media type that can go in a header: `type/subtype`, optional parameters, no line break.
fn checked_content_type(text: &str, field: &str) -> Result<String, ConnectorError> {
    let text = text.trim();
    let essence = text.split(';').next().unwrap_or_default().trim();
    let valid_essence = essence.split_once('/').is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !s.contains('/'));
    if !valid_essence || HeaderValue::from_str(text).is_err() || text.contains(['\r', '\n']) {
        return Err(ConnectorError::bad_input(
            field,
            format!("`{text}` is not a media type; it looks like `application/pdf` or `text/csv`"),
        ));
    }
    Ok(text.to_string())
}

/// The last non-empty segment of the URL's path, decoded.
fn last_segment(url: &enlace_kit::Url) -> Option<String> {
    let segment = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    let decoded = decoded.trim();
    (!decoded.is_empty()).then(|| decoded.to_string())
}

/// Fetches the file at `url` through the installation's transport (SSRF guard, size cap,
/// timeout), without the connection's credentials. Errors are about the `url` field, never
/// about the Drive connection: a 401 from that server is not a Drive token problem. The
/// full address is not repeated in messages (it may hold a signature).
async fn fetch(ctx: &ActionContext, url: &enlace_kit::Url) -> Result<(Bytes, Option<String>), ConnectorError> {
    let host = url.host_str().unwrap_or_default().to_string();
    let mut request = HttpRequest::new(Method::GET, url.to_string());
    if !ctx.timeout.is_zero() {
        request.timeout = Some(ctx.timeout);
    }
    let resp = ctx.http.send(request).await.map_err(|e| match e {
        TransportError::TooLarge { limit } => {
            ConnectorError::bad_input("url", format!("the file at {host} is larger than {limit} bytes, the most this action fetches"))
        }
        TransportError::Forbidden(m) => ConnectorError::bad_input("url", format!("the file at {host} cannot be fetched: {m}")),
        // A GET is a read: repeating it is harmless.
        other => {
            let err = enlace_kit::transport_error(other, true);
            match err {
                ConnectorError::Transient { message, retry_after } => {
                    ConnectorError::Transient { message: format!("fetching the file at {host}: {message}"), retry_after }
                }
                ConnectorError::BadInput { message, .. } => ConnectorError::bad_input("url", message),
                other => other,
            }
        }
    })?;
    let code = resp.status.as_u16();
    let said = || {
        let status = match resp.status.canonical_reason() {
            Some(r) => format!("HTTP {code} {r}"),
            None => format!("HTTP {code}"),
        };
        format!("fetching the file at {host}: the server answered {status}")
    };
    match code {
        200..=299 => {}
        429 => return Err(ConnectorError::RateLimited { retry_after: enlace_kit::retry_after(&resp.headers), message: said() }),
        408 | 425 | 500..=599 => {
            return Err(ConnectorError::Transient { message: said(), retry_after: enlace_kit::retry_after(&resp.headers) });
        }
        _ => return Err(ConnectorError::bad_input("url", format!("{}; check that the address is right and public", said()))),
    }
    check_size(resp.body.len(), "url")?;
    let content_type = resp.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|t| checked_content_type(t, "url").ok());
    Ok((resp.body, content_type))
}

/// The multipart boundary: a fixed text with the first counter that occurs in neither part.
fn boundary_for(parts: &[&[u8]]) -> String {
    (0u32..)
        .map(|n| format!("enlace-drive-part-{n:04}"))
        .find(|b| !parts.iter().any(|p| p.windows(b.len()).any(|w| w == b.as_bytes())))
        .expect("some counter does not occur in finite data")
}

/// The metadata part of an upload: what Drive's `File` resource says about the new file.
pub fn metadata_of(media: &Media, folder_id: Option<&str>, idempotency_key: &str) -> Value {
    let mime = media.content_type.split(';').next().unwrap_or_default().trim().to_string();
    let mut metadata = json!({
        "name": media.name,
        "mimeType": mime,
        "appProperties": {IDEMPOTENCY_PROPERTY: google::idempotency_property(idempotency_key)},
    });
    if let Some(folder) = folder_id {
        metadata["parents"] = json!([folder]);
    }
    metadata
}

/// Builds the multipart upload request, credentials included.
pub fn build_request(
    upload_base: &str,
    media: &Media,
    folder_id: Option<&str>,
    credentials: &Credentials,
    idempotency_key: &str,
) -> Result<HttpRequest, ConnectorError> {
    google::require_connection(credentials)?;
    let metadata = metadata_of(media, folder_id, idempotency_key).to_string();
    let boundary = boundary_for(&[metadata.as_bytes(), &media.bytes]);
    let mut body = BytesMut::with_capacity(media.bytes.len() + metadata.len() + 256);
    body.put_slice(format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n").as_bytes());
    body.put_slice(metadata.as_bytes());
    body.put_slice(format!("\r\n--{boundary}\r\nContent-Type: {}\r\n\r\n", media.content_type).as_bytes());
    body.put_slice(&media.bytes);
    body.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let url = google::url(upload_base, "/files", &[("uploadType", "multipart"), ("fields", UPLOAD_FIELDS), ("supportsAllDrives", "true")])?;
    let mut request = HttpRequest::new(Method::POST, url);
    let content_type = HeaderValue::from_str(&format!("multipart/related; boundary={boundary}"))
        .map_err(|e| ConnectorError::permanent(format!("the upload's content type could not be built: {e}")))?;
    request.headers.insert(CONTENT_TYPE, content_type);
    request.body = body.freeze();
    enlace_kit::apply_credentials(&mut request, credentials)?;
    Ok(request)
}

/// The output from Drive's answer to the upload.
pub fn output_of(resp: HttpResponse) -> Result<Output, ConnectorError> {
    let resp = google::check(resp, Some(NotFound { field: "folder_id", hint: "no such folder, or the connected account cannot see it" }))?;
    let file = google::json_object(&resp).map_err(|what| ConnectorError::MaybeDelivered {
        message: format!(
            "Google Drive answered the upload with HTTP {} and {what}; the file may have been saved: look for it before replaying",
            resp.status.as_u16()
        ),
    })?;
    let Some(id) = google::text(&file, "id") else {
        return Err(ConnectorError::permanent(format!(
            "Google Drive answered the upload with HTTP {} but without the file's `id`; the file may exist, but later steps cannot refer to it",
            resp.status.as_u16()
        )));
    };
    let parents = file
        .get("parents")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(Output {
        id,
        name: google::text(&file, "name").unwrap_or_default(),
        mime_type: google::text(&file, "mimeType"),
        web_view_link: google::text(&file, "webViewLink"),
        parents,
        size: google::int64(&file, "size"),
    })
}
