//! The HTTP API: routes, the OpenAPI description derived from them, and the middleware
//! around them.

mod admin;
mod artifacts;
pub mod auth;
mod dashboard;
mod datasets;
mod doc_headers;
mod download;
mod error;
mod events;
mod extract;
mod job_checks;
mod job_logs;
mod jobs;
mod model_files;
mod model_folder;
mod models;
mod ops;
pub mod rate_limit;
mod report;
mod request_id;
mod resumable;
mod sniff;
mod state;
mod stored;
mod upload;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use state::AppState;

use crate::domain::Code;
use crate::otlp;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "compressd",
        description = "Model compression as a service: upload a model, run a compression job, download the result with measured before/after figures. Errors are application/problem+json (RFC 9457)."
    ),
    tags(
        (name = "models", description = "Uploaded models"),
        (name = "datasets", description = "Datasets that jobs train and measure models on"),
        (name = "jobs", description = "Compression jobs"),
        (name = "artifacts", description = "Job outputs"),
        (name = "uploads", description = "Resumable uploads for large files"),
        (name = "admin", description = "Tenants and API keys (COMPRESSD_ADMIN_KEY)"),
        (name = "operations", description = "Health and metrics"),
    ),
    components(schemas(crate::domain::Problem, error::ProblemAnswer))
)]
struct ApiDoc;

/// Bearer keys on every `/v1` route, and the answers any authenticated route can give.
struct Security;

/// Every error answer is `application/problem+json` with a `ProblemAnswer` body: added here once, so
/// the routes' annotations give only the status and what it means.
struct ProblemBodies;

impl utoipa::Modify for ProblemBodies {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr};
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                for (status, response) in op.responses.responses.iter_mut() {
                    let error = status.starts_with('4') || status.starts_with('5');
                    if let (true, RefOr::T(r)) = (error, response) {
                        if r.content.is_empty() {
                            r.content.insert(
                                "application/problem+json".into(),
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("ProblemAnswer")))
                                    .build(),
                            );
                        }
                    }
                }
            }
        }
    }
}

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                "api_key",
                "A tenant's API key (not needed by a loopback server with no keys)",
            ),
            ("admin_key", "COMPRESSD_ADMIN_KEY"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ProblemAnswer")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let admin = path.starts_with("/v1/admin/");
            let scheme = if admin { "admin_key" } else { "api_key" };
            for op in operations(item) {
                op.security = Some(vec![SecurityRequirement::new(scheme, Vec::<String>::new())]);
                let responses = &mut op.responses.responses;
                responses.insert(
                    "401".into(),
                    problem("Missing, unknown or revoked key").into(),
                );
                if admin {
                    responses.insert(
                        "403".into(),
                        problem("The admin API is off (no COMPRESSD_ADMIN_KEY)").into(),
                    );
                } else {
                    responses.insert(
                        "429".into(),
                        problem("Over the key's rate limit; see Retry-After").into(),
                    );
                }
            }
        }
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(models::upload_model, models::list_models))
        .routes(routes!(models::get_model, models::delete_model))
        .routes(routes!(models::download_model))
        .routes(routes!(models::put_architecture))
        .routes(routes!(datasets::upload_dataset, datasets::list_datasets))
        .routes(routes!(datasets::get_dataset, datasets::delete_dataset))
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job, jobs::delete_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(events::job_events))
        .routes(routes!(job_logs::job_logs))
        .routes(routes!(report::job_report))
        .routes(routes!(artifacts::get_artifact))
        .routes(routes!(artifacts::download_artifact))
        .routes(routes!(resumable::create_upload))
        .routes(routes!(resumable::get_upload, resumable::abort_upload))
        .routes(routes!(resumable::put_part))
        .routes(routes!(resumable::complete_upload))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(admin::put_limits))
        .routes(routes!(admin::create_key))
        .routes(routes!(admin::list_keys))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
}

/// The operations of a path in the document, whichever methods it has.
fn operations(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// The OpenAPI description of every route, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    utoipa::Modify::modify(&ProblemBodies, &mut doc);
    utoipa::Modify::modify(&Security, &mut doc);
    doc_headers::document_headers(&mut doc);
    open_tagged_variants(&mut doc);
    doc
}

/// A serde-tagged enum (`{"op": "prune", …}`) becomes `oneOf` of `allOf: [variant, {op}]`;
/// a variant that also says `additionalProperties: false` then rejects its own tag, and no
/// value matches. The server still refuses unknown fields; the document just stops claiming
/// that no step is valid.
fn open_tagged_variants(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let mut referenced = Vec::new();
    for schema in components.schemas.values_mut() {
        let RefOr::T(Schema::OneOf(one_of)) = schema else {
            continue;
        };
        for item in one_of.items.iter_mut() {
            let RefOr::T(Schema::AllOf(all_of)) = item else {
                continue;
            };
            for part in all_of.items.iter_mut() {
                match part {
                    RefOr::Ref(r) => referenced.push(
                        r.ref_location
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                    RefOr::T(Schema::Object(o)) => o.additional_properties = None,
                    _ => {}
                }
            }
        }
    }
    for name in referenced {
        if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(&name) {
            o.additional_properties = None;
        }
    }
}

pub fn router(state: AppState) -> Router {
    let doc = Arc::new(openapi());
    let (router, _) = api_router().split_for_parts();
    router
        .route(
            "/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this route does not take that method; see /openapi.json",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), tenant_routes))
        .layer(middleware::from_fn(record_request))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let path = req
                .extensions()
                .get::<MatchedPath>()
                .map_or(req.uri().path(), MatchedPath::as_str);
            let id = req
                .extensions()
                .get::<request_id::RequestId>()
                .map_or("", |id| id.0.as_str());
            let span = tracing::info_span!("http", method = %req.method(), path, request_id = id);
            // A client that traces its own calls sees the server's spans in its trace.
            let traceparent = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok());
            otlp::continue_trace(&span, traceparent);
            span
        }))
        .layer(middleware::from_fn(request_id::assign))
        .with_state(state)
}

/// The metrics listener: the operator's view, for a scraper inside the cluster (no key).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(app): axum::extract::State<AppState>| async move {
                    ops::render_metrics(&app).await
                },
            ),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(|| async {
            ApiError::new(
                Code::NotFound,
                "this address serves only /healthz, /readyz and /metrics (a worker, or the metrics listener); the API is on the API replicas",
            )
        })
        .with_state(state)
}

/// Authenticates `/v1` routes other than the admin API (which checks its own key).
async fn tenant_routes(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path.starts_with("/v1/") && !path.starts_with("/v1/admin/") {
        auth::authenticate(axum::extract::State(state), req, next).await
    } else {
        next.run(req).await
    }
}

/// The access log (one info line per request; method, route and request id come from the
/// request's span) and the request metrics.
async fn record_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let res = next.run(req).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = res.status().as_u16();
    let tenant = res
        .extensions()
        .get::<auth::ServedTenant>()
        .map_or("-", |t| t.0.as_str());
    tracing::info!(target: "compressd::access", status, duration_ms = elapsed * 1e3, tenant, "request");
    metrics::histogram!(
        "compressd_http_request_duration_seconds",
        "method" => method,
        "path" => path,
        "status" => status.to_string()
    )
    .record(elapsed);
    res
}
