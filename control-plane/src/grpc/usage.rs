//! The usage service: usage events reported by data planes that run without Redis (or
//! deliver their spool at shutdown), ingested exactly like the stream, and a key's own recent
//! usage for `GET /v1/usage`.

use std::sync::Arc;

use gateway_proto::{
    ids::{KeyId, UserId},
    v1::{
        KeyUsageRequest, KeyUsageResponse, ReportUsageRequest, ReportUsageResponse,
        usage_service_server::UsageService,
    },
};
use prost::Message;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::store::{Store, StoreError, UsageFilter, UsageRow};

/// Implementation of `UsageService`.
#[derive(Debug, Clone)]
pub struct Usage {
    store: Store,
    ingested: Arc<watch::Sender<u64>>,
}

impl Usage {
    /// Ingests reported usage into `store`, counting new events in `ingested`.
    pub fn new(store: Store, ingested: Arc<watch::Sender<u64>>) -> Self {
        Self { store, ingested }
    }
}

fn ledger_unavailable(what: &'static str) -> impl Fn(StoreError) -> Status {
    move |e| {
        warn!(target: "UsageConsumer", error = %e, "{what} failed");
        Status::unavailable("the ledger is unavailable; retry")
    }
}

#[tonic::async_trait]
impl UsageService for Usage {
    async fn report_usage(
        &self,
        request: Request<ReportUsageRequest>,
    ) -> Result<Response<ReportUsageResponse>, Status> {
        let events = request.into_inner().events;
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let id = event.id.clone();
            // Kept as it arrived, so the dead letter can be redriven once its cause is fixed.
            let payload = event.encode_to_vec();
            match UsageRow::try_from(event) {
                Ok(row) => rows.push(row),
                Err(reason) => {
                    warn!(target: "UsageConsumer", event_id = %id, reason = %reason, "reported usage event moved to dead letters");
                    self.store
                        .dead_letter(&format!("report:{id}"), Some(&payload), &reason.to_string())
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                }
            }
        }
        let outcome = self
            .store
            .ingest_usage(&rows)
            .await
            .map_err(ledger_unavailable("ingesting reported usage"))?;
        self.ingested.send_modify(|n| *n += outcome.inserted);
        Ok(Response::new(ReportUsageResponse {
            inserted: outcome.inserted,
        }))
    }

    async fn key_usage(
        &self,
        request: Request<KeyUsageRequest>,
    ) -> Result<Response<KeyUsageResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            None => 20,
            Some(n @ 1..=100) => n,
            Some(n) => {
                return Err(Status::invalid_argument(format!(
                    "limit must be between 1 and 100, got {n}"
                )));
            }
        };
        let unavailable = ledger_unavailable("key usage query");
        let user = self
            .store
            .get_user(UserId(r.user_id))
            .await
            .map_err(&unavailable)?;
        let events = self
            .store
            .list_usage(&UsageFilter {
                key_id: Some(KeyId(r.key_id)),
                limit: i64::from(limit),
                ..UsageFilter::default()
            })
            .await
            .map_err(&unavailable)?;
        let key = self
            .store
            .get_key(KeyId(r.key_id))
            .await
            .map_err(&unavailable)?;
        let spend = if key.caps.any() {
            self.store
                .key_spend(&[key.id], chrono::Utc::now())
                .await
                .map_err(&unavailable)?
                .remove(&key.id)
        } else {
            None
        };
        Ok(Response::new(KeyUsageResponse {
            spend_limits: key.caps.states(spend.as_ref()),
            balance_micros: user.balance_micros.get(),
            events: events.into_iter().map(Into::into).collect(),
        }))
    }
}
