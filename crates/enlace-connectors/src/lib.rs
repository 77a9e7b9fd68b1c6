//! Every connector of this installation, one line each. `enlace connector new NAME`
//! ([`scaffold`]) creates a connector's folder and registers it (the root `Cargo.toml`'s
//! workspace dependencies, this crate's `Cargo.toml`, one line in [`all`]). A test checks
//! that every folder under `connectors/` is listed here, and the conformance test
//! (`src/conformance.rs`) checks every connector against the connector specification.

use enlace_core::{Connector, Registry};

pub mod docs;
pub mod scaffold;

/// Every connector, built-in apps first.
pub fn all() -> Vec<Connector> {
    vec![
        enlace_connector_webhook::connector(),
        enlace_connector_schedule::connector(),
        enlace_connector_enlace::connector(),
        enlace_connector_contacts::connector(),
        enlace_connector_http::connector(),
        enlace_connector_smtp::connector(),
        enlace_connector_imap::connector(),
        enlace_connector_slack::connector(),
        enlace_connector_twilio::connector(),
        enlace_connector_sendgrid::connector(),
        enlace_connector_mailchimp::connector(),
        enlace_connector_hubspot::connector(),
        enlace_connector_google_drive::connector(),
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
        let mut folders: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("Cargo.toml").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        let mut ids: Vec<String> = all().iter().map(|c| c.id().to_string()).collect();
        ids.sort();
        assert_eq!(
            folders, ids,
            "every folder under connectors/ must be listed in enlace_connectors::all(), and its app id must be its folder name"
        );
        Registry::new(all()).unwrap();
    }
}
