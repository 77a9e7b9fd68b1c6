//! `enlace`: Enlace's own events. A recipe step `emit: NAME` publishes an event; recipes whose
//! trigger is `enlace.event` with that name start, with the emitted `data` as `trigger`.

use enlace_core::manifest::schema_of;
use enlace_core::{Connector, TriggerKind, TriggerSpec};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

/// The `with` of `enlace.event`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EventConfig {
    /// The event name to start on, as written in the emitting step (`emit: lead.qualified`).
    pub name: String,
}

pub fn connector() -> Connector {
    Connector::builder("enlace", "Enlace events", "Chains recipes: one recipe emits an event, others start on it.")
        .builtin_trigger(TriggerSpec {
            id: "event".into(),
            name: "On an Enlace event".into(),
            description: "Starts the recipe when a step of any recipe emits an event with this name. The event's data is the trigger. Each emit starts each listening recipe once, even when the emitting run is retried or replayed.".into(),
            kind: TriggerKind::Event,
            config_schema: schema_of::<EventConfig>(),
            output_schema: json!({"type": "object", "description": "The `data` of the emitting step."}),
            sample: json!({"email": "ada@example.com", "score": 42}),
        })
        .build()
}
