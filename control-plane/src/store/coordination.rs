//! How replicas coordinate through the store: the feed of config changes (Postgres `LISTEN`,
//! or SQLite's in-process watch channel) and the leadership of the duties one replica does at
//! a time — health checks, usage retention (a Postgres advisory lock each, or always the one
//! SQLite process).

use sqlx::{Connection, PgConnection, postgres::PgListener};
use tokio::sync::watch;

use super::{Db, Store, StoreError, postgres};

impl Store {
    /// A feed of config changes made through this store (and, on Postgres, any replica).
    pub async fn changes(&self) -> Result<Changes, StoreError> {
        match &self.db {
            Db::Postgres(pool) => Ok(Changes::Postgres(Box::new(postgres::listen(pool).await?))),
            Db::Sqlite(_, changes) => Ok(Changes::Local(changes.subscribe())),
        }
    }

    /// Leadership of `duty` if no other replica holds it.
    pub async fn try_lead(&self, duty: Duty) -> Result<Option<Leadership>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => Ok(postgres::try_lead(pool, duty.lock())
                .await?
                .map(Leadership::Postgres)),
            // One process owns a SQLite database: it always leads.
            Db::Sqlite(..) => Ok(Some(Leadership::Local)),
        }
    }
}

/// What one replica at a time does; each duty has a lock of its own, so a replica can lead
/// one and not the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    HealthChecks,
    UsageRetention,
}

impl Duty {
    /// The Postgres advisory lock of the duty.
    fn lock(self) -> i64 {
        match self {
            // "cgwhealt"
            Self::HealthChecks => 0x6367_7768_6561_6c74,
            // "cgwretnt"
            Self::UsageRetention => 0x6367_7772_6574_6e74,
        }
    }
}

/// Config-change notifications.
#[derive(Debug)]
pub enum Changes {
    Postgres(Box<PgListener>),
    Local(watch::Receiver<i64>),
}

impl Changes {
    /// Waits for the next change; a burst of changes is reported once.
    pub async fn next(&mut self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(l) => {
                l.recv().await?;
                while l.next_buffered().is_some() {}
                Ok(())
            }
            Self::Local(rx) => {
                if rx.changed().await.is_err() {
                    // The store is gone: nothing will change any more.
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        }
    }
}

/// Leadership of a duty; dropping it gives leadership up.
#[derive(Debug)]
pub enum Leadership {
    Postgres(PgConnection),
    Local,
}

impl Leadership {
    /// Whether leadership still holds (on Postgres: the lock connection is alive).
    pub async fn holds(&mut self) -> bool {
        match self {
            Self::Postgres(conn) => conn.ping().await.is_ok(),
            Self::Local => true,
        }
    }

    /// Gives leadership up.
    pub async fn release(self) {
        if let Self::Postgres(conn) = self {
            let _ = conn.close().await;
        }
    }
}
