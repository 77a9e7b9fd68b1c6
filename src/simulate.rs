//! `enlace simulate`: runs recipes over contacts and events on a virtual clock, calling
//! nothing outside, and prints what would have happened (see
//! `enlace_runner::simulate` and the README's "Previewing a flow").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use enlace_core::duration::parse_duration;
use enlace_runner::simulate::{SimInput, SimOptions, SimReport, generate_contacts, parse_contacts, parse_events, simulate};

#[derive(Args)]
pub struct SimulateArgs {
    /// Recipe files, or folders of them (every .yaml, .yml and .json file).
    #[arg(long = "recipes", required = true, num_args = 1..)]
    recipes: Vec<PathBuf>,
    /// Contacts to import: CSV with a header (`email`, `at`, `tags`, `consent.<purpose>.<channel>`, fields) or JSON lines.
    #[arg(long)]
    contacts: Option<PathBuf>,
    /// Make up this many contacts instead (the same ones for the same --seed).
    #[arg(long, conflicts_with = "contacts")]
    generate_contacts: Option<usize>,
    /// Events, one JSON object a line (`at` with `webhook`, `emit` or `contact`; or `each_contact`).
    #[arg(long)]
    events: Option<PathBuf>,
    /// Drives what is random on purpose: made-up contacts, and the probability of per-contact events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The virtual clock's start (RFC 3339); default: the earliest time in the inputs.
    #[arg(long)]
    start: Option<String>,
    /// How long to simulate from the start.
    #[arg(long, default_value = "30d")]
    duration: String,
    /// Runs executed at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// The send policy to simulate with, as `PUT /api/v1/policy` takes it (JSON); the defaults otherwise.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The lead scoring rules to simulate with, as `PUT /api/v1/scoring` takes them (JSON); none otherwise.
    #[arg(long)]
    scoring: Option<PathBuf>,
    /// List at most this many messages and calls in the report (the earliest); counts are always complete.
    #[arg(long, default_value_t = 10_000)]
    list: usize,
    /// Write the whole report (JSON) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the whole report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
    /// Let the simulation's threads run on every CPU. By default it keeps to the CPU it
    /// started on (Linux): its work is a chain of hand-offs between the runner and SQLite's
    /// threads, which cost less on one CPU (see bench/README.md, "The simulator").
    #[arg(long)]
    pub all_cpus: bool,
}

/// Keeps this thread, and every thread it starts from now on, on the CPU it runs on.
/// Call it before the runtime starts its threads. Only on Linux; a refusal is ignored
/// (the simulation is the same, only slower).
pub fn keep_to_one_cpu() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_getcpu takes nothing; the cpu_set_t is zeroed and then only set
    // through CPU_SET with a CPU number the kernel gave, below CPU_SETSIZE.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 || cpu as usize >= libc::CPU_SETSIZE as usize {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!("the simulation could not keep to one CPU; it runs on all of them");
        }
    }
}

fn recipe_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub async fn run(a: SimulateArgs) -> Result<ExitCode> {
    let registry = enlace_connectors::registry();
    let mut recipes = vec![];
    let mut bad = false;
    for f in recipe_files(&a.recipes)? {
        let text = read(&f)?;
        match enlace_recipe::load(&text, Some(&f.display().to_string()), &registry) {
            Ok(r) => recipes.push(r),
            Err(d) => {
                eprintln!("{d}");
                bad = true;
            }
        }
    }
    if bad {
        eprintln!("fix the recipes above first: a simulation runs only valid recipes");
        return Ok(ExitCode::FAILURE);
    }
    let mut input = SimInput::default();
    if let Some(p) = &a.contacts {
        input.contacts = parse_contacts(&read(p)?).with_context(|| p.display().to_string())?;
    }
    if let Some(p) = &a.events {
        let (events, per) = parse_events(&read(p)?).with_context(|| p.display().to_string())?;
        input.events = events;
        input.per_contact = per;
    }
    let earliest = input.contacts.iter().filter_map(|c| c.at).chain(input.events.iter().map(|e| e.at)).min();
    let start = match (&a.start, earliest) {
        (Some(s), _) => enlace_runner::exec_parse_time(s).map_err(|e| anyhow::anyhow!("--start: {e}"))?,
        (None, Some(t)) => t,
        (None, None) => {
            eprintln!("say when the simulation starts: --start 2026-12-01T00:00:00Z (the inputs carry no time)");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(n) = a.generate_contacts {
        input.contacts = generate_contacts(n, a.seed, start);
    }
    let duration = parse_duration(&a.duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let policy = match &a.policy {
        Some(p) => Some(
            serde_json::from_str(&read(p)?).with_context(|| format!("{}: not a send policy (see `GET /api/v1/policy`)", p.display()))?,
        ),
        None => None,
    };
    let scoring = match &a.scoring {
        Some(p) => Some(
            serde_json::from_str(&read(p)?).with_context(|| format!("{}: not scoring rules (see `GET /api/v1/scoring`)", p.display()))?,
        ),
        None => None,
    };
    let opts = SimOptions {
        start,
        until: start + duration.as_millis() as i64,
        seed: a.seed,
        parallel: a.parallel,
        policy,
        scoring,
        list_limit: a.list,
    };
    let t0 = std::time::Instant::now();
    let report = simulate(registry, &recipes, input, &opts).await?;
    let elapsed = t0.elapsed();
    if let Some(out) = &a.out {
        let mut f = std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
        serde_json::to_writer_pretty(&mut f, &report)?;
        writeln!(f)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, elapsed);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(r: &SimReport, elapsed: std::time::Duration) {
    println!(
        "simulated {} contacts from {} to {} (seed {}; stopped at {}) in {:.1} s; nothing was sent",
        r.contacts,
        r.start,
        r.until,
        r.seed,
        r.ended_at,
        elapsed.as_secs_f64()
    );
    for (recipe, statuses) in &r.runs {
        let s: Vec<String> = statuses.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("\n{recipe}: runs {}", s.join(", "));
        if let Some(steps) = r.steps.get(recipe) {
            for (step, st) in steps {
                let s: Vec<String> = st.iter().map(|(k, v)| format!("{v} {k}")).collect();
                println!("  {step:<24} {}", s.join(", "));
            }
        }
    }
    println!("\nmessages to people: {}", r.decisions.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
    for m in r.messages.iter().filter(|m| m.decision != "sent").take(10) {
        println!(
            "  {} {} {}/{}: {} ({})",
            m.due,
            m.contact.as_deref().unwrap_or("-"),
            m.recipe,
            m.step,
            m.decision,
            m.reason.as_deref().unwrap_or("")
        );
    }
    println!("\nwould have called:");
    for (k, n) in &r.call_counts {
        println!("  {k:<32} {n}");
    }
    for c in r.calls.iter().take(20) {
        println!("  {}  {:<28} {}/{}  {}", c.at, c.contact.as_deref().unwrap_or("-"), c.recipe, c.step, c.content);
    }
    if r.calls.len() > 20 {
        println!("  ... {} more (--out FILE writes them all)", r.calls.len() - 20);
    }
}
