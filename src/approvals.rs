//! `enlace approvals`: the messages held for approval because their recipe passed its
//! `limits`, from the command line: list them, approve or reject them. It works on the store
//! directly, beside a running server, with the same calls as the API (`/api/v1/approvals`,
//! `/api/v1/recipes/{id}/approvals`); the runs go on when a worker next claims them.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use enlace_web::api::policy::held_view;

use crate::{StoreArgs, open_store};

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// The messages held for approval, oldest first, as JSON.
    List {
        /// Only this recipe's.
        #[arg(long)]
        recipe: Option<String>,
    },
    /// Send a recipe's held messages (all, or those named with --message).
    Approve {
        /// The recipe's id.
        recipe: String,
        /// A held message's key (`message` in the list); repeat it for several.
        #[arg(long = "message")]
        messages: Vec<String>,
    },
    /// Do not send a recipe's held messages (all, or those named with --message): their runs
    /// go on with the step blocked.
    Reject {
        /// The recipe's id.
        recipe: String,
        /// A held message's key (`message` in the list); repeat it for several.
        #[arg(long = "message")]
        messages: Vec<String>,
    },
}

pub async fn run(cmd: ApprovalsCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let rows = match cmd {
        ApprovalsCommand::List { recipe } => store.held_sends(recipe.as_deref()).await?,
        ApprovalsCommand::Approve { recipe, messages } | ApprovalsCommand::Reject { recipe, messages }
            if store.get_recipe(&recipe).await?.is_none() =>
        {
            let _ = messages;
            bail!("no recipe `{recipe}`; `enlace approvals list` shows the held messages and their recipes")
        }
        ApprovalsCommand::Approve { recipe, messages } => {
            store.decide_held_sends(&recipe, (!messages.is_empty()).then_some(messages), true, now).await?
        }
        ApprovalsCommand::Reject { recipe, messages } => {
            store.decide_held_sends(&recipe, (!messages.is_empty()).then_some(messages), false, now).await?
        }
    };
    let out: Vec<_> = rows.into_iter().map(held_view).collect();
    println!("{}", serde_json::to_string_pretty(&out)?);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
