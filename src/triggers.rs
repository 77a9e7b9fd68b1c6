//! `enlace trigger`: a recipe's connector trigger from the command line: its state, a
//! rewind (a preview unless `--apply`), and the batches the flood guard held. It works on
//! the store directly, beside a running server, through the same runner calls as the API
//! (`/api/v1/recipes/{id}/trigger`); it polls nothing by itself except a rewind's preview.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use clap::Subcommand;
use enlace_runner::{Runner, RunnerConfig, SystemClock};
use enlace_web::api::triggers::{batch_view, rewind_view, state_view};
use serde_json::json;

use crate::{StoreArgs, open_store, transport};

#[derive(Subcommand)]
pub enum TriggerCommand {
    /// The trigger's state as JSON: cursor, last and next poll, last error, held batches.
    Show {
        /// The recipe's id.
        recipe: String,
    },
    /// Go back to the cursor the trigger had at a time, and list what a poll from there
    /// fires (a preview: nothing changes unless --apply).
    Rewind {
        /// The recipe's id.
        recipe: String,
        /// An RFC 3339 time, like 2026-11-25T09:00:00Z.
        #[arg(long)]
        to: String,
        /// Move the cursor back: the next poll (at once) fires the items listed.
        #[arg(long)]
        apply: bool,
        /// Fire again the items that fired at or after --to (otherwise they are skipped).
        #[arg(long)]
        refire: bool,
    },
    /// Approve a held batch: every item starts its run, once.
    Approve {
        /// The recipe's id.
        recipe: String,
        /// The batch's id (see `enlace trigger show`).
        batch: String,
    },
    /// Discard a held batch: its items start nothing.
    Discard {
        /// The recipe's id.
        recipe: String,
        /// The batch's id (see `enlace trigger show`).
        batch: String,
    },
}

pub async fn run(cmd: TriggerCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    // No workers: this process subscribes, polls and runs nothing in the background.
    let config = RunnerConfig { workers: false, concurrency: 1, ..RunnerConfig::default() };
    let runner = Runner::new(store.clone(), enlace_connectors::registry(), config, transport()?, Arc::new(SystemClock));
    runner.load(false).await?;
    let out = match cmd {
        TriggerCommand::Show { recipe } => serde_json::to_value(state_view(&runner.trigger_status(&recipe).await?))?,
        TriggerCommand::Rewind { recipe, to, apply, refire } => {
            let at = chrono::DateTime::parse_from_rfc3339(to.trim())
                .map_err(|e| anyhow!("--to `{to}` is not an RFC 3339 time ({e}); write one like 2026-11-25T09:00:00Z"))?
                .timestamp_millis();
            serde_json::to_value(rewind_view(runner.rewind_trigger(&recipe, at, !apply, refire).await?))?
        }
        TriggerCommand::Approve { recipe, batch } => decide(&runner, &recipe, &batch, true).await?,
        TriggerCommand::Discard { recipe, batch } => decide(&runner, &recipe, &batch, false).await?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn decide(runner: &Runner, recipe: &str, batch: &str, approve: bool) -> Result<serde_json::Value> {
    let (b, runs) = runner.decide_held(recipe, batch, approve).await?;
    Ok(json!({"batch": batch_view(&b), "run_ids": runs.into_iter().map(|a| a.run_id).collect::<Vec<_>>()}))
}
