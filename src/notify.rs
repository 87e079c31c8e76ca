//! Webhook deliveries. Any replica may send any delivery: a sender claims one through the
//! store, POSTs the job (as `GET /v1/jobs/{id}` shows it) signed with the tenant's secret, and
//! records the outcome; failures are retried with backoff, at least once in all.
//!
//! Each request carries `Compressd-Delivery` (the job id: one delivery per job, so receivers
//! can drop repeats), `Compressd-Timestamp` (Unix seconds) and `Compressd-Signature`:
//! `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"` under the tenant's webhook secret.
//! Receivers should check the signature and refuse timestamps more than a few minutes old.
//!
//! The same delivery also carries the Standard Webhooks headers (standardwebhooks.com), so
//! that its libraries verify it as they are: `webhook-id` (the job id), `webhook-timestamp`
//! and `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"` under
//! the base64-decoded part of the secret after `whsec_`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::api::views::JobView;
use crate::store::{now_ms, Delivery, JobRecord, Store};

pub struct WebhookSettings {
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub poll: Duration,
}

/// A claimed delivery stays with its sender this long before another may retry it.
const CLAIM_MS: i64 = 60_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries this process sends at once, and per tenant across every replica.
const IN_FLIGHT: usize = 32;
const PER_TENANT: i64 = 4;

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` value of the Standard Webhooks format.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::prelude::{Engine, BASE64_STANDARD};
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    // Every secret compressd makes decodes; one that does not is used as its bytes.
    let key = BASE64_STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| encoded.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64_STANDARD.encode(mac.finalize().into_bytes()))
}

/// Sends due deliveries until `stop` fires.
pub async fn run(store: Store, settings: WebhookSettings, stop: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("compressd/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; webhooks are off");
            return;
        }
    };
    let settings = std::sync::Arc::new(settings);
    let mut sending = tokio::task::JoinSet::new();
    while !stop.is_cancelled() {
        // Claim while there is room; each delivery runs on its own, so a slow receiver holds
        // up only its own tenant's (at most PER_TENANT of them).
        let mut claimed = false;
        while sending.len() < IN_FLIGHT {
            match store.claim_webhook(CLAIM_MS, PER_TENANT).await {
                Ok(Some(job)) => {
                    let (store, client, settings) =
                        (store.clone(), client.clone(), settings.clone());
                    sending.spawn(async move { deliver(&store, &client, &settings, job).await });
                    claimed = true;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook queue unreachable");
                    break;
                }
            }
        }
        if claimed {
            continue;
        }
        tokio::select! {
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
            _ = tokio::time::sleep(settings.poll) => {}
            _ = stop.cancelled() => {}
        }
    }
    // Deliveries under way finish (each is bounded by its request timeout).
    while sending.join_next().await.is_some() {}
}

async fn deliver(
    store: &Store,
    client: &reqwest::Client,
    settings: &WebhookSettings,
    job: JobRecord,
) {
    let Some(webhook) = job.webhook.clone() else {
        return;
    };
    let id = job.id;
    let attempts = webhook.attempts;
    let outcome = match payload(store, job).await {
        Ok((secret, body)) => {
            let timestamp = now_ms() / 1000;
            let sent = client
                .post(&webhook.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("compressd-delivery", id.to_string())
                .header("compressd-timestamp", timestamp.to_string())
                .header("compressd-signature", signature(&secret, timestamp, &body))
                .header("webhook-id", id.to_string())
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    standard_signature(&secret, &id.to_string(), timestamp, &body),
                )
                .body(body)
                .send()
                .await;
            match sent {
                Ok(res) if res.status().is_success() => Ok(()),
                Ok(res) => Err(format!("the receiver answered {}", res.status())),
                Err(e) => Err(format!("sending failed: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    let record = match outcome {
        Ok(()) => {
            tracing::info!(job_id = %id, attempts, "webhook delivered");
            metrics::counter!("compressd_webhooks_total", "outcome" => "delivered").increment(1);
            Delivery::Delivered
        }
        Err(error) => {
            let now = store.clock_ms().await.unwrap_or_else(|_| now_ms());
            let retry_at = (attempts < settings.max_attempts).then(|| {
                let factor = 1u32 << attempts.saturating_sub(1).min(16);
                let delay = settings
                    .retry_base
                    .saturating_mul(factor)
                    .min(Duration::from_secs(600));
                now + delay.as_millis() as i64
            });
            tracing::warn!(job_id = %id, attempts, error, gave_up = retry_at.is_none(), "webhook not delivered");
            metrics::counter!("compressd_webhooks_total", "outcome" => "failed").increment(1);
            Delivery::Failed { error, retry_at }
        }
    };
    if let Err(e) = store.record_webhook(id, record).await {
        tracing::warn!(job_id = %id, error = %e, "webhook outcome not recorded; it will be retried");
    }
}

/// The tenant's secret and the job as JSON.
async fn payload(store: &Store, job: JobRecord) -> Result<(String, Vec<u8>), String> {
    let tenant = store
        .tenant(&job.tenant_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("tenant {} is gone", job.tenant_id))?;
    let artifacts = store
        .artifacts_of_job(job.id)
        .await
        .map_err(|e| e.to_string())?;
    let metrics = store.job_metrics(job.id).await.map_err(|e| e.to_string())?;
    let view = JobView::new(job, artifacts, metrics);
    let body = serde_json::to_vec(&view).map_err(|e| e.to_string())?;
    Ok((tenant.webhook_secret, body))
}
