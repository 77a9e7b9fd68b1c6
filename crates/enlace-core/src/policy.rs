//! The send policy, as data and one pure function: what an action that reaches a person
//! declares ([`Reach`]), the installation's rules ([`PolicySettings`]), and the decision
//! about one message to one recipient ([`decide`]): sent, deferred until a time, or blocked
//! with the reason. The runner gathers the facts (in the store's transaction) and calls
//! [`decide`]; the simulator calls the same function, so both decide alike.
//!
//! No IO here: the facts ([`Subject`]) are handed in, the clock is `now`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{NaiveTime, TimeZone, Timelike};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contacts::ConsentStatus;

/// The purpose a step's message has when it names none.
pub const DEFAULT_PURPOSE: &str = "marketing";
/// A withdrawal recorded for this purpose on a channel suppresses the whole channel (a hard
/// bounce, a complaint, "unsubscribe from everything"): nothing goes out on it, not even
/// transactional messages.
pub const ALL_PURPOSES: &str = "all";

/// How an action names the people its message reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    /// Email addresses (`ana@example.com`, `Ana <ana@example.com>`, `{"email": ...}`).
    Email,
    /// Phone numbers in international form.
    Phone,
    /// Contact ids of the embedded contact store.
    ContactId,
}

/// What an action declares when it sends a message to a person: the channel, and the input
/// fields that hold the recipients. The runner applies the send policy to every call of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// The channel (one of [`crate::contacts::CHANNELS`]: `email`, `sms`, `social`, `ads`...).
    pub channel: String,
    pub kind: RecipientKind,
    /// The input fields holding recipients (`["to", "cc", "bcc"]`): each a string (several
    /// separated by commas), a list of strings, or objects with an `email` / `phone` field.
    pub fields: Vec<String>,
}

impl Reach {
    pub fn new(channel: &str, kind: RecipientKind, fields: &[&str]) -> Reach {
        Reach { channel: channel.to_string(), kind, fields: fields.iter().map(|f| f.to_string()).collect() }
    }

    /// The recipients named in an action's input, in order, without repeats. Email
    /// addresses are lowercased and taken out of `Name <address>`.
    pub fn recipients(&self, input: &Value) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for f in &self.fields {
            let mut found = vec![];
            collect(input.get(f.as_str()), self.kind, &mut found);
            for r in found {
                if !r.is_empty() && !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out
    }
}

fn collect(v: Option<&Value>, kind: RecipientKind, out: &mut Vec<String>) {
    match v {
        Some(Value::String(s)) => match kind {
            RecipientKind::Email => out.extend(s.split(',').map(email_of)),
            _ => out.push(s.trim().to_string()),
        },
        Some(Value::Array(list)) => list.iter().for_each(|x| collect(Some(x), kind, out)),
        Some(Value::Object(o)) => {
            let field = match kind {
                RecipientKind::Email => "email",
                RecipientKind::Phone => "phone",
                RecipientKind::ContactId => "id",
            };
            collect(o.get(field), kind, out)
        }
        _ => {}
    }
}

/// `Ana <ana@example.com>` -> `ana@example.com`, lowercased and trimmed.
fn email_of(s: &str) -> String {
    let s = s.trim();
    let inner = match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    };
    inner.trim().to_lowercase()
}

/// A frequency cap: at most `max` messages per `per` (a sliding window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// How many messages at most (1 or more).
    pub max: u32,
    /// In how long a window (`30d`, `1w`, `24h`).
    #[serde(with = "duration_text")]
    #[schemars(with = "String")]
    pub per: Duration,
}

/// A daily window in the contact's time zone when nothing that can wait is sent. `start`
/// after `end` spans midnight (`21:00` to `08:00`); equal times mean no quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// When the quiet hours start, local time (`21:00`).
    #[serde(with = "time_text")]
    #[schemars(with = "String")]
    pub start: NaiveTime,
    /// When they end: the first allowed moment (`08:00`).
    #[serde(with = "time_text")]
    #[schemars(with = "String")]
    pub end: NaiveTime,
}

/// One channel's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelRules {
    /// The channel's frequency cap on messages that are not transactional; none: uncapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
    /// This channel's quiet hours instead of the installation's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

/// The installation's send policy (`GET/PUT /api/v1/policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// The time zone of contacts whose `timezone` field is missing or not an IANA name.
    pub default_timezone: String,
    /// Quiet hours of every channel that does not set its own; none: no quiet hours.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// Rules per channel (`email`, `sms`, ...); a channel not listed is uncapped and keeps
    /// the installation's quiet hours.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelRules>,
    /// A cap over every channel together (a contact's messages of any channel), on top of
    /// each channel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_channels: Option<Cap>,
}

impl Default for PolicySettings {
    /// Marketing email at most 3 per 30 days, SMS at most 4 per 30 days, quiet hours
    /// 21:00-08:00 in the contact's time zone (none for ad audiences), UTC by default.
    fn default() -> Self {
        let cap = |max: u32, days: u64| Some(Cap { max, per: Duration::from_secs(days * 86_400) });
        let t = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap_or_default();
        let mut channels = BTreeMap::new();
        channels.insert("email".to_string(), ChannelRules { cap: cap(3, 30), quiet_hours: None });
        channels.insert("sms".to_string(), ChannelRules { cap: cap(4, 30), quiet_hours: None });
        channels.insert("ads".to_string(), ChannelRules { cap: None, quiet_hours: Some(QuietHours { start: t(0), end: t(0) }) });
        PolicySettings {
            default_timezone: "UTC".into(),
            quiet_hours: Some(QuietHours { start: t(21), end: t(8) }),
            channels,
            all_channels: None,
        }
    }
}

impl PolicySettings {
    /// Every problem, each as `(path, message)`.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errs = vec![];
        if self.default_timezone.parse::<chrono_tz::Tz>().is_err() {
            errs.push((
                "default_timezone".into(),
                format!("`{}` is not an IANA time zone; use a name like `Europe/Paris` or `UTC`", self.default_timezone),
            ));
        }
        let check_cap = |path: String, c: &Cap, errs: &mut Vec<(String, String)>| {
            if c.max == 0 {
                errs.push((format!("{path}.max"), "must be 1 or more (to send nothing on a channel, withdraw consent instead)".into()));
            }
            if c.per < Duration::from_secs(60) {
                errs.push((format!("{path}.per"), "must be at least `1m`".into()));
            }
        };
        for (ch, rules) in &self.channels {
            if let Err(e) = crate::contacts::check_channel(ch) {
                errs.push((format!("channels.{ch}"), e));
            }
            if let Some(c) = &rules.cap {
                check_cap(format!("channels.{ch}.cap"), c, &mut errs);
            }
        }
        if let Some(c) = &self.all_channels {
            check_cap("all_channels".into(), c, &mut errs);
        }
        errs
    }

    fn rules(&self, channel: &str) -> Option<&ChannelRules> {
        self.channels.get(channel)
    }

    /// The quiet hours that apply on a channel.
    pub fn quiet_hours(&self, channel: &str) -> Option<QuietHours> {
        self.rules(channel).and_then(|r| r.quiet_hours).or(self.quiet_hours)
    }

    /// The longest cap window: how far back the sends of a contact must be read.
    pub fn longest_window(&self) -> Duration {
        self.channels.values().filter_map(|r| r.cap.map(|c| c.per)).chain(self.all_channels.map(|c| c.per)).max().unwrap_or_default()
    }

    pub fn default_tz(&self) -> chrono_tz::Tz {
        self.default_timezone.parse().unwrap_or(chrono_tz::UTC)
    }
}

/// The message about to leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: String,
    pub purpose: String,
    /// Transactional messages (a receipt, a password reset) skip the frequency cap and quiet
    /// hours, never a withdrawal of consent or a suppression.
    pub transactional: bool,
}

/// One earlier message to the same person that counts toward the caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastSend {
    pub channel: String,
    pub at: i64,
}

/// What is known about the recipient when the message is about to leave.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// The recipient as addressed (an email, a number).
    pub address: String,
    /// The contact it belongs to, when there is one.
    pub contact_id: Option<String>,
    /// The latest consent decision for the message's purpose and channel, with a sentence
    /// on where it came from (`signup form, 2026-03-01`).
    pub consent: Option<(ConsentStatus, String)>,
    /// The channel is suppressed for this recipient (STOP by SMS, a hard bounce, "all"
    /// withdrawn): why.
    pub suppressed: Option<String>,
    /// The contact's `timezone` field (IANA), if any.
    pub timezone: Option<String>,
    /// Earlier messages that were not transactional, newest or oldest first.
    pub sent: Vec<PastSend>,
}

/// The policy's answer for one message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Sent,
    /// Not now: at `until` (Unix milliseconds) at the earliest.
    Deferred {
        until: i64,
        why: String,
    },
    Blocked {
        why: String,
    },
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Sent => "sent",
            Decision::Deferred { .. } => "deferred",
            Decision::Blocked { .. } => "blocked",
        }
    }
}

/// Decides about one message to one recipient. In order: a suppression or a withdrawn
/// consent blocks (transactional messages too); a marketing message needs consent granted;
/// then (not for transactional messages) the channel's cap and the all-channels cap defer to
/// the moment a slot frees, and quiet hours in the recipient's time zone defer to their end.
pub fn decide(s: &Subject, m: &Message, p: &PolicySettings, now: i64) -> Decision {
    if let Some(why) = &s.suppressed {
        return Decision::Blocked { why: format!("{} is suppressed on {}: {why}", s.address, m.channel) };
    }
    match &s.consent {
        Some((ConsentStatus::Withdrawn, how)) => {
            return Decision::Blocked { why: format!("{} withdrew consent to `{}` by {} ({how})", s.address, m.purpose, m.channel) };
        }
        Some((ConsentStatus::Granted, _)) => {}
        None if m.transactional => {}
        None => {
            let whom = match &s.contact_id {
                Some(id) => format!("the contact `{id}` ({})", s.address),
                None => format!("{} (not a contact)", s.address),
            };
            return Decision::Blocked {
                why: format!(
                    "no consent to `{}` by {} is recorded for {whom}; record it with its evidence (contacts.record_consent) before sending",
                    m.purpose, m.channel
                ),
            };
        }
    }
    if m.transactional {
        return Decision::Sent;
    }
    let mut at = now;
    let mut why = vec![];
    if let Some(cap) = p.rules(&m.channel).and_then(|r| r.cap) {
        let free = cap_frees(cap, s.sent.iter().filter(|x| x.channel == m.channel).map(|x| x.at), at);
        if free > at {
            why.push(format!("{} {} message(s) in {} already (the cap)", cap.max, m.channel, window(cap.per)));
            at = free;
        }
    }
    if let Some(cap) = p.all_channels {
        let free = cap_frees(cap, s.sent.iter().map(|x| x.at), at);
        if free > at {
            why.push(format!("{} messages in {} on all channels already (the cap)", cap.max, window(cap.per)));
            at = free;
        }
    }
    if let Some(q) = p.quiet_hours(&m.channel) {
        let tz = s.timezone.as_deref().and_then(|t| t.parse::<chrono_tz::Tz>().ok()).unwrap_or_else(|| p.default_tz());
        let end = quiet_end(q, tz, at);
        if end > at {
            why.push(format!("quiet hours {}-{} in {tz}", q.start.format("%H:%M"), q.end.format("%H:%M")));
            at = end;
        }
    }
    if at > now { Decision::Deferred { until: at, why: why.join("; ") } } else { Decision::Sent }
}

/// A cap's window as people write it: `30d` rather than `4w2d`.
fn window(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => crate::duration::format_duration(d),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => crate::duration::format_duration(d),
    }
}

/// The first moment at or after `at` when fewer than `cap.max` of `sent` fall in the window
/// ending then: `at` itself, or when the send that fills the cap leaves the window.
fn cap_frees(cap: Cap, sent: impl Iterator<Item = i64>, at: i64) -> i64 {
    let per = cap.per.as_millis() as i64;
    let mut recent: Vec<i64> = sent.filter(|t| *t > at - per).collect();
    if recent.len() < cap.max as usize {
        return at;
    }
    recent.sort_unstable_by(|a, b| b.cmp(a));
    // With the newest max-1 kept, the max-th newest must leave the window.
    recent[cap.max as usize - 1] + per
}

/// When the quiet hours around `at` end (`at` itself when it is not in them), in `tz`. In a
/// daylight-saving gap the first instant after it is used.
pub fn quiet_end(q: QuietHours, tz: chrono_tz::Tz, at: i64) -> i64 {
    if q.start == q.end {
        return at;
    }
    let Some(utc) = chrono::DateTime::from_timestamp_millis(at) else { return at };
    let local = utc.with_timezone(&tz);
    let t = local.time().with_nanosecond(0).unwrap_or(local.time());
    let in_quiet = if q.start < q.end { t >= q.start && t < q.end } else { t >= q.start || t < q.end };
    if !in_quiet {
        return at;
    }
    let mut day = local.date_naive();
    if t >= q.end && q.start > q.end {
        day = day.succ_opt().unwrap_or(day);
    }
    let naive = day.and_time(q.end);
    let resolved =
        tz.from_local_datetime(&naive).earliest().or_else(|| tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest());
    resolved.map(|d| d.timestamp_millis()).unwrap_or(at).max(at)
}

/// The blast-radius limits of a recipe: how many messages it may send before the rest wait
/// for a person's approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendLimits {
    pub sends_per_hour: Option<u32>,
    pub sends_per_day: Option<u32>,
}

impl SendLimits {
    /// Why one more message would be above the limits, given the recipe's sends in the last
    /// hour and day; `None` when it is within them.
    pub fn exceeded(&self, last_hour: i64, last_day: i64, adding: i64) -> Option<String> {
        // The store counts up to one above a limit: a count above it reads "more than".
        let sent = |n: i64, limit: u32| if n > i64::from(limit) { format!("more than {limit}") } else { n.to_string() };
        if let Some(h) = self.sends_per_hour
            && last_hour + adding > h as i64
        {
            return Some(format!(
                "the recipe sent {} message(s) in the last hour; its limit is {h} per hour (limits.sends_per_hour)",
                sent(last_hour, h)
            ));
        }
        if let Some(d) = self.sends_per_day
            && last_day + adding > d as i64
        {
            return Some(format!(
                "the recipe sent {} message(s) in the last day; its limit is {d} per day (limits.sends_per_day)",
                sent(last_day, d)
            ));
        }
        None
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::window(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        crate::duration::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

mod time_text {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let s = String::deserialize(d)?;
        NaiveTime::parse_from_str(s.trim(), "%H:%M")
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a time of day; write it as HH:MM, like `21:00`")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DAY: i64 = 86_400_000;
    // 2026-03-02T12:00:00Z, a Monday.
    const NOON: i64 = 1_772_452_800_000;

    fn subject(consent: Option<ConsentStatus>) -> Subject {
        Subject {
            address: "ana@example.com".into(),
            contact_id: Some("c1".into()),
            consent: consent.map(|c| (c, "signup form".to_string())),
            suppressed: None,
            timezone: None,
            sent: vec![],
        }
    }

    fn marketing(channel: &str) -> Message {
        Message { channel: channel.into(), purpose: "marketing".into(), transactional: false }
    }

    #[test]
    fn consent_and_suppression_block_even_transactional() {
        let p = PolicySettings::default();
        let no = decide(&subject(None), &marketing("email"), &p, NOON);
        assert!(matches!(&no, Decision::Blocked { why } if why.contains("no consent to `marketing` by email")), "{no:?}");
        let receipt = Message { transactional: true, ..marketing("email") };
        assert_eq!(decide(&subject(None), &receipt, &p, NOON), Decision::Sent);
        let out = decide(&subject(Some(ConsentStatus::Withdrawn)), &receipt, &p, NOON);
        assert!(matches!(&out, Decision::Blocked { why } if why.contains("withdrew consent")), "{out:?}");
        let mut stopped = subject(Some(ConsentStatus::Granted));
        stopped.suppressed = Some("replied STOP".into());
        assert!(matches!(decide(&stopped, &receipt, &p, NOON), Decision::Blocked { .. }));
        assert_eq!(decide(&subject(Some(ConsentStatus::Granted)), &marketing("email"), &p, NOON), Decision::Sent);
    }

    #[test]
    fn the_fourth_marketing_email_waits_for_a_slot() {
        let p = PolicySettings::default();
        let mut s = subject(Some(ConsentStatus::Granted));
        s.sent = [NOON - 20 * DAY, NOON - 10 * DAY, NOON - DAY].iter().map(|&at| PastSend { channel: "email".into(), at }).collect();
        // The oldest leaves the 30-day window ten days from now; 12:00 UTC is not quiet.
        match decide(&s, &marketing("email"), &p, NOON) {
            Decision::Deferred { until, why } => {
                assert_eq!(until, NOON + 10 * DAY);
                assert!(why.contains("3 email message(s) in 30d"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // SMS has its own cap; a transactional email skips the cap.
        assert_eq!(decide(&s, &marketing("sms"), &p, NOON), Decision::Sent);
        assert_eq!(decide(&s, &Message { transactional: true, ..marketing("email") }, &p, NOON), Decision::Sent);
        // Ten days later it goes.
        assert_eq!(decide(&s, &marketing("email"), &p, NOON + 10 * DAY), Decision::Sent);
        // The all-channels cap counts every channel.
        let p2 = PolicySettings { all_channels: Some(Cap { max: 2, per: Duration::from_secs(7 * 86_400) }), ..p };
        assert!(matches!(decide(&s, &marketing("sms"), &p2, NOON), Decision::Sent));
        s.sent.push(PastSend { channel: "sms".into(), at: NOON - 2 * DAY });
        assert!(matches!(decide(&s, &marketing("sms"), &p2, NOON), Decision::Deferred { until, .. } if until == NOON + 5 * DAY));
    }

    #[test]
    fn quiet_hours_in_the_contacts_zone() {
        let p = PolicySettings::default();
        let mut s = subject(Some(ConsentStatus::Granted));
        s.timezone = Some("America/New_York".into());
        // 2026-03-02T08:00Z is 03:00 in New York (EST): it leaves at 08:00 EST = 13:00Z.
        let three_am = NOON - 4 * 3_600_000;
        assert_eq!(
            decide(&s, &marketing("email"), &p, three_am),
            Decision::Deferred { until: NOON + 3_600_000, why: "quiet hours 21:00-08:00 in America/New_York".into() }
        );
        // 22:00 local waits for the next morning; 12:00 local goes.
        assert_eq!(quiet_end(p.quiet_hours.unwrap(), chrono_tz::America::New_York, NOON + 15 * 3_600_000), NOON + DAY + 3_600_000);
        assert_eq!(decide(&s, &marketing("email"), &p, NOON + 5 * 3_600_000), Decision::Sent);
        // A transactional message ignores quiet hours; an unknown zone falls back to the default.
        assert_eq!(decide(&s, &Message { transactional: true, ..marketing("email") }, &p, three_am), Decision::Sent);
        s.timezone = Some("Mars/Olympus".into());
        assert_eq!(decide(&s, &marketing("email"), &p, three_am), Decision::Sent, "08:00 UTC is the end of quiet hours");
        // Ads have none by default.
        assert_eq!(decide(&s, &marketing("ads"), &p, NOON - 10 * 3_600_000), Decision::Sent);
    }

    #[test]
    fn recipients_settings_and_limits() {
        let reach = Reach::new("email", RecipientKind::Email, &["to", "cc", "bcc"]);
        let input = json!({"to": "Ana <Ana@Example.com>, bo@example.com", "cc": ["bo@example.com"], "bcc": [{"email": "cy@example.com"}]});
        assert_eq!(reach.recipients(&input), vec!["ana@example.com", "bo@example.com", "cy@example.com"]);
        let p: PolicySettings = serde_json::from_value(json!({
            "default_timezone": "Europe/Paris",
            "quiet_hours": {"start": "22:00", "end": "07:30"},
            "channels": {"email": {"cap": {"max": 2, "per": "7d"}}}
        }))
        .unwrap();
        assert!(p.check().is_empty());
        assert_eq!(p.longest_window(), Duration::from_secs(7 * 86_400));
        let bad: PolicySettings =
            serde_json::from_value(json!({"default_timezone": "Paris", "channels": {"fax": {"cap": {"max": 0, "per": "1s"}}}})).unwrap();
        let errs: Vec<String> = bad.check().into_iter().map(|(p, _)| p).collect();
        assert_eq!(errs, vec!["default_timezone", "channels.fax", "channels.fax.cap.max", "channels.fax.cap.per"]);
        assert!(
            serde_json::from_value::<PolicySettings>(json!({"default_timezone": "UTC", "quiet_hours": {"start": "9pm", "end": "08:00"}}))
                .is_err()
        );
        let l = SendLimits { sends_per_hour: Some(2), sends_per_day: Some(10) };
        assert!(l.exceeded(1, 1, 1).is_none());
        assert!(l.exceeded(2, 2, 1).unwrap().contains("2 per hour"));
        assert!(l.exceeded(0, 10, 1).unwrap().contains("10 per day"));
    }
}
