//! Masking secrets in what run history keeps: every occurrence of a secret's value in a
//! string becomes `[secret]`, and the values of credential-looking headers are hidden too.

use serde_json::Value;

pub const MASK: &str = "[secret]";

/// Header names whose values are always hidden in recorded inputs.
const SENSITIVE_KEYS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "password",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "client_secret",
];

/// What to hide.
#[derive(Default, Clone)]
pub struct Masker {
    /// Secret values, longest first so that a secret containing another is masked whole.
    values: Vec<String>,
}

impl Masker {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        // Very short values would mask ordinary text; a secret under 4 characters is masked
        // only where it stands alone.
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Masker { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A masked copy.
    pub fn mask(&self, v: &Value) -> Value {
        let mut out = v.clone();
        self.mask_in_place(&mut out);
        out
    }

    pub fn mask_in_place(&self, v: &mut Value) {
        match v {
            Value::String(s) => self.mask_str(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.mask_in_place(i)),
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    if SENSITIVE_KEYS.contains(&k.to_ascii_lowercase().as_str())
                        && !matches!(x, Value::Null | Value::Object(_) | Value::Array(_))
                    {
                        *x = Value::String(MASK.into());
                    } else {
                        self.mask_in_place(x);
                    }
                }
            }
            _ => {}
        }
    }

    fn mask_str(&self, s: &mut String) {
        for secret in &self.values {
            if secret.len() < 4 {
                if s == secret {
                    *s = MASK.into();
                }
                continue;
            }
            if s.contains(secret.as_str()) {
                *s = s.replace(secret.as_str(), MASK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_values_and_sensitive_keys() {
        let m = Masker::new(["s3cr3t-value".to_string()]);
        let v = json!({"url": "https://x/?k=s3cr3t-value", "headers": {"Authorization": "Bearer abc", "X-Other": "fine"}, "list": ["s3cr3t-value"]});
        let masked = m.mask(&v);
        assert_eq!(
            masked,
            json!({"url": "https://x/?k=[secret]", "headers": {"Authorization": "[secret]", "X-Other": "fine"}, "list": ["[secret]"]})
        );
    }
}
