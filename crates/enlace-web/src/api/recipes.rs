//! Recipes: create, update, validate, enable, disable, versions.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use enlace_recipe::Recipe;
use enlace_store::RecipeRow;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};

/// A recipe as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipeView {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// The version that runs.
    pub version: i64,
    /// `file` (loaded with `--recipes`), `api` or `cli`.
    pub origin: String,
    pub trigger: TriggerView,
    pub created_at: String,
    pub updated_at: String,
    /// The recipe as written (the current version), as JSON.
    #[schema(value_type = Object)]
    pub source: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerView {
    pub app: String,
    pub event: String,
    /// For `webhook.catch` and subscribe triggers: the path to POST to (`/hooks/...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SavedView {
    pub recipe: RecipeView,
    /// False when the body equals the current version: nothing changed.
    pub new_version: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidView {
    pub valid: bool,
    pub id: String,
    pub steps: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: i64,
    pub created_at: String,
    #[schema(value_type = Object)]
    pub source: Value,
}

pub(crate) fn ts(ms: i64) -> String {
    enlace_runner::clock::rfc3339(ms)
}

pub(crate) fn view(row: &RecipeRow, recipe: &Recipe) -> RecipeView {
    let hook = recipe.hook().map(|w| format!("/hooks/{}", w.path));
    RecipeView {
        id: row.id.clone(),
        name: recipe.name.clone(),
        description: recipe.description.clone(),
        enabled: row.enabled,
        version: row.version,
        origin: row.origin.clone(),
        trigger: TriggerView { app: recipe.trigger.app.clone(), event: recipe.trigger.event.clone(), hook },
        created_at: ts(row.created_at),
        updated_at: ts(row.updated_at),
        source: recipe.source.clone(),
    }
}

/// Reads a recipe from a request body: JSON, or YAML when the content type says so.
fn parse(s: &AppState, headers: &HeaderMap, body: &Bytes) -> ApiResult<Recipe> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(ct.is_empty() || ct.contains("json") || ct.contains("yaml") || ct.starts_with("text/")) {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            format!("send the recipe as application/json or application/yaml, not `{ct}`"),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::new(Code::InvalidRequest, "the body is not UTF-8 text"))?;
    enlace_recipe::load(text, None, s.runner.registry()).map_err(|d| {
        let n = d.diagnostics.len();
        let first = d
            .diagnostics
            .first()
            .map(|x| if x.path.is_empty() { x.message.clone() } else { format!("{}: {}", x.path, x.message) })
            .unwrap_or_default();
        let mut e = ApiError::new(
            Code::InvalidRecipe,
            if n == 1 { format!("the recipe has a problem: {first}") } else { format!("the recipe has {n} problems; the first: {first}") },
        );
        e.diagnostics = Some(d.diagnostics);
        e
    })
}

/// Every recipe.
#[utoipa::path(get, path = "/api/v1/recipes", tag = "recipes", responses((status = 200, body = Vec<RecipeView>), (status = 401, body = ErrorBody)))]
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<RecipeView>>> {
    Ok(Json(s.runner.catalog().all().iter().map(|c| view(&c.row, &c.recipe)).collect()))
}

/// Creates a recipe from JSON or YAML (`Content-Type: application/yaml`). 409 if the id exists: update it with PUT.
#[utoipa::path(post, path = "/api/v1/recipes", tag = "recipes", request_body(content = Object, description = "A recipe, as in recipe-format.md", content_type = "application/json"),
    responses((status = 201, body = SavedView), (status = 409, body = ErrorBody), (status = 422, description = "The recipe does not validate; `diagnostics` lists every problem", body = ErrorBody)))]
pub async fn create(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<(StatusCode, Json<SavedView>)> {
    let recipe = parse(&s, &headers, &body)?;
    if s.runner.store().get_recipe(&recipe.id).await?.is_some() {
        return Err(ApiError::new(
            Code::Conflict,
            format!("a recipe `{}` exists already; update it with PUT /api/v1/recipes/{}", recipe.id, recipe.id),
        )
        .at("id"));
    }
    let saved = s.runner.save_recipe(&recipe, "api").await?;
    Ok((StatusCode::CREATED, Json(SavedView { recipe: view(&saved.recipe, &recipe), new_version: saved.new_version })))
}

/// Validates a recipe without saving it: 200 when valid, 422 with every diagnostic when not.
#[utoipa::path(post, path = "/api/v1/recipes/validate", tag = "recipes", request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = ValidView), (status = 422, body = ErrorBody)))]
pub async fn validate(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<ValidView>> {
    let recipe = parse(&s, &headers, &body)?;
    Ok(Json(ValidView { valid: true, id: recipe.id.clone(), steps: recipe.steps.len() }))
}

/// One recipe, with its current source.
#[utoipa::path(get, path = "/api/v1/recipes/{id}", tag = "recipes", params(("id" = String, Path)), responses((status = 200, body = RecipeView), (status = 404, body = ErrorBody)))]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RecipeView>> {
    let cur = current(&s, &id).await?;
    Ok(Json(view(&cur.row, &cur.recipe)))
}

pub(crate) async fn current(s: &AppState, id: &str) -> ApiResult<enlace_runner::Current> {
    if let Some(c) = s.runner.catalog().current(id) {
        return Ok(c);
    }
    let row = s.runner.store().get_recipe(id).await?.ok_or_else(|| ApiError::not_found(format!("no recipe `{id}`")))?;
    let recipe = s.runner.catalog().version(s.runner.store(), id, row.version).await?;
    Ok(enlace_runner::Current { row, recipe })
}

/// Replaces a recipe: a new version when the body differs from the current one.
#[utoipa::path(put, path = "/api/v1/recipes/{id}", tag = "recipes", params(("id" = String, Path)), request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = SavedView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(State(s): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<SavedView>> {
    let recipe = parse(&s, &headers, &body)?;
    if recipe.id != id {
        return Err(ApiError::invalid(
            "id",
            format!("the body's id `{}` differs from the URL's `{id}`; a recipe cannot be renamed, create a new one instead", recipe.id),
        ));
    }
    if s.runner.store().get_recipe(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no recipe `{id}`; create it with POST /api/v1/recipes")));
    }
    let saved = s.runner.save_recipe(&recipe, "api").await?;
    Ok(Json(SavedView { recipe: view(&saved.recipe, &recipe), new_version: saved.new_version }))
}

/// Enables a recipe: its trigger starts runs again.
#[utoipa::path(post, path = "/api/v1/recipes/{id}/enable", tag = "recipes", params(("id" = String, Path)), responses((status = 200, body = RecipeView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn enable(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RecipeView>> {
    set(&s, &id, true).await
}

/// Disables a recipe: its trigger starts nothing (runs already started go on).
#[utoipa::path(post, path = "/api/v1/recipes/{id}/disable", tag = "recipes", params(("id" = String, Path)), responses((status = 200, body = RecipeView), (status = 404, body = ErrorBody)))]
pub async fn disable(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RecipeView>> {
    set(&s, &id, false).await
}

/// What the kill switch did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct KillView {
    /// The recipe, now disabled.
    pub recipe: RecipeView,
    /// How many of its runs were cancelled (queued, waiting, or running: a call already in
    /// flight cannot be called back, and its run stops when it returns).
    pub cancelled_runs: u64,
}

/// The kill switch: disables the recipe and cancels every run of it that has not ended,
/// so nothing it has pending goes out (delays, retries, held runs included). Enable it again
/// to start new runs; cancelled runs can be replayed one by one.
#[utoipa::path(post, path = "/api/v1/recipes/{id}/kill", tag = "recipes", params(("id" = String, Path)), responses((status = 200, body = KillView), (status = 404, body = ErrorBody)))]
pub async fn kill(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<KillView>> {
    let (row, cancelled_runs) = s.runner.kill(&id).await?;
    let cur = current(&s, &row.id).await?;
    Ok(Json(KillView { recipe: view(&row, &cur.recipe), cancelled_runs }))
}

async fn set(s: &AppState, id: &str, enabled: bool) -> ApiResult<Json<RecipeView>> {
    let row = s.runner.set_enabled(id, enabled).await?;
    let cur = current(s, &row.id).await?;
    Ok(Json(view(&row, &cur.recipe)))
}

/// Every version of a recipe, oldest first.
#[utoipa::path(get, path = "/api/v1/recipes/{id}/versions", tag = "recipes", params(("id" = String, Path)), responses((status = 200, body = Vec<VersionView>), (status = 404, body = ErrorBody)))]
pub async fn versions(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Vec<VersionView>>> {
    let list = s.runner.store().recipe_versions(&id).await?;
    if list.is_empty() {
        return Err(ApiError::not_found(format!("no recipe `{id}`")));
    }
    Ok(Json(list.into_iter().map(|v| VersionView { version: v.version, created_at: ts(v.created_at), source: v.body }).collect()))
}

/// One version of a recipe.
#[utoipa::path(get, path = "/api/v1/recipes/{id}/versions/{version}", tag = "recipes", params(("id" = String, Path), ("version" = i64, Path)), responses((status = 200, body = VersionView), (status = 404, body = ErrorBody)))]
pub async fn version(State(s): State<AppState>, Path((id, version)): Path<(String, i64)>) -> ApiResult<Json<VersionView>> {
    let v = s
        .runner
        .store()
        .recipe_version(&id, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("recipe `{id}` has no version {version}")))?;
    Ok(Json(VersionView { version: v.version, created_at: ts(v.created_at), source: v.body }))
}
