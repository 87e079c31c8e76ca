//! Per-key request rates, counted in the database (`Store::take_rate`), so that a key spread
//! over any number of API replicas gets the rate it was given, not that rate per replica.

use std::time::Duration;

use uuid::Uuid;

use crate::store::{Store, StoreError};

/// Where a key stands against its rate after a request, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub per_minute: u32,
    /// Requests that may come at once (a tenth of the minute's).
    pub burst: u32,
    /// Requests that may come at once from now on.
    pub remaining: u32,
    /// Until the whole burst is available again.
    pub reset: Duration,
    /// Over the limit: until the next request is let through.
    pub wait: Option<Duration>,
}

impl Standing {
    /// `RateLimit-Limit`, `-Remaining`, `-Reset` (whole seconds, rounded up) and `-Policy`.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("ratelimit-limit", self.burst.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            (
                "ratelimit-reset",
                (self.reset.as_secs_f64().ceil() as u64).to_string(),
            ),
            (
                "ratelimit-policy",
                format!("{};w=60;burst={}", self.per_minute, self.burst),
            ),
        ]
    }
}

/// Counts one request for `key` against `per_minute`; `wait` is set when it is over.
pub async fn check(store: &Store, key: Uuid, per_minute: u32) -> Result<Standing, StoreError> {
    let per_minute = per_minute.max(1);
    let burst = burst(per_minute);
    let interval_us = 60_000_000 / i64::from(per_minute);
    let taken = store.take_rate(key, interval_us, i64::from(burst)).await?;
    let ahead = (taken.tat_us - taken.now_us).max(0);
    let limit = interval_us * i64::from(burst);
    let micros = |us: i64| Duration::from_micros(us.max(0) as u64);
    Ok(if taken.allowed {
        Standing {
            per_minute,
            burst,
            remaining: ((limit - ahead) / interval_us).clamp(0, i64::from(burst)) as u32,
            reset: micros(ahead),
            wait: None,
        }
    } else {
        Standing {
            per_minute,
            burst,
            remaining: 0,
            reset: micros(ahead),
            // Until the request would fit: one interval past the burst's edge.
            wait: Some(micros(ahead + interval_us - limit).max(Duration::from_millis(1))),
        }
    })
}

/// A tenth of the minute's requests may come at once.
fn burst(per_minute: u32) -> u32 {
    (per_minute / 10).max(1)
}
