//! Store errors, by whose fault they were, and which of them only ever deserve a retry.

/// A store failure, by whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named row does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked up.
        kind: &'static str,
        /// Its id as given.
        id: String,
    },
    /// A unique name or value is taken.
    #[error("{0}")]
    Conflict(String),
    /// The database refused the change (a check constraint).
    #[error("{0}")]
    Invalid(String),
    /// The database is unreachable or failed.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(db) = err.as_database_error() {
            // Postgres names the constraint; SQLite says "UNIQUE constraint failed: users.name".
            let what = db
                .constraint()
                .map(str::to_owned)
                .unwrap_or_else(|| db.message().to_owned());
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => {
                    return Self::Conflict(
                        if what.contains("upstreams_name") || what.contains("upstreams.name") {
                            "an upstream with that name already exists".into()
                        } else if what.contains("users_name") || what.contains("users.name") {
                            "a user with that name already exists".into()
                        } else {
                            "that value already exists".into()
                        },
                    );
                }
                sqlx::error::ErrorKind::CheckViolation => {
                    return Self::Invalid(format!("value out of range ({what})"));
                }
                _ => {}
            }
        }
        Self::Database(err)
    }
}

impl StoreError {
    /// Whether the database could not be reached (as opposed to refusing a statement): such
    /// failures say nothing about the data and must only ever be retried.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Self::Database(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|code| transient_sqlstate(&code))
            }
            _ => false,
        }
    }
}

/// Database errors that say "not now" rather than "not this": a failover or restart in
/// progress (a read-only primary, shutdown, cannot connect yet), a lost connection, exhausted
/// resources, or a conflict between transactions. Retrying them is right; dead-lettering an
/// event for them would be wrong.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources
        || matches!(
            code,
            "25006" // read_only_sql_transaction: a standby, or a primary being demoted
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "5" // SQLITE_BUSY
                | "6" // SQLITE_LOCKED
        )
}

#[cfg(test)]
mod transient_tests {
    use super::transient_sqlstate;

    #[test]
    fn failover_and_contention_are_transient_bad_data_is_not() {
        for code in [
            "08006", "25006", "57P01", "57P03", "53300", "40001", "40P01", "5",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "23503", "22003", "42P01", "23514"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }
}
