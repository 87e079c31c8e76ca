//! Content-addressed files: a tenant's identical bytes are kept once, under their SHA-256, and
//! count once against its storage quota. A file goes when the last row naming it goes.

use super::auth::Caller;
use super::error::ApiError;
use super::upload::TempUpload;
use super::AppState;
use crate::domain::Code;

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

/// Refuses (403, naming `stored_bytes`) when `adding` more bytes would pass the tenant's limit.
pub async fn check_room(app: &AppState, caller: &Caller, adding: u64) -> Result<(), ApiError> {
    let Some(limit) = stored_bytes_limit(app, caller) else {
        return Ok(());
    };
    let used = app.store.stored_bytes(caller.tenant_id()).await?.max(0) as u64;
    if used.saturating_add(adding) > limit {
        return Err(ApiError::over_limit(Code::QuotaExceeded,
            "stored_bytes",
            format!("this tenant keeps {used} bytes of its {limit}-byte limit; {adding} more do not fit: delete models, datasets or jobs, or ask for a larger limit"),
        ));
    }
    Ok(())
}

/// Moves a received file into the tenant's content-addressed store; returns its key.
pub async fn keep(app: &AppState, caller: &Caller, upload: TempUpload) -> Result<String, ApiError> {
    let key = content_key(caller.tenant_id(), &upload.sha256);
    let known = app.store.blob_in_use(&key).await?;
    check_room(app, caller, if known { 0 } else { upload.size }).await?;
    // Renaming over an existing copy is harmless (same bytes) and closes the window in which
    // a concurrent delete could remove the file after we decided to reuse it.
    app.blobs.put(&key, upload.path()).await?;
    upload.keep();
    Ok(key)
}

/// Removes files that no row names any more.
pub async fn release(app: &AppState, keys: &[String]) {
    for key in keys {
        if let Err(e) = app.blobs.delete(key).await {
            tracing::warn!(key, error = %e, "could not remove a released file");
        }
    }
}

/// After a failed insert: removes the file unless another row names it.
pub async fn forget(app: &AppState, key: &str) {
    if matches!(app.store.blob_in_use(key).await, Ok(false)) {
        release(app, &[key.to_owned()]).await;
    }
}
