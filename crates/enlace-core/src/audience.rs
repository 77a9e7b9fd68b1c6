//! Ad audiences (retargeting) as actions declare them, so that audiences follow consent and
//! erasure.
//!
//! An action that adds a person to an ad audience says so with [`Action::AUDIENCE`]
//! (`Some(Audience::Adds { .. })`): which input field names the audience, which hold the
//! person's email and phone, and which action of the same app takes a person out again. When
//! such an action succeeds, the runner records a membership (hashed identifiers only). When
//! the contact is erased, or withdraws its `ads` consent, a removal is queued per membership
//! and the runner calls the remove action with an [`AudienceRemoval`] as its input (the
//! action declares `Some(Audience::Removes)`): the identifiers are SHA-256 hashes of the
//! normalised email and of the E.164 phone, as ad platforms match them, never the clear
//! values.
//!
//! [`Action::AUDIENCE`]: crate::Action::AUDIENCE

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an action does to ad audiences (a `const` of the action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Adds the person in its input to an audience.
    Adds {
        /// The input field that names the audience (its value is kept as is, any JSON).
        audience_field: &'static str,
        /// The input field holding the person's email, if the action takes one.
        email_field: Option<&'static str>,
        /// The input field holding the person's phone, if the action takes one.
        phone_field: Option<&'static str>,
        /// The action of the same app that removes a person; it takes an [`AudienceRemoval`].
        remove_action: &'static str,
    },
    /// Removes a person from an audience; its input is an [`AudienceRemoval`].
    Removes,
}

/// [`Audience`] in an action's manifest (what the catalog shows and the runner reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum AudienceSpec {
    Adds {
        audience_field: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email_field: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone_field: Option<String>,
        remove_action: String,
    },
    Removes,
}

impl From<Audience> for AudienceSpec {
    fn from(a: Audience) -> Self {
        match a {
            Audience::Adds { audience_field, email_field, phone_field, remove_action } => AudienceSpec::Adds {
                audience_field: audience_field.into(),
                email_field: email_field.map(Into::into),
                phone_field: phone_field.map(Into::into),
                remove_action: remove_action.into(),
            },
            Audience::Removes => AudienceSpec::Removes,
        }
    }
}

/// The input of every remove action: the audience as the add action named it, and the
/// person's hashed identifiers (at least one is present).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceRemoval {
    /// The audience, as the add action's audience field held it.
    pub audience: Value,
    /// Hex SHA-256 of the normalised (trimmed, lowercase) email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_sha256: Option<String>,
    /// Hex SHA-256 of the phone in E.164 (`+14155552671`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_sha256: Option<String>,
}

/// Hex SHA-256 of an identifier already normalised (an email lowercased and trimmed, a
/// phone in E.164): what ad platforms match on.
pub fn sha256_hex(normalised: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(normalised.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_specs() {
        // The SHA-256 test vector of "abc".
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let spec = AudienceSpec::from(Audience::Adds {
            audience_field: "audience_id",
            email_field: Some("email"),
            phone_field: None,
            remove_action: "remove_member",
        });
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"role": "adds", "audience_field": "audience_id", "email_field": "email", "remove_action": "remove_member"})
        );
        let r: Result<AudienceRemoval, _> = serde_json::from_value(serde_json::json!({"audience": "a", "email": "x@y.z"}));
        assert!(r.is_err(), "clear identifiers are refused");
    }
}
