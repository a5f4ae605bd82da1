//! An application embedding the dual store: logs, metrics, the store, a
//! clean shutdown. Run the schema first, then this:
//!
//! ```sh
//! cutover schema --sqlite data/twitter.db --postgres postgres://…
//! SQLITE_PATH=data/twitter.db DATABASE_URL=postgres://… cargo run --example embed
//! ```
//!
//! In the application's `Cargo.toml`:
//!
//! ```toml
//! cutover = { path = "…/cutover", default-features = false }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "signal"] }
//! tracing-subscriber = { version = "0.3", features = ["env-filter"] }
//! ```

use std::sync::Arc;

use cutover::{Cutover, CutoverConfig, ScrapedProfile, Settings, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs: fallbacks, returns and flips are logged (WARN/INFO); without a
    // subscriber they are invisible. sqlx's own chatter stays at ERROR.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=error".into()),
        )
        .init();

    // Metrics: one call, before the store starts (its counters start at 0).
    // Each process of the application needs an address of its own.
    let addr =
        std::env::var("METRICS_ADDR").unwrap_or_else(|_| cutover::metrics::DEFAULT_ADDR.into());
    cutover::metrics::install_exporter(addr.parse()?)?;

    // Settings as the CLI reads them: SQLITE_PATH, DATABASE_URL (or PG_*),
    // `.env.migration`.
    let settings = Settings::resolve(&Default::default())?;
    let config = CutoverConfig::new(
        settings.require_sqlite()?.to_path_buf(),
        settings.require_postgres()?.clone(),
    );
    // `Cutover::start` refuses when `cutover schema` has not run (set
    // `config.migrate = true` to apply it from here instead).
    let cutover = Cutover::start(config).await?;
    tracing::info!(stage = %cutover.stage(), "store ready");

    // The application calls the store; the stage decides where writes and
    // reads go. An operator moves it with `cutover stage set …`.
    let store: Arc<dyn Store> = Arc::new(cutover.store());
    store
        .upsert_profile(&ScrapedProfile {
            id: "embed-example".into(),
            username: "embed_example".into(),
            profile_data: None,
            profile_picture_url: None,
            scraped_at: cutover::now(),
        })
        .await?;
    let user = store.get_user("embed-example").await?;
    tracing::info!(found = user.is_some(), "read back");

    // On exit: wait for copies in flight (what is left, the next start
    // replays from the outboxes).
    cutover.shutdown().await;
    Ok(())
}
