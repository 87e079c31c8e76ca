//! Per-key request rates, held in this process (each replica enforces the limit on what it
//! serves; a load balancer that spreads one key over n replicas allows up to n times as much).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use uuid::Uuid;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<Uuid, (u32, Arc<Limiter>)>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

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

impl RateLimits {
    /// Counts one request for `key` against `per_minute`; `wait` is set when it is over.
    pub fn check(&self, key: Uuid, per_minute: u32) -> Standing {
        let per_minute = per_minute.max(1);
        let limiter = {
            let mut map = self.limiters.lock().expect("rate limit lock");
            let entry = map.entry(key).or_insert_with(|| (0, Arc::new(limiter(1))));
            if entry.0 != per_minute {
                *entry = (per_minute, Arc::new(limiter(per_minute)));
            }
            entry.1.clone()
        };
        let burst = burst(per_minute);
        let period = Duration::from_secs(60) / per_minute;
        match limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(burst);
                Standing {
                    per_minute,
                    burst,
                    remaining,
                    reset: period * (burst - remaining),
                    wait: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Standing {
                    per_minute,
                    burst,
                    remaining: 0,
                    reset: wait + period * (burst - 1),
                    wait: Some(wait),
                }
            }
        }
    }
}

fn burst(per_minute: u32) -> u32 {
    (per_minute / 10).max(1)
}

/// `per_minute` requests a minute, of which a tenth may come at once.
fn limiter(per_minute: u32) -> Limiter {
    let rate = NonZeroU32::new(per_minute.max(1)).expect("at least one");
    let burst = NonZeroU32::new(burst(per_minute)).expect("at least one");
    RateLimiter::direct(Quota::per_minute(rate).allow_burst(burst))
        .with_middleware::<StateInformationMiddleware>()
}
