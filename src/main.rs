//! `enlace`: the one binary. `serve` runs the web server, the webhook ingress, the REST API,
//! the scheduler and the workers in one process; the other commands work on the same data
//! directory (or database) directly, so they work whether a server runs or not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use enlace_core::duration::parse_duration;
use enlace_kit::{ReqwestTransport, TransportConfig};
use enlace_runner::{ManualClock, Runner, RunnerConfig, SystemClock};
use enlace_store::{RunFilter, RunStatus, Store, StoreConfig, Synchronous};
use serde_json::{Value, json};

mod approvals;
mod connections;
mod contacts;
mod forms;
mod simulate;
mod social;
mod triggers;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "enlace", version, about = "Enlace: an integration hub for marketing automation", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Also load the declarative connectors of this folder (DIR/<app>/connector.yaml or
    /// DIR/<app>.yaml), checked at start like recipes: a wrong one stops the command.
    #[arg(long, env = "ENLACE_CONNECTORS", global = true, value_name = "DIR")]
    connectors: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Where Enlace keeps its data (the SQLite database and the generated secret key).
    #[arg(long, env = "ENLACE_DATA_DIR", default_value = "./enlace-data", global = true)]
    data_dir: PathBuf,
    /// The database: `sqlite://PATH` (default: DATA_DIR/enlace.db).
    #[arg(long, env = "ENLACE_DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server, webhook ingress, REST API, scheduler and workers.
    Serve(ServeArgs),
    /// Run workers, timers and cron schedules against a shared PostgreSQL store, with no
    /// HTTP server: one node of a scaled-out Enlace (see "Running at scale" in the README).
    Worker(WorkerArgs),
    /// Check recipe files; exit 1 with every diagnostic if any is wrong.
    Validate {
        /// Recipe files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run one recipe once, now, in this process, and print every step.
    Run {
        /// The recipe file.
        file: PathBuf,
        /// The trigger's event, as JSON (for a webhook recipe: `{"body": ...}`, or just the body).
        #[arg(long)]
        event: PathBuf,
        /// Call nothing outside: print each step's resolved request; actions answer with their sample output.
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run recipes over contacts and events on a virtual clock, calling nothing outside, and
    /// report every message that would go out, the count at each step, and when.
    Simulate(simulate::SimulateArgs),
    /// The catalog: apps, their triggers and actions.
    Connectors {
        #[command(subcommand)]
        command: Option<ConnectorsCommand>,
    },
    /// Writing connectors: `enlace connector new NAME` scaffolds one (see CONTRIBUTING.md).
    Connector {
        #[command(subcommand)]
        command: ConnectorCommand,
    },
    /// API tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run history.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Connections: the credentials steps use (`connection: ID`), stored encrypted.
    Connections {
        #[command(subcommand)]
        command: connections::ConnectionsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// A recipe's connector trigger: its state, rewinds with a preview, held batches.
    Trigger {
        #[command(subcommand)]
        command: triggers::TriggerCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// GDPR: export everything stored about a contact, or erase it.
    Contacts {
        #[command(subcommand)]
        command: contacts::ContactsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Hosted forms (the web channel): put, check, list, show, delete, and signed links.
    Forms {
        #[command(subcommand)]
        command: forms::FormsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// On-site messages (pop-ups and banners queued by `web.show_message`): list, cancel.
    WebMessages {
        #[command(subcommand)]
        command: forms::WebMessagesCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Messages held for approval above a recipe's send limits: list, approve, reject.
    Approvals {
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Social channels: a network, a connection, the account, a time zone and queue slots.
    Channels {
        #[command(subcommand)]
        command: social::ChannelsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Social posts: create, schedule, queue, reschedule, cancel; confirm or retry held ones.
    Posts {
        #[command(subcommand)]
        command: social::PostsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Secrets read by recipes as `{{secrets.NAME}}`, stored encrypted.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ENLACE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Load every recipe file (*.yaml, *.yml, *.json) in this folder at start.
    #[arg(long, env = "ENLACE_RECIPES")]
    recipes: Option<PathBuf>,
    /// Runs in flight at once.
    #[arg(long, env = "ENLACE_CONCURRENCY", default_value_t = 256)]
    concurrency: usize,
    /// On SIGTERM, how long to let runs in flight finish before handing them back to the queue.
    #[arg(long, env = "ENLACE_DRAIN_TIMEOUT", default_value = "20s", value_parser = duration_arg)]
    drain_timeout: Duration,
    /// Ingress only: store events and queue their runs, and leave running them (and cron
    /// schedules) to `enlace worker` nodes on the same PostgreSQL store.
    #[arg(long, env = "ENLACE_NO_WORKERS")]
    no_workers: bool,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct WorkerArgs {
    /// Runs in flight at once.
    #[arg(long, env = "ENLACE_CONCURRENCY", default_value_t = 256)]
    concurrency: usize,
    /// On SIGTERM, how long to let runs in flight finish before handing them back to the queue.
    #[arg(long, env = "ENLACE_DRAIN_TIMEOUT", default_value = "20s", value_parser = duration_arg)]
    drain_timeout: Duration,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct NodeArgs {
    /// How long a claimed run stays leased to this node between heartbeats (renewed every
    /// third of it). When a node dies, its runs go back to the queue once this runs out.
    #[arg(long, env = "ENLACE_LEASE", default_value = "30s", value_parser = duration_arg)]
    lease: Duration,
    /// This node's name in run leases and logs (default: a random one per process).
    #[arg(long, env = "ENLACE_NODE_ID")]
    node_id: Option<String>,
    /// The address apps and browsers reach this installation at (https://enlace.example.com):
    /// subscribe triggers give apps <public-url>/hooks/subscriptions/<recipe>, and OAuth2
    /// sign-ins come back to <public-url>/oauth/callback (register it with each OAuth app),
    /// and Twilio's signatures are checked against <public-url>/hooks/....
    /// `serve` defaults to http://<listen address> for subscriptions and to the address a
    /// request came to for sign-ins; a worker without it cannot subscribe.
    #[arg(long, env = "ENLACE_PUBLIC_URL")]
    public_url: Option<String>,
}

#[derive(Subcommand)]
enum ConnectorsCommand {
    /// One app in full: its triggers and actions with every field.
    Show { app: String },
    /// Write one Markdown page per app (triggers, actions, fields, connection setup) and an
    /// index into DIR; with --check, write nothing and exit 1 if DIR differs.
    Docs {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Compare instead of writing (CI: the committed docs must be current).
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum ConnectorCommand {
    /// Create connectors/NAME with a manifest, one action, one polling trigger, recorded
    /// fixtures, tests that pass and a README, and register it in the workspace.
    New {
        /// The app id (lowercase letters, digits and `_`): the folder's name.
        name: String,
        /// The workspace's root folder.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token for the REST API; it is printed once.
    Create { name: String },
    /// List tokens (names only).
    List,
    /// Revoke a token at once.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Runs, newest first.
    List {
        #[arg(long)]
        recipe: Option<String>,
        /// queued, running, waiting, succeeded, filtered, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One run with its event and every step (JSON).
    Show { id: String },
    /// Queue a failed or cancelled run again from its failed step (a running server picks it up within a second).
    Replay {
        id: String,
        /// Use the recipe's current version instead of the run's own.
        #[arg(long)]
        latest_version: bool,
    },
    /// Cancel a queued, running or waiting run.
    Cancel { id: String },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Set a secret; the value is read from standard input (one line, or everything piped in).
    Set { name: String },
    /// List secret names.
    List,
    /// Delete a secret.
    Delete { name: String },
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Serve(_) | Command::Worker(_)));
    if let Some(dir) = &cli.connectors {
        match enlace_connectors::load_dir(dir) {
            Ok(ids) => tracing::info!(dir = %dir.display(), apps = ?ids, "declarative connectors loaded"),
            Err(e) => {
                eprintln!("{e}\nerror: the connectors in {} are not valid", dir.display());
                return ExitCode::FAILURE;
            }
        }
    }
    // The simulator runs on one CPU unless told otherwise, on a runtime of one thread: its
    // runs take turns with SQLite's threads, and hand-offs across CPUs cost more than the work.
    let one_cpu = matches!(&cli.command, Command::Simulate(a) if !a.all_cpus);
    if one_cpu {
        simulate::keep_to_one_cpu();
    }
    let rt = if one_cpu {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(server: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if server { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("ENLACE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // async-imap (the imap connector's client) traces every command it sends, LOGIN and its
    // password included, and every answer (mail contents): never shown, whatever ENLACE_LOG says.
    let filter = filter.add_directive("async_imap=off".parse().expect("a valid directive"));
    let json = std::env::var("ENLACE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn store_config(a: &StoreArgs) -> StoreConfig {
    let synchronous = match std::env::var("ENLACE_SQLITE_SYNCHRONOUS").as_deref() {
        Ok("normal") | Ok("NORMAL") => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    StoreConfig {
        database_url: a.database_url.clone(),
        data_dir: a.data_dir.clone(),
        secret_key: std::env::var("ENLACE_SECRET_KEY").ok(),
        synchronous,
    }
}

async fn open_store(a: &StoreArgs) -> Result<Store> {
    Ok(Store::open(&store_config(a)).await?)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Worker(args) => worker(args).await,
        Command::Validate { files } => Ok(validate(&files)),
        Command::Run { file, event, dry_run, json } => run_once(&file, &event, dry_run, json).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Connectors { command } => connectors(command),
        Command::Connector { command } => connector(command),
        Command::Tokens { command, store } => tokens(command, &store).await,
        Command::Runs { command, store } => runs(command, &store).await,
        Command::Connections { command, store } => connections::run(command, &store).await,
        Command::Secrets { command, store } => secrets(command, &store).await,
        Command::Trigger { command, store } => triggers::run(command, &store).await,
        Command::Contacts { command, store } => contacts::run(command, &store).await,
        Command::Approvals { command, store } => approvals::run(command, &store).await,
        Command::Channels { command, store } => social::channels(command, &store).await,
        Command::Posts { command, store } => social::posts(command, &store).await,
        Command::Forms { command, store } => forms::run(command, &store).await,
        Command::WebMessages { command, store } => forms::run_messages(command, &store).await,
    }
}

fn read_recipe(path: &Path) -> Result<enlace_recipe::Recipe, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    enlace_recipe::load(&text, Some(&path.display().to_string()), &enlace_connectors::registry()).map_err(|d| d.to_string())
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match read_recipe(f) {
            Ok(r) => println!("{}: ok (recipe `{}`, {} steps)", f.display(), r.id, r.steps.len()),
            Err(d) => {
                failed = true;
                eprintln!("{d}");
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Recipe files in a folder, sorted.
fn recipe_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the recipes folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()).is_some_and(|x| matches!(x, "yaml" | "yml" | "json")))
        .collect();
    files.sort();
    Ok(files)
}

fn transport() -> Result<Arc<ReqwestTransport>> {
    Ok(Arc::new(ReqwestTransport::new(TransportConfig::from_env()).map_err(|e| anyhow!("cannot build the HTTP client: {e}"))?))
}

fn is_postgres(a: &StoreArgs) -> bool {
    a.database_url.as_deref().is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// One process runs workers on an SQLite data directory: the lock makes a second one fail
/// clearly. (On PostgreSQL, many nodes share the store by design.)
fn lock_data_dir(a: &StoreArgs) -> Result<Option<std::fs::File>> {
    std::fs::create_dir_all(&a.data_dir).with_context(|| format!("cannot create the data directory {}", a.data_dir.display()))?;
    if is_postgres(a) {
        return Ok(None);
    }
    let lock_path = a.data_dir.join("enlace.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!("another `enlace serve` is running on {}; stop it first, or give this one another --data-dir", a.data_dir.display());
    }
    Ok(Some(lock))
}

fn runner_config(concurrency: usize, workers: bool, node: &NodeArgs) -> RunnerConfig {
    let mut c = RunnerConfig { concurrency, workers, lease: node.lease.max(Duration::from_secs(1)), ..RunnerConfig::default() };
    if let Some(id) = &node.node_id {
        c.node_id = id.clone();
    }
    c.public_url = node.public_url.clone();
    c
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    if args.no_workers && !is_postgres(&args.store) {
        bail!(
            "--no-workers needs a store shared with `enlace worker` nodes: give --database-url postgres://...; with SQLite, `enlace serve` runs the workers itself"
        );
    }
    let lock = lock_data_dir(&args.store)?;

    // Check every recipe file before touching anything.
    let mut recipes = vec![];
    if let Some(dir) = &args.recipes {
        let mut errors = vec![];
        for f in recipe_files(dir)? {
            match read_recipe(&f) {
                Ok(r) => recipes.push(r),
                Err(d) => errors.push(d),
            }
        }
        if !errors.is_empty() {
            eprintln!("{}", errors.join("\n"));
            bail!("{} recipe file(s) in {} do not validate; nothing was started", errors.len(), dir.display());
        }
    }

    let store = open_store(&args.store).await?;
    let registry = enlace_connectors::registry();
    let mut config = runner_config(args.concurrency, !args.no_workers, &args.node);
    config.public_url.get_or_insert_with(|| format!("http://{}", args.listen));
    let runner = Runner::new(store.clone(), registry, config, transport()?, Arc::new(SystemClock));
    // On SQLite this process is the only one with workers: what a dead one left running
    // is queued again now. On PostgreSQL the reapers do it, once the dead node's lease ends.
    for (id, d) in runner.load(!is_postgres(&args.store)).await? {
        tracing::error!(recipe = %id, diagnostics = %d, "a stored recipe no longer validates; it does not run");
    }
    for r in &recipes {
        let saved = runner.save_recipe(r, "file").await.map_err(|e| anyhow!("recipe `{}`: {e}", r.id))?;
        tracing::info!(recipe = %r.id, version = saved.recipe.version, new_version = saved.new_version, enabled = saved.recipe.enabled, "recipe loaded");
    }
    runner.start();

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(address = %addr, data_dir = %args.store.data_dir.display(), database = store.backend_name(), workers = !args.no_workers, node = %runner.node_id(), "Enlace is listening");
    println!("Enlace listening on http://{addr}");
    let app = enlace_web::app(
        runner.clone(),
        enlace_web::WebConfig {
            public_url: args.node.public_url.clone(),
            // The sites whose pages may send page views to POST /track (comma-separated origins).
            track_origins: std::env::var("ENLACE_TRACK_ORIGINS")
                .map(|v| v.split(',').map(|o| o.trim().trim_end_matches('/').to_string()).filter(|o| !o.is_empty()).collect())
                .unwrap_or_default(),
            ..enlace_web::WebConfig::default()
        },
    );
    enlace_web::serve(listener, app, shutdown_signal()).await?;
    tracing::info!("stopped taking requests; draining runs in flight");
    let handed_back = runner.shutdown(args.drain_timeout).await;
    store.close().await;
    tracing::info!(handed_back, "stopped");
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

async fn worker(args: WorkerArgs) -> Result<ExitCode> {
    if !is_postgres(&args.store) {
        bail!(
            "`enlace worker` needs a store shared with other nodes: give --database-url postgres://... (or ENLACE_DATABASE_URL); with SQLite, `enlace serve` runs the workers itself"
        );
    }
    std::fs::create_dir_all(&args.store.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.store.data_dir.display()))?;
    let store = open_store(&args.store).await?;
    let config = runner_config(args.concurrency, true, &args.node);
    let runner = Runner::new(store.clone(), enlace_connectors::registry(), config, transport()?, Arc::new(SystemClock));
    for (id, d) in runner.load(false).await? {
        tracing::error!(recipe = %id, diagnostics = %d, "a stored recipe no longer validates; it does not run");
    }
    runner.start();
    tracing::info!(database = store.backend_name(), node = %runner.node_id(), concurrency = args.concurrency, "Enlace worker started");
    println!("Enlace worker {} started", runner.node_id());
    shutdown_signal().await;
    tracing::info!("stopping; draining runs in flight");
    let handed_back = runner.shutdown(args.drain_timeout).await;
    store.close().await;
    tracing::info!(handed_back, "stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn run_once(file: &Path, event_file: &Path, dry_run: bool, as_json: bool) -> Result<ExitCode> {
    let recipe = match read_recipe(file) {
        Ok(r) => r,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let text = std::fs::read_to_string(event_file).with_context(|| format!("cannot read {}", event_file.display()))?;
    let mut event: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", event_file.display()))?;
    // A webhook recipe's event is {body, headers, query, received_at}: accept just the body too.
    // (A connector's inbound trigger, like `twilio.inbound_sms`, takes its event as it is.)
    if recipe.hook().is_some_and(|h| !h.inbound) && event.get("body").is_none() {
        event = json!({"body": event, "headers": {}, "query": {}, "received_at": enlace_runner::clock::rfc3339(chrono::Utc::now().timestamp_millis()), "path": recipe.hook().map(|h| h.path.clone())});
    }
    let store = Store::temporary().await?;
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let config = RunnerConfig { dry_run, concurrency: 1, ..RunnerConfig::default() };
    let runner = Runner::new(store.clone(), enlace_connectors::registry(), config, transport()?, Arc::new(clock.clone()));
    let detail = runner.run_once(&recipe, event, &clock).await?;
    let calls = runner.take_dry_calls();
    let ok = matches!(detail.run.status, RunStatus::Succeeded | RunStatus::Filtered);
    if as_json {
        let mut v = serde_json::to_value(enlace_web::api::runs::detail_view(&detail))?;
        if dry_run {
            v["dry_run"] = json!(calls.iter().map(|c| json!({"step": c.step_key, "called": c.called, "requests": c.requests.iter().map(request_json).collect::<Vec<_>>()})).collect::<Vec<_>>());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "run {} of `{}`: {}{}",
            detail.run.id,
            recipe.id,
            detail.run.status,
            if dry_run { " (dry run: nothing was sent)" } else { "" }
        );
        for s in &detail.steps {
            println!(
                "\n- step {} ({}): {}{}",
                s.key,
                s.kind,
                s.status.as_str(),
                if s.attempts > 1 { format!(" after {} attempts", s.attempts) } else { String::new() }
            );
            if dry_run && let Some(c) = calls.iter().find(|c| c.step_key == s.key) {
                if !c.called {
                    println!("  not called in a dry run (this action does not go through HTTP); its input:");
                    if let Some(i) = &s.input {
                        println!("{}", indent(&serde_json::to_string_pretty(i)?));
                    }
                }
                for r in &c.requests {
                    println!("  would send:\n{}", indent(&serde_json::to_string_pretty(&request_json(r))?));
                }
                continue;
            }
            if let Some(i) = &s.input {
                println!("  input:\n{}", indent(&serde_json::to_string_pretty(i)?));
            }
            if let Some(o) = &s.output {
                println!("  output:\n{}", indent(&serde_json::to_string_pretty(o)?));
            }
            if let Some(e) = &s.error {
                println!("  error:\n{}", indent(&serde_json::to_string_pretty(e)?));
            }
        }
        if let Some(e) = &detail.run.error {
            println!("\nthe run failed: {}", e.get("message").and_then(Value::as_str).unwrap_or(""));
            if let Some(h) = e.get("hint").and_then(Value::as_str) {
                println!("hint: {h}");
            }
        }
    }
    store.close().await;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// A recorded request as JSON, credentials hidden.
fn request_json(r: &enlace_core::http::HttpRequest) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| {
            let shown = if v.is_sensitive() || matches!(k.as_str(), "authorization" | "cookie" | "x-api-key") {
                "[secret]".to_string()
            } else {
                v.to_str().unwrap_or("[binary]").to_string()
            };
            (k.as_str().to_string(), Value::String(shown))
        })
        .collect();
    let body = match serde_json::from_slice::<Value>(&r.body) {
        Ok(v) if !r.body.is_empty() => v,
        _ => Value::String(String::from_utf8_lossy(&r.body).into_owned()),
    };
    json!({"method": r.method.as_str(), "url": r.url, "headers": headers, "body": body})
}

fn connector(cmd: ConnectorCommand) -> Result<ExitCode> {
    let ConnectorCommand::New { name, root } = cmd;
    match enlace_connectors::scaffold::scaffold(&root, &name) {
        Ok(done) => {
            for f in &done.created {
                println!("created  {}", f.display());
            }
            for f in &done.changed {
                println!("changed  {}", f.display());
            }
            println!(
                "\nnext: cargo test -p enlace-connector-{} -p enlace-connectors (then follow CONTRIBUTING.md)",
                name.replace('_', "-")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn connectors(cmd: Option<ConnectorsCommand>) -> Result<ExitCode> {
    let registry = enlace_connectors::registry();
    match cmd {
        Some(ConnectorsCommand::Docs { out, check }) => {
            let all: Vec<_> = registry.apps().cloned().collect();
            if check {
                let problems = enlace_connectors::docs::check(&all, &out);
                if problems.is_empty() {
                    println!("{} is current", out.display());
                    return Ok(ExitCode::SUCCESS);
                }
                for p in &problems {
                    eprintln!("error: {}: {p}", out.display());
                }
                eprintln!("run `enlace connectors docs --out {}` and commit the result", out.display());
                return Ok(ExitCode::FAILURE);
            }
            let written = enlace_connectors::docs::write(&all, &out).with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {} pages into {}", written.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            for c in registry.apps() {
                let m = &c.manifest;
                println!("{:<10} {}", m.id, m.description);
                for t in &m.triggers {
                    println!("    trigger  {}.{:<12} {}", m.id, t.id, t.name);
                }
                for a in &m.actions {
                    println!("    action   {}.{:<12} {}", m.id, a.id, a.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(ConnectorsCommand::Show { app }) => {
            let Some(c) = registry.get(&app) else {
                eprintln!("error: no app `{app}`; installed: {}", registry.app_ids().join(", "));
                return Ok(ExitCode::FAILURE);
            };
            let m = &c.manifest;
            println!("{} ({}): {}", m.name, m.id, m.description);
            for t in &m.triggers {
                println!("\ntrigger {}.{}: {}\n  {}", m.id, t.id, t.name, t.description);
                print_fields(&t.config_schema);
            }
            for a in &m.actions {
                println!("\naction {}.{}: {}\n  {}", m.id, a.id, a.name, a.description);
                print_fields(&a.input_schema);
                println!("  sample output:\n{}", indent(&serde_json::to_string_pretty(&a.sample)?));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_fields(schema: &Value) {
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        println!("  fields:");
        for (name, p) in props {
            let desc = p.get("description").and_then(Value::as_str).unwrap_or("").replace('\n', " ");
            println!("    {name}{}: {desc}", if required.contains(&name.as_str()) { " (required)" } else { "" });
        }
    }
}

async fn tokens(cmd: TokensCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let code = match cmd {
        TokensCommand::Create { name } => {
            let (_, token) = store.create_token(&name, now).await?;
            eprintln!("token `{name}` created; it is shown once, keep it now:");
            println!("{token}");
            ExitCode::SUCCESS
        }
        TokensCommand::List => {
            for t in store.list_tokens().await? {
                println!("{}\tcreated {}", t.name, enlace_runner::clock::rfc3339(t.created_at));
            }
            ExitCode::SUCCESS
        }
        TokensCommand::Revoke { name } => {
            if store.revoke_token(&name).await? {
                println!("token `{name}` revoked");
                ExitCode::SUCCESS
            } else {
                eprintln!("error: no token `{name}`");
                ExitCode::FAILURE
            }
        }
    };
    store.close().await;
    Ok(code)
}

async fn runs(cmd: RunsCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let code = match cmd {
        RunsCommand::List { recipe, status, limit } => {
            let status = match status {
                Some(st) => Some(
                    RunStatus::parse(&st)
                        .ok_or_else(|| anyhow!("unknown status `{st}`; use one of: {}", RunStatus::ALL.map(|s| s.as_str()).join(", ")))?,
                ),
                None => None,
            };
            let rows = store.list_runs(&RunFilter { recipe_id: recipe, status, limit, ..RunFilter::default() }).await?;
            if rows.is_empty() {
                println!("no runs");
            }
            for r in rows {
                let err =
                    r.error.as_ref().and_then(|e| e.get("message")).and_then(Value::as_str).map(|m| format!("  {m}")).unwrap_or_default();
                println!("{}  {:<20} {:<10} {}{}", r.id, r.recipe_id, r.status.as_str(), enlace_runner::clock::rfc3339(r.created_at), err);
            }
            ExitCode::SUCCESS
        }
        RunsCommand::Show { id } => match store.run_detail(&id).await? {
            Some(d) => {
                println!("{}", serde_json::to_string_pretty(&enlace_web::api::runs::detail_view(&d))?);
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: no run `{id}`");
                ExitCode::FAILURE
            }
        },
        RunsCommand::Replay { id, latest_version } => {
            let latest = if latest_version {
                let run = store.get_run(&id).await?.ok_or_else(|| anyhow!("no run `{id}`"))?;
                Some(store.get_recipe(&run.recipe_id).await?.ok_or_else(|| anyhow!("the recipe `{}` is gone", run.recipe_id))?.version)
            } else {
                None
            };
            let row = store.replay_run(&id, enlace_store::Replay { latest_version: latest, now }).await?;
            println!("run {} queued again (attempt {}); a running `enlace serve` picks it up within a second", row.id, row.attempt);
            ExitCode::SUCCESS
        }
        RunsCommand::Cancel { id } => {
            let row = store.cancel_run(&id, now).await?;
            println!("run {} cancelled", row.id);
            ExitCode::SUCCESS
        }
    };
    store.close().await;
    Ok(code)
}

async fn secrets(cmd: SecretsCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let code = match cmd {
        SecretsCommand::Set { name } => {
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
                bail!("`{name}` is not a valid secret name: use letters, digits, `_` and `-`");
            }
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value).context("cannot read the value from standard input")?;
            let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value).to_string();
            if value.is_empty() {
                bail!("the value is empty: pipe it in, for example `printf %s \"$VALUE\" | enlace secrets set {name}`");
            }
            store.set_secret(&name, &value, now).await?;
            println!("secret `{name}` set");
            ExitCode::SUCCESS
        }
        SecretsCommand::List => {
            for (n, at) in store.list_secrets().await? {
                println!("{n}\tupdated {}", enlace_runner::clock::rfc3339(at));
            }
            ExitCode::SUCCESS
        }
        SecretsCommand::Delete { name } => {
            if store.delete_secret(&name).await? {
                println!("secret `{name}` deleted");
                ExitCode::SUCCESS
            } else {
                eprintln!("error: no secret `{name}`");
                ExitCode::FAILURE
            }
        }
    };
    store.close().await;
    Ok(code)
}
