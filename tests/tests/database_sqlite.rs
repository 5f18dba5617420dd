//! database-plugin with SQLite: config checks, the file created if absent, the typed
//! pool used by a dependent plugin, migrations, health with latency, and clean stop.

use ixp_core::{
    ixp_plugin, BoxError, Catalog, HealthStatus, Host, NoConfig, Plugin, PluginContext,
};
use ixp_plugins::database::{Database, DatabaseConfig, DatabasePlugin, DatabaseType, PoolConfig};
use ixp_plugins::sqlx;

fn problems(toml: &str) -> String {
    ixp_tests::check_problems::<DatabasePlugin>(toml)
}

#[test]
fn the_guide_fields_parse_and_each_bad_field_is_reported() {
    assert_eq!(
        problems(
            "[plugins.database-plugin]\ntype = \"sqlite\"\nfilename = \"x.db\"\npool = { min = 2, max = 10 }\n"
        ),
        ""
    );
    let report = problems(
        r#"[plugins.database-plugin]
type = "mysql"
port = "five"
pool = { min = 20, max = 0 }
databse = "app"
migrations = "/definitely/not/here"
"#,
    );
    for expected in [
        "plugins.database-plugin.type: unknown variant `mysql`, expected one of `sqlite`, `postgresql`, `mongodb`",
        "plugins.database-plugin.port: invalid type: string \"five\", expected u16",
        "plugins.database-plugin.databse: unknown key; did you mean `database`?",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
    let report = problems(
        "[plugins.database-plugin]\npool = { min = 20, max = 0 }\nmigrations = \"/definitely/not/here\"\n",
    );
    for expected in [
        "plugins.database-plugin.pool.max: must be at least 1",
        "plugins.database-plugin.pool.min: must not exceed pool.max (0)",
        "plugins.database-plugin.migrations: `/definitely/not/here` is not a directory",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
}

#[test]
fn mongodb_fields_are_checked_and_sql_only_fields_refused() {
    let report = problems(
        r#"[plugins.database-plugin]
type = "mongodb"
connectionString = "postgres://not-mongo"
options = { "app name" = "x", appName = "ok" }
migrations = "."
"#,
    );
    for expected in [
        "plugins.database-plugin.connectionString: must be a mongodb:// or mongodb+srv:// URL",
        "plugins.database-plugin.options.app name: is not a MongoDB connection-string option name",
        "plugins.database-plugin.migrations: SQL migrations cannot run on `mongodb`",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
    assert!(
        !report.contains("connectionString = "),
        "the connection string is a secret and must not be echoed:\n{report}"
    );
    let report =
        problems("[plugins.database-plugin]\ntype = \"sqlite\"\noptions = { appName = \"x\" }\n");
    assert!(
        report.contains("plugins.database-plugin.options: are MongoDB connection-string options; the `sqlite` backend takes none"),
        "{report}"
    );
}

#[cfg(not(feature = "services"))]
#[test]
fn mongodb_without_its_feature_names_the_feature() {
    let report = problems("[plugins.database-plugin]\ntype = \"mongodb\"\n");
    assert!(
        report.contains("plugins.database-plugin.type: the `mongodb` backend is not compiled in; enable the Cargo feature `database-mongodb`"),
        "{report}"
    );
}

#[cfg(not(feature = "services"))]
#[test]
fn postgresql_without_its_feature_names_the_feature() {
    let report = problems("[plugins.database-plugin]\ntype = \"postgresql\"\n");
    assert!(
        report.contains("plugins.database-plugin.type: the `postgresql` backend is not compiled in; enable the Cargo feature `database-postgres`"),
        "{report}"
    );
}

#[ixp_plugin(name = "notes-plugin", version = "1.0.0", dependencies = ["database-plugin"])]
struct NotesPlugin {
    database: std::sync::Arc<Database>,
}

impl Plugin for NotesPlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self {
            database: ctx.services().get::<Database>("database")?,
        })
    }
    async fn start(&mut self, _: &PluginContext) -> Result<(), BoxError> {
        let pool = self.database.sqlite().ok_or("expected SQLite")?;
        sqlx::query("INSERT INTO notes (body) VALUES (?)")
            .bind("written by notes-plugin")
            .execute(pool)
            .await?;
        Ok(())
    }
}

/// `dir/migrations`, holding the migration that makes [`NotesPlugin`]'s table.
fn notes_migrations(dir: &std::path::Path) -> std::path::PathBuf {
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).expect("migrations dir");
    std::fs::write(
        migrations.join("0001_notes.sql"),
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )
    .expect("write migration");
    migrations
}

#[tokio::test]
async fn creates_the_file_runs_migrations_serves_a_dependent_and_stops_cleanly() {
    let dir = ixp_tests::temp_dir("full");
    let migrations = notes_migrations(&dir);
    let file = dir.join("nested/dir/app.db");
    let config = DatabaseConfig {
        kind: DatabaseType::Sqlite,
        filename: file.clone(),
        migrations: Some(migrations),
        pool: PoolConfig { min: 1, max: 4 },
        ..DatabaseConfig::default()
    };
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(config.clone())
        .plugin::<NotesPlugin>(NoConfig {})
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    assert!(
        file.is_file(),
        "the database file is created with its directories"
    );

    let database = host
        .services()
        .get::<Database>("database")
        .expect("service");
    let pool = database.sqlite().expect("a SQLite pool").clone();
    let (body,): (String,) = sqlx::query_as("SELECT body FROM notes")
        .fetch_one(&pool)
        .await
        .expect("select");
    assert_eq!(body, "written by notes-plugin");

    let health = host.health().await;
    let db = &health.plugins["database-plugin"];
    assert_eq!(db.status, HealthStatus::Healthy, "{db:?}");
    assert!(db.details["latencyMs"].is_number(), "{db:?}");

    host.stop().await.expect("stop");
    assert!(pool.is_closed(), "stop closes the pool");
    assert!(host.services().get::<Database>("database").is_err());

    // The data survived; running the migrations again is a no-op.
    let again = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(config)
        .build()
        .expect("plan");
    again.launch().await.expect("second launch");
    let database = again
        .services()
        .get::<Database>("database")
        .expect("service");
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM notes")
        .fetch_one(database.sqlite().expect("sqlite"))
        .await
        .expect("count");
    assert_eq!(count, 1);
    again.stop().await.expect("stop");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_file_that_cannot_be_created_is_an_initialization_error_naming_it() {
    let dir = ixp_tests::temp_dir("blocked");
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "a file where a directory should be").expect("write");
    let config = DatabaseConfig {
        filename: blocker.join("app.db"),
        ..DatabaseConfig::default()
    };
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(config)
        .build()
        .expect("plan");
    let error = host
        .launch()
        .await
        .expect_err("cannot create the file")
        .to_string();
    assert!(error.contains("database-plugin"), "{error}");
    assert!(error.contains("not-a-dir"), "{error}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_broken_migration_fails_start_with_the_directory_and_cause() {
    let dir = ixp_tests::temp_dir("badmig");
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).expect("dir");
    std::fs::write(migrations.join("0001_bad.sql"), "CREATE TABLOID nope;").expect("write");
    let config = DatabaseConfig {
        filename: dir.join("app.db"),
        migrations: Some(migrations),
        ..DatabaseConfig::default()
    };
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(config)
        .build()
        .expect("plan");
    let error = host.launch().await.expect_err("bad SQL").to_string();
    assert!(error.contains("migrations"), "{error}");
    assert!(
        error.contains("TABLOID") || error.contains("syntax"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_connect_timeout_sqlite_cannot_take_is_a_problem_not_a_crashed_worker() {
    let report = problems(
        "[plugins.database-plugin]\ntype = \"sqlite\"\nfilename = \"x.db\"\nconnectTimeoutMs = 2147483648\n",
    );
    assert!(
        report.contains(
            "plugins.database-plugin.connectTimeoutMs: must be at most 2147483647 (about 24 days)"
        ),
        "{report}"
    );
    let at_most = "[plugins.database-plugin]\ntype = \"sqlite\"\nfilename = \"x.db\"\nconnectTimeoutMs = 2147483647\n";
    assert_eq!(problems(at_most), "");
}

/// A restart keeps the pool open and the `database` service registered (the host
/// removes a plugin's services before its `restart`), and its dependents start again
/// with it.
#[tokio::test]
async fn a_restart_keeps_the_pool_and_the_service_and_restarts_dependents() {
    let dir = ixp_tests::temp_dir("restart");
    let migrations = notes_migrations(&dir);
    let config = DatabaseConfig {
        kind: DatabaseType::Sqlite,
        filename: dir.join("app.db"),
        migrations: Some(migrations),
        ..DatabaseConfig::default()
    };
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(config)
        .plugin::<NotesPlugin>(NoConfig {})
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    host.restart("database-plugin").await.expect("restart");

    let database = host
        .services()
        .get::<Database>("database")
        .expect("the service after the restart");
    let pool = database.sqlite().expect("a SQLite pool");
    assert!(!pool.is_closed(), "the restart keeps the pool");
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM notes")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(
        count, 2,
        "notes-plugin started again and wrote a second note"
    );
    let health = host.health().await;
    assert_eq!(
        health.plugins["database-plugin"].status,
        HealthStatus::Healthy
    );
    host.stop().await.expect("stop");
    std::fs::remove_dir_all(dir).ok();
}

/// A connection held across the stop (by code that does not stop with the plugins)
/// does not hold the stop up to the hook timeout: after its grace ([`CLOSE_GRACE`],
/// or half the hook timeout if shorter: 1 s here), the pool closes without it, and the
/// stop says so.
///
/// [`CLOSE_GRACE`]: ixp_plugins::database::CLOSE_GRACE
#[tokio::test]
async fn a_connection_held_across_the_stop_delays_it_by_the_grace_only() {
    let logs = ixp_tests::CapturedLogs::install();
    let dir = ixp_tests::temp_dir("held");
    let host = Host::builder()
        .catalog(Catalog::new())
        .config(ixp_tests::toml_config(
            "[plugins.database-plugin]\nhook_timeout = \"2s\"\n",
        ))
        .plugin::<DatabasePlugin>(DatabaseConfig {
            kind: DatabaseType::Sqlite,
            filename: dir.join("app.db"),
            ..DatabaseConfig::default()
        })
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let database = host
        .services()
        .get::<Database>("database")
        .expect("service");
    let held = database
        .sqlite()
        .expect("a SQLite pool")
        .acquire()
        .await
        .expect("a connection");
    let started = std::time::Instant::now();
    host.stop()
        .await
        .expect("the stop succeeds within its hook timeout");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(1),
        "the stop took {took:?}"
    );
    let text = logs.text();
    assert!(
        text.contains("pool closed with 1 connection(s) still in use after 1s"),
        "{text}"
    );
    drop(held);
    std::fs::remove_dir_all(dir).ok();
}
