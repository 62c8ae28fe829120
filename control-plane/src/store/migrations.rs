//! The schema's migrations, embedded in the binary, applied one at a time at start-up with
//! progress in the log: which one, how far along, how long it took. Each is a numbered file
//! under `migrations/` (Postgres) or `migrations-sqlite/`; a test keeps these lists and the
//! directories in step. They are sqlx migrations, recorded in `_sqlx_migrations` with the
//! checksum `sqlx::migrate!` gives the same file, so databases migrated before stay valid.

use std::{borrow::Cow, time::Instant};

use sqlx::{
    Acquire, Database, Executor, Pool, SqlStr,
    migrate::{Migrate, Migration, MigrationType, Migrator},
};
use tracing::info;

use super::StoreError;

/// (version, description, SQL) of one migration.
type Embedded = (i64, &'static str, &'static str);

macro_rules! embed {
    ($dir:literal: $($version:literal $description:literal $file:literal),* $(,)?) => {
        &[$(($version, $description, include_str!(concat!("../../", $dir, "/", $file)))),*]
    };
}

pub(super) const POSTGRES: &[Embedded] = embed!("migrations":
    1 "init" "0001_init.sql",
    2 "health" "0002_health.sql",
    3 "usage daily" "0003_usage_daily.sql",
    4 "upstream models" "0004_upstream_models.sql",
    5 "usage hourly" "0005_usage_hourly.sql",
    6 "key spend limits" "0006_key_spend_limits.sql",
    7 "usage totals" "0007_usage_totals.sql",
    8 "audit log" "0008_audit_log.sql",
    9 "console sessions" "0009_console_sessions.sql",
    10 "dashboard rollups" "0010_dashboard_rollups.sql",
);

pub(super) const SQLITE: &[Embedded] = embed!("migrations-sqlite":
    1 "init" "0001_init.sql",
    2 "usage daily" "0002_usage_daily.sql",
    3 "upstream models" "0003_upstream_models.sql",
    4 "usage hourly" "0004_usage_hourly.sql",
    5 "key spend limits" "0005_key_spend_limits.sql",
    6 "usage totals" "0006_usage_totals.sql",
    7 "audit log" "0007_audit_log.sql",
    8 "console sessions" "0008_console_sessions.sql",
    9 "dashboard rollups" "0009_dashboard_rollups.sql",
);

fn migration(&(version, description, sql): &Embedded) -> Migration {
    Migration::new(
        version,
        Cow::Borrowed(description),
        MigrationType::Simple,
        SqlStr::from_static(sql),
        false,
    )
}

/// Applies the migrations of `embedded` that `pool` lacks, in order, logging each; how many.
pub(super) async fn run<DB>(
    pool: &Pool<DB>,
    embedded: &'static [Embedded],
) -> Result<u64, StoreError>
where
    DB: Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a Pool<DB>: Acquire<'a, Database = DB>,
{
    let all: Vec<Migration> = embedded.iter().map(migration).collect();
    let applied: Vec<i64> = {
        let mut conn = pool.acquire().await?;
        conn.ensure_migrations_table("_sqlx_migrations").await?;
        conn.list_applied_migrations("_sqlx_migrations")
            .await?
            .into_iter()
            .map(|m| m.version)
            .collect()
    };
    let pending: Vec<usize> = (0..all.len())
        .filter(|i| !applied.contains(&all[*i].version))
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    info!(
        pending = pending.len(),
        of = all.len(),
        "applying database migrations"
    );
    for (done, &i) in pending.iter().enumerate() {
        let m = &all[i];
        let one = Instant::now();
        info!(version = m.version, description = %m.description, step = done + 1, steps = pending.len(), "applying migration");
        // A migrator over the migrations up to this one applies exactly this one: the
        // earlier ones are in place (checked against their checksums as it goes).
        let upto = Migrator {
            migrations: Cow::Owned(all[..=i].to_vec()),
            ..Migrator::DEFAULT
        };
        upto.run(pool).await?;
        info!(
            version = m.version,
            step = done + 1,
            steps = pending.len(),
            elapsed_ms = one.elapsed().as_millis() as u64,
            "migration applied"
        );
    }
    info!(
        applied = pending.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database migrations applied"
    );
    Ok(pending.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in a migrations directory is embedded, in order, with the version and
    /// description sqlx derives from its name.
    fn matches_directory(dir: &str, embedded: &[Embedded]) {
        let mut files: Vec<String> =
            std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sql"))
                .collect();
        files.sort();
        assert_eq!(files.len(), embedded.len(), "{dir}: {files:?}");
        for (file, &(version, description, sql)) in files.iter().zip(embedded) {
            let (number, rest) = file.split_once('_').unwrap();
            assert_eq!(number.parse::<i64>().unwrap(), version, "{file}");
            assert_eq!(rest.trim_end_matches(".sql").replace('_', " "), description);
            let on_disk =
                std::fs::read_to_string(format!("{}/{dir}/{file}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap();
            assert_eq!(on_disk, sql, "{file}");
        }
    }

    #[test]
    fn the_embedded_lists_are_the_directories() {
        matches_directory("migrations", POSTGRES);
        matches_directory("migrations-sqlite", SQLITE);
    }
}
