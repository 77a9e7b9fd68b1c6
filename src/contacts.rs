//! `enlace contacts`: GDPR from the command line, on the store directly (it works beside a
//! running server): export everything stored about a contact as one JSON document, and
//! erase a contact (the same transaction as `DELETE /api/v1/contacts/{id}`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow};
use clap::Subcommand;
use enlace_core::contacts::ContactKey;
use enlace_store::StoreError;
use serde_json::Value;

use crate::{StoreArgs, open_store};

#[derive(Subcommand)]
pub enum ContactsCommand {
    /// Everything stored about a contact, as one JSON document (every page of its runs):
    /// see docs/gdpr.md for each field.
    Export {
        /// The contact's id, or its email.
        contact: String,
        /// Write the document to this file (created with mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase a contact: cancel its pending runs, replace its email, phone and name by
    /// `[erased]` in the run history, queue its removal from ad audiences, delete it and every
    /// row about it, and keep a record without personal data. It cannot be undone.
    Erase {
        /// The contact's id, or its email.
        contact: String,
        /// Confirm: nothing is erased without it.
        #[arg(long)]
        yes: bool,
    },
}

fn key(contact: &str) -> ContactKey {
    if contact.contains('@') { ContactKey::Email(contact.to_string()) } else { ContactKey::Id(contact.to_string()) }
}

pub async fn run(cmd: ContactsCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let code = match cmd {
        ContactsCommand::Export { contact, out } => {
            let mut doc: Option<Value> = None;
            let mut after: Option<String> = None;
            // One document: the first page's records, then every page's runs.
            loop {
                let Some(page) = store.export_contact(key(&contact), after.as_deref(), 1000, now).await? else {
                    return Ok(missing(&store, &contact).await);
                };
                let next = page.runs_next.clone();
                let mut v = serde_json::to_value(page)?;
                match doc.as_mut() {
                    None => doc = Some(v),
                    Some(d) => {
                        let more = v["runs"].as_array_mut().map(std::mem::take).unwrap_or_default();
                        if let Some(runs) = d["runs"].as_array_mut() {
                            runs.extend(more);
                        }
                    }
                }
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            let mut doc = doc.unwrap_or_default();
            if let Some(o) = doc.as_object_mut() {
                o.remove("runs_next");
            }
            let text = serde_json::to_string_pretty(&doc)?;
            match out {
                Some(path) => {
                    let mut f = open_private(&path).with_context(|| format!("{}: cannot write", path.display()))?;
                    f.write_all(text.as_bytes())?;
                    f.write_all(b"\n")?;
                    eprintln!("exported to {}", path.display());
                }
                None => println!("{text}"),
            }
            ExitCode::SUCCESS
        }
        ContactsCommand::Erase { contact, yes } => {
            if !yes {
                eprintln!("error: erasing `{contact}` cannot be undone; add --yes to confirm");
                return Ok(ExitCode::from(2));
            }
            match store.erase(key(&contact), "cli", now).await {
                Ok(e) => {
                    println!("{}", serde_json::to_string_pretty(&e)?);
                    eprintln!(
                        "erased contact {}: {} runs redacted, {} pending runs cancelled, {} audience removals queued (a running `enlace serve` sends them)",
                        e.contact_id, e.runs_redacted, e.runs_cancelled, e.removals_queued
                    );
                    ExitCode::SUCCESS
                }
                Err(StoreError::NotFound(_)) => missing(&store, &contact).await,
                Err(StoreError::Invalid(m)) => return Err(anyhow!("{m}")),
                Err(e) => return Err(e.into()),
            }
        }
    };
    store.close().await;
    Ok(code)
}

/// Says whether the contact was erased or never existed.
async fn missing(store: &enlace_store::Store, contact: &str) -> ExitCode {
    let erased = if contact.contains('@') {
        store.erasures_of_email(contact).await.ok().and_then(|v| v.into_iter().last())
    } else {
        store.erasure_of(contact).await.ok().flatten()
    };
    match erased {
        Some(e) => eprintln!(
            "error: the contact `{contact}` was erased at {} (erasure {}); nothing about it is kept",
            enlace_runner::clock::rfc3339(e.erased_at),
            e.id
        ),
        None => eprintln!("error: no contact `{contact}` (give its id or its email)"),
    }
    ExitCode::FAILURE
}

fn open_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}
