//! [`Restarts`]: whether a server that died may be restarted now — the [`RestartPolicy`]'s
//! backoff after failed restarts and its circuit breaker, as a small state machine.
//!
//! It is pure bookkeeping: it is told the time and what happened, and answers with a
//! [`Decision`]; it never sleeps, spawns or locks (the server holds it under its state lock).
//! The delays come from backon's exponential backoff (with jitter, so many servers that died
//! together do not restart in lockstep).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::config::RestartPolicy;

/// Whether a dead server may be restarted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Restart it (call [`Restarts::started`], then `succeeded` or `failed`).
    Restart,
    /// A restart failed `failures` times in a row: not again before `until`.
    Backoff {
        /// When the next restart may be tried.
        until: Instant,
        /// Failed restarts in a row.
        failures: u32,
    },
    /// The circuit is open: no restart before `until`.
    Open {
        /// When one restart may be tried again.
        until: Instant,
    },
    /// The policy allows no restarts at all.
    Never,
}

/// The restart history of one server.
#[derive(Debug)]
pub(crate) struct Restarts {
    policy: RestartPolicy,
    /// When the restarts within the window started.
    recent: VecDeque<Instant>,
    /// Failed restarts in a row.
    failures: u32,
    backoff: ExponentialBackoff,
    not_before: Option<Instant>,
    open_until: Option<Instant>,
    /// The cool-down passed: one restart decides whether the circuit closes.
    half_open: bool,
    /// Restarts over the server's life.
    total: u64,
}

fn backoff(policy: &RestartPolicy) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(policy.backoff_min_ms))
        .with_max_delay(Duration::from_millis(policy.backoff_max_ms))
        .with_jitter()
        .without_max_times()
        .build()
}

impl Restarts {
    pub(crate) fn new(policy: RestartPolicy) -> Restarts {
        Restarts {
            backoff: backoff(&policy),
            policy,
            recent: VecDeque::new(),
            failures: 0,
            not_before: None,
            open_until: None,
            half_open: false,
            total: 0,
        }
    }

    /// The policy it follows.
    pub(crate) fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Restarts over the server's life.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Restarts within the window ending at `now`.
    pub(crate) fn recent(&mut self, now: Instant) -> usize {
        let window = self.policy.window();
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            self.recent.pop_front();
        }
        self.recent.len()
    }

    /// Whether the server may be restarted at `now`.
    pub(crate) fn decide(&mut self, now: Instant) -> Decision {
        if self.policy.max_restarts == 0 {
            return Decision::Never;
        }
        if let Some(until) = self.open_until {
            if now < until {
                return Decision::Open { until };
            }
            self.open_until = None;
            self.not_before = None;
            self.recent.clear();
            self.half_open = true;
            return Decision::Restart;
        }
        if let Some(until) = self.not_before.filter(|&t| now < t) {
            return Decision::Backoff {
                until,
                failures: self.failures,
            };
        }
        if self.recent(now) >= self.policy.max_restarts as usize {
            let until = now + self.policy.cooldown();
            self.open_until = Some(until);
            return Decision::Open { until };
        }
        Decision::Restart
    }

    /// A restart begins at `now`.
    pub(crate) fn started(&mut self, now: Instant) {
        self.recent.push_back(now);
        self.total += 1;
    }

    /// The restart worked: the backoff starts over, a half-open circuit closes.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
        self.backoff = backoff(&self.policy);
        self.half_open = false;
    }

    /// The restart failed at `now`: what that means for the next one.
    pub(crate) fn failed(&mut self, now: Instant) -> Decision {
        self.failures = self.failures.saturating_add(1);
        if std::mem::take(&mut self.half_open)
            || self.recent(now) >= self.policy.max_restarts as usize
        {
            let until = now + self.policy.cooldown();
            self.open_until = Some(until);
            return Decision::Open { until };
        }
        let delay = self
            .backoff
            .next()
            .unwrap_or(Duration::from_millis(self.policy.backoff_max_ms));
        let until = now + delay;
        self.not_before = Some(until);
        Decision::Backoff {
            until,
            failures: self.failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window_ms: 10_000,
            cooldown_ms: 5_000,
            backoff_min_ms: 100,
            backoff_max_ms: 400,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn failed_restarts_back_off_then_open_the_circuit_until_the_cooldown_passed() {
        let t0 = Instant::now();
        let mut r = Restarts::new(policy());
        assert_eq!(r.decide(t0), Decision::Restart);
        r.started(t0);
        let Decision::Backoff { until, failures: 1 } = r.failed(t0) else {
            panic!("a first failure backs off");
        };
        // 100 ms plus up to as much again of jitter.
        assert!(
            until >= t0 + ms(100) && until < t0 + ms(200),
            "{:?}",
            until - t0
        );
        assert!(matches!(r.decide(t0 + ms(50)), Decision::Backoff { .. }));
        let t1 = t0 + ms(200);
        assert_eq!(r.decide(t1), Decision::Restart);
        r.started(t1);
        let Decision::Backoff { until, failures: 2 } = r.failed(t1) else {
            panic!("a second failure backs off longer");
        };
        assert!(until >= t1 + ms(200), "{:?}", until - t1);
        let t2 = t1 + ms(500);
        assert_eq!(r.decide(t2), Decision::Restart);
        r.started(t2);
        // The third restart within the window failed: the circuit opens.
        let Decision::Open { until } = r.failed(t2) else {
            panic!("the circuit opens");
        };
        assert_eq!(until, t2 + ms(5_000));
        assert_eq!(r.decide(t2 + ms(4_999)), Decision::Open { until });
        // After the cool-down one restart is tried; its failure opens the circuit again.
        let t3 = t2 + ms(5_000);
        assert_eq!(r.decide(t3), Decision::Restart);
        r.started(t3);
        assert_eq!(
            r.failed(t3),
            Decision::Open {
                until: t3 + ms(5_000)
            }
        );
        // A half-open restart that works closes the circuit.
        let t4 = t3 + ms(5_000);
        assert_eq!(r.decide(t4), Decision::Restart);
        r.started(t4);
        r.succeeded();
        assert_eq!(r.decide(t4 + ms(1)), Decision::Restart);
        assert_eq!(r.total(), 5);
    }

    #[test]
    fn restarts_that_work_count_too_but_age_out_of_the_window() {
        let t0 = Instant::now();
        let mut r = Restarts::new(policy());
        for i in 0..3 {
            let t = t0 + ms(i * 1_000);
            assert_eq!(r.decide(t), Decision::Restart, "restart {i}");
            r.started(t);
            r.succeeded();
        }
        // A server that keeps dying right after its restarts: the fourth death opens it.
        assert!(matches!(r.decide(t0 + ms(3_000)), Decision::Open { .. }));
        let mut r = Restarts::new(policy());
        for i in 0..3 {
            let t = t0 + ms(i * 6_000);
            assert_eq!(r.decide(t), Decision::Restart, "restart {i}");
            r.started(t);
            r.succeeded();
        }
        assert_eq!(r.recent(t0 + ms(12_000)), 2, "the first aged out");
    }

    #[test]
    fn zero_restarts_means_never() {
        let mut r = Restarts::new(RestartPolicy {
            max_restarts: 0,
            ..policy()
        });
        assert_eq!(r.decide(Instant::now()), Decision::Never);
    }
}
