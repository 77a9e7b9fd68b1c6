//! `enlace channels` and `enlace posts`: the social scheduler from the command line, with
//! the same calls as the API (`/api/v1/social/...`). It works on the store directly, beside
//! a running server: a post scheduled here is published by the server's runner at its time.
//! Output is JSON, as the API answers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use enlace_core::social::{Media, Slot};
use enlace_runner::social::{ChannelInput, PostInput, TargetInput, When};
use enlace_runner::{Runner, RunnerConfig, SystemClock};
use enlace_store::social::PostFilter;
use enlace_web::api::social::{channel_view, post_view};
use serde_json::{Value, json};

use crate::{StoreArgs, open_store, transport};

#[derive(Subcommand)]
pub enum ChannelsCommand {
    /// Every channel, as JSON.
    List,
    /// One channel.
    Show { id: String },
    /// Create a channel: a network, a connection to its app, the account's parameters, a
    /// time zone and queue time slots.
    Create {
        /// A label.
        #[arg(long)]
        name: String,
        /// mastodon, bluesky, x, linkedin or facebook_page.
        #[arg(long)]
        network: String,
        /// The connection to the network's app.
        #[arg(long)]
        connection: String,
        /// An account parameter, KEY=VALUE: handle=alice.bsky.social (Bluesky),
        /// author=urn:li:person:ID (LinkedIn), page_id=ID (Facebook page).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// The IANA time zone of the slots.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// A queue slot, DAYS@HH:MM (days: mon,tue,... or `daily`), like `mon-fri@09:00`
        /// or `mon,wed@13:30`; repeat it.
        #[arg(long = "slot", value_name = "DAYS@HH:MM")]
        slots: Vec<String>,
    },
    /// Pause a channel: its posts wait.
    Pause {
        id: String,
        #[arg(long, default_value = "paused by hand")]
        reason: String,
    },
    /// Resume a paused channel: posts that waited go at once.
    Resume { id: String },
    /// Delete a channel with nothing scheduled, publishing or held on it.
    Delete { id: String },
    /// The next free slots of a channel's queue.
    Queue {
        id: String,
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
}

#[derive(Subcommand)]
pub enum PostsCommand {
    /// Posts with a target planned or published in a time range (all without one).
    List {
        /// From this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    /// One post with its targets.
    Show { id: String },
    /// Create a post: a draft, at a time (`--at`) or in each channel's queue (`--queue`).
    Create(CreateArgs),
    /// Check a post against its channels without saving it.
    Validate(CreateArgs),
    /// Schedule or reschedule a post (or one target) at a time.
    Schedule {
        id: String,
        /// The time (RFC 3339).
        #[arg(long)]
        at: String,
        #[arg(long)]
        target: Option<String>,
    },
    /// Put a post (or one target) in the next free slot of its channel's queue.
    Queue {
        id: String,
        #[arg(long)]
        target: Option<String>,
    },
    /// Take a post (or one target) back to draft.
    Unschedule {
        id: String,
        #[arg(long)]
        target: Option<String>,
    },
    /// Cancel a post (or one target).
    Cancel {
        id: String,
        #[arg(long)]
        target: Option<String>,
    },
    /// Say that a held target is on the network (it may have been published after a timeout).
    Confirm {
        id: String,
        target: String,
        #[arg(long)]
        remote_id: Option<String>,
        #[arg(long)]
        url: Option<String>,
    },
    /// Say that a held (or failed) target is not on the network: publish it now.
    Retry { id: String, target: String },
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The text.
    #[arg(long, default_value = "")]
    text: String,
    /// A channel to post to; repeat it. `ID=TEXT` gives that channel its own text.
    #[arg(long = "channel", value_name = "ID[=TEXT]", required = true)]
    channels: Vec<String>,
    /// A link (its own field on LinkedIn and Facebook pages, else at the end of the text).
    #[arg(long)]
    link: Option<String>,
    /// A picture or video, URL|MIME[|ALT]; repeat it.
    #[arg(long = "media", value_name = "URL|MIME[|ALT]")]
    media: Vec<String>,
    /// An option, KEY=VALUE: visibility, content_warning, language.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// A JSON file with the whole post instead (`{text, media, link, options, targets}`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["text", "link", "media", "options"])]
    file: Option<PathBuf>,
    /// Publish at this time (RFC 3339).
    #[arg(long, conflicts_with = "queue")]
    at: Option<String>,
    /// Put it in the next free slot of each channel's queue.
    #[arg(long)]
    queue: bool,
}

fn kv(list: &[String], what: &str) -> Result<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    for p in list {
        let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("{what} `{p}` is not KEY=VALUE"))?;
        m.insert(k.trim().into(), json!(v));
    }
    Ok(m)
}

/// `mon-fri@09:00`, `daily@13:00`, `mon,wed@18:30`.
fn slot(s: &str) -> Result<Slot> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let (days, time) = s.split_once('@').ok_or_else(|| anyhow!("--slot `{s}` is not DAYS@HH:MM, like mon-fri@09:00"))?;
    let mut out = vec![];
    if days != "daily" {
        for part in days.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let i = DAYS.iter().position(|d| *d == a).ok_or_else(|| anyhow!("`{a}` is not a day (mon..sun)"))?;
                    let j = DAYS.iter().position(|d| *d == b).ok_or_else(|| anyhow!("`{b}` is not a day (mon..sun)"))?;
                    out.extend(DAYS[i.min(j)..=i.max(j)].iter().map(|d| d.to_string()));
                }
                None => out.push(part.to_string()),
            }
        }
    }
    let sl = Slot { days: out, time: time.to_string() };
    sl.parse().map_err(|e| anyhow!("--slot `{s}`: {e}"))?;
    Ok(sl)
}

fn post_of(a: &CreateArgs) -> Result<PostInput> {
    let targets = a
        .channels
        .iter()
        .map(|c| match c.split_once('=') {
            Some((id, text)) => TargetInput { channel: id.into(), text: Some(text.into()) },
            None => TargetInput { channel: c.clone(), text: None },
        })
        .collect::<Vec<_>>();
    if let Some(f) = &a.file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let mut p: PostInput = serde_json::from_str(&text).with_context(|| format!("{} is not a post", f.display()))?;
        if p.targets.is_empty() {
            p.targets = targets;
        }
        return Ok(p);
    }
    let media = a
        .media
        .iter()
        .map(|m| {
            let mut it = m.splitn(3, '|');
            let url = it.next().unwrap_or_default().to_string();
            let mime_type = it.next().ok_or_else(|| anyhow!("--media `{m}` is not URL|MIME[|ALT]"))?.to_string();
            Ok(Media { url, mime_type, alt: it.next().map(str::to_string) })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PostInput { text: a.text.clone(), media, link: a.link.clone(), options: kv(&a.options, "--option")?, targets })
}

fn time(s: &str) -> Result<i64> {
    enlace_runner::exec_parse_time(s).map_err(|e| anyhow!("`{s}`: {e}"))
}

fn runner(store: &enlace_store::Store) -> Result<Runner> {
    // No workers: this process publishes nothing; the server's runner does.
    let config = RunnerConfig { workers: false, concurrency: 1, ..RunnerConfig::default() };
    Ok(Runner::new(store.clone(), enlace_connectors::registry(), config, transport()?, Arc::new(SystemClock)))
}

pub async fn channels(cmd: ChannelsCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    let social = runner(&store)?.social();
    let out = match cmd {
        ChannelsCommand::List => serde_json::to_value(social.channels().await?.into_iter().map(channel_view).collect::<Vec<_>>())?,
        ChannelsCommand::Show { id } => serde_json::to_value(channel_view(social.channel(&id).await?))?,
        ChannelsCommand::Create { name, network, connection, params, timezone, slots } => {
            let input = ChannelInput {
                name,
                network,
                connection: Some(connection),
                params: kv(&params, "--param")?,
                timezone,
                slots: slots.iter().map(|s| slot(s)).collect::<Result<_>>()?,
            };
            serde_json::to_value(channel_view(social.create_channel(input).await?))?
        }
        ChannelsCommand::Pause { id, reason } => serde_json::to_value(channel_view(social.pause_channel(&id, &reason).await?))?,
        ChannelsCommand::Resume { id } => serde_json::to_value(channel_view(social.resume_channel(&id).await?))?,
        ChannelsCommand::Delete { id } => {
            social.delete_channel(&id).await?;
            json!({"deleted": id})
        }
        ChannelsCommand::Queue { id, count } => {
            let free = social.free_slots(&id, count).await?;
            json!({"channel": id, "free_slots": free.into_iter().map(enlace_runner::clock::rfc3339).collect::<Vec<_>>()})
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn posts(cmd: PostsCommand, s: &StoreArgs) -> Result<ExitCode> {
    let store = open_store(s).await?;
    let social = runner(&store)?.social();
    let out = match cmd {
        PostsCommand::List { from, to, channel, status } => {
            let f = PostFilter {
                from: from.as_deref().map(time).transpose()?,
                to: to.as_deref().map(time).transpose()?,
                channel_id: channel,
                status,
                limit: 1000,
            };
            serde_json::to_value(social.posts(&f).await?.into_iter().map(post_view).collect::<Vec<_>>())?
        }
        PostsCommand::Show { id } => serde_json::to_value(post_view(social.post(&id).await?))?,
        PostsCommand::Create(a) => {
            let when = match (&a.at, a.queue) {
                (Some(t), _) => When::At(time(t)?),
                (None, true) => When::Queue,
                (None, false) => When::Draft,
            };
            serde_json::to_value(post_view(social.create_post(post_of(&a)?, when, "cli", None).await?))?
        }
        PostsCommand::Validate(a) => {
            let checked = social.validate(&post_of(&a)?).await?;
            let mut ok = true;
            let v: Vec<Value> = checked
                .into_iter()
                .map(|(ch, r)| match r {
                    Ok(m) => {
                        json!({"channel": ch.id, "network": ch.network, "unit": m.unit, "length": m.length, "max": m.max, "problems": []})
                    }
                    Err(p) => {
                        ok = false;
                        json!({"channel": ch.id, "network": ch.network, "problems": p})
                    }
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
            store.close().await;
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        PostsCommand::Schedule { id, at, target } => {
            serde_json::to_value(post_view(social.schedule(&id, target.as_deref(), time(&at)?).await?))?
        }
        PostsCommand::Queue { id, target } => serde_json::to_value(post_view(social.add_to_queue(&id, target.as_deref()).await?))?,
        PostsCommand::Unschedule { id, target } => serde_json::to_value(post_view(social.unschedule(&id, target.as_deref()).await?))?,
        PostsCommand::Cancel { id, target } => serde_json::to_value(post_view(social.cancel(&id, target.as_deref()).await?))?,
        PostsCommand::Confirm { id, target, remote_id, url } => {
            serde_json::to_value(post_view(social.confirm(&id, &target, remote_id, url).await?))?
        }
        PostsCommand::Retry { id, target } => serde_json::to_value(post_view(social.retry(&id, &target).await?))?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
