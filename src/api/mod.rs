//! The HTTP API: routes, the OpenAPI description derived from them, and the middleware
//! around them.

mod artifacts;
mod datasets;
mod download;
mod error;
mod events;
mod extract;
mod jobs;
mod models;
mod ops;
mod report;
mod upload;
mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::config::Config;
use crate::store::{BlobStore, Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// Cancelled when the server begins to shut down; long-lived streams end then.
    pub shutdown: CancellationToken,
}

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
        (name = "operations", description = "Health and metrics"),
    ),
    components(schemas(crate::domain::Problem))
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(models::upload_model, models::list_models))
        .routes(routes!(models::get_model, models::delete_model))
        .routes(routes!(models::download_model))
        .routes(routes!(models::put_architecture))
        .routes(routes!(datasets::upload_dataset, datasets::list_datasets))
        .routes(routes!(datasets::get_dataset, datasets::delete_dataset))
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(events::job_events))
        .routes(routes!(report::job_report))
        .routes(routes!(artifacts::get_artifact))
        .routes(routes!(artifacts::download_artifact))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
}

/// The OpenAPI description of every route, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

pub fn router(state: AppState) -> Router {
    let doc = Arc::new(openapi());
    let (router, _) = api_router().split_for_parts();
    router
        .route(
            "/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "no such route; see /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this route does not take that method; see /openapi.json",
            )
        })
        .layer(middleware::from_fn(record_http_metrics))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let path = req
                .extensions()
                .get::<MatchedPath>()
                .map_or(req.uri().path(), MatchedPath::as_str);
            tracing::info_span!("http", method = %req.method(), path)
        }))
        .with_state(state)
}

async fn record_http_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let res = next.run(req).await;
    metrics::histogram!(
        "compressd_http_request_duration_seconds",
        "method" => method,
        "path" => path,
        "status" => res.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    res
}
