//! `sqlx::migrate!` embeds `migrations/postgres` at compile time but does not
//! ask cargo to watch the directory: without this, a new migration file is
//! not picked up until something else changes.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
