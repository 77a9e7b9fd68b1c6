//! Secrets at rest: XChaCha20-Poly1305 with a random 192-bit nonce per value. The key comes
//! from `ENLACE_SECRET_KEY` (32 bytes, base64 or hex) or from `secret.key` in the data
//! directory, generated on first start with mode 0600. Each ciphertext is bound to the row
//! it belongs to (associated data), so a value copied to another row does not decrypt.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::StoreError;

const VERSION: u8 = 1;

/// Encrypts and decrypts secret values. `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// The key of signed links (unsubscribe links), derived from the same secret key:
    /// HMAC-SHA256(key, "enlace link signing v1").
    link_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([key])")
    }
}

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"enlace link signing v1");
        let link_key: [u8; 32] = mac.finalize().into_bytes().into();
        SecretBox { cipher: XChaCha20Poly1305::new(key.into()), link_key }
    }

    /// The signature of `data` for links of kind `context` (HMAC-SHA256 with the link key):
    /// links Enlace hands out (an unsubscribe link in an email) and takes back unchanged.
    pub fn sign_link(&self, context: &str, data: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.link_key).expect("HMAC takes any key length");
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `signature` is [`SecretBox::sign_link`]'s for `data`, compared in constant time.
    pub fn verify_link(&self, context: &str, data: &[u8], signature: &[u8]) -> bool {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.link_key).expect("HMAC takes any key length");
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.verify_slice(signature).is_ok()
    }

    /// Parses `ENLACE_SECRET_KEY`: 32 bytes as base64 (standard or URL-safe) or 64 hex digits.
    pub fn parse_key(text: &str) -> Result<[u8; 32], StoreError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).ok()
        } else {
            base64::engine::general_purpose::STANDARD.decode(t).or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t)).ok()
        };
        match bytes {
            Some(b) if b.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&b);
                Ok(k)
            }
            _ => Err(StoreError::Config(
                "ENLACE_SECRET_KEY must be 32 random bytes, written as base64 or 64 hex digits; make one with `openssl rand -base64 32`"
                    .into(),
            )),
        }
    }

    /// The key from `ENLACE_SECRET_KEY`, else from `<dir>/secret.key` (made on first use,
    /// mode 0600).
    pub fn load(env_key: Option<&str>, dir: Option<&Path>) -> Result<Self, StoreError> {
        if let Some(k) = env_key.filter(|k| !k.trim().is_empty()) {
            return Ok(SecretBox::from_key(&SecretBox::parse_key(k)?));
        }
        let Some(dir) = dir else {
            return Err(StoreError::Config(
                "no secret key: set ENLACE_SECRET_KEY (32 random bytes, base64), or give a data directory to keep a generated key in"
                    .into(),
            ));
        };
        let path = dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(SecretBox::from_key(
                &SecretBox::parse_key(&text)
                    .map_err(|_| StoreError::Config(format!("{} is not a valid key file (32 bytes, base64)", path.display())))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let text = base64::engine::general_purpose::STANDARD.encode(key);
                write_private(&path, text.as_bytes())
                    .map_err(|e| StoreError::Config(format!("could not write {}: {e}", path.display())))?;
                Ok(SecretBox::from_key(&key))
            }
            Err(e) => Err(StoreError::Config(format!("could not read {}: {e}", path.display()))),
        }
    }

    /// Encrypts `plain`, bound to `context` (for example `secret:NAME`).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad: context.as_bytes() })
            .map_err(|_| StoreError::Crypto("encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + 24 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < 25 || sealed[0] != VERSION {
            return Err(StoreError::Crypto(format!("{context}: not a sealed value of a known version")));
        }
        self.cipher.decrypt(&nonce_of(sealed), Payload { msg: &sealed[25..], aad: context.as_bytes() }).map_err(|_| {
            StoreError::Crypto(format!(
                "{context}: cannot decrypt: the secret key differs from the one it was stored with (ENLACE_SECRET_KEY or secret.key)"
            ))
        })
    }
}

fn nonce_of(sealed: &[u8]) -> XNonce {
    let mut n = [0u8; 24];
    n.copy_from_slice(&sealed[1..25]);
    XNonce::from(n)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_context_binding() {
        let b = SecretBox::from_key(&[7u8; 32]);
        let sealed = b.seal("secret:A", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(b.open("secret:A", &sealed).unwrap(), b"hunter2");
        assert!(b.open("secret:B", &sealed).is_err(), "a value moved to another row must not decrypt");
        let other = SecretBox::from_key(&[8u8; 32]);
        assert!(other.open("secret:A", &sealed).unwrap_err().to_string().contains("secret key differs"));
    }

    #[test]
    fn link_signatures_verify_only_for_their_data_context_and_key() {
        let a = SecretBox::from_key(&[7u8; 32]);
        let sig = a.sign_link("unsubscribe", b"ana@example.com");
        assert!(a.verify_link("unsubscribe", b"ana@example.com", &sig));
        assert!(!a.verify_link("unsubscribe", b"bo@example.com", &sig));
        assert!(!a.verify_link("other", b"ana@example.com", &sig));
        assert!(!a.verify_link("unsubscribe", b"ana@example.com", &sig[..31]));
        let b = SecretBox::from_key(&[8u8; 32]);
        assert!(!b.verify_link("unsubscribe", b"ana@example.com", &sig));
        assert_eq!(sig, SecretBox::from_key(&[7u8; 32]).sign_link("unsubscribe", b"ana@example.com"), "stable across restarts");
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("enlace-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("secret.key"));
        let a = SecretBox::load(None, Some(&dir)).unwrap();
        let sealed = a.seal("x", b"v").unwrap();
        let b = SecretBox::load(None, Some(&dir)).unwrap();
        assert_eq!(b.open("x", &sealed).unwrap(), b"v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("secret.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parse_key_forms() {
        assert!(SecretBox::parse_key(&"ab".repeat(32)).is_ok());
        assert!(SecretBox::parse_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
        assert!(SecretBox::parse_key("short").unwrap_err().to_string().contains("32 random bytes"));
    }
}
