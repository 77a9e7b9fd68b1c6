//! Signed links: the one-click unsubscribe address a marketing email carries
//! (`<public_url>/u/<token>`). The token holds the address and the purpose, and the
//! installation's signature over them (`Store::sign_link`, a key derived from the secret
//! key), so it needs no table, works on every node, stays valid across restarts and cannot
//! be forged or pointed at another address. Form links (`<public_url>/f/<form>?t=<token>`)
//! also carry their expiry under the signature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use enlace_store::Store;

/// The signing context of unsubscribe links.
const UNSUBSCRIBE: &str = "unsubscribe";

/// What an unsubscribe token says: who, from what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub email: String,
    pub purpose: String,
}

/// The token of an unsubscribe link: `base64url(email "\n" purpose) "." base64url(signature)`.
pub fn unsubscribe_token(store: &Store, email: &str, purpose: &str) -> String {
    let data = format!("{}\n{}", email.trim().to_lowercase(), purpose.trim());
    let sig = store.sign_link(UNSUBSCRIBE, data.as_bytes());
    format!("{}.{}", URL_SAFE_NO_PAD.encode(data.as_bytes()), URL_SAFE_NO_PAD.encode(sig))
}

/// Reads a token back; `None` when it is malformed or its signature is not ours.
pub fn read_unsubscribe_token(store: &Store, token: &str) -> Option<Unsubscribe> {
    let (data, sig) = token.split_once('.')?;
    let data = URL_SAFE_NO_PAD.decode(data).ok()?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    if !store.verify_link(UNSUBSCRIBE, &data, &sig) {
        return None;
    }
    let text = String::from_utf8(data).ok()?;
    let (email, purpose) = text.split_once('\n')?;
    Some(Unsubscribe { email: email.to_string(), purpose: purpose.to_string() })
}

/// The signing context of contact tokens (web tracking).
const CONTACT: &str = "contact";

/// A contact token: `base64url(contact id) "." base64url(signature)`. It names a contact
/// to `POST /track` (a website's page views) without an API token; tracked email links carry
/// it to the site. It holds no email or other personal data, only the contact's random id.
pub fn contact_token(store: &Store, contact_id: &str) -> String {
    let sig = store.sign_link(CONTACT, contact_id.as_bytes());
    format!("{}.{}", URL_SAFE_NO_PAD.encode(contact_id.as_bytes()), URL_SAFE_NO_PAD.encode(sig))
}

/// The contact id a token names; `None` when it is malformed or not signed by this
/// installation.
pub fn read_contact_token(store: &Store, token: &str) -> Option<String> {
    let (data, sig) = token.split_once('.')?;
    let data = URL_SAFE_NO_PAD.decode(data).ok()?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    if !store.verify_link(CONTACT, &data, &sig) {
        return None;
    }
    String::from_utf8(data).ok().filter(|id| !id.is_empty())
}

/// The signing context of form links.
const FORM: &str = "form";

/// What a form link's token says: which form, for which contact, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormToken {
    pub form: String,
    pub contact_id: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// Why a form token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRefused {
    /// Malformed, or not signed by this installation (tampered with, or another form's).
    Invalid,
    /// Signed, but past its time.
    Expired { form: String, expires_at: i64 },
}

/// The token of a form link (`/f/<form>?t=<token>`): `base64url(form "\n" contact id "\n"
/// expiry ms) "." base64url(signature)`. It names a contact by its random id (no email in the
/// address) and stops working at `expires_at`.
pub fn form_token(store: &Store, form: &str, contact_id: &str, expires_at: i64) -> String {
    let data = format!("{form}\n{contact_id}\n{expires_at}");
    let sig = store.sign_link(FORM, data.as_bytes());
    format!("{}.{}", URL_SAFE_NO_PAD.encode(data.as_bytes()), URL_SAFE_NO_PAD.encode(sig))
}

/// Reads a form token back at `now`.
pub fn read_form_token(store: &Store, token: &str, now: i64) -> Result<FormToken, LinkRefused> {
    let (data, sig) = token.split_once('.').ok_or(LinkRefused::Invalid)?;
    let data = URL_SAFE_NO_PAD.decode(data).map_err(|_| LinkRefused::Invalid)?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| LinkRefused::Invalid)?;
    if !store.verify_link(FORM, &data, &sig) {
        return Err(LinkRefused::Invalid);
    }
    let text = String::from_utf8(data).map_err(|_| LinkRefused::Invalid)?;
    let mut parts = text.splitn(3, '\n');
    let (form, contact_id, exp) = (parts.next(), parts.next(), parts.next());
    let (Some(form), Some(contact_id), Some(exp)) = (form, contact_id, exp) else { return Err(LinkRefused::Invalid) };
    let expires_at: i64 = exp.parse().map_err(|_| LinkRefused::Invalid)?;
    if expires_at <= now {
        return Err(LinkRefused::Expired { form: form.to_string(), expires_at });
    }
    Ok(FormToken { form: form.to_string(), contact_id: contact_id.to_string(), expires_at })
}

/// What an open or click token says: the recipient, the message, and for a click the
/// address it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub email: String,
    pub message: String,
    pub url: Option<String>,
}

fn tracking_token(store: &Store, context: &str, email: &str, message: &str, url: &str) -> String {
    let data = format!("{}\n{}\n{}", email.trim().to_lowercase(), message, url);
    let sig = store.sign_link(context, data.as_bytes());
    format!("{}.{}", URL_SAFE_NO_PAD.encode(data.as_bytes()), URL_SAFE_NO_PAD.encode(sig))
}

fn read_tracking(store: &Store, context: &str, token: &str) -> Option<Tracked> {
    let (data, sig) = token.split_once('.')?;
    let data = URL_SAFE_NO_PAD.decode(data).ok()?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    if !store.verify_link(context, &data, &sig) {
        return None;
    }
    let text = String::from_utf8(data).ok()?;
    let mut parts = text.splitn(3, '\n');
    let (email, message, url) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Tracked { email: email.into(), message: message.into(), url: (!url.is_empty()).then(|| url.to_string()) })
}

/// The token of an open pixel (`/o/{token}`).
pub fn open_token(store: &Store, email: &str, message: &str) -> String {
    tracking_token(store, "open", email, message, "")
}

/// The token of a click link (`/c/{token}`), which leads to `url` only.
pub fn click_token(store: &Store, email: &str, message: &str, url: &str) -> String {
    tracking_token(store, "click", email, message, url)
}

pub fn read_open_token(store: &Store, token: &str) -> Option<Tracked> {
    read_tracking(store, "open", token)
}

pub fn read_click_token(store: &Store, token: &str) -> Option<Tracked> {
    read_tracking(store, "click", token).filter(|t| t.url.is_some())
}

/// The runner's [`enlace_core::Links`]: the store's key and the public address.
pub(crate) struct SignedLinks {
    pub store: Store,
    pub public_url: Option<String>,
}

impl enlace_core::Links for SignedLinks {
    fn unsubscribe_url(&self, email: &str, purpose: &str) -> Result<String, String> {
        let Some(base) = self.public_url.as_deref().filter(|b| !b.is_empty()) else {
            return Err("unsubscribe links need Enlace's public address: set ENLACE_PUBLIC_URL (or --public-url)".into());
        };
        Ok(format!("{}/u/{}", base.trim_end_matches('/'), unsubscribe_token(&self.store, email, purpose)))
    }

    fn open_url(&self, email: &str, message: &str) -> Result<String, String> {
        let base = self.base("open tracking")?;
        Ok(format!("{base}/o/{}", open_token(&self.store, email, message)))
    }

    fn click_url(&self, email: &str, message: &str, url: &str) -> Result<String, String> {
        let base = self.base("click tracking")?;
        Ok(format!("{base}/c/{}", click_token(&self.store, email, message, url)))
    }
}

impl SignedLinks {
    fn base(&self, what: &str) -> Result<String, String> {
        match self.public_url.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => Ok(b.trim_end_matches('/').to_string()),
            None => Err(format!("{what} needs Enlace's public address: set ENLACE_PUBLIC_URL (or --public-url)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_read_back_and_refuse_tampering() {
        let store = Store::temporary().await.unwrap();
        let t = unsubscribe_token(&store, " Ana@Example.com ", "marketing");
        assert_eq!(read_unsubscribe_token(&store, &t), Some(Unsubscribe { email: "ana@example.com".into(), purpose: "marketing".into() }));
        // Another address with the same signature, a cut signature, garbage: refused.
        let (_, sig) = t.split_once('.').unwrap();
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode("bo@example.com\nmarketing"));
        assert_eq!(read_unsubscribe_token(&store, &forged), None);
        assert_eq!(read_unsubscribe_token(&store, &t[..t.len() - 2]), None);
        assert_eq!(read_unsubscribe_token(&store, "nonsense"), None);
        // Another installation's key does not read it.
        let other = Store::temporary().await.unwrap();
        assert_eq!(read_unsubscribe_token(&other, &t), None);
    }

    #[tokio::test]
    async fn contact_tokens_read_back_and_refuse_tampering() {
        let store = Store::temporary().await.unwrap();
        let t = contact_token(&store, "0193a1f2-7c4e-7d2a-9b1e-5f3c2a1b0c9d");
        assert_eq!(read_contact_token(&store, &t).as_deref(), Some("0193a1f2-7c4e-7d2a-9b1e-5f3c2a1b0c9d"));
        let (_, sig) = t.split_once('.').unwrap();
        assert_eq!(read_contact_token(&store, &format!("{}.{sig}", URL_SAFE_NO_PAD.encode("another-id"))), None);
        // An unsubscribe token is not a contact token (another signing context).
        assert_eq!(read_contact_token(&store, &unsubscribe_token(&store, "a@b.c", "m")), None);
        assert_eq!(read_contact_token(&Store::temporary().await.unwrap(), &t), None);
    }

    #[tokio::test]
    async fn form_tokens_expire_and_refuse_tampering() {
        let store = Store::temporary().await.unwrap();
        let t = form_token(&store, "interests", "c-1", 2_000);
        assert_eq!(
            read_form_token(&store, &t, 1_999),
            Ok(FormToken { form: "interests".into(), contact_id: "c-1".into(), expires_at: 2_000 })
        );
        assert_eq!(read_form_token(&store, &t, 2_000), Err(LinkRefused::Expired { form: "interests".into(), expires_at: 2_000 }));
        // A later expiry (or another contact) with the same signature: refused.
        let (_, sig) = t.split_once('.').unwrap();
        assert_eq!(
            read_form_token(&store, &format!("{}.{sig}", URL_SAFE_NO_PAD.encode("interests\nc-1\n9999999")), 0),
            Err(LinkRefused::Invalid)
        );
        assert_eq!(read_form_token(&store, &contact_token(&store, "c-1"), 0), Err(LinkRefused::Invalid));
        assert_eq!(read_form_token(&Store::temporary().await.unwrap(), &t, 0), Err(LinkRefused::Invalid));
    }

    #[tokio::test]
    async fn click_tokens_lead_only_where_they_were_signed() {
        let store = Store::temporary().await.unwrap();
        let t = click_token(&store, "Ana@Example.com", "run-1", "https://shop.example.com/a?b=1");
        let got = read_click_token(&store, &t).unwrap();
        assert_eq!(
            (got.email.as_str(), got.message.as_str(), got.url.as_deref()),
            ("ana@example.com", "run-1", Some("https://shop.example.com/a?b=1"))
        );
        let (_, sig) = t.split_once('.').unwrap();
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode("ana@example.com\nrun-1\nhttps://evil.example/"));
        assert_eq!(read_click_token(&store, &forged), None);
        // An open token is not a click token, and has no address to lead to.
        let o = open_token(&store, "ana@example.com", "run-1");
        assert_eq!(read_click_token(&store, &o), None);
        assert_eq!(read_open_token(&store, &o).unwrap().url, None);
    }
}
