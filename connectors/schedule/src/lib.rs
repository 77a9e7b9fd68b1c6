//! `schedule`: start a recipe on a clock (cron, in a time zone).

use enlace_core::manifest::schema_of;
use enlace_core::{Connector, TriggerKind, TriggerSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The `with` of `schedule.cron`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CronConfig {
    /// Five fields: minute hour day-of-month month day-of-week, for example `0 9 * * MON-FRI`
    /// (9:00 on weekdays). `@hourly`, `@daily`, `@weekly`, `@monthly` also work.
    pub cron: String,
    /// The IANA time zone the expression is read in, for example `Europe/Paris`. Default UTC.
    /// Daylight-saving changes follow the zone's rules.
    pub timezone: Option<String>,
}

/// The event a tick produces.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Tick {
    /// The scheduled time of this tick (RFC 3339, UTC).
    pub fired_at: String,
}

pub fn connector() -> Connector {
    Connector::builder("schedule", "Schedule", "Starts a recipe on a schedule.")
        .builtin_trigger(TriggerSpec {
            id: "cron".into(),
            name: "On a cron schedule".into(),
            description: "Starts the recipe once per tick of a cron expression, in the given time zone. However many nodes run, each tick fires once; ticks missed while Enlace was stopped fire once, together, at the next start.".into(),
            kind: TriggerKind::Schedule,
            config_schema: schema_of::<CronConfig>(),
            output_schema: schema_of::<Tick>(),
            sample: json!({"fired_at": "2026-11-25T09:00:00Z"}),
        })
        .build()
}
