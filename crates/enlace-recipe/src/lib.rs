//! The recipe format (version 1): parse YAML or JSON with line numbers, validate into a
//! checked form with every diagnostic at once, and the Handlebars templates and JSONPath
//! that map data between steps.
//!
//! Two stages, kept apart as in Vector and Meilisearch: [`source::parse`] reads text into a
//! JSON value and a map of positions; [`validate::check`] turns the value into a
//! [`model::Recipe`], resolving app and action names against a registry, compiling every
//! template and collecting every problem. No network, no store: the CLI's `validate`, the
//! API's `validate` and the loader at start share it.

pub mod graph;
pub mod model;
pub mod source;
pub mod template;
pub mod validate;

pub use model::Recipe;
pub use validate::{Diagnostic, Diagnostics, check, load};
