//! Settings resolution (flags > environment > .env.migration) and the
//! promise that a password never reaches Debug, Display or an error.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use cutover::settings::{open_store, Overrides, PgSettings, Settings, StoreKind};
use cutover::{Backend, Store};

const SECRET: &str = "s3cr3t-Pa55";

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

fn env_file(dir: &common::TempDir, body: &str) -> PathBuf {
    let p = dir.file(".env.migration");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn plan_env_file_is_read() {
    let dir = common::TempDir::new();
    let f = env_file(
        &dir,
        &format!(
            "SQLITE_PATH=./data/twitter.db\nPG_USER=twitter_analysis\nPG_PASSWORD={SECRET}\n\
             PG_DATABASE=twitter_analysis_db\nPG_HOST=localhost\nPG_PORT=5433\n"
        ),
    );
    let s = Settings::resolve_with(&Overrides::default(), env_of(&[]), Some(&f)).unwrap();
    assert_eq!(s.sqlite_path, Some(PathBuf::from("./data/twitter.db")));
    let pg = s.require_postgres().unwrap();
    assert_eq!(
        pg.redacted(),
        "postgres://twitter_analysis:***@localhost:5433/twitter_analysis_db"
    );
    assert_eq!(pg.database(), Some("twitter_analysis_db"));
    assert_eq!(s.store_kind, StoreKind::Sqlite);
}

#[test]
fn flags_beat_environment_beat_file() {
    let dir = common::TempDir::new();
    let f = env_file(
        &dir,
        "SQLITE_PATH=/from/file.db\nDATABASE_URL=postgres://file@h/filedb\nDB_TYPE=postgres\n",
    );
    let env = env_of(&[
        ("SQLITE_PATH", "/from/env.db"),
        ("DATABASE_URL", "postgres://env@h/envdb"),
    ]);

    let s = Settings::resolve_with(&Overrides::default(), &env, Some(&f)).unwrap();
    assert_eq!(s.sqlite_path, Some(PathBuf::from("/from/env.db")));
    assert_eq!(s.require_postgres().unwrap().database(), Some("envdb"));
    assert_eq!(
        s.store_kind,
        StoreKind::Postgres,
        "DB_TYPE from the file still applies"
    );

    let flags = Overrides {
        sqlite: Some("/from/flag.db".into()),
        postgres: Some("postgres://flag@h/flagdb".into()),
        env_file: None,
    };
    let s = Settings::resolve_with(&flags, &env, Some(&f)).unwrap();
    assert_eq!(s.sqlite_path, Some(PathBuf::from("/from/flag.db")));
    assert_eq!(s.require_postgres().unwrap().database(), Some("flagdb"));

    let s = Settings::resolve_with(&Overrides::default(), env_of(&[]), Some(&f)).unwrap();
    assert_eq!(s.sqlite_path, Some(PathBuf::from("/from/file.db")));
    assert_eq!(s.require_postgres().unwrap().database(), Some("filedb"));
}

#[test]
fn missing_settings_say_how_to_fix() {
    let s = Settings::resolve_with(&Overrides::default(), env_of(&[]), None).unwrap();
    let e = s.require_postgres().unwrap_err().to_string();
    assert!(
        e.contains("DATABASE_URL") && e.contains("--postgres"),
        "{e}"
    );
    let e = s.require_sqlite().unwrap_err().to_string();
    assert!(e.contains("SQLITE_PATH") && e.contains("--sqlite"), "{e}");
    let e = Settings::resolve_with(
        &Overrides::default(),
        env_of(&[("PG_HOST", "h"), ("PG_PORT", "x")]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("PG_PORT"), "{e}");
}

#[test]
fn password_never_in_debug_display_or_errors() {
    let url = format!("postgres://app:{SECRET}@db.internal:5432/app?sslmode=prefer");
    let s = Settings::resolve_with(
        &Overrides::default(),
        env_of(&[("DATABASE_URL", &url)]),
        None,
    )
    .unwrap();
    for text in [
        format!("{s:?}"),
        format!("{:?}", s.require_postgres().unwrap()),
        s.require_postgres().unwrap().to_string(),
    ] {
        assert!(!text.contains(SECRET), "password leaked: {text}");
        assert!(text.contains("***"), "{text}");
    }
    let query_pw = format!("postgres://app@db.internal/app?password={SECRET}");
    let s = Settings::resolve_with(
        &Overrides::default(),
        env_of(&[("DATABASE_URL", &query_pw)]),
        None,
    )
    .unwrap();
    assert!(!format!("{s:?}").contains(SECRET));

    let parts = Settings::resolve_with(
        &Overrides::default(),
        env_of(&[
            ("PG_HOST", "h"),
            ("PG_USER", "u"),
            ("PG_PASSWORD", SECRET),
            ("PG_DATABASE", "d"),
        ]),
        None,
    )
    .unwrap();
    assert!(!format!("{parts:?}").contains(SECRET));

    // A malformed URL holding a password: the error must not echo it.
    let bad = format!("postgres://app:{SECRET}@db.internal:notaport/app");
    let e = Settings::resolve_with(
        &Overrides::default(),
        env_of(&[("DATABASE_URL", &bad)]),
        None,
    )
    .unwrap_err();
    assert!(!e.to_string().contains(SECRET), "{e}");
    assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
}

#[tokio::test]
async fn unreachable_server_error_hides_password() {
    let url = format!("postgres://app:{SECRET}@127.0.0.1:1/app");
    let mut s = Settings::resolve_with(
        &Overrides::default(),
        env_of(&[("DATABASE_URL", &url), ("DB_TYPE", "postgres")]),
        None,
    )
    .unwrap();
    s.postgres.as_mut().unwrap().pool.acquire_timeout = std::time::Duration::from_millis(500);
    let e = match open_store(&s).await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e,
    };
    assert!(!e.to_string().contains(SECRET), "{e}");
    assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
    assert!(e.is_unavailable(), "{e:?}");
}

#[tokio::test]
async fn factory_opens_the_store_db_type_names() {
    let dir = common::TempDir::new();
    let db = common::TestDb::migrated().await;
    let path = dir.file("twitter.db");
    let mut s = Settings::resolve_with(
        &Overrides {
            sqlite: Some(path.clone()),
            postgres: None,
            env_file: None,
        },
        env_of(&[]),
        None,
    )
    .unwrap();
    s.postgres = Some(db.settings.clone());
    let store = open_store(&s).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(path.exists());
    s.store_kind = StoreKind::Postgres;
    let store: std::sync::Arc<dyn Store> = open_store(&s).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    assert_eq!(store.count_tweets("nobody").await.unwrap(), 0);
}

#[test]
fn another_database_on_the_same_server_replaces_a_dbname_parameter() {
    let s = PgSettings::from_url(
        "postgresql:///admin?host=%2Ftmp%2Fsock&port=5433&dbname=admin&user=u",
    )
    .unwrap();
    let t = s.with_database("mine");
    assert_eq!(t.database(), Some("mine"));
    let again = PgSettings::from_url(t.redacted()).unwrap();
    assert_eq!(again.database(), Some("mine"), "{}", t.redacted());
}
