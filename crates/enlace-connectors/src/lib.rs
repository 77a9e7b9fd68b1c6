//! Every connector of this installation, one line each. `enlace connector new NAME`
//! ([`scaffold`]) creates a connector's folder and registers it (the root `Cargo.toml`'s
//! workspace dependencies, this crate's `Cargo.toml`, one line in [`all`]). A test checks
//! that every folder under `connectors/` is listed here, and the conformance test
//! (`src/conformance.rs`) checks every connector against the connector specification.

use std::path::Path;
use std::sync::RwLock;

use enlace_core::{Connector, Registry};

pub mod docs;
pub mod scaffold;

include!(concat!(env!("OUT_DIR"), "/declarative.rs"));

/// Declarative connectors loaded at start from `--connectors DIR` ([`load_dir`]).
static LOADED: RwLock<Vec<Connector>> = RwLock::new(Vec::new());

/// Every connector: the Rust ones (built-in apps first), the shipped declarative ones
/// (`connectors/declarative/<app>/connector.yaml`, embedded), then those loaded with
/// [`load_dir`].
pub fn all() -> Vec<Connector> {
    let mut all = rust();
    all.extend(declarative());
    all.extend(LOADED.read().expect("not poisoned").iter().cloned());
    all
}

/// The shipped declarative connectors. Each was checked by a test; a broken one fails the
/// build's tests, so parsing here cannot fail in a released binary.
pub fn declarative() -> Vec<Connector> {
    DECLARATIVE
        .iter()
        .map(|(app, text)| {
            let file = format!("connectors/declarative/{app}/connector.yaml");
            enlace_declarative::parse(text, Some(&file)).unwrap_or_else(|d| panic!("{d}")).connector()
        })
        .collect()
}

/// Loads the declarative connectors of a folder (`--connectors DIR`: `DIR/<app>/connector.yaml`
/// or `DIR/<app>.yaml`) for the rest of the process. Refused, with every diagnostic, when a
/// manifest is wrong or an app id is taken. Returns the app ids loaded.
pub fn load_dir(dir: &Path) -> Result<Vec<String>, String> {
    let loaded = enlace_declarative::load_dir(dir).map_err(|ds| ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    let ids: Vec<String> = loaded.iter().map(|c| c.id().to_string()).collect();
    let mut all = all();
    all.extend(loaded.iter().cloned());
    Registry::new(all).map_err(|e| format!("{}: {e}", dir.display()))?;
    LOADED.write().expect("not poisoned").extend(loaded);
    Ok(ids)
}

/// The connectors written in Rust, one line each.
fn rust() -> Vec<Connector> {
    vec![
        enlace_connector_webhook::connector(),
        enlace_connector_schedule::connector(),
        enlace_connector_enlace::connector(),
        enlace_connector_contacts::connector(),
        enlace_connector_web::connector(),
        enlace_connector_http::connector(),
        enlace_connector_smtp::connector(),
        enlace_connector_imap::connector(),
        enlace_connector_slack::connector(),
        enlace_connector_twilio::connector(),
        enlace_connector_sendgrid::connector(),
        enlace_connector_mailchimp::connector(),
        enlace_connector_hubspot::connector(),
        enlace_connector_google_drive::connector(),
        enlace_connector_mastodon::connector(),
        enlace_connector_social::connector(),
        enlace_connector_meta_audiences::connector(),
        enlace_connector_google_ads_audiences::connector(),
        enlace_connector_linkedin::connector(),
        enlace_connector_facebook_page::connector(),
        enlace_connector_bluesky::connector(),
        enlace_connector_x::connector(),
        // `enlace connector new` adds connectors above this line.
    ]
}

/// The registry of every connector.
pub fn registry() -> Registry {
    Registry::new(all()).expect("connector ids are unique (checked by a test)")
}

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connector_folder_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../connectors");
        let list = |dir: &Path, file: &str| -> Vec<String> {
            std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join(file).exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        let mut folders = list(&dir, "Cargo.toml");
        folders.extend(list(&dir.join("declarative"), "connector.yaml"));
        folders.sort();
        let mut ids: Vec<String> = all().iter().map(|c| c.id().to_string()).collect();
        ids.sort();
        assert_eq!(
            folders, ids,
            "every folder under connectors/ must be listed in enlace_connectors::all() (declarative ones under connectors/declarative/ are found by themselves), and its app id must be its folder name"
        );
        Registry::new(all()).unwrap();
    }
}
