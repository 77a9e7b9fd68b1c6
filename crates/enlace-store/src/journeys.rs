//! Journeys: runs about one contact (tables in `migrations/*/…_journeys.sql`).
//!
//! A contact-scoped run *enters* its journey when it starts: [`Store::enter_journey`] binds the
//! run to its contact, records which timeline kinds should wake it while it waits, and applies
//! the recipe's re-entry rule, all in one transaction (on PostgreSQL under an advisory lock per
//! recipe and contact, so two nodes starting runs for one contact decide one after the other).
//! Entering is idempotent per run: a run that starts again (after a crash, or replayed) finds
//! its own entry.
//!
//! Waking: every contact change writes its timeline rows through one function
//! (`contacts::finish`), which also makes the contact's waiting runs that listen for those
//! kinds due at once ([`crate::contacts::ContactTx::wake_runs`]). A woken run reads the
//! timeline itself ([`Store::contact_events`]): the wake-up only saves waiting for the timeout,
//! so a wake-up lost in a crash loses nothing.

use enlace_core::contacts::TimelineEvent;

use crate::contacts::ContactTx;
use crate::{Backend, Millis, Result, Store};

/// A journey's re-entry rule, as the store applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryRule {
    /// Every run enters.
    Always,
    /// A contact enters once, ever.
    Once,
    /// Again only when the last entry is at least this many milliseconds old.
    Cooldown(Millis),
}

/// A run entering its journey.
#[derive(Debug, Clone)]
pub struct JourneyEntry {
    pub run_id: String,
    /// The node holding the run (the write checks it still does).
    pub owner: String,
    pub recipe_id: String,
    pub contact_id: String,
    pub rule: EntryRule,
    /// The timeline kinds that wake the run while it waits.
    pub wake_on: Vec<String>,
    pub now: Millis,
}

/// What entering decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// The run entered (or had entered before: a run that starts again).
    Yes,
    /// The re-entry rule refuses: the contact last entered at this time.
    Refused { last_entered_at: Millis },
    /// The run is no longer this node's (cancelled, handed back): nothing was written.
    NotOwner,
}

/// The `wake_on` column: `,kind,kind,` (searched for `,kind,`).
pub(crate) fn wake_on_text(kinds: &[String]) -> Option<String> {
    (!kinds.is_empty()).then(|| format!(",{},", kinds.join(",")))
}

/// Whether `rule` lets a contact whose last entry was `last` enter at `now`.
pub fn may_enter(rule: EntryRule, last: Option<Millis>, now: Millis) -> bool {
    match (rule, last) {
        (_, None) | (EntryRule::Always, _) => true,
        (EntryRule::Once, Some(_)) => false,
        (EntryRule::Cooldown(ms), Some(at)) => now - at >= ms,
    }
}

/// Enters a run into its journey (see the module's documentation).
pub(crate) async fn enter<T: ContactTx>(t: &mut T, j: &JourneyEntry) -> Result<Entered> {
    t.lock_journey(&j.recipe_id, &j.contact_id).await?;
    if !t.bind_run_contact(&j.run_id, &j.owner, &j.contact_id, wake_on_text(&j.wake_on).as_deref()).await? {
        return Ok(Entered::NotOwner);
    }
    let (mine, last) = t.journey_entries(&j.recipe_id, &j.contact_id, &j.run_id).await?;
    if mine {
        return Ok(Entered::Yes);
    }
    if !may_enter(j.rule, last, j.now) {
        return Ok(Entered::Refused { last_entered_at: last.unwrap_or_default() });
    }
    t.insert_journey_entry(&j.recipe_id, &j.contact_id, &j.run_id, j.now).await?;
    Ok(Entered::Yes)
}

impl Store {
    /// Binds a run to its contact and applies the journey's re-entry rule, atomically.
    pub async fn enter_journey(&self, j: JourneyEntry) -> Result<Entered> {
        match &self.backend {
            Backend::Sqlite(b) => b.enter_journey(j).await,
            Backend::Postgres(b) => b.enter_journey(j).await,
        }
    }

    /// A contact's timeline events of one kind at or after `since`, oldest first, at most `limit`.
    pub async fn contact_events(&self, contact_id: &str, kind: &str, since: Millis, limit: i64) -> Result<Vec<TimelineEvent>> {
        match &self.backend {
            Backend::Sqlite(b) => b.contact_events(contact_id, kind, since, limit.clamp(1, 1000)).await,
            Backend::Postgres(b) => b.contact_events(contact_id, kind, since, limit.clamp(1, 1000)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reentry_rules() {
        assert!(may_enter(EntryRule::Once, None, 10));
        assert!(!may_enter(EntryRule::Once, Some(1), 10));
        assert!(may_enter(EntryRule::Always, Some(9), 10));
        assert!(!may_enter(EntryRule::Cooldown(100), Some(0), 99));
        assert!(may_enter(EntryRule::Cooldown(100), Some(0), 100));
        assert_eq!(wake_on_text(&["a".into(), "b_c".into()]).as_deref(), Some(",a,b_c,"));
        assert_eq!(wake_on_text(&[]), None);
    }
}
