//! Content-addressed files: a tenant's identical bytes are kept once, under their SHA-256, and
//! count once against its storage quota. A file goes when the last row naming it goes. Every
//! file on its way in is reserved first (see `store::reservations`), so that the quota holds
//! under parallel uploads and no delete can remove bytes that a new row is about to name.

use super::auth::Caller;
use super::error::ApiError;
use super::upload::TempUpload;
use super::AppState;
use crate::domain::Code;
use crate::store::{OverQuota, Reservation};

/// How long a reservation may outlive the request that made it (a process killed mid-upload
/// leaves one; then the sweep lets go of it).
const RESERVATION_TTL_MS: i64 = 6 * 3600 * 1000;

pub fn content_key(tenant: &str, sha256: &str) -> String {
    format!("tenants/{tenant}/sha256/{sha256}")
}

/// The tenant's storage limit, if any.
pub fn stored_bytes_limit(app: &AppState, caller: &Caller) -> Option<u64> {
    caller
        .tenant
        .limits
        .max_stored_bytes
        .map(|b| b.max(0) as u64)
        .or(app.config.max_stored_bytes)
}

fn over_quota(q: OverQuota, adding: u64) -> ApiError {
    let OverQuota { used, limit } = q;
    ApiError::over_limit(Code::QuotaExceeded,
        "stored_bytes",
        format!("this tenant keeps {used} bytes of its {limit}-byte limit; {adding} more do not fit: delete models, datasets or jobs, or ask for a larger limit"),
    )
}

/// Refuses (403, naming `stored_bytes`) when `adding` more bytes would pass the tenant's limit:
/// the early answer, before work is done; [`reserve`] is the one that holds under concurrency.
pub async fn check_room(app: &AppState, caller: &Caller, adding: u64) -> Result<(), ApiError> {
    let Some(limit) = stored_bytes_limit(app, caller) else {
        return Ok(());
    };
    let used = app.store.stored_bytes(caller.tenant_id()).await?.max(0) as u64;
    if used.saturating_add(adding) > limit {
        return Err(over_quota(OverQuota { used, limit }, adding));
    }
    Ok(())
}

/// Reserves room for a file of `bytes` about to be stored under `key`.
pub async fn reserve(
    app: &AppState,
    caller: &Caller,
    key: &str,
    bytes: u64,
) -> Result<Reservation, ApiError> {
    let limit = stored_bytes_limit(app, caller);
    app.store
        .reserve_blob(caller.tenant_id(), key, bytes, limit, RESERVATION_TTL_MS)
        .await?
        .map_err(|q| over_quota(q, bytes))
}

/// A file put in place and reserved; [`Kept::named`] once a row names it, [`Kept::abandon`]
/// when none will.
pub struct Kept {
    pub key: String,
    reservation: Reservation,
}

impl Kept {
    pub async fn named(self, app: &AppState) {
        if let Err(e) = app.store.end_reservation(&self.reservation).await {
            tracing::warn!(key = self.key, error = %e, "could not end a reservation; the sweep will");
        }
    }

    pub async fn abandon(self, app: &AppState) {
        let key = self.key.clone();
        self.named(app).await;
        release(app, &[key]).await;
    }
}

/// Moves a received file into the tenant's content-addressed store, reserved.
pub async fn keep(app: &AppState, caller: &Caller, upload: TempUpload) -> Result<Kept, ApiError> {
    let key = content_key(caller.tenant_id(), &upload.sha256);
    put_reserved(app, caller, upload, key).await
}

/// Reserves `key`, then moves the received file in under it.
pub async fn put_reserved(
    app: &AppState,
    caller: &Caller,
    upload: TempUpload,
    key: String,
) -> Result<Kept, ApiError> {
    let reservation = reserve(app, caller, &key, upload.size).await?;
    let kept = Kept { key, reservation };
    // Renaming over an existing copy is harmless: the same bytes.
    if let Err(e) = app.blobs.put(&kept.key, upload.path()).await {
        kept.abandon(app).await;
        return Err(e.into());
    }
    upload.keep();
    Ok(kept)
}

/// Removes the files no row names any more (each recounted under its lock first).
pub async fn release(app: &AppState, keys: &[String]) {
    for key in keys {
        let blobs = app.blobs.clone();
        let removed = app
            .store
            .remove_if_unreferenced(key, async move { blobs.delete(key).await })
            .await;
        if let Err(e) = removed {
            tracing::warn!(key, error = %e, "could not remove a released file; the sweep will");
        }
    }
}
