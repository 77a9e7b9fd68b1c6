//! The state of connectors' triggers: polling triggers (a cursor, the dedupe keys seen, the
//! cursor's history for rewinds, batches held by the flood guard) and subscribe triggers
//! (the app's subscription). Everything is keyed by recipe id, not by version, so that an
//! edit of a recipe neither re-fires nor misses items.
//!
//! The invariant: the items a poll found go in as events and runs (the inbox's acceptance
//! path) in the same transaction as the cursor and the seen keys, fenced by the poll's
//! lease. A crash before the commit loses nothing (the next poll finds the items again, the
//! cursor has not moved); a crash after it doubles nothing (the keys are seen). Each item's
//! event carries the dedupe key `poll:<key>` (`poll:<key>:<n>` when a rewind fires it for
//! the `n`th time), so the inbox refuses a second run of an item even after its seen key was
//! pruned.
//!
//! Bounds: a commit keeps the [`SEEN_KEEP`] most recently seen keys of its recipe and drops
//! keys no poll returned for [`SEEN_MAX_AGE_MS`]; the cursor history keeps the last
//! [`CURSOR_HISTORY_KEEP`] changes per recipe.

use enlace_core::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::{Accepted, Millis};
use crate::{Backend, Result, Store};

/// The most dedupe keys kept per recipe.
pub const SEEN_KEEP: i64 = 10_000;
/// How long a key no poll returns any more is kept: 30 days.
pub const SEEN_MAX_AGE_MS: i64 = 30 * 86_400_000;
/// The most cursor changes kept per recipe, for rewinds.
pub const CURSOR_HISTORY_KEEP: i64 = 1_000;

/// A polled recipe's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PollState {
    pub recipe_id: String,
    pub cursor: Option<String>,
    /// `None` until the seeding poll committed.
    pub seeded_at: Option<Millis>,
    pub last_polled_at: Option<Millis>,
    pub next_poll_at: Millis,
    /// The classified error of the last poll (`None` when it succeeded).
    pub last_error: Option<Value>,
    /// Set by an auth error: polling waits for the connection to be repaired.
    pub paused: bool,
    /// Failed polls in a row.
    pub failures: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Millis>,
    pub updated_at: Millis,
}

/// A dedupe key the store has seen for a recipe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeenKey {
    pub key: String,
    pub first_seen_at: Millis,
    pub seen_at: Millis,
    /// How many runs the item started (0: seeded, held or discarded).
    pub fired: i64,
    pub fired_at: Option<Millis>,
    /// A rewind with `refire` asked to fire it again.
    pub rearmed: bool,
}

impl SeenKey {
    /// Whether a poll that returns this key again should leave it alone.
    pub fn settled(&self) -> bool {
        !self.rearmed
    }
}

/// One polled item: its dedupe key and the event a run gets as `trigger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollItem {
    pub key: String,
    pub event: Value,
}

/// A batch the flood guard held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldBatch {
    pub id: String,
    pub recipe_id: String,
    pub count: i64,
    pub created_at: Millis,
    /// `held`, `approved` or `discarded`.
    pub status: String,
    pub decided_at: Option<Millis>,
    /// Oldest first; empty in listings ([`Store::held_batches`]).
    pub items: Vec<PollItem>,
}

/// The cursor as it was from `at` on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CursorMark {
    pub cursor: Option<String>,
    pub at: Millis,
    /// `seed`, `poll` or `rewind`.
    pub reason: String,
}

/// What one poll decided, committed at once ([`Store::poll_commit`]).
#[derive(Debug, Clone, Default)]
pub struct PollCommit {
    pub recipe_id: String,
    /// The version the runs of fired items start with.
    pub recipe_version: i64,
    /// The node holding the poll's lease ([`Store::poll_claim`]); nothing is written if it
    /// no longer does.
    pub owner: String,
    pub now: Millis,
    /// The new cursor; `None` keeps the current one.
    pub cursor: Option<String>,
    /// This is the seeding poll: it records, fires nothing.
    pub seed: bool,
    /// Every key the poll returned (marked seen, or kept fresh).
    pub seen: Vec<String>,
    /// New items to fire, oldest first: each becomes an event and a queued run, unless its
    /// key turns out to be seen already (then it is skipped).
    pub fire: Vec<PollItem>,
    /// New items the flood guard holds as one batch (oldest first); marked seen.
    pub hold: Vec<PollItem>,
    pub next_poll_at: Millis,
    pub error: Option<Value>,
    pub paused: bool,
    pub failures: i64,
}

/// What a commit stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollCommitted {
    /// The runs started, oldest item first.
    pub runs: Vec<Accepted>,
    /// The held batch's id.
    pub held: Option<String>,
    /// Items to fire whose key was seen after all (nothing stored for them).
    pub skipped: usize,
}

/// A subscribe trigger's subscription at its app.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRow {
    pub recipe_id: String,
    pub app: String,
    pub event: String,
    pub subscription_id: String,
    pub target_url: String,
    /// The trigger's `with` it was made with (unsubscribing uses the same).
    pub config: Value,
    pub connection: Option<String>,
    /// Sealed at rest; never printed.
    pub secret: Option<Secret>,
    pub expires_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// The dedupe key of the event of an item fired for the `fired`th time.
pub(crate) fn event_dedupe_key(key: &str, fired: i64) -> String {
    if fired <= 1 { format!("poll:{key}") } else { format!("poll:{key}:{fired}") }
}

/// The `received_at` (and due time) of the `i`th of `n` items fired at `now`, oldest first:
/// a millisecond apart, the newest at `now`, so that workers claim them in order.
pub(crate) fn item_time(now: Millis, i: usize, n: usize) -> Millis {
    now - (n.saturating_sub(1 + i)) as i64
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $e,
            Backend::Postgres($b) => $e,
        }
    };
}

impl Store {
    // ---- polling triggers ----

    /// Every polled recipe's state.
    pub async fn poll_states(&self) -> Result<Vec<PollState>> {
        dispatch!(self, b => b.poll_states().await)
    }

    pub async fn poll_state(&self, recipe_id: &str) -> Result<Option<PollState>> {
        dispatch!(self, b => b.poll_state(recipe_id).await)
    }

    /// Takes the poll of a recipe for `owner` until `now + lease_ms`: creates its state
    /// (unseeded, due now) if it has none, and leases it if it is due (or `force`) and no
    /// other node holds an unexpired lease. `None` when it is not this node's to poll now.
    pub async fn poll_claim(&self, recipe_id: &str, owner: &str, now: Millis, lease_ms: i64, force: bool) -> Result<Option<PollState>> {
        dispatch!(self, b => b.poll_claim(recipe_id, owner, now, lease_ms, force).await)
    }

    /// The seen keys among `keys`.
    pub async fn poll_seen(&self, recipe_id: &str, keys: &[String]) -> Result<Vec<SeenKey>> {
        dispatch!(self, b => b.poll_seen(recipe_id, keys).await)
    }

    /// Commits a poll in one transaction: the fired items' events and runs, the held batch,
    /// the seen keys, the cursor (and its history), the schedule and the error; and
    /// releases the lease. `None`, writing nothing, when `owner` no longer holds the lease.
    pub async fn poll_commit(&self, c: PollCommit) -> Result<Option<PollCommitted>> {
        dispatch!(self, b => b.poll_commit(c).await)
    }

    /// Forgets a recipe's poll state (a disabled recipe): its next poll seeds again. The
    /// seen keys, the cursor history and the held batches stay.
    pub async fn poll_forget(&self, recipe_id: &str) -> Result<bool> {
        dispatch!(self, b => b.poll_forget(recipe_id).await)
    }

    /// The cursor in effect at `at`: the last change at or before it.
    pub async fn poll_cursor_at(&self, recipe_id: &str, at: Millis) -> Result<Option<CursorMark>> {
        dispatch!(self, b => b.poll_cursor_at(recipe_id, at).await)
    }

    /// The latest cursor changes, newest first.
    pub async fn poll_cursors(&self, recipe_id: &str, limit: i64) -> Result<Vec<CursorMark>> {
        dispatch!(self, b => b.poll_cursors(recipe_id, limit).await)
    }

    /// Moves the cursor back to `cursor`, due now, and re-arms `rearm` (seen keys a rewind
    /// with `refire` fires again). `NotFound` without a state; `Conflict` while a node polls.
    pub async fn poll_rewind(&self, recipe_id: &str, cursor: Option<String>, rearm: Vec<String>, now: Millis) -> Result<PollState> {
        dispatch!(self, b => b.poll_rewind(recipe_id, cursor, rearm, now).await)
    }

    /// A recipe's held batches, newest first, without their items.
    pub async fn held_batches(&self, recipe_id: &str) -> Result<Vec<HeldBatch>> {
        dispatch!(self, b => b.held_batches(recipe_id).await)
    }

    /// One held batch with its items.
    pub async fn held_batch(&self, recipe_id: &str, batch_id: &str) -> Result<Option<HeldBatch>> {
        dispatch!(self, b => b.held_batch(recipe_id, batch_id).await)
    }

    /// Approves (fires every item, as runs of `recipe_version`) or discards (the items stay
    /// seen) a held batch, once: `Conflict` when it was decided already, `NotFound` when there
    /// is no such batch.
    pub async fn decide_held(
        &self,
        recipe_id: &str,
        batch_id: &str,
        approve: bool,
        recipe_version: i64,
        now: Millis,
    ) -> Result<(HeldBatch, Vec<Accepted>)> {
        dispatch!(self, b => b.decide_held(recipe_id, batch_id, approve, recipe_version, now).await)
    }

    // ---- subscribe triggers ----

    /// Records (or replaces) a recipe's subscription.
    pub async fn save_subscription(&self, s: SubscriptionRow) -> Result<()> {
        dispatch!(self, b => b.save_subscription(s).await)
    }

    pub async fn subscription(&self, recipe_id: &str) -> Result<Option<SubscriptionRow>> {
        dispatch!(self, b => b.subscription(recipe_id).await)
    }

    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionRow>> {
        dispatch!(self, b => b.subscriptions().await)
    }

    pub async fn delete_subscription(&self, recipe_id: &str) -> Result<bool> {
        dispatch!(self, b => b.delete_subscription(recipe_id).await)
    }
}
