//! The recipes this process knows, compiled: the current version of each recipe, older
//! versions that runs still use, and the indexes ingress needs (hook path, event name).
//! Reloaded from the store when another process changes a recipe.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use enlace_core::Registry;
use enlace_recipe::model::TriggerConfig;
use enlace_recipe::{Diagnostics, Recipe};
use enlace_store::{RecipeRow, Store};

use crate::RunnerError;

#[derive(Clone)]
pub struct Current {
    pub row: RecipeRow,
    pub recipe: Arc<Recipe>,
}

#[derive(Default)]
struct Inner {
    versions: HashMap<(String, i64), Arc<Recipe>>,
    current: HashMap<String, Current>,
    hooks: HashMap<String, String>,
    events: HashMap<String, Vec<String>>,
    /// Enabled recipes started by contact changes (`contacts.*` triggers).
    contacts: Vec<String>,
    updated_at: i64,
}

pub struct Catalog {
    registry: Registry,
    inner: RwLock<Inner>,
}

impl Catalog {
    pub fn new(registry: Registry) -> Self {
        Catalog { registry, inner: RwLock::new(Inner::default()) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reloads every recipe's current version. Returns the stored recipes that no longer
    /// validate (for example a connector was removed), which are left out.
    pub async fn reload(&self, store: &Store) -> Result<Vec<(String, Diagnostics)>, RunnerError> {
        let updated_at = store.recipes_updated_at().await?;
        let rows = store.list_recipes().await?;
        let mut invalid = vec![];
        let mut fresh = Inner { updated_at, ..Inner::default() };
        {
            let old = self.read();
            fresh.versions = old.versions.clone();
        }
        for row in rows {
            let key = (row.id.clone(), row.version);
            let recipe = match fresh.versions.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let Some(v) = store.recipe_version(&row.id, row.version).await? else { continue };
                    match enlace_recipe::check(&v.body, None, None, &self.registry) {
                        Ok(r) => Arc::new(r),
                        Err(d) => {
                            invalid.push((row.id.clone(), d));
                            continue;
                        }
                    }
                }
            };
            fresh.versions.insert(key, recipe.clone());
            index(&mut fresh, Current { row, recipe });
        }
        *self.write() = fresh;
        Ok(invalid)
    }

    /// Whether the store changed since the last reload.
    pub async fn stale(&self, store: &Store) -> Result<bool, RunnerError> {
        Ok(store.recipes_updated_at().await? > self.read().updated_at)
    }

    /// Records a recipe just saved by this process.
    pub fn put(&self, row: RecipeRow, recipe: Arc<Recipe>) {
        let mut w = self.write();
        w.versions.insert((row.id.clone(), row.version), recipe.clone());
        w.updated_at = w.updated_at.max(row.updated_at);
        // Drop the old indexes of this recipe, then index it again.
        let id = row.id.clone();
        w.hooks.retain(|_, v| *v != id);
        for list in w.events.values_mut() {
            list.retain(|v| *v != id);
        }
        w.contacts.retain(|v| *v != id);
        index(&mut w, Current { row, recipe });
    }

    pub fn current(&self, id: &str) -> Option<Current> {
        self.read().current.get(id).cloned()
    }

    pub fn all(&self) -> Vec<Current> {
        let mut v: Vec<Current> = self.read().current.values().cloned().collect();
        v.sort_by(|a, b| a.row.id.cmp(&b.row.id));
        v
    }

    /// The enabled recipe listening on a hook path.
    pub fn by_hook(&self, path: &str) -> Option<Current> {
        let r = self.read();
        r.hooks.get(path).and_then(|id| r.current.get(id)).cloned()
    }

    /// Every enabled recipe listening to an event name.
    pub fn by_event(&self, name: &str) -> Vec<Current> {
        let r = self.read();
        r.events.get(name).map(|ids| ids.iter().filter_map(|id| r.current.get(id).cloned()).collect()).unwrap_or_default()
    }

    /// The enabled recipes started by contact changes, as the store takes them.
    pub fn contact_subs(&self) -> Vec<enlace_store::ContactSub> {
        let r = self.read();
        r.contacts
            .iter()
            .filter_map(|id| r.current.get(id))
            .filter_map(|c| match &c.recipe.trigger.config {
                TriggerConfig::Contact { trigger, tag, kind } => Some(enlace_store::ContactSub {
                    recipe_id: c.row.id.clone(),
                    recipe_version: c.row.version,
                    trigger: *trigger,
                    tag: tag.clone(),
                    kind: kind.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The enabled `enlace.event` recipes, as the store takes them (scoring thresholds start
    /// them in a contact change's transaction).
    pub fn event_subs(&self) -> Vec<enlace_store::EventSub> {
        let r = self.read();
        let mut subs: Vec<enlace_store::EventSub> = r
            .events
            .iter()
            .flat_map(|(name, ids)| {
                ids.iter().filter_map(|id| r.current.get(id)).map(|c| enlace_store::EventSub {
                    recipe_id: c.row.id.clone(),
                    recipe_version: c.row.version,
                    name: name.clone(),
                })
            })
            .collect();
        subs.sort_by(|a, b| a.recipe_id.cmp(&b.recipe_id));
        subs
    }

    /// A given version of a recipe, compiled (runs keep the version they started with).
    pub async fn version(&self, store: &Store, id: &str, version: i64) -> Result<Arc<Recipe>, RunnerError> {
        if let Some(r) = self.read().versions.get(&(id.to_string(), version)) {
            return Ok(r.clone());
        }
        let v = store
            .recipe_version(id, version)
            .await?
            .ok_or_else(|| RunnerError::NotFound(format!("recipe `{id}` has no version {version}")))?;
        let recipe = enlace_recipe::check(&v.body, None, None, &self.registry)
            .map_err(|d| RunnerError::Invalid(format!("recipe `{id}` version {version} no longer validates:\n{d}")))?;
        let recipe = Arc::new(recipe);
        self.write().versions.insert((id.to_string(), version), recipe.clone());
        Ok(recipe)
    }
}

fn index(inner: &mut Inner, cur: Current) {
    if cur.row.enabled {
        match &cur.recipe.trigger.config {
            TriggerConfig::Webhook(w) | TriggerConfig::Subscribe { hook: w, .. } => {
                inner.hooks.insert(w.path.clone(), cur.row.id.clone());
            }
            TriggerConfig::Event { name } => inner.events.entry(name.clone()).or_default().push(cur.row.id.clone()),
            TriggerConfig::Contact { .. } => inner.contacts.push(cur.row.id.clone()),
            _ => {}
        }
    }
    inner.current.insert(cur.row.id.clone(), cur);
}
