//! Putting a connection's credentials on a request.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};

use enlace_core::http::HttpRequest;
use enlace_core::{ConnectorError, Credentials};

/// Sets the request's authentication headers from `creds`: `Authorization: Bearer` for
/// [`Credentials::Bearer`] and [`Credentials::OAuth2`], the named header for
/// [`Credentials::ApiKey`], `Authorization: Basic` (base64 of `user:password`) for
/// [`Credentials::Basic`]; nothing for [`Credentials::None`]. An SMTP or IMAP connection is a
/// [`ConnectorError::BadInput`] on the step's `connection`. Existing headers of the same
/// name are replaced. Every value set is marked sensitive, so a `Debug` of the request
/// shows `Sensitive` instead of the secret.
///
/// A connection whose values cannot be HTTP headers (a header name with a space, a token
/// with a line break) is an [`ConnectorError::Auth`] error: the connection needs repair.
pub fn apply_credentials(req: &mut HttpRequest, creds: &Credentials) -> Result<(), ConnectorError> {
    let (name, value) = match creds {
        Credentials::None => return Ok(()),
        Credentials::Bearer { token } => (AUTHORIZATION, format!("Bearer {}", token.expose())),
        Credentials::OAuth2 { access_token } => (AUTHORIZATION, format!("Bearer {}", access_token.expose())),
        // The runner hands actions a fresh plain token; a grant reaching here uses the token it holds.
        Credentials::OAuth2Grant(g) => match g.access_token.as_ref().filter(|t| !t.is_empty()) {
            Some(t) => (AUTHORIZATION, format!("Bearer {}", t.expose())),
            None => {
                return Err(ConnectorError::auth(
                    "the connection has not been authorized yet: sign in through POST /api/v1/connections/{id}/authorize",
                ));
            }
        },
        Credentials::ApiKey { header, key } => {
            let name = HeaderName::from_bytes(header.trim().as_bytes()).map_err(|_| {
                ConnectorError::auth(format!(
                    "the connection's API key header `{header}` is not a valid header name; repair the connection"
                ))
            })?;
            (name, key.expose().to_string())
        }
        Credentials::Basic { username, password } => {
            let encoded = STANDARD.encode(format!("{username}:{}", password.expose()));
            (AUTHORIZATION, format!("Basic {encoded}"))
        }
        Credentials::Smtp(_) => {
            return Err(ConnectorError::bad_input(
                "connection",
                "this is an SMTP connection, which cannot authenticate an HTTP request; use a bearer, api_key or basic connection",
            ));
        }
        Credentials::Imap(_) => {
            return Err(ConnectorError::bad_input(
                "connection",
                "this is an IMAP connection, which cannot authenticate an HTTP request; use a bearer, api_key or basic connection",
            ));
        }
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| {
        ConnectorError::auth(format!(
            "the connection's credentials contain characters that cannot be sent in the `{name}` header; repair the connection"
        ))
    })?;
    value.set_sensitive(true);
    req.headers.insert(name, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use enlace_core::Secret;
    use enlace_core::http::Method;

    fn applied(creds: Credentials) -> HttpRequest {
        let mut req = HttpRequest::new(Method::GET, "https://api.example.com/");
        apply_credentials(&mut req, &creds).expect("applies");
        req
    }

    #[test]
    fn each_kind_sets_its_header() {
        let req = applied(Credentials::Bearer { token: Secret::new("tok") });
        assert_eq!(req.headers[AUTHORIZATION], "Bearer tok");
        let req = applied(Credentials::OAuth2 { access_token: Secret::new("at") });
        assert_eq!(req.headers[AUTHORIZATION], "Bearer at");
        let req = applied(Credentials::ApiKey { header: "X-Api-Key".into(), key: Secret::new("k1") });
        assert_eq!(req.headers["x-api-key"], "k1");
        let req = applied(Credentials::Basic { username: "Aladdin".into(), password: Secret::new("open sesame") });
        assert_eq!(req.headers[AUTHORIZATION], "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        let req = applied(Credentials::None);
        assert!(req.headers.is_empty());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let req = applied(Credentials::Bearer { token: Secret::new("tok_live_123") });
        let shown = format!("{req:?}");
        assert!(!shown.contains("tok_live_123"), "{shown}");
    }

    #[test]
    fn unusable_connections_are_auth_errors() {
        let mut req = HttpRequest::new(Method::GET, "https://api.example.com/");
        let err = apply_credentials(&mut req, &Credentials::ApiKey { header: "X Bad".into(), key: Secret::new("k") }).unwrap_err();
        assert_eq!(err.class(), enlace_core::ErrorClass::Auth);
        let err = apply_credentials(&mut req, &Credentials::Bearer { token: Secret::new("a\nb") }).unwrap_err();
        assert_eq!(err.class(), enlace_core::ErrorClass::Auth);
        assert!(!err.message().contains("a\nb"));
    }

    #[test]
    fn mail_connections_cannot_authenticate_http() {
        let mut req = HttpRequest::new(Method::GET, "https://api.example.com/");
        let imap = Credentials::Imap(enlace_core::ImapCredentials {
            host: "imap.example.com".into(),
            username: "ana".into(),
            password: Secret::new("pw"),
            ..Default::default()
        });
        let err = apply_credentials(&mut req, &imap).unwrap_err();
        assert_eq!(err.class(), enlace_core::ErrorClass::BadInput);
        assert!(err.message().contains("IMAP connection"), "{err:?}");
        assert!(req.headers.is_empty());
    }
}
