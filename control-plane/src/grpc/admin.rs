//! The admin gRPC API: validates input, calls the store, answers with wire types. Mutations
//! report the config version they produced in `x-config-version` response metadata.

use gateway_proto::{
    CONFIG_VERSION_METADATA,
    ids::{KeyId, UpstreamId, UserId},
    money::Micros,
    v1::{self, admin_service_server::AdminService},
};
use tonic::{Request, Response, Status, metadata::MetadataValue};
use tracing::{error, info};

use super::{
    convert::{self, next_cursor, summary_by, usage_filter},
    inputs, validate,
};
use crate::{
    crypto::{Cipher, generate_key_secret},
    health::SharedProber,
    store::{Actor, KeyRow, NewKey, PriceRow, Store, StoreError, Versioned},
};

const DEFAULT_USAGE_LIMIT: u32 = 100;
const MAX_USAGE_LIMIT: u32 = 10_000;

/// Implementation of `AdminService`.
#[derive(Debug, Clone)]
pub struct Admin {
    store: Store,
    cipher: Cipher,
    prober: SharedProber,
}

impl Admin {
    /// An admin API over `store`.
    pub fn new(store: Store, cipher: Cipher, prober: SharedProber) -> Self {
        Self {
            store,
            cipher,
            prober,
        }
    }
}

/// Maps a store error to a status by whose fault it was; our own failures are logged here,
/// once, and reach the caller without internals.
fn status(err: StoreError) -> Status {
    match err {
        StoreError::NotFound { .. } => Status::not_found(err.to_string()),
        StoreError::Conflict(msg) => Status::already_exists(msg),
        StoreError::Invalid(msg) => Status::invalid_argument(msg),
        StoreError::Database(_) | StoreError::Migrate(_) => {
            error!(error = %err, "admin call failed in the store");
            Status::unavailable("the control plane's database is unavailable; try again")
        }
    }
}

impl Admin {
    /// The store, naming the caller as the author of its changes in the audit log: the
    /// interceptor admitted them by the admin token.
    /// A call the console makes in-process carries its session as the actor instead.
    fn acting<T>(&self, request: &Request<T>) -> Store {
        let actor = request.extensions().get::<Actor>().cloned();
        self.store.acting_as(actor.unwrap_or_else(|| {
            Actor {
                principal: "admin token".into(),
                source: request
                    .remote_addr()
                    .map_or_else(|| "unknown".into(), |a| a.to_string()),
            }
        }))
    }

    /// Keys as the API shows them: each capped one with what it has spent per window now.
    async fn with_spend(&self, rows: Vec<KeyRow>) -> Result<Vec<v1::Key>, Status> {
        let capped: Vec<KeyId> = rows.iter().filter(|k| k.caps.any()).map(|k| k.id).collect();
        let spend = self
            .store
            .key_spend(&capped, chrono::Utc::now())
            .await
            .map_err(status)?;
        Ok(rows
            .into_iter()
            .map(|k| {
                let spent = spend.get(&k.id);
                convert::key(k, spent)
            })
            .collect())
    }

    async fn key_with_spend(&self, row: KeyRow) -> Result<v1::Key, Status> {
        let mut keys = self.with_spend(vec![row]).await?;
        keys.pop()
            .ok_or_else(|| Status::internal("a key went missing while its spend was read"))
    }
}

fn versioned<T, U: From<T>>(v: Versioned<T>) -> Response<U> {
    let mut response = Response::new(U::from(v.value));
    if let Ok(value) = MetadataValue::try_from(v.version.to_string()) {
        response
            .metadata_mut()
            .insert(CONFIG_VERSION_METADATA, value);
    }
    response
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_upstream(
        &self,
        request: Request<v1::CreateUpstreamRequest>,
    ) -> Result<Response<v1::Upstream>, Status> {
        let store = self.acting(&request);
        let new = inputs::new_upstream(request.into_inner(), &self.cipher)?;
        let created = store.create_upstream(new).await.map_err(status)?;
        info!(upstream = created.value.id.get(), name = %created.value.name, version = created.version, "upstream created");
        Ok(versioned(created))
    }

    async fn get_upstream(
        &self,
        request: Request<v1::GetUpstreamRequest>,
    ) -> Result<Response<v1::Upstream>, Status> {
        let row = self
            .store
            .get_upstream(UpstreamId(request.into_inner().id))
            .await
            .map_err(status)?;
        Ok(Response::new(row.into()))
    }

    async fn list_upstreams(
        &self,
        _request: Request<v1::ListUpstreamsRequest>,
    ) -> Result<Response<v1::ListUpstreamsResponse>, Status> {
        let rows = self.store.list_upstreams().await.map_err(status)?;
        Ok(Response::new(v1::ListUpstreamsResponse {
            upstreams: rows.into_iter().map(Into::into).collect(),
        }))
    }

    async fn update_upstream(
        &self,
        request: Request<v1::UpdateUpstreamRequest>,
    ) -> Result<Response<v1::Upstream>, Status> {
        let store = self.acting(&request);
        let r = request.into_inner();
        let id = r.id;
        let patch = inputs::upstream_patch(r, &self.cipher)?;
        let updated = store
            .update_upstream(UpstreamId(id), patch)
            .await
            .map_err(status)?;
        info!(upstream = id, version = updated.version, "upstream updated");
        Ok(versioned(updated))
    }

    async fn delete_upstream(
        &self,
        request: Request<v1::DeleteUpstreamRequest>,
    ) -> Result<Response<v1::DeleteUpstreamResponse>, Status> {
        let store = self.acting(&request);
        let id = request.into_inner().id;
        let deleted = store
            .delete_upstream(UpstreamId(id))
            .await
            .map_err(status)?;
        info!(upstream = id, version = deleted.version, "upstream deleted");
        Ok(versioned(Versioned {
            value: v1::DeleteUpstreamResponse { id },
            version: deleted.version,
        }))
    }

    async fn create_user(
        &self,
        request: Request<v1::CreateUserRequest>,
    ) -> Result<Response<v1::User>, Status> {
        let store = self.acting(&request);
        let r = request.into_inner();
        let name = validate::name("user", &r.name)?;
        if r.balance_micros < 0 {
            return Err(Status::invalid_argument(
                "initial balance must not be negative",
            ));
        }
        let multiplier =
            inputs::multiplier(r.multiplier_ppm.unwrap_or(inputs::DEFAULT_MULTIPLIER_PPM))?;
        let created = store
            .create_user(&name, Micros(r.balance_micros), multiplier)
            .await
            .map_err(status)?;
        info!(
            user = created.value.id.get(),
            version = created.version,
            "user created"
        );
        Ok(versioned(created))
    }

    async fn get_user(
        &self,
        request: Request<v1::GetUserRequest>,
    ) -> Result<Response<v1::User>, Status> {
        let row = self
            .store
            .get_user(UserId(request.into_inner().id))
            .await
            .map_err(status)?;
        Ok(Response::new(row.into()))
    }

    async fn list_users(
        &self,
        request: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        let r = request.into_inner();
        let limit = inputs::page_limit(r.limit, 100, 1_000)?;
        let after = inputs::id_cursor(r.cursor.as_deref())?.map(UserId);
        let search = r.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let rows = self
            .store
            .list_users(search, after, i64::from(limit))
            .await
            .map_err(status)?;
        let next_cursor = next_cursor(&rows, limit, |u| u.id.get());
        Ok(Response::new(v1::ListUsersResponse {
            users: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }

    async fn adjust_balance(
        &self,
        request: Request<v1::AdjustBalanceRequest>,
    ) -> Result<Response<v1::User>, Status> {
        let store = self.acting(&request);
        let r = request.into_inner();
        if r.amount_micros == 0 {
            return Err(Status::invalid_argument("amount must not be zero"));
        }
        let reason = if r.reason.trim().is_empty() {
            if r.amount_micros > 0 {
                "top-up"
            } else {
                "correction"
            }
        } else {
            r.reason.trim()
        };
        let updated = store
            .adjust_balance(UserId(r.user_id), Micros(r.amount_micros), reason)
            .await
            .map_err(status)?;
        info!(
            user = r.user_id,
            amount_micros = r.amount_micros,
            version = updated.version,
            "balance adjusted"
        );
        Ok(versioned(updated))
    }

    async fn create_key(
        &self,
        request: Request<v1::CreateKeyRequest>,
    ) -> Result<Response<v1::CreateKeyResponse>, Status> {
        let store = self.acting(&request);
        let r = request.into_inner();
        let expires_at = r
            .expires_at
            .as_deref()
            .map(inputs::expires_at)
            .transpose()?;
        let secret = generate_key_secret();
        let new = NewKey {
            user_id: UserId(r.user_id),
            name: r.name.trim().to_owned(),
            prefix: secret.prefix.clone(),
            digest: secret.digest.as_bytes().to_vec(),
            expires_at,
            models: validate::models(r.models)?,
            ip_allow: validate::cidrs(r.ip_allow)?,
            rpm: validate::positive_limit("rpm", r.rpm)?,
            concurrency: validate::positive_limit("concurrency", r.concurrency)?,
            caps: validate::spend_limits(r.spend_limits)?,
        };
        let created = store.create_key(new).await.map_err(status)?;
        info!(key = created.value.id.get(), user = r.user_id, prefix = %created.value.prefix, version = created.version, "key created");
        Ok(versioned(Versioned {
            value: v1::CreateKeyResponse {
                key: Some(convert::key(created.value, None)),
                secret: secret.secret,
            },
            version: created.version,
        }))
    }

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let r = request.into_inner();
        let limit = inputs::page_limit(r.limit, 100, 1_000)?;
        let after = inputs::id_cursor(r.cursor.as_deref())?.map(KeyId);
        let rows = self
            .store
            .list_keys(r.user_id.map(UserId), after, i64::from(limit))
            .await
            .map_err(status)?;
        let next_cursor = next_cursor(&rows, limit, |k| k.id.get());
        Ok(Response::new(v1::ListKeysResponse {
            keys: self.with_spend(rows).await?,
            next_cursor,
        }))
    }

    async fn get_key(
        &self,
        request: Request<v1::GetKeyRequest>,
    ) -> Result<Response<v1::Key>, Status> {
        let row = self
            .store
            .get_key(KeyId(request.into_inner().id))
            .await
            .map_err(status)?;
        Ok(Response::new(self.key_with_spend(row).await?))
    }

    async fn revoke_key(
        &self,
        request: Request<v1::RevokeKeyRequest>,
    ) -> Result<Response<v1::Key>, Status> {
        let store = self.acting(&request);
        let id = request.into_inner().id;
        let revoked = store.revoke_key(KeyId(id)).await.map_err(status)?;
        info!(key = id, version = revoked.version, "key revoked");
        let key = self.key_with_spend(revoked.value).await?;
        Ok(versioned(Versioned {
            value: key,
            version: revoked.version,
        }))
    }

    async fn set_price(
        &self,
        request: Request<v1::SetPriceRequest>,
    ) -> Result<Response<v1::Price>, Status> {
        let store = self.acting(&request);
        let row = PriceRow::try_from(
            request
                .into_inner()
                .price
                .ok_or_else(|| Status::invalid_argument("price is required"))?,
        )?;
        let set = store.set_price(row).await.map_err(status)?;
        info!(model = %set.value.model, version = set.version, "price set");
        Ok(versioned(set))
    }

    async fn list_prices(
        &self,
        _request: Request<v1::ListPricesRequest>,
    ) -> Result<Response<v1::ListPricesResponse>, Status> {
        let rows = self.store.list_prices().await.map_err(status)?;
        Ok(Response::new(v1::ListPricesResponse {
            prices: rows.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_usage(
        &self,
        request: Request<v1::ListUsageRequest>,
    ) -> Result<Response<v1::ListUsageResponse>, Status> {
        let r = request.into_inner();
        let limit = inputs::page_limit(r.limit, DEFAULT_USAGE_LIMIT, MAX_USAGE_LIMIT)?;
        let mut filter = usage_filter(
            r.user_id,
            r.key_id,
            r.upstream_id,
            r.model,
            r.since.as_deref(),
            r.until.as_deref(),
            i64::from(limit),
        )?;
        filter.status = r
            .status
            .map(|s| match v1::UsageStatus::try_from(s) {
                Ok(v1::UsageStatus::Unspecified) | Err(_) => Err(Status::invalid_argument(
                    format!("status {s} is not a usage status"),
                )),
                Ok(status) => Ok(status),
            })
            .transpose()?;
        filter.after = r
            .cursor
            .as_deref()
            .map(convert::parse_usage_cursor)
            .transpose()?;
        let rows = self.store.list_usage(&filter).await.map_err(status)?;
        // A full page may have a next one; a short page is the last.
        let next_cursor = (rows.len() == limit as usize)
            .then(|| rows.last().map(convert::usage_cursor))
            .flatten();
        Ok(Response::new(v1::ListUsageResponse {
            events: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }

    async fn test_upstream(
        &self,
        request: Request<v1::TestUpstreamRequest>,
    ) -> Result<Response<v1::UpstreamProbe>, Status> {
        let id = request.into_inner().id;
        let row = self
            .store
            .upstream_with_secret(UpstreamId(id))
            .await
            .map_err(status)?;
        let api_key = self.cipher.decrypt(&row.api_key_enc).map_err(|e| {
            error!(upstream = id, error = %e, "cannot decrypt upstream key");
            Status::failed_precondition(e.to_string())
        })?;
        let path = if row.upstream.probe_path.is_empty() {
            inputs::DEFAULT_PROBE_PATH
        } else {
            row.upstream.probe_path.as_str()
        };
        let result = self
            .prober
            .probe(&row.upstream.base_url, path, &api_key)
            .await;
        info!(target: "HealthCheck", upstream = id, healthy = result.healthy, error = %result.error, "on-demand probe");
        Ok(Response::new(v1::UpstreamProbe {
            upstream_id: id,
            healthy: result.healthy,
            status_code: result.status.map_or(0, |s| u32::from(s.as_u16())),
            latency_ms: u32::try_from(result.latency.as_millis()).unwrap_or(u32::MAX),
            error: result.error,
            url: result.url,
        }))
    }

    async fn update_user(
        &self,
        request: Request<v1::UpdateUserRequest>,
    ) -> Result<Response<v1::User>, Status> {
        let store = self.acting(&request);
        let r = request.into_inner();
        let patch = inputs::user_patch(&r)?;
        let updated = store
            .update_user(UserId(r.id), patch)
            .await
            .map_err(status)?;
        info!(user = r.id, version = updated.version, "user updated");
        Ok(versioned(updated))
    }

    async fn update_key(
        &self,
        request: Request<v1::UpdateKeyRequest>,
    ) -> Result<Response<v1::Key>, Status> {
        let store = self.acting(&request);
        let r = request.into_inner();
        let id = r.id;
        let patch = inputs::key_patch(r)?;
        let updated = store.update_key(KeyId(id), patch).await.map_err(status)?;
        info!(key = id, version = updated.version, "key limits updated");
        let key = self.key_with_spend(updated.value).await?;
        Ok(versioned(Versioned {
            value: key,
            version: updated.version,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<v1::ListDeadLettersRequest>,
    ) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        let limit = inputs::page_limit(request.into_inner().limit, 100, 1_000)?;
        let rows = self
            .store
            .list_dead_letters(i64::from(limit))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(Into::into).collect(),
        }))
    }

    async fn redrive_dead_letter(
        &self,
        request: Request<v1::DeadLetterRequest>,
    ) -> Result<Response<v1::RedriveDeadLetterResponse>, Status> {
        let store = self.acting(&request);
        let id = request.into_inner().id;
        let letter = store.get_dead_letter(&id).await.map_err(status)?;
        let payload = letter.payload.ok_or_else(|| {
            Status::failed_precondition(format!(
                "dead letter {id} kept no event to redrive ({}); drop it",
                letter.error
            ))
        })?;
        let row = crate::usage::decode(&payload).map_err(|e| {
            Status::failed_precondition(format!(
                "dead letter {id} still cannot be billed: {e}; drop it if it never will"
            ))
        })?;
        let event_id = row.id.to_string();
        // Ingest is idempotent by event id, so a redrive interrupted before the drop below
        // bills nothing the second time.
        let outcome = store
            .ingest_usage(std::slice::from_ref(&row))
            .await
            .map_err(|e| {
                if e.is_transient() {
                    status(e)
                } else {
                    Status::failed_precondition(format!(
                        "the ledger still refuses dead letter {id}: {e}"
                    ))
                }
            })?;
        store.drop_dead_letter(&id, true).await.map_err(status)?;
        info!(target: "UsageConsumer", dead_letter = %id, event_id = %event_id, inserted = outcome.inserted, "dead letter redriven");
        Ok(Response::new(v1::RedriveDeadLetterResponse {
            id,
            event_id,
            inserted: outcome.inserted > 0,
        }))
    }

    async fn drop_dead_letter(
        &self,
        request: Request<v1::DeadLetterRequest>,
    ) -> Result<Response<v1::DeadLetter>, Status> {
        let store = self.acting(&request);
        let id = request.into_inner().id;
        let dropped = store.drop_dead_letter(&id, false).await.map_err(status)?;
        info!(target: "UsageConsumer", dead_letter = %id, "dead letter dropped");
        Ok(Response::new(dropped.into()))
    }

    async fn summarize_usage(
        &self,
        request: Request<v1::SummarizeUsageRequest>,
    ) -> Result<Response<v1::SummarizeUsageResponse>, Status> {
        let r = request.into_inner();
        let by = summary_by(r.by)?;
        let filter = usage_filter(
            r.user_id,
            r.key_id,
            r.upstream_id,
            r.model,
            r.since.as_deref(),
            r.until.as_deref(),
            0,
        )?;
        let rows = self
            .store
            .summarize_usage(by, &filter)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::SummarizeUsageResponse {
            by: by as i32,
            rows: rows.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let r = request.into_inner();
        let limit = inputs::page_limit(r.limit, 100, 1_000)?;
        let before = inputs::id_cursor(r.cursor.as_deref())?;
        let since = r
            .since
            .as_deref()
            .map(|t| validate::timestamp("since", t))
            .transpose()?;
        let rows = self
            .store
            .list_audit(i64::from(limit), before, since)
            .await
            .map_err(status)?;
        let next_cursor = next_cursor(&rows, limit, |r| r.id);
        Ok(Response::new(v1::ListAuditResponse {
            entries: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }
}
