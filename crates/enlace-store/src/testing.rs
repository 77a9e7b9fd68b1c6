//! Helpers for tests (this crate's and the workspace's): a fresh PostgreSQL database per
//! test. Not for production use: they create and drop databases.
//!
//! The server is the one `ENLACE_TEST_POSTGRES_URL` names (an admin URL: its user may
//! create databases), by default `postgres://root@127.0.0.1:5432/test`. A test that needs
//! PostgreSQL fails, saying how to start it, when it is not reachable; it is never skipped.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

use crate::{Result, StoreError, redact_url};

/// The admin URL when `ENLACE_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/test";

/// Test databases are named with this prefix and a UUIDv7 (which holds its creation time).
const PREFIX: &str = "enlace_t_";

/// Test databases older than this are left over from runs that died: dropped.
const STALE_MS: u64 = 3_600_000;

/// The admin URL tests use.
pub fn admin_url() -> String {
    std::env::var("ENLACE_TEST_POSTGRES_URL").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string())
}

async fn admin() -> Result<(PgConnection, String)> {
    admin_at(admin_url()).await
}

async fn admin_at(url: String) -> Result<(PgConnection, String)> {
    let opts = PgConnectOptions::from_str(&url)
        .map_err(|e| StoreError::Config(format!("ENLACE_TEST_POSTGRES_URL `{}` is not a PostgreSQL URL: {e}", redact_url(&url))))?
        .log_statements(log::LevelFilter::Off);
    match PgConnection::connect_with(&opts).await {
        Ok(c) => Ok((c, url)),
        Err(e) => Err(StoreError::Config(format!(
            "the tests need PostgreSQL, and it is not reachable at `{}`: {e}. Start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
             (install it first with `apt-get install postgresql` if needed), or set \
             ENLACE_TEST_POSTGRES_URL to the URL of a server whose user may create databases",
            redact_url(&url)
        ))),
    }
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).ok_or_else(|| StoreError::Config(format!("`{}` is not a URL", redact_url(url))))?;
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    })
}

/// Creates an empty database for one test and returns its URL. Its commits do not wait for
/// the disk (`synchronous_commit = off`), which keeps the tests quick; what transactions
/// see and lock is the same.
/// Test databases left over by runs that died more than an hour ago are dropped on the way.
pub async fn postgres_database() -> Result<String> {
    let (mut c, url) = admin().await?;
    drop_stale(&mut c).await?;
    let name = format!("{PREFIX}{}", uuid::Uuid::now_v7().simple());
    // The name is made here of hex digits only: safe to put in the statement.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut c).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} SET synchronous_commit = off"))).execute(&mut c).await?;
    let _ = c.close().await;
    with_database(&url, &name)
}

/// Drops a database made by [`postgres_database`], closing its connections.
pub async fn drop_database(url: &str) -> Result<()> {
    let name = url.split('?').next().unwrap_or(url).rsplit('/').next().unwrap_or("");
    if !is_test_database(name) {
        return Err(StoreError::Config(format!("`{name}` is not a test database made by postgres_database(); not dropping it")));
    }
    let (mut c, _) = admin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut c).await?;
    let _ = c.close().await;
    Ok(())
}

fn is_test_database(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn drop_stale(c: &mut PgConnection) -> Result<()> {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let names: Vec<String> = sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'enlace\\_t\\_%'")
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    for name in names.into_iter().filter(|n| is_test_database(n)) {
        let created = uuid::Uuid::parse_str(&name[PREFIX.len()..]).ok().and_then(|u| u.get_timestamp()).map(|t| {
            let (s, n) = t.to_unix();
            s * 1000 + u64::from(n) / 1_000_000
        });
        if created.is_some_and(|t| now_ms.saturating_sub(t) > STALE_MS) {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut *c).await?;
        }
    }
    Ok(())
}

/// Where a text is still stored: `table.column` of every value, in every table of the
/// store, that contains `needle` (case-insensitive). GDPR tests prove with it that an
/// erasure left no trace of an email or a phone.
pub async fn tables_containing(store: &crate::Store, needle: &str) -> Result<Vec<String>> {
    match &store.backend {
        crate::Backend::Sqlite(b) => b.scan_text(needle).await,
        crate::Backend::Postgres(b) => b.scan_text(needle).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_says_how_to_start_postgres() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let Err(e) = admin_at(format!("postgres://root@127.0.0.1:{port}/test")).await else { panic!("nothing listens there") };
        let e = e.to_string();
        assert!(e.contains("not reachable") && e.contains("pg_ctlcluster --skip-systemctl-redirect"), "{e}");
        assert!(e.contains("ENLACE_TEST_POSTGRES_URL"), "{e}");
    }

    #[test]
    fn database_in_url_is_replaced() {
        assert_eq!(with_database("postgres://root@127.0.0.1:5432/test", "x").unwrap(), "postgres://root@127.0.0.1:5432/x");
        assert_eq!(with_database("postgres://u:p@h/test?sslmode=disable", "x").unwrap(), "postgres://u:p@h/x?sslmode=disable");
        assert_eq!(with_database("postgresql://h:5432", "x").unwrap(), "postgresql://h:5432/x");
        assert!(is_test_database(&format!("enlace_t_{}", uuid::Uuid::now_v7().simple())));
        assert!(!is_test_database("test"));
        assert!(!is_test_database("enlace_t_x; DROP TABLE y"));
    }
}
