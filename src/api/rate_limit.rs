//! Per-key request rates, held in this process (each replica enforces the limit on what it
//! serves; a load balancer that spreads one key over n replicas allows up to n times as much).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<Uuid, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

impl RateLimits {
    /// Counts one request for `key`; Err(wait) when it is over `per_minute`.
    pub fn check(&self, key: Uuid, per_minute: u32) -> Result<(), Duration> {
        let limiter = {
            let mut map = self.limiters.lock().expect("rate limit lock");
            let entry = map.entry(key).or_insert_with(|| (0, Arc::new(limiter(1))));
            if entry.0 != per_minute {
                *entry = (per_minute, Arc::new(limiter(per_minute)));
            }
            entry.1.clone()
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// `per_minute` requests a minute, of which a tenth may come at once.
fn limiter(per_minute: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_minute.max(1)).expect("at least one");
    let burst = NonZeroU32::new((per_minute / 10).max(1)).expect("at least one");
    RateLimiter::direct(Quota::per_minute(rate).allow_burst(burst))
}
