// The migrations are embedded by `sqlx::migrate!`; a new file under migrations/ must
// rebuild this crate even when no Rust source changed.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
