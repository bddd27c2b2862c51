//! Token buckets: `governor`'s GCRA on tokio's clock, so paused-clock tests see buckets
//! refill exactly as time is advanced.

use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;
use toolgraph_core::RateLimit;

/// tokio's clock for `governor`, so paused-clock tests see the buckets refill.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokioClock;

/// An instant on [`TokioClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Tick(Instant);

impl Add<Nanos> for Tick {
    type Output = Tick;

    fn add(self, other: Nanos) -> Tick {
        Tick(self.0 + Duration::from(other))
    }
}

impl Reference for Tick {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Tick(
            self.0
                .checked_sub(Duration::from(duration))
                .unwrap_or(self.0),
        )
    }
}

impl Clock for TokioClock {
    type Instant = Tick;

    fn now(&self) -> Tick {
        Tick(Instant::now())
    }
}

pub(super) type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Tick>>;

/// The quota of a rate limit: one token every `1 / requests_per_second`, `burst` at most.
pub(super) fn quota(rate: RateLimit) -> Option<Quota> {
    let burst = std::num::NonZeroU32::new(rate.burst)?;
    let period = Duration::try_from_secs_f64(1.0 / rate.requests_per_second).ok()?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}
