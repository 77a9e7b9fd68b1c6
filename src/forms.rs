//! `enlace forms` and `enlace web-messages`: the web channel from the command line, on the
//! store directly (beside a running server), with the same checks as the API
//! (`/api/v1/forms`, `/api/v1/web-messages`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Subcommand;
use enlace_core::contacts::{ContactKey, normalize_email};
use enlace_core::web::FormDef;
use serde_json::{Value, json};

use crate::{StoreArgs, open_store};

#[derive(Subcommand)]
pub enum FormsCommand {
    /// Create or replace forms from files (YAML or JSON, one form each; see docs/web-channel.md).
    Put {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check form files without storing them.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Every form, as JSON.
    List,
    /// A form's definition, as JSON.
    Show { id: String },
    /// Delete a form: its links stop working.
    Delete { id: String },
    /// A signed link to a form for one contact (what `web.form_link` makes in a recipe).
    Link {
        /// The form's id.
        id: String,
        /// The contact: its email or its id.
        contact: String,
        /// How long the link works (`14d`); the form's `link_ttl` by default.
        #[arg(long)]
        valid_for: Option<String>,
        /// Enlace's public address (the link's start).
        #[arg(long, env = "ENLACE_PUBLIC_URL")]
        public_url: String,
    },
}

#[derive(Subcommand)]
pub enum WebMessagesCommand {
    /// On-site messages, newest first, as JSON.
    List {
        /// Only this contact's (its email or id).
        #[arg(long)]
        contact: Option<String>,
        /// Only these: pending, shown, clicked, dismissed, skipped, cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Cancel a message not shown yet.
    Cancel { id: String },
}

/// Reads and checks a form file; the error names the file and every problem.
pub fn read_form(path: &Path) -> Result<FormDef> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (value, _) = enlace_recipe::source::parse(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.message))?;
    let form: FormDef = match enlace_core::action::decode_input(value) {
        Ok(f) => f,
        Err(enlace_core::ConnectorError::BadInput { path: p, message }) => bail!("{}: {p}: {message}", path.display()),
        Err(e) => bail!("{}: {e}", path.display()),
    };
    let errs = form.check();
    if !errs.is_empty() {
        let lines: Vec<String> = errs.into_iter().map(|(p, m)| format!("{}: {p}: {m}", path.display())).collect();
        bail!("{}", lines.join("\n"));
    }
    Ok(form)
}

fn key(contact: &str) -> Result<ContactKey> {
    if contact.contains('@') {
        Ok(ContactKey::Email(normalize_email(contact).map_err(|e| anyhow!(e))?))
    } else {
        Ok(ContactKey::Id(contact.to_string()))
    }
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

pub async fn run(cmd: FormsCommand, s: &StoreArgs) -> Result<ExitCode> {
    if let FormsCommand::Check { files } = &cmd {
        for f in files {
            let form = read_form(f)?;
            println!("{}: form `{}` is valid ({} fields)", f.display(), form.id, form.fields.len());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(s).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let out = match cmd {
        FormsCommand::Check { .. } => unreachable!("answered above"),
        FormsCommand::Put { files } => {
            let forms = files.iter().map(|f| read_form(f)).collect::<Result<Vec<_>>>()?;
            let mut done = vec![];
            for f in &forms {
                let created = store.put_form(f, now).await?;
                done.push(json!({"id": f.id, "created": created}));
            }
            Value::Array(done)
        }
        FormsCommand::List => Value::Array(
            store.forms().await?.into_iter().map(|f| json!({"id": f.form.id, "title": f.form.title, "public": f.form.public, "fields": f.form.fields.len(), "updated_at": ts(f.updated_at)})).collect(),
        ),
        FormsCommand::Show { id } => match store.form(&id).await? {
            Some(f) => serde_json::to_value(f.form)?,
            None => bail!("no form `{id}`; `enlace forms list` shows them"),
        },
        FormsCommand::Delete { id } => {
            if !store.delete_form(&id).await? {
                bail!("no form `{id}`; `enlace forms list` shows them");
            }
            json!({"deleted": id})
        }
        FormsCommand::Link { id, contact, valid_for, public_url } => {
            let Some(form) = store.form(&id).await? else { bail!("no form `{id}`; `enlace forms list` shows them") };
            let Some(c) = store.contact(key(&contact)?).await? else { bail!("no contact `{contact}`") };
            let ttl = match valid_for {
                Some(d) => enlace_core::duration::parse_duration(&d).map_err(|e| anyhow!("--valid-for: {e}"))?.as_millis() as i64,
                None => form.form.ttl_ms().map_err(|e| anyhow!(e))?,
            };
            let token = enlace_runner::links::form_token(&store, &id, &c.id, now + ttl);
            json!({"form": id, "url": format!("{}/f/{id}?t={token}", public_url.trim_end_matches('/')), "expires_at": ts(now + ttl)})
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_messages(cmd: WebMessagesCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    let out = match cmd {
        WebMessagesCommand::List { contact, status, limit } => {
            let id = match contact {
                Some(c) => match store.contact(key(&c)?).await? {
                    Some(c) => Some(c.id),
                    None => bail!("no contact `{c}`"),
                },
                None => None,
            };
            serde_json::to_value(store.web_messages(id.as_deref(), status.as_deref(), limit).await?)?
        }
        WebMessagesCommand::Cancel { id } => {
            let now = chrono::Utc::now().timestamp_millis();
            match store.set_web_message_status(&id, None, &["pending"], "cancelled", now).await? {
                Some(m) => serde_json::to_value(m)?,
                None => bail!("no pending web message `{id}`; `enlace web-messages list --status pending` shows them"),
            }
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
