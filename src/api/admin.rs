//! `/v1/admin`: tenants and API keys, for the holder of `COMPRESSD_ADMIN_KEY`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Admin;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::AppState;
use crate::domain::Code;
use crate::store::{KeyRecord, Limits, TenantError, TenantRecord};

const MAX_TENANT_NAME: usize = 64;

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    /// Bytes the tenant may keep; absent: the server default.
    #[schema(minimum = 0)]
    pub max_stored_bytes: Option<u64>,
    /// Jobs running at once; absent: the server default.
    #[schema(minimum = 0)]
    pub max_running_jobs: Option<u32>,
    /// Jobs waiting in the queue; absent: the server default.
    #[schema(minimum = 0)]
    pub max_queued_jobs: Option<u32>,
}

impl LimitsBody {
    pub fn limits(&self) -> Limits {
        Limits {
            max_stored_bytes: self.max_stored_bytes.map(|b| b.min(i64::MAX as u64) as i64),
            max_running_jobs: self.max_running_jobs.map(i64::from),
            max_queued_jobs: self.max_queued_jobs.map(i64::from),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1 to 64 characters: letters, digits, '-', '_' and '.'.
    pub name: String,
    #[schema(minimum = 0)]
    pub max_stored_bytes: Option<u64>,
    #[schema(minimum = 0)]
    pub max_running_jobs: Option<u32>,
    #[schema(minimum = 0)]
    pub max_queued_jobs: Option<u32>,
}

impl CreateTenant {
    fn limits(&self) -> Limits {
        LimitsBody {
            max_stored_bytes: self.max_stored_bytes,
            max_running_jobs: self.max_running_jobs,
            max_queued_jobs: self.max_queued_jobs,
        }
        .limits()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    /// Signs this tenant's webhook deliveries (HMAC-SHA256).
    pub webhook_secret: String,
    pub limits: LimitsBody,
    /// What the tenant holds and runs now, to read beside `limits`.
    pub usage: UsageView,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// Bytes kept: models, datasets, artifacts and upload parts, each distinct file once.
    pub stored_bytes: u64,
    pub running_jobs: u64,
    pub queued_jobs: u64,
}

async fn tenant_view(app: &AppState, t: TenantRecord) -> Result<TenantView, ApiError> {
    let u = app.store.usage(&t.id).await?;
    let usage = UsageView {
        stored_bytes: u.stored_bytes.max(0) as u64,
        running_jobs: u.running_jobs.max(0) as u64,
        queued_jobs: u.queued_jobs.max(0) as u64,
    };
    Ok(TenantView::new(t, usage))
}

impl TenantView {
    fn new(t: TenantRecord, usage: UsageView) -> Self {
        let l = &t.limits;
        TenantView {
            usage,
            limits: LimitsBody {
                max_stored_bytes: l.max_stored_bytes.map(|v| v as u64),
                max_running_jobs: l.max_running_jobs.map(|v| v as u32),
                max_queued_jobs: l.max_queued_jobs.map(|v| v as u32),
            },
            id: t.id,
            name: t.name,
            webhook_secret: t.webhook_secret,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[serde(default)]
    pub label: String,
    /// Requests per minute for this key; absent: the server default.
    #[schema(minimum = 1)]
    pub rate_limit_per_minute: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub tenant: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub label: String,
    pub rate_limit_per_minute: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        KeyView {
            id: k.id,
            tenant: k.tenant_name,
            prefix: k.prefix,
            label: k.label,
            rate_limit_per_minute: k.rate_per_minute.map(|r| r as u32),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key itself. It is shown this once; only its hash is kept.
    pub key: String,
    #[serde(flatten)]
    pub record: KeyView,
}

pub fn check_tenant_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TENANT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(Code::InvalidTenantName, format!("a tenant name is 1 to {MAX_TENANT_NAME} characters: letters, digits, '-', '_' and '.'"),
        ))
    }
}

fn no_tenant(name: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("no tenant named '{name}'"))
}

async fn tenant_named(app: &AppState, name: &str) -> Result<TenantRecord, ApiError> {
    app.store
        .tenant_by_name(name)
        .await?
        .ok_or_else(|| no_tenant(name))
}

/// Create a tenant.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants",
    tag = "admin",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = TenantView),
        (status = 400, description = "Malformed JSON"),
        (status = 409, description = "The name is taken"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid name or limits"),
    )
)]
pub async fn create_tenant(
    _: Admin,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    check_tenant_name(&body.name)?;
    match app.store.create_tenant(&body.name, &body.limits()).await {
        Ok(t) => Ok((StatusCode::CREATED, Json(tenant_view(&app, t).await?))),
        Err(TenantError::Exists(name)) => Err(ApiError::new(
            Code::TenantExists,
            format!("a tenant named '{name}' already exists"),
        )),
        Err(TenantError::Store(e)) => Err(e.into()),
    }
}

/// List tenants.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants",
    tag = "admin",
    responses((status = 200, description = "All tenants", body = Vec<TenantView>))
)]
pub async fn list_tenants(
    _: Admin,
    State(app): State<AppState>,
) -> Result<Json<Vec<TenantView>>, ApiError> {
    let mut views = Vec::new();
    for t in app.store.list_tenants().await? {
        views.push(tenant_view(&app, t).await?);
    }
    Ok(Json(views))
}

/// Replace a tenant's limits (omitted ones return to the server defaults).
#[utoipa::path(
    put,
    path = "/v1/admin/tenants/{name}/limits",
    tag = "admin",
    params(("name" = String, Path, description = "Tenant name")),
    request_body = LimitsBody,
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = 400, description = "Malformed JSON"),
        (status = 404, description = "No such tenant"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid limits"),
    )
)]
pub async fn put_limits(
    _: Admin,
    State(app): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<LimitsBody>,
) -> Result<Json<TenantView>, ApiError> {
    let tenant = app.store.set_limits(&name, &body.limits()).await?;
    let tenant = tenant.ok_or_else(|| no_tenant(&name))?;
    Ok(Json(tenant_view(&app, tenant).await?))
}

/// Create an API key for a tenant. The answer holds the key; it is never shown again.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants/{name}/keys",
    tag = "admin",
    params(("name" = String, Path, description = "Tenant name")),
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedKey),
        (status = 400, description = "Malformed JSON"),
        (status = 404, description = "No such tenant"),
        (status = 415, description = "Not JSON"),
        (status = 422, description = "Invalid fields"),
    )
)]
pub async fn create_key(
    _: Admin,
    State(app): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let tenant = tenant_named(&app, &name).await?;
    if body.label.chars().count() > 200 || body.label.chars().any(char::is_control) {
        return Err(ApiError::new(
            Code::InvalidLabel,
            "a label is at most 200 characters with no control characters",
        ));
    }
    if body.rate_limit_per_minute == Some(0) {
        return Err(ApiError::new(
            Code::InvalidRateLimit,
            "rate_limit_per_minute must be at least 1",
        ));
    }
    let (record, key) = app
        .store
        .create_key(
            &tenant,
            &body.label,
            body.rate_limit_per_minute.map(i64::from),
        )
        .await?;
    tracing::info!(tenant = %tenant.name, key_id = %record.id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key,
            record: record.into(),
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// Only this tenant's keys.
    pub tenant: Option<String>,
}

/// List API keys (never the keys themselves).
#[utoipa::path(
    get,
    path = "/v1/admin/keys",
    tag = "admin",
    params(KeyListQuery),
    responses(
        (status = 200, description = "Keys, newest first", body = Vec<KeyView>),
        (status = 400, description = "Bad query"),
    )
)]
pub async fn list_keys(
    _: Admin,
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let keys = app.store.list_keys(q.tenant.as_deref()).await?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

/// Revoke an API key; it is refused from the next request on.
#[utoipa::path(
    delete,
    path = "/v1/admin/keys/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key"),
    )
)]
pub async fn revoke_key(
    _: Admin,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = super::extract::parse_id("key", &id)?;
    if app.store.revoke_key(id).await? {
        tracing::info!(key_id = %id, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("key", &id.to_string()))
    }
}
