//! `/api/v1`: recipes (and their connector triggers), runs, connectors, connections, contacts, secrets and tokens. Every handler is
//! described with `#[utoipa::path]` and mounted through utoipa-axum's router, so the
//! OpenAPI document and the routes cannot drift apart.

pub mod admin;
pub mod auth;
pub mod connections;
pub mod connectors;
pub mod contacts;
pub mod forms;
pub mod gdpr;
pub mod policy;
pub mod recipes;
pub mod runs;
pub mod simulate;
pub mod social;
pub mod timeline;
pub mod triggers;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Enlace API", description = "Recipes, runs, connectors, connections, contacts, secrets and tokens. Every request needs `Authorization: Bearer <token>` (create one with `enlace tokens create NAME`). Errors share one shape: `{code, message, path?, request_id}`."),
    modifiers(&Security),
    security(("bearer" = [])),
    components(schemas(crate::error::ErrorBody, crate::error::Code))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("enl_...").build()),
        );
    }
}

/// Every API route with its documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(recipes::list, recipes::create))
        .routes(routes!(recipes::validate))
        .routes(routes!(recipes::get, recipes::update))
        .routes(routes!(recipes::enable))
        .routes(routes!(recipes::disable))
        .routes(routes!(recipes::kill))
        .routes(routes!(recipes::versions))
        .routes(routes!(recipes::version))
        .routes(routes!(triggers::show))
        .routes(routes!(triggers::rewind))
        .routes(routes!(triggers::approve))
        .routes(routes!(triggers::discard))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::replay))
        .routes(routes!(runs::cancel))
        .routes(routes!(connectors::list))
        .routes(routes!(connectors::get))
        .routes(routes!(connections::list, connections::create))
        .routes(routes!(connections::get, connections::rename, connections::delete))
        .routes(routes!(connections::test))
        .routes(routes!(connections::authorize))
        .routes(routes!(connections::set_credentials))
        .routes(routes!(contacts::list, contacts::upsert))
        .routes(routes!(contacts::get, gdpr::erase))
        .routes(routes!(gdpr::export))
        .routes(routes!(gdpr::erasures))
        .routes(routes!(gdpr::removals))
        .routes(routes!(policy::get, policy::put))
        .routes(routes!(policy::list))
        .routes(routes!(policy::decide))
        .routes(routes!(simulate::run))
        .routes(routes!(timeline::record))
        .routes(routes!(timeline::timeline))
        .routes(routes!(timeline::get_scoring, timeline::put_scoring))
        .routes(routes!(social::list_channels, social::create_channel))
        .routes(routes!(social::get_channel, social::update_channel, social::delete_channel))
        .routes(routes!(social::pause_channel))
        .routes(routes!(social::resume_channel))
        .routes(routes!(social::queue))
        .routes(routes!(social::list_posts, social::create_post))
        .routes(routes!(social::validate))
        .routes(routes!(social::get_post, social::edit_post))
        .routes(routes!(social::schedule))
        .routes(routes!(social::add_to_queue))
        .routes(routes!(social::unschedule))
        .routes(routes!(social::cancel))
        .routes(routes!(social::confirm))
        .routes(routes!(social::retry))
        .routes(routes!(forms::list))
        .routes(routes!(forms::get, forms::put, forms::delete))
        .routes(routes!(forms::link))
        .routes(routes!(forms::messages, forms::queue))
        .routes(routes!(forms::cancel))
        .routes(routes!(admin::list_secrets))
        .routes(routes!(admin::put_secret, admin::delete_secret))
        .routes(routes!(admin::list_tokens, admin::create_token))
        .routes(routes!(admin::revoke_token))
}
