//! The connector catalog: apps, their triggers and actions, with field schemas.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct AppSummary {
    pub id: String,
    pub name: String,
    pub description: String,
    pub auth: String,
    pub triggers: Vec<String>,
    pub actions: Vec<String>,
}

/// Every app this installation knows.
#[utoipa::path(get, path = "/api/v1/connectors", tag = "connectors", responses((status = 200, body = Vec<AppSummary>)))]
pub async fn list(State(s): State<AppState>) -> Json<Vec<AppSummary>> {
    Json(
        s.runner
            .registry()
            .apps()
            .map(|c| {
                let m = &c.manifest;
                AppSummary {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    description: m.description.clone(),
                    auth: serde_json::to_value(m.auth).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                    triggers: m.triggers.iter().map(|t| t.id.clone()).collect(),
                    actions: m.actions.iter().map(|a| a.id.clone()).collect(),
                }
            })
            .collect(),
    )
}

/// One app's manifest: triggers and actions with their input and output schemas and samples.
#[utoipa::path(get, path = "/api/v1/connectors/{app}", tag = "connectors", params(("app" = String, Path)), responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get(State(s): State<AppState>, Path(app): Path<String>) -> ApiResult<Json<Value>> {
    let c = s
        .runner
        .registry()
        .get(&app)
        .ok_or_else(|| ApiError::not_found(format!("no app `{app}`; installed: {}", s.runner.registry().app_ids().join(", "))))?;
    Ok(Json(serde_json::to_value(&c.manifest).unwrap_or(Value::Null)))
}
