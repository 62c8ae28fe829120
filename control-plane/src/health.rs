//! Active health checks (`HealthCheck` in logs): one replica at a time — the holder of a
//! Postgres advisory lock (on SQLite, the one process) — probes every enabled upstream periodically with jitter, by default
//! `GET {base_url}/v1/models` with the upstream's key (no billable completion). N consecutive
//! failures mark an upstream unhealthy and M successes healthy again; only a change that
//! affects routing bumps the config version, so data planes skip (never remove) it.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::future::join_all;
use gateway_proto::{ids::UpstreamId, v1::UpstreamHealth};
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    crypto::Cipher,
    store::{Duty, HealthUpdate, Leadership, Store, UpstreamSecretRow},
};

/// How health checks run.
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    /// Time between rounds; zero disables active checks.
    pub interval: Duration,
    /// Bound on one probe.
    pub timeout: Duration,
    /// Consecutive failures that mark an upstream unhealthy.
    pub unhealthy_after: u32,
    /// Consecutive successes that mark an unhealthy upstream healthy again.
    pub healthy_after: u32,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub healthy: bool,
    pub status: Option<StatusCode>,
    pub latency: Duration,
    pub error: String,
    pub url: String,
}

/// Sends probes.
#[derive(Debug, Clone)]
pub struct Prober {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl Prober {
    /// A prober whose probes give up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    /// Probes one upstream.
    pub async fn probe(&self, base_url: &str, probe_path: &str, api_key: &str) -> ProbeResult {
        let url = format!("{}{}", base_url.trim_end_matches('/'), probe_path);
        let started = Instant::now();
        let failed = |error: String, status: Option<StatusCode>| ProbeResult {
            healthy: false,
            status,
            latency: started.elapsed(),
            error,
            url: url.clone(),
        };
        let request = match Request::get(&url)
            .header(header::AUTHORIZATION, format!("Bearer {api_key}"))
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
        {
            Ok(r) => r,
            Err(_) => return failed("the probe URL is not valid".into(), None),
        };
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Err(_) => return failed(format!("no answer within {:?}", self.timeout), None),
            Ok(Err(err)) => return failed(format!("cannot connect: {err}"), None),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let error = match status {
            s if s.is_success() => String::new(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                format!("the upstream rejected its API key ({})", status.as_u16())
            }
            StatusCode::NOT_FOUND => {
                format!("{probe_path} answered 404: check the base URL, or set another probe path")
            }
            s => format!("the probe answered {}", s.as_u16()),
        };
        ProbeResult {
            healthy: error.is_empty(),
            status: Some(status),
            latency: started.elapsed(),
            error,
            url,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    failures: u32,
    successes: u32,
}

/// The health-check loop of one replica.
#[derive(Debug)]
pub struct HealthChecker {
    store: Store,
    cipher: Cipher,
    prober: Prober,
    settings: HealthSettings,
    leader: watch::Sender<bool>,
}

impl HealthChecker {
    /// A checker; the receiver tells whether this replica currently leads.
    pub fn new(
        store: Store,
        cipher: Cipher,
        prober: Prober,
        settings: HealthSettings,
    ) -> (Self, watch::Receiver<bool>) {
        let (leader, rx) = watch::channel(false);
        (
            Self {
                store,
                cipher,
                prober,
                settings,
                leader,
            },
            rx,
        )
    }

    /// Competes for leadership and, while leading, probes until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        if self.settings.interval.is_zero() {
            return;
        }
        let mut streaks: HashMap<UpstreamId, Streak> = HashMap::new();
        while !cancel.is_cancelled() {
            match self.store.try_lead(Duty::HealthChecks).await {
                Ok(Some(conn)) => {
                    info!(target: "HealthCheck", "leading health checks");
                    self.leader.send_replace(true);
                    self.lead(conn, &mut streaks, &cancel).await;
                    self.leader.send_replace(false);
                }
                Ok(None) => {}
                Err(err) => {
                    warn!(target: "HealthCheck", error = %err, "cannot compete for health-check leadership")
                }
            }
            self.pause(&cancel).await;
        }
    }

    async fn lead(
        &self,
        mut conn: Leadership,
        streaks: &mut HashMap<UpstreamId, Streak>,
        cancel: &CancellationToken,
    ) {
        loop {
            if let Err(err) = self.round(streaks).await {
                warn!(target: "HealthCheck", error = %err, "health-check round failed");
            }
            self.pause(cancel).await;
            if cancel.is_cancelled() {
                conn.release().await;
                return;
            }
            // Losing the lock connection releases the lock: another replica may lead now.
            if !conn.holds().await {
                warn!(target: "HealthCheck", "lost the leader lock connection");
                return;
            }
        }
    }

    async fn pause(&self, cancel: &CancellationToken) {
        let interval = self.settings.interval;
        let jittered = interval.mul_f64(rand::rng().random_range(0.8..1.2));
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(jittered) => {}
        }
    }

    async fn round(&self, streaks: &mut HashMap<UpstreamId, Streak>) -> anyhow::Result<()> {
        let upstreams = self.store.upstreams_to_probe().await?;
        let spread = self.settings.interval / 4;
        let probes = upstreams.iter().map(|row| {
            // Spread probes over the start of the round so they do not all fire at once.
            let delay = spread.mul_f64(rand::rng().random_range(0.0..1.0));
            async move {
                tokio::time::sleep(delay).await;
                (row, self.probe_row(row).await)
            }
        });
        let results = join_all(probes).await;
        streaks.retain(|id, _| upstreams.iter().any(|u| u.upstream.id == *id));
        let mut updates = Vec::new();
        for (row, result) in results {
            let u = &row.upstream;
            let streak = streaks.entry(u.id).or_default();
            if result.healthy {
                *streak = Streak {
                    failures: 0,
                    successes: streak.successes + 1,
                };
                let recovered = u.health == UpstreamHealth::Unhealthy
                    && streak.successes >= self.settings.healthy_after;
                if recovered || u.health == UpstreamHealth::Unknown {
                    info!(target: "HealthCheck", upstream = u.id.get(), name = %u.name, latency_ms = result.latency.as_millis() as u64, "upstream healthy");
                    updates.push(HealthUpdate {
                        upstream_id: u.id,
                        health: UpstreamHealth::Healthy,
                        error: String::new(),
                        bump: recovered,
                    });
                }
            } else {
                *streak = Streak {
                    failures: streak.failures + 1,
                    successes: 0,
                };
                let was_unhealthy = u.health == UpstreamHealth::Unhealthy;
                let failing = !was_unhealthy && streak.failures >= self.settings.unhealthy_after;
                if failing {
                    warn!(target: "HealthCheck", upstream = u.id.get(), name = %u.name, error = %result.error, "upstream unhealthy");
                }
                if failing || (was_unhealthy && u.health_error != result.error) {
                    updates.push(HealthUpdate {
                        upstream_id: u.id,
                        health: if failing || was_unhealthy {
                            UpstreamHealth::Unhealthy
                        } else {
                            UpstreamHealth::Healthy
                        },
                        error: result.error.clone(),
                        bump: failing,
                    });
                }
            }
        }
        if let Some(version) = self.store.record_health(&updates).await? {
            info!(target: "HealthCheck", version, changes = updates.len(), "health changes published");
        }
        Ok(())
    }

    async fn probe_row(&self, row: &UpstreamSecretRow) -> ProbeResult {
        match self.cipher.decrypt(&row.api_key_enc) {
            Ok(key) => {
                self.prober
                    .probe(&row.upstream.base_url, &row.upstream.probe_path, &key)
                    .await
            }
            Err(err) => ProbeResult {
                healthy: false,
                status: None,
                latency: Duration::ZERO,
                error: err.to_string(),
                url: String::new(),
            },
        }
    }
}

/// Shared prober handle for the admin API's `TestUpstream`.
pub type SharedProber = Arc<Prober>;
