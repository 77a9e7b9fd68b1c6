//! `enlace connector new NAME`: a new connector folder with the standard files (a manifest
//! in `src/lib.rs` with one action and one polling trigger, a README, recorded fixtures and
//! tests that pass against them), registered in the three places a Rust connector is named:
//! the root `Cargo.toml`'s workspace dependencies, this crate's `Cargo.toml` and [`crate::all`].

use std::path::{Path, PathBuf};

const FILES: [(&str, &str); 9] = [
    ("Cargo.toml", include_str!("../scaffold/Cargo.toml.tmpl")),
    ("README.md", include_str!("../scaffold/README.md.tmpl")),
    ("src/lib.rs", include_str!("../scaffold/lib.rs.tmpl")),
    ("src/tests.rs", include_str!("../scaffold/tests.rs.tmpl")),
    ("fixtures/action.create_item.json", include_str!("../scaffold/fixtures/action.create_item.json")),
    ("fixtures/trigger.new_item.json", include_str!("../scaffold/fixtures/trigger.new_item.json")),
    ("fixtures/create_item.201.json", include_str!("../scaffold/fixtures/create_item.201.json")),
    ("fixtures/create_item.429.json", include_str!("../scaffold/fixtures/create_item.429.json")),
    ("fixtures/list_items.200.json", include_str!("../scaffold/fixtures/list_items.200.json")),
];

/// The line of [`crate::all`] new connectors go above.
pub const MARKER: &str = "// `enlace connector new` adds connectors above this line.";

/// What the scaffold did, for the CLI to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaffolded {
    pub created: Vec<PathBuf>,
    pub changed: Vec<PathBuf>,
}

/// Whether `name` may be an app id: lowercase letters, digits and `_`, starting with a letter.
pub fn valid_app_id(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Creates `connectors/<app>/` under the workspace `root` and registers it. Nothing is
/// written when a check fails: the app id, a folder or a crate of that name already there,
/// or a registration file that is not as expected.
pub fn scaffold(root: &Path, app: &str) -> Result<Scaffolded, String> {
    if !valid_app_id(app) {
        return Err(format!(
            "`{app}` cannot be an app id: use lowercase letters, digits and `_`, starting with a letter (like `acme_crm`)"
        ));
    }
    let dir = root.join("connectors").join(app);
    if dir.exists() {
        return Err(format!("{} exists already; choose another name or remove it", dir.display()));
    }
    let krate = app.replace('_', "-");
    let package = format!("enlace-connector-{krate}");
    let root_toml = root.join("Cargo.toml");
    let reg_toml = root.join("crates/enlace-connectors/Cargo.toml");
    let reg_lib = root.join("crates/enlace-connectors/src/lib.rs");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read {}: {e} (run this from the workspace root, or give --root)", p.display()))
    };
    let (root_text, reg_text, lib_text) = (read(&root_toml)?, read(&reg_toml)?, read(&reg_lib)?);
    if root_text.contains(&format!("{package} =")) {
        return Err(format!("the root Cargo.toml names `{package}` already"));
    }
    let root_text = insert_after_last(
        &root_text,
        "enlace-connector-",
        "{ path = \"connectors/",
        &format!("{package} = {{ path = \"connectors/{app}\" }}"),
    )
    .ok_or("the root Cargo.toml has no `enlace-connector-...` workspace dependency to add the new one after")?;
    let reg_text = insert_after_last(&reg_text, "enlace-connector-", ".workspace = true", &format!("{package}.workspace = true"))
        .ok_or("crates/enlace-connectors/Cargo.toml has no `enlace-connector-...` dependency to add the new one after")?;
    let Some(at) = lib_text.find(MARKER) else {
        return Err(format!("crates/enlace-connectors/src/lib.rs has lost the line `{MARKER}` in `all()`"));
    };
    let line_start = lib_text[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = &lib_text[line_start..at];
    let lib_text = format!("{}{indent}enlace_connector_{app}::connector(),\n{}", &lib_text[..line_start], &lib_text[line_start..]);

    let name = title(app);
    let mut created = vec![];
    for (file, template) in FILES {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("inside the folder")).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let text = template.replace("{{app}}", app).replace("{{crate}}", &krate).replace("{{name}}", &name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        created.push(path);
    }
    for (path, text) in [(&root_toml, root_text), (&reg_toml, reg_text), (&reg_lib, lib_text)] {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(Scaffolded { created, changed: vec![root_toml, reg_toml, reg_lib] })
}

/// `acme_crm` -> `Acme Crm`: a first name for the app, to be corrected by its author.
fn title(app: &str) -> String {
    app.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` with `line` inserted after the last line that starts with `prefix` and contains
/// `with` (the root manifest names connectors twice: as workspace dependencies, by path, and
/// as the binary's dev-dependencies).
fn insert_after_last(text: &str, prefix: &str, with: &str, line: &str) -> Option<String> {
    let mut offset = 0;
    let mut after = None;
    for l in text.split_inclusive('\n') {
        offset += l.len();
        if l.starts_with(prefix) && l.contains(with) {
            after = Some(offset);
        }
    }
    let at = after?;
    let sep = if text[..at].ends_with('\n') { "" } else { "\n" };
    Some(format!("{}{sep}{line}\n{}", &text[..at], &text[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace_copy() -> PathBuf {
        let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let tmp = std::env::temp_dir().join(format!("enlace-scaffold-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(tmp.join("crates/enlace-connectors/src")).unwrap();
        std::fs::create_dir_all(tmp.join("connectors")).unwrap();
        for f in ["Cargo.toml", "crates/enlace-connectors/Cargo.toml", "crates/enlace-connectors/src/lib.rs"] {
            std::fs::copy(real.join(f), tmp.join(f)).unwrap();
        }
        tmp
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    }

    #[test]
    fn scaffolds_and_registers_a_connector() {
        let root = workspace_copy();
        let done = scaffold(&root, "scaffold_probe").unwrap();
        assert_eq!(done.created.len(), 9);
        let lib = std::fs::read_to_string(root.join("connectors/scaffold_probe/src/lib.rs")).unwrap();
        assert!(lib.contains("pub const APP_ID: &str = \"scaffold_probe\";") && lib.contains("\"Scaffold Probe\""));
        assert!(!lib.contains("{{"), "every placeholder is filled");
        let toml = std::fs::read_to_string(root.join("connectors/scaffold_probe/Cargo.toml")).unwrap();
        assert!(toml.contains("name = \"enlace-connector-scaffold-probe\""));
        let root_toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let line = "\nenlace-connector-scaffold-probe = { path = \"connectors/scaffold_probe\" }\n";
        let (at, deps, bin) = (root_toml.find(line), root_toml.find("[workspace.dependencies]"), root_toml.find("\n[dependencies]"));
        assert!(deps < at && at < bin, "among the workspace dependencies, not the binary's: {root_toml}");
        let reg = std::fs::read_to_string(root.join("crates/enlace-connectors/Cargo.toml")).unwrap();
        assert!(reg.contains("\nenlace-connector-scaffold-probe.workspace = true\n"));
        let all = std::fs::read_to_string(root.join("crates/enlace-connectors/src/lib.rs")).unwrap();
        assert!(all.contains(&format!("        enlace_connector_scaffold_probe::connector(),\n        {MARKER}")), "{all}");
        // A second time, nothing is overwritten.
        let again = scaffold(&root, "scaffold_probe").unwrap_err();
        assert!(again.contains("exists already"), "{again}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_bad_name_is_refused_before_anything_is_written() {
        let root = workspace_copy();
        let e = scaffold(&root, "Acme-CRM").unwrap_err();
        assert_eq!(e, "`Acme-CRM` cannot be an app id: use lowercase letters, digits and `_`, starting with a letter (like `acme_crm`)");
        assert!(!root.join("connectors/Acme-CRM").exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
