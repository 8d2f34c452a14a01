//! Rebuilds the host when a migration is added or changed: `sqlx::migrate!` embeds the
//! files of `migrations/` at compile time, and cargo would not otherwise notice a new
//! file there (sqlx's documented caveat), so an incremental build would ship a binary
//! without the newest migration.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
