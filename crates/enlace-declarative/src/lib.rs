//! Declarative connectors: an app described by one YAML file (`connector.yaml`), no Rust.
//!
//! The file gives the base URL, the auth kind (API key in a header or the query, bearer,
//! basic, OAuth2 with its authorization server), a rate limit, actions as request templates
//! with input fields, polling triggers as requests with an item path, a dedupe key and
//! pagination, and rules that map the vendor's errors to Enlace's error classes. The format
//! is in CONTRIBUTING.md ("Declarative connectors").
//!
//! [`parse`] checks a file the way a recipe is checked (every problem at once, each with its
//! path, line and column: [`enlace_recipe::Diagnostics`]) and yields a [`Declared`], whose
//! [`Declared::connector`] is an ordinary [`enlace_core::Connector`]: the runner, the
//! validator, the catalog and the conformance test see no difference. Requests go through
//! `ctx.http` (SSRF guard, caps, dry-run recorder); answers are classified by the file's
//! rules first, then by `enlace_kit::classify`; pages are read by `enlace_kit::Pager`.
//!
//! Architecture invariant: loading touches no network; a declarative connector never sleeps
//! or retries (the runner does).

mod check;
mod runtime;

use std::path::{Path, PathBuf};

use enlace_core::Connector;
use enlace_recipe::{Diagnostic, Diagnostics};

pub use check::Declared;

/// The file name of a declarative connector inside its folder (`connectors/<app>/connector.yaml`).
pub const FILE_NAME: &str = "connector.yaml";

/// Parses and checks a manifest. `file` names it in diagnostics.
pub fn parse(text: &str, file: Option<&str>) -> Result<Declared, Diagnostics> {
    check::parse(text, file)
}

/// The manifests of a folder: `DIR/<app>/connector.yaml` and `DIR/<app>.yaml`, in name order.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = vec![];
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.is_dir() && path.join(FILE_NAME).is_file() {
            files.push(path.join(FILE_NAME));
        } else if path.is_file() && path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every manifest of a folder (see [`manifest_files`]); all diagnostics of all files
/// when any is wrong.
pub fn load_dir(dir: &Path) -> Result<Vec<Connector>, Vec<Diagnostics>> {
    let file_error = |file: String, message: String| Diagnostics {
        file: Some(file),
        diagnostics: vec![Diagnostic { path: String::new(), message, line: None, column: None }],
    };
    let files = manifest_files(dir).map_err(|e| vec![file_error(dir.display().to_string(), format!("cannot read the folder: {e}"))])?;
    let mut out = vec![];
    let mut errors = vec![];
    for f in files {
        let name = f.display().to_string();
        match std::fs::read_to_string(&f) {
            Err(e) => errors.push(file_error(name, format!("cannot read the file: {e}"))),
            Ok(text) => match parse(&text, Some(&name)) {
                Ok(d) => out.push(d.connector()),
                Err(d) => errors.push(d),
            },
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests;
