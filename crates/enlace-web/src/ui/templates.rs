//! The UI's templates, compiled into the binary and registered once. Handlebars escapes
//! every `{{value}}` for HTML; no template uses the unescaped `{{{...}}}` form.

use std::sync::OnceLock;

use handlebars::Handlebars;
use serde::Serialize;

/// Every template, by name (`web/templates/NAME.hbs`).
pub const TEMPLATES: &[(&str, &str)] = &[
    ("layout", include_str!("../../../../web/templates/layout.hbs")),
    ("error", include_str!("../../../../web/templates/error.hbs")),
    ("setup", include_str!("../../../../web/templates/setup.hbs")),
    ("login", include_str!("../../../../web/templates/login.hbs")),
    ("home", include_str!("../../../../web/templates/home.hbs")),
    ("runs", include_str!("../../../../web/templates/runs.hbs")),
    ("run", include_str!("../../../../web/templates/run.hbs")),
    ("apps", include_str!("../../../../web/templates/apps.hbs")),
    ("connect", include_str!("../../../../web/templates/connect.hbs")),
    ("connections", include_str!("../../../../web/templates/connections.hbs")),
    ("connection", include_str!("../../../../web/templates/connection.hbs")),
    ("recipes", include_str!("../../../../web/templates/recipes.hbs")),
    ("recipe", include_str!("../../../../web/templates/recipe.hbs")),
    ("recipe_new", include_str!("../../../../web/templates/recipe_new.hbs")),
    ("contacts", include_str!("../../../../web/templates/contacts.hbs")),
    ("contact", include_str!("../../../../web/templates/contact.hbs")),
    ("tokens", include_str!("../../../../web/templates/tokens.hbs")),
    ("users", include_str!("../../../../web/templates/users.hbs")),
    ("journeys", include_str!("../../../../web/templates/journeys.hbs")),
    ("social", include_str!("../../../../web/templates/social.hbs")),
];

/// Pieces that templates include (`{{> name}}`), never rendered alone.
pub const PARTIALS: &[(&str, &str)] = &[
    ("social_chip", include_str!("../../../../web/templates/social_chip.hbs")),
    ("social_retry", include_str!("../../../../web/templates/social_retry.hbs")),
];

fn registry() -> &'static Handlebars<'static> {
    static HB: OnceLock<Handlebars<'static>> = OnceLock::new();
    HB.get_or_init(|| {
        let mut hb = Handlebars::new();
        hb.set_dev_mode(false);
        for (name, text) in TEMPLATES.iter().chain(PARTIALS) {
            // A broken template is a bug caught by the unit tests, which render each one.
            if let Err(e) = hb.register_template_string(name, *text) {
                panic!("web/templates/{name}.hbs does not compile: {e}");
            }
        }
        hb
    })
}

/// Renders a template; a failure (a bug) renders a plain error text instead of panicking.
pub fn render<T: Serialize>(name: &str, ctx: &T) -> String {
    match registry().render(name, ctx) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(template = name, error = %e, "a UI template failed to render");
            format!(
                "<!doctype html><title>Error</title><p>The page could not be drawn ({}). This is a bug.</p>",
                handlebars::html_escape(&e.to_string())
            )
        }
    }
}
