//! After-disconnect drains: when a client leaves mid-stream the upstream keeps working (and
//! billing), so the rest of its answer is read — bounded in time and size — for the real
//! usage. Every drain is tracked: shutdown waits for them within its grace period, and past
//! it tells the rest to bill what they have read, so no event is lost.

use std::time::Duration;

use http_body_util::BodyExt;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::warn;

use gateway_proto::ids::UpstreamId;

use super::{Meter, Outcome, reader::Tap, tap::Held};
use crate::upstream::UpstreamBody;

/// How long, and how much, is read from the upstream after the client has gone.
const DRAIN_TIME: Duration = Duration::from_secs(60);
const DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// The drains of one data plane.
#[derive(Debug, Clone, Default)]
pub struct Drains {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Drains {
    /// Drains still running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no drain is running.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for every drain to end until `deadline`; past it, the rest stop reading and bill
    /// what they have seen, and this waits for that (which does not wait on the upstream).
    pub async fn finish(&self, deadline: tokio::time::Instant) {
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(target: "ProxyHandler", drains = self.tasks.len(), "grace period over; billing unfinished drains from what they read");
            self.stop.cancel();
            self.tasks.wait().await;
        }
    }
}

/// The rest of an abandoned response, to be read for its usage.
pub(super) struct Drain {
    pub(super) inner: UpstreamBody,
    pub(super) tap: Tap,
    pub(super) meter: Meter,
    pub(super) upstream_id: UpstreamId,
    pub(super) idle: Duration,
    /// In-flight counts and slots, released when the drain ends.
    pub(super) held: Vec<Held>,
}

impl Drain {
    /// Runs the drain on the meter's tracker; without a runtime (the process is ending) it
    /// bills at once from what was seen.
    pub(super) fn spawn(self) {
        let drains = self.meter.publisher.drains().clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let stop = drains.stop.clone();
                drains.tasks.spawn_on(self.run(stop), &runtime);
            }
            Err(_) => {
                let (_, usage, chunks) = self.tap.result(false);
                self.meter.finish(
                    Some(self.upstream_id),
                    Outcome::ClientCancelled,
                    usage,
                    chunks,
                );
            }
        }
    }

    /// Reads until the terminal event, the end, a limit or `stop`, then bills it as cancelled
    /// by the client: with the upstream's own numbers when they arrived, estimated from what
    /// was seen otherwise.
    async fn run(mut self, stop: CancellationToken) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIME;
        let mut read = 0;
        while !self.tap.has_terminal() && read < DRAIN_BYTES {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let frame = tokio::select! {
                () = stop.cancelled() => break,
                frame = tokio::time::timeout(self.idle.min(left), self.inner.frame()) => frame,
            };
            match frame {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        read += data.len();
                        self.tap.feed(data);
                    }
                }
                // A JSON body is complete now.
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => break,
            }
        }
        let (_, usage, chunks) = self.tap.result(true);
        self.meter.finish(
            Some(self.upstream_id),
            Outcome::ClientCancelled,
            usage,
            chunks,
        );
        drop(self.held);
    }
}
