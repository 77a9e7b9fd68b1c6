//! Embeds every declarative connector under `connectors/declarative/<app>/connector.yaml`:
//! a new folder there is registered by being there.

use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../connectors/declarative");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut apps: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("connector.yaml").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    apps.sort();
    let mut out = String::from(
        "/// The shipped declarative connectors: `(app folder, manifest text)`.\npub const DECLARATIVE: &[(&str, &str)] = &[\n",
    );
    for app in &apps {
        let file = dir.join(app).join("connector.yaml");
        println!("cargo:rerun-if-changed={}", file.display());
        out.push_str(&format!("    ({app:?}, include_str!({:?})),\n", file.display().to_string()));
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("declarative.rs");
    std::fs::write(dest, out).expect("write declarative.rs");
}
