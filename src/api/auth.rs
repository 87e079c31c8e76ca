//! Who is calling. Tenant routes need `Authorization: Bearer <key>`; the key names the tenant,
//! and every query the handler makes is scoped to it. A server bound to loopback with no live
//! key serves everyone as the `local` tenant (the laptop default); the admin API has its own
//! key.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::rate_limit::Standing;
use super::AppState;
use crate::domain::Code;
use crate::store::{KeyRecord, TenantRecord, LOCAL_TENANT};

/// The authenticated caller, put in the request's extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantRecord,
    /// None when the server runs open (loopback, no keys).
    pub key: Option<KeyRecord>,
}

impl Caller {
    pub fn tenant_id(&self) -> &str {
        &self.tenant.id
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(Code::MissingApiKey, "send Authorization: Bearer <API key>")
        })
    }
}

fn bearer(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("");
    match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => {
            Ok(Some(key.trim().to_owned()))
        }
        _ => Err(ApiError::new(
            Code::InvalidApiKey,
            "the Authorization header must be 'Bearer <API key>'",
        )),
    }
}

/// Middleware for tenant routes: resolves the caller and applies the key's rate limit.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let presented = match bearer(&req) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match resolve(&app, presented).await {
        Ok(caller) => {
            let standing = match &caller.key {
                Some(key) => {
                    let rate = key
                        .rate_per_minute
                        .map_or(app.config.rate_limit_per_minute, |r| {
                            r.clamp(1, u32::MAX as i64) as u32
                        });
                    match super::rate_limit::check(&app.store, key.id, rate).await {
                        Ok(standing) => Some(standing),
                        Err(e) => return ApiError::from(e).into_response(),
                    }
                }
                None => None,
            };
            let tenant = ServedTenant(caller.tenant_id().to_owned());
            let mut res = match standing {
                Some(Standing {
                    wait: Some(wait),
                    per_minute,
                    ..
                }) => {
                    metrics::counter!("compressd_rate_limited_total").increment(1);
                    ApiError::over_limit(Code::RateLimited,
                        "rate_per_minute",
                        format!("this key may make {per_minute} requests per minute; slow down and retry after the Retry-After header's seconds"),
                    )
                    .retry_after(wait.as_secs_f64().ceil() as u64)
                    .into_response()
                }
                _ => {
                    req.extensions_mut().insert(caller);
                    next.run(req).await
                }
            };
            if let Some(standing) = standing {
                for (name, value) in standing.headers() {
                    if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                        res.headers_mut().insert(name, value);
                    }
                }
            }
            res.extensions_mut().insert(tenant);
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn resolve(app: &AppState, presented: Option<String>) -> Result<Caller, ApiError> {
    match presented {
        Some(key) => match app.store.authenticate(&key).await? {
            Some((key, tenant)) => Ok(Caller {
                tenant,
                key: Some(key),
            }),
            None => Err(ApiError::new(Code::InvalidApiKey, "this API key is not valid (unknown or revoked)",
            )),
        },
        None if app.open && !app.store.live_keys_exist().await? => {
            let tenant = app.store.tenant(LOCAL_TENANT).await?.ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("the local tenant is missing"))
            })?;
            Ok(Caller { tenant, key: None })
        }
        None => Err(ApiError::new(Code::MissingApiKey, "send Authorization: Bearer <API key> (keys come from `compressd keys create --tenant NAME` or the admin API)",
        )),
    }
}

/// The tenant a request was served for, put in the response's extensions for the access log.
#[derive(Debug, Clone)]
pub struct ServedTenant(pub String);

/// Extractor for the operator's routes that tell about every tenant (`/metrics`): anyone on a
/// server that runs open, otherwise the admin key. A scraper that holds no key reads the
/// metrics listener instead (`COMPRESSD_METRICS_BIND`), which only the cluster reaches.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if app.open && !app.store.live_keys_exist().await? {
            return Ok(Operator);
        }
        Admin::from_request_parts(parts, app)
            .await
            .map(|_| Operator)
    }
}

/// Extractor that admits only the admin key (`COMPRESSD_ADMIN_KEY`).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &app.config.admin_key else {
            return Err(ApiError::new(Code::AdminDisabled, "the admin API is off: start the server with COMPRESSD_ADMIN_KEY set, or use the `compressd keys` and `compressd tenants` subcommands",
            ));
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        // Comparing digests keeps the comparison's timing independent of the key's bytes.
        let digest = |s: &str| Sha256::digest(s.as_bytes());
        match given {
            Some(key) if digest(key) == digest(expected) => Ok(Admin),
            _ => Err(ApiError::new(
                Code::InvalidAdminKey,
                "admin routes need Authorization: Bearer <COMPRESSD_ADMIN_KEY>",
            )),
        }
    }
}
