//! Spend leaves the rolling windows of key caps as hours pass, with no change to announce
//! it: at the start of every UTC hour the config version is bumped (once fleet-wide, see
//! [`Store::roll_spend_windows`]) so snapshots recount what capped keys have spent and a key
//! refused at a cap gets its room back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::Store;

/// How long after the hour the roll runs: events of the hour before are mostly ingested.
const AFTER_THE_HOUR: Duration = Duration::from_secs(2);
/// Wait after a failed roll before trying again within the same hour.
const RETRY: Duration = Duration::from_secs(30);

/// Rolls the windows at every hour until `cancel`.
pub async fn run(store: Store, cancel: CancellationToken) {
    let mut wait = until_next_hour(Utc::now());
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = match store.roll_spend_windows(Utc::now()).await {
            Ok(version) => {
                if let Some(version) = version {
                    info!(target: "ConfigStream", version, "hour passed; rolling key spend windows");
                }
                until_next_hour(Utc::now())
            }
            Err(err) => {
                warn!(target: "ConfigStream", error = %err, "rolling key spend windows failed; retrying");
                RETRY
            }
        };
    }
}

/// Time from `now` to just after the next UTC hour starts.
fn until_next_hour(now: DateTime<Utc>) -> Duration {
    let into_hour = u64::try_from(now.timestamp().rem_euclid(3600)).unwrap_or(0);
    let subsec = Duration::from_nanos(u64::from(now.timestamp_subsec_nanos()));
    Duration::from_secs(3600 - into_hour).saturating_sub(subsec) + AFTER_THE_HOUR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_just_after_the_hour() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            until_next_hour(at("2026-12-02T10:59:59.5Z")),
            Duration::from_millis(500) + AFTER_THE_HOUR
        );
        assert_eq!(
            until_next_hour(at("2026-12-02T10:00:00Z")),
            Duration::from_secs(3600) + AFTER_THE_HOUR
        );
        assert_eq!(
            until_next_hour(at("2026-12-02T10:30:00Z")),
            Duration::from_secs(1800) + AFTER_THE_HOUR
        );
    }
}
