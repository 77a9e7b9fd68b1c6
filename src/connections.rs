//! `enlace connections`: create, test, list, show, rename and delete connections, on the
//! store directly (it works beside a running server), with the API's own checks
//! (`enlace_web::api::connections`). Secrets are never taken as flags, and no output shows
//! a credential.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use enlace_core::{RateLimit, accepted_kinds};
use enlace_web::api::connections::{NewConnection, check_name, check_new, connection_view, run_test, takes_connections};
use enlace_web::error::ApiError;
use serde_json::{Map, Value, json};

use crate::{StoreArgs, open_store, transport};

#[derive(Subcommand)]
pub enum ConnectionsCommand {
    /// Create a connection. Secrets are never flags: give every field in a JSON file
    /// (`--credentials-file`), or the non-secret fields as flags and the secret (password,
    /// token or key) on standard input.
    #[command(
        after_help = "Examples:\n  printf %s \"$SMTP_PASSWORD\" | enlace connections create mail --app smtp \\\n      --host smtp.example.com --port 587 --username news@example.com --tls starttls\n  enlace connections create crm --app http --credentials-file crm.json\n      (crm.json: {\"kind\": \"bearer\", \"token\": \"...\"})"
    )]
    Create(Box<CreateArgs>),
    /// Check a connection with its app (for SMTP: connect, encrypt, log in, quit; nothing is
    /// sent) and record the outcome on it. Exit 1 when the check fails.
    Test {
        /// The connection's id.
        id: String,
    },
    /// List connections (never their credentials).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one connection as JSON (never its credentials).
    Show {
        /// The connection's id.
        id: String,
    },
    /// Change a connection's label; its id, which recipes reference, stays.
    Rename {
        /// The connection's id.
        id: String,
        /// The new label.
        name: String,
    },
    /// Delete a connection. Steps that use it fail until it is created again.
    Delete {
        /// The connection's id.
        id: String,
    },
    /// Start (or restart) the sign-in of an OAuth2 connection: prints the address to open
    /// in a browser. The app sends the browser back to the running server's
    /// `<public-url>/oauth/callback`, which stores the tokens and resumes waiting runs.
    Authorize {
        /// The connection's id.
        id: String,
        /// The server's address as browsers reach it (the `--public-url` of `enlace serve`).
        #[arg(long, env = "ENLACE_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
        public_url: String,
    },
}

/// A runner on the store, started nowhere: what the connection commands need to refresh a
/// token or start a sign-in exactly as the server does.
fn idle_runner(store: &enlace_store::Store) -> Result<enlace_runner::Runner> {
    Ok(enlace_runner::Runner::new(
        store.clone(),
        enlace_connectors::registry(),
        enlace_runner::RunnerConfig::default(),
        transport()?,
        Arc::new(enlace_runner::SystemClock),
    ))
}

#[derive(Args)]
pub struct CreateArgs {
    /// The id recipes write as `connection:` (lowercase letters, digits, `-`, `_`).
    id: String,
    /// The app it connects to (see `enlace connectors`).
    #[arg(long)]
    app: String,
    /// A label; defaults to the id.
    #[arg(long)]
    name: Option<String>,
    /// A JSON file with the credentials, `{"kind": ..., ...}` (`-` reads it from standard
    /// input). Then no credential flag may be given.
    #[arg(long, value_name = "FILE")]
    credentials_file: Option<PathBuf>,
    /// The kind of credentials: bearer, api_key, basic, oauth2, smtp or imap. Defaults to the
    /// app's own kind when it has one.
    #[arg(long)]
    kind: Option<String>,
    /// smtp, imap: the server's host name.
    #[arg(long)]
    host: Option<String>,
    /// smtp, imap: the port (smtp: 587 for starttls, 465 for tls, 25 for none; imap: 993 for
    /// tls, 143 otherwise).
    #[arg(long)]
    port: Option<u16>,
    /// smtp, imap, basic: the user name. The password is then read from standard input.
    #[arg(long)]
    username: Option<String>,
    /// smtp: starttls (default), tls or none. imap: tls (default), starttls or none.
    #[arg(long)]
    tls: Option<String>,
    /// smtp, imap: a PEM file with a certificate to trust besides the system's roots.
    #[arg(long, value_name = "FILE")]
    ca_certificate: Option<PathBuf>,
    /// api_key: the header that carries the key (`X-Api-Key`).
    #[arg(long)]
    header: Option<String>,
    /// At most CALLS calls per PERIOD with this connection, like `100/1m`, on top of the
    /// app's own limit.
    #[arg(long, value_name = "CALLS/PERIOD")]
    rate_limit: Option<String>,
}

/// The field of each kind that holds its secret.
fn secret_field(kind: &str) -> Option<&'static str> {
    match kind {
        "bearer" => Some("token"),
        "api_key" => Some("key"),
        "basic" | "smtp" | "imap" => Some("password"),
        "oauth2" => Some("access_token"),
        _ => None,
    }
}

fn read_stdin(what: &str, example: &str) -> Result<String> {
    let mut value = String::new();
    std::io::stdin().read_to_string(&mut value).with_context(|| format!("cannot read the {what} from standard input"))?;
    let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value).to_string();
    if value.is_empty() {
        bail!("the {what} is empty: pipe it in on standard input, for example `{example}`");
    }
    Ok(value)
}

fn api_error(e: ApiError) -> anyhow::Error {
    match e.path {
        Some(p) => anyhow!("{p}: {}", e.message),
        None => anyhow!("{}", e.message),
    }
}

fn parse_rate_limit(text: &str) -> Result<RateLimit> {
    let (calls, per) = text.split_once('/').ok_or_else(|| anyhow!("--rate-limit `{text}`: write CALLS/PERIOD, like `100/1m` or `5/1s`"))?;
    let calls: u32 = calls.trim().parse().map_err(|_| anyhow!("--rate-limit `{text}`: `{calls}` is not a number of calls"))?;
    let per = enlace_core::duration::parse_duration(per.trim()).map_err(|e| anyhow!("--rate-limit `{text}`: {e}"))?;
    Ok(RateLimit { calls, per })
}

/// The credentials JSON from the file, or from the flags and standard input.
fn credentials_of(a: &CreateArgs) -> Result<Value> {
    let flags_given = a.kind.is_some()
        || a.host.is_some()
        || a.port.is_some()
        || a.username.is_some()
        || a.tls.is_some()
        || a.ca_certificate.is_some()
        || a.header.is_some();
    if let Some(file) = &a.credentials_file {
        if flags_given {
            bail!("give the credentials either in --credentials-file or as flags, not both");
        }
        let text = if file.as_os_str() == "-" {
            read_stdin("credentials JSON", "enlace connections create ID --app APP --credentials-file - < creds.json")?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
        };
        // serde's message names the line and column, never the content.
        return serde_json::from_str(&text).map_err(|e| anyhow!("the credentials file is not valid JSON: {e}"));
    }
    let registry = enlace_connectors::registry();
    let Some(connector) = registry.get(&a.app) else {
        bail!("no app `{}`; installed: {}", a.app, registry.app_ids().join(", "));
    };
    if !takes_connections(connector) {
        bail!("the app `{}` is built in and takes no connection", a.app);
    }
    let accepted = accepted_kinds(connector.manifest.auth);
    let kind = match &a.kind {
        // Checked before any secret is read.
        Some(k) if !accepted.contains(&k.as_str()) => {
            bail!("--kind `{k}`: the app `{}` takes {} credentials", a.app, accepted.join(" or "))
        }
        Some(k) => k.clone(),
        None if accepted.len() == 1 => accepted[0].to_string(),
        None => bail!(
            "the app `{}` takes several kinds of credentials ({}): say which with --kind, or give them in --credentials-file",
            a.app,
            accepted.join(", ")
        ),
    };
    let mut map = Map::new();
    map.insert("kind".into(), json!(kind));
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            map.insert(k.into(), v);
        }
    };
    put("host", a.host.clone().map(Value::from));
    put("port", a.port.map(Value::from));
    put("username", a.username.clone().map(Value::from));
    put("tls", a.tls.clone().map(Value::from));
    put("header", a.header.clone().map(Value::from));
    if let Some(path) = &a.ca_certificate {
        let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read the certificate {}", path.display()))?;
        map.insert("ca_certificate".into(), json!(pem));
    }
    // An SMTP relay without a login needs no secret.
    let needs_secret = !(kind == "smtp" && a.username.is_none());
    if needs_secret && let Some(field) = secret_field(&kind) {
        let example = format!("printf %s \"$SECRET\" | enlace connections create {} --app {} ...", a.id, a.app);
        map.insert(field.into(), json!(read_stdin(&format!("{field} (read from standard input)"), &example)?));
    }
    Ok(Value::Object(map))
}

pub async fn run(cmd: ConnectionsCommand, s: &StoreArgs) -> Result<ExitCode> {
    // Everything that does not need the store is checked first.
    let create = match &cmd {
        ConnectionsCommand::Create(a) => {
            let credentials = credentials_of(a)?;
            let rate_limit = a.rate_limit.as_deref().map(parse_rate_limit).transpose()?;
            let new = NewConnection { id: a.id.clone(), app: a.app.clone(), name: a.name.clone(), credentials, rate_limit };
            let checked = check_new(&enlace_connectors::registry(), &new).map_err(api_error)?;
            Some((new, checked))
        }
        ConnectionsCommand::Rename { name, .. } => {
            check_name(name).map_err(api_error)?;
            None
        }
        _ => None,
    };
    let store = open_store(s).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let result = run_with(cmd, create, &store, now).await;
    store.close().await;
    result
}

type Checked = (NewConnection, (String, enlace_core::Credentials, Option<enlace_store::RateSpec>));

async fn run_with(cmd: ConnectionsCommand, create: Option<Checked>, store: &enlace_store::Store, now: i64) -> Result<ExitCode> {
    Ok(match cmd {
        ConnectionsCommand::Create(_) => {
            let (new, (name, credentials, rate)) = create.ok_or_else(|| anyhow!("internal: the connection was not checked"))?;
            let row = store.create_connection(&new.id, &new.app, &name, &credentials, rate, now).await?;
            let runner = idle_runner(store)?;
            enlace_web::api::connections::first_token(&runner, &row.id, &credentials).await.map_err(api_error)?;
            let needs_sign_in = matches!(&credentials, enlace_core::Credentials::OAuth2Grant(g)
                if g.grant == enlace_core::GrantType::AuthorizationCode && !g.can_refresh());
            if needs_sign_in {
                println!(
                    "connection `{}` created for the app `{}`; sign in to finish: `enlace connections authorize {}` prints the address to open",
                    row.id, row.app, row.id
                );
            } else {
                println!("connection `{}` created for the app `{}`; check it with `enlace connections test {}`", row.id, row.app, row.id);
            }
            ExitCode::SUCCESS
        }
        ConnectionsCommand::Test { id } => {
            let runner = idle_runner(store)?;
            let view = run_test(&runner, &id, now).await.map_err(api_error)?;
            match view.status.as_str() {
                "ok" => {
                    println!("ok: {}", view.message);
                    ExitCode::SUCCESS
                }
                "untested" => {
                    println!("untested: {}", view.message);
                    ExitCode::SUCCESS
                }
                _ => {
                    eprintln!("error ({}): {}", view.class.as_deref().unwrap_or("error"), view.message);
                    ExitCode::FAILURE
                }
            }
        }
        ConnectionsCommand::List { json } => {
            let rows = store.list_connections().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows.iter().map(connection_view).collect::<Vec<_>>())?);
            } else if rows.is_empty() {
                println!("no connections; create one with `enlace connections create ID --app APP`");
            } else {
                println!("{:<24} {:<10} {:<9} NAME", "ID", "APP", "STATUS");
                for r in rows {
                    println!("{:<24} {:<10} {:<9} {}", r.id, r.app, r.status, r.name);
                }
            }
            ExitCode::SUCCESS
        }
        ConnectionsCommand::Show { id } => match store.connection(&id).await? {
            Some((row, _)) => {
                println!("{}", serde_json::to_string_pretty(&connection_view(&row))?);
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: no connection `{id}`");
                ExitCode::FAILURE
            }
        },
        ConnectionsCommand::Rename { id, name } => {
            let name = check_name(&name).map_err(api_error)?;
            match store.rename_connection(&id, &name, now).await? {
                Some(row) => {
                    println!("connection `{}` is now named `{}`", row.id, row.name);
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("error: no connection `{id}`");
                    ExitCode::FAILURE
                }
            }
        }
        ConnectionsCommand::Authorize { id, public_url } => {
            let runner = idle_runner(store)?;
            let view = enlace_web::api::connections::start_authorization(&runner, &id, &public_url).await.map_err(api_error)?;
            println!("open this address in a browser and sign in (before {}):", view.expires_at);
            println!("{}", view.authorize_url);
            eprintln!("(the app sends the browser back to {}; `enlace serve` must be reachable there)", view.redirect_uri);
            ExitCode::SUCCESS
        }
        ConnectionsCommand::Delete { id } => {
            if store.delete_connection(&id).await? {
                println!("connection `{id}` deleted");
                ExitCode::SUCCESS
            } else {
                eprintln!("error: no connection `{id}`");
                ExitCode::FAILURE
            }
        }
    })
}
