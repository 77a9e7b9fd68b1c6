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
        /// The input field holding a list of people (objects with the email and phone
        /// fields above), for an action that adds many at once; `None`: one person, at the
        /// top level of the input.
        people_field: Option<&'static str>,
        /// How the platform normalises identifiers before hashing: the membership keeps the
        /// hashes the platform matches, so that the remove action sends them as they are.
        hashing: Hashing,
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        people_field: Option<String>,
        #[serde(default, skip_serializing_if = "Hashing::is_standard")]
        hashing: Hashing,
    },
    Removes,
}

impl From<Audience> for AudienceSpec {
    fn from(a: Audience) -> Self {
        match a {
            Audience::Adds { audience_field, email_field, phone_field, remove_action, people_field, hashing } => AudienceSpec::Adds {
                audience_field: audience_field.into(),
                email_field: email_field.map(Into::into),
                phone_field: phone_field.map(Into::into),
                remove_action: remove_action.into(),
                people_field: people_field.map(Into::into),
                hashing,
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
    /// Hex SHA-256 of the normalised (trimmed, lowercase) email, as the app's [`Hashing`]
    /// normalises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_sha256: Option<String>,
    /// Hex SHA-256 of the phone as the app's [`Hashing`] writes it: E.164 (`+14155552671`)
    /// by default, digits only with the country code (`14155552671`) for Meta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_sha256: Option<String>,
}

/// Hex SHA-256 of an identifier already normalised (an email lowercased and trimmed, a
/// phone in E.164): what ad platforms match on.
pub fn sha256_hex(normalised: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(normalised.as_bytes()))
}

/// How an ad platform normalises a person's identifiers before it hashes them. The pure
/// functions of each platform are in [`meta`] and [`google`]; this picks one set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hashing {
    /// Email trimmed and lowercased, phone in E.164 with its `+`: Google's rules (Customer
    /// Match), and how the store hashes a contact to find its memberships.
    #[default]
    Standard,
    /// Email trimmed and lowercased, phone as digits only with the country code and no
    /// `+` (Meta's Custom Audiences).
    Meta,
}

impl Hashing {
    pub fn is_standard(&self) -> bool {
        *self == Hashing::Standard
    }

    /// Hex SHA-256 of the email normalised for this platform.
    pub fn email_sha256(&self, raw: &str) -> Result<String, String> {
        match self {
            Hashing::Standard => google::email(raw),
            Hashing::Meta => meta::email(raw),
        }
        .map(|e| sha256_hex(&e))
    }

    /// Hex SHA-256 of the phone normalised for this platform (a phone in international
    /// form: `+` or `00` and the country code).
    pub fn phone_sha256(&self, raw: &str) -> Result<String, String> {
        match self {
            Hashing::Standard => google::phone(raw, None),
            Hashing::Meta => meta::phone(raw, None),
        }
        .map(|p| sha256_hex(&p))
    }
}

/// A phone number in E.164 (`+14155552671`) from the ways people write one
/// (`+1 (415) 555-2671`, `0044 20 7946 0958`, `+44 (0)20 7946 0958`). A number without
/// the country code (`(650) 555-1212`) is read in `region` (ISO 3166 alpha-2, `US`) when
/// one is given, and refused otherwise.
pub fn e164(raw: &str, region: Option<&str>) -> Result<String, String> {
    let s = raw.trim();
    let expected = "write it in international form: a plus sign, the country code and the number, like +14155552671";
    let intl = if let Some(rest) = s.strip_prefix("00") { Some(format!("+{rest}")) } else { s.starts_with('+').then(|| s.to_string()) };
    let allowed = |t: &str| t.chars().all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.' | '/'));
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let body = intl.as_deref().map(|t| &t[1..]).unwrap_or(s);
    if s.is_empty() || !allowed(body) || !(5..=17).contains(&digits) {
        return Err(format!("`{s}` is not a phone number; {expected}"));
    }
    let parsed = match (&intl, region) {
        (Some(t), _) => phonenumber::parse(None, t),
        (None, Some(r)) => {
            let id: phonenumber::country::Id =
                r.trim().to_ascii_uppercase().parse().map_err(|_| format!("`{r}` is not a country code (ISO 3166 alpha-2, like `US`)"))?;
            phonenumber::parse(Some(id), s)
        }
        (None, None) => return Err(format!("`{s}` has no country code; {expected}")),
    };
    match parsed {
        Ok(n) => Ok(n.format().mode(phonenumber::Mode::E164).to_string()),
        Err(e) => Err(format!("`{s}` is not a phone number ({e}); {expected}")),
    }
}

/// Meta's normalisation (Custom Audiences and the Conversions API, "Customer information
/// parameters"): email trimmed and lowercased; phone as digits only, country code first,
/// no `+` and no leading zeros; names lowercased without punctuation (UTF-8 kept);
/// country as a lowercase two-letter code.
pub mod meta {
    /// `  John_Smith@gmail.com ` -> `john_smith@gmail.com`.
    pub fn email(raw: &str) -> Result<String, String> {
        crate::contacts::normalize_email(raw)
    }

    /// `+1 (650) 555-1212` -> `16505551212` (`(650)555-1212` with `region` `US` too).
    pub fn phone(raw: &str, region: Option<&str>) -> Result<String, String> {
        super::e164(raw, region).map(|p| p.trim_start_matches('+').to_string())
    }

    /// `Mary` -> `mary`, `Valéry` -> `valéry`, `O'Neil` -> `oneil`; `None` when nothing
    /// is left.
    pub fn name(raw: &str) -> Option<String> {
        let n: String = raw.trim().to_lowercase().chars().filter(|c| c.is_alphanumeric() || *c == ' ').collect();
        let n = n.split_whitespace().collect::<Vec<_>>().join(" ");
        (!n.is_empty()).then_some(n)
    }

    /// `US` -> `us`; an ISO 3166 alpha-2 code.
    pub fn country(raw: &str) -> Result<String, String> {
        let c = raw.trim().to_ascii_lowercase();
        if c.len() == 2 && c.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(c)
        } else {
            Err(format!("`{raw}` is not a two-letter country code (ISO 3166 alpha-2, like `US`)"))
        }
    }
}

/// Google's normalisation (Customer Match, "Customer Match" in the Google Ads API guides):
/// email trimmed and lowercased (periods in gmail.com addresses are kept: Google accepts
/// them); phone in E.164 with its `+`; first and last names trimmed and lowercased; the
/// country code and postal code are sent in clear.
pub mod google {
    /// ` Customer@Example.com` -> `customer@example.com`.
    pub fn email(raw: &str) -> Result<String, String> {
        crate::contacts::normalize_email(raw)
    }

    /// `+1 212-565-0000` -> `+12125650000`.
    pub fn phone(raw: &str, region: Option<&str>) -> Result<String, String> {
        super::e164(raw, region)
    }

    /// ` John ` -> `john`; `None` when empty.
    pub fn name(raw: &str) -> Option<String> {
        let n = raw.trim().to_lowercase();
        (!n.is_empty()).then_some(n)
    }

    /// `us` -> `US`; an ISO 3166 alpha-2 code (sent in clear).
    pub fn country(raw: &str) -> Result<String, String> {
        let c = raw.trim().to_ascii_uppercase();
        if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(c)
        } else {
            Err(format!("`{raw}` is not a two-letter country code (ISO 3166 alpha-2, like `US`)"))
        }
    }
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
            people_field: None,
            hashing: Hashing::Standard,
        });
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"role": "adds", "audience_field": "audience_id", "email_field": "email", "remove_action": "remove_member"})
        );
        let r: Result<AudienceRemoval, _> = serde_json::from_value(serde_json::json!({"audience": "a", "email": "x@y.z"}));
        assert!(r.is_err(), "clear identifiers are refused");
    }

    /// Meta's own examples ("Customer information parameters": input, normalised form,
    /// expected SHA-256).
    #[test]
    fn meta_vectors() {
        let e = meta::email("  John_Smith@gmail.com ").unwrap();
        assert_eq!(e, "john_smith@gmail.com");
        assert_eq!(sha256_hex(&e), "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f");
        // "US phone number (650)555-1212" -> 16505551212.
        let p = meta::phone("(650)555-1212", Some("US")).unwrap();
        assert_eq!(p, "16505551212");
        assert_eq!(sha256_hex(&p), "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176");
        assert_eq!(meta::phone("+1 (650) 555-1212", None).unwrap(), "16505551212");
        assert_eq!(meta::phone("001 650 555 1212", None).unwrap(), "16505551212");
        assert_eq!(
            Hashing::Meta.phone_sha256("+1 (650) 555-1212").unwrap(),
            "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
        );
        assert_eq!(
            Hashing::Meta.email_sha256("John_Smith@gmail.com").unwrap(),
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
        );
        for (input, normal, hash) in [
            ("Mary", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
            ("정", "정", "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"),
            ("Valéry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"),
        ] {
            let n = meta::name(input).unwrap();
            assert_eq!(n, normal);
            assert_eq!(sha256_hex(&n), hash, "{input}");
        }
        assert_eq!(meta::name(" O'Neil. ").as_deref(), Some("oneil"));
        assert_eq!(meta::country("US").unwrap(), "us");
        // No country code and no region: refused, not hashed into something that never matches.
        let err = meta::phone("(650)555-1212", None).unwrap_err();
        assert!(err.contains("country code"), "{err}");
        assert!(meta::phone("call me", None).is_err());
    }

    /// Google's examples (Customer Match guide and its code samples: E.164 `+12125650000`,
    /// `+442070313000`; `customer@example.com`, `John`, `Doe`), hashed with SHA-256 as
    /// `sha256sum` gives it.
    #[test]
    fn google_vectors() {
        assert_eq!(google::phone("+1 212-565-0000", None).unwrap(), "+12125650000");
        assert_eq!(google::phone("+44 (0)20 7031 3000", None).unwrap(), "+442070313000");
        assert_eq!(google::phone("020 7031 3000", Some("GB")).unwrap(), "+442070313000");
        assert_eq!(
            Hashing::Standard.phone_sha256("+1 (212) 565-0000").unwrap(),
            "d360a79e746532a6a1e7b8164440b04cdd8797e23126f7a4de7a4b67fdcdba98"
        );
        assert_eq!(
            Hashing::Standard.email_sha256(" Customer@Example.com ").unwrap(),
            "e233d4a29013e9d87150c6237c6777bedf379ebf1acdc5d6126fec7e8bb74fb5"
        );
        assert_eq!(google::name(" John ").as_deref(), Some("john"));
        assert_eq!(sha256_hex(&google::name("Doe").unwrap()), "799ef92a11af918e3fb741df42934f3b568ed2d93ac1df74f1b8d41a27932a6f");
        assert_eq!(google::country("us").unwrap(), "US");
        // Gmail periods are kept (Google accepts them).
        assert_eq!(google::email("Jane.Doe@gmail.com").unwrap(), "jane.doe@gmail.com");
        assert!(google::phone("2125650000", None).is_err());
    }

    #[test]
    fn platforms_hash_phones_differently() {
        let (g, m) = (Hashing::Standard.phone_sha256("+14155552671").unwrap(), Hashing::Meta.phone_sha256("+14155552671").unwrap());
        assert_eq!(g, sha256_hex("+14155552671"));
        assert_eq!(m, sha256_hex("14155552671"));
        assert_ne!(g, m);
    }
}
