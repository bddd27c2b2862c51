//! Retries: a transient failure of an idempotent call is tried again after an exponential
//! backoff (the policy's base delay doubling up to its cap, optionally jittered), never
//! sooner than the tool's retry-after hint, until the policy's attempts are spent. `backon`
//! drives the loop (which failures to retry, the retry-after adjustment, the sleeps).
//!
//! Invariants: a call that is not idempotent (for these arguments) is never retried; a
//! permanent failure, a panic or a timeout is never retried; the arguments are shared
//! between attempts, not copied, until the tool takes them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::Retryable;
use serde_json::Value;
use toolgraph_core::{CallContext, RetryPolicy, Tool};

use super::{CallFuture, CallPolicy, CallRequest, CallService, Failure, Layer, Meter};

/// Adds retries per the call's [`CallPolicy`].
pub struct RetryLayer;

impl Layer for RetryLayer {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(Retry { inner })
    }
}

/// Retries transient failures of idempotent calls.
pub struct Retry {
    inner: Arc<dyn CallService>,
}

/// What each attempt is built from.
struct Attempt {
    position: usize,
    tool: Arc<dyn Tool>,
    /// Taken by the last attempt, so the tool can have the arguments without a copy.
    args: Mutex<Option<Arc<Value>>>,
    ctx: CallContext,
    policy: CallPolicy,
    meter: Arc<Meter>,
    slots: Option<Arc<crate::limiter::Permit>>,
}

impl Attempt {
    fn request(&self, attempt: u32, last: bool) -> CallRequest {
        let args = match self.args.lock() {
            Ok(mut held) if last => held.take(),
            Ok(held) => held.clone(),
            Err(_) => None,
        };
        CallRequest {
            position: self.position,
            tool: self.tool.clone(),
            args: args.unwrap_or_default(),
            ctx: CallContext {
                attempt,
                ..self.ctx.clone()
            },
            policy: self.policy,
            gates: Vec::new(),
            meter: self.meter.clone(),
            slots: self.slots.clone(),
        }
    }
}

/// The delays before attempts 2, 3, … of a policy: its base delay doubling up to its cap
/// (whole milliseconds, so paused-clock tests are exact), each jittered into
/// `[delay / 2, delay]` when the policy asks, so retries of many calls do not align.
pub fn backoff(policy: RetryPolicy) -> impl Iterator<Item = Duration> + Send + Sync + Unpin {
    (2..=policy.max_attempts).map(move |next| {
        let mut ms = policy.backoff_ms(next);
        if policy.jitter && ms > 1 {
            ms = ms / 2 + fastrand::u64(0..=ms / 2);
        }
        Duration::from_millis(ms)
    })
}

impl CallService for Retry {
    fn call(&self, request: CallRequest) -> CallFuture {
        let policy = request.policy;
        if !policy.idempotent || policy.retry.max_attempts <= 1 {
            return self.inner.call(request);
        }
        let inner = self.inner.clone();
        let CallRequest {
            position,
            tool,
            args,
            ctx,
            policy,
            meter,
            slots,
            ..
        } = request;
        let template = Attempt {
            position,
            tool,
            args: Mutex::new(Some(args)),
            ctx,
            policy,
            meter,
            slots,
        };
        Box::pin(async move {
            let mut attempt = 0u32;
            let last = policy.retry.max_attempts;
            (|| {
                attempt += 1;
                inner.call(template.request(attempt, attempt >= last))
            })
            .retry(backoff(policy.retry))
            .sleep(tokio::time::sleep)
            .when(|failure: &Failure| matches!(failure, Failure::Tool(e) if e.is_transient()))
            .adjust(|failure: &Failure, delay| match failure {
                // A tool's retry-after hint lengthens the wait, up to the policy's cap: an
                // hour's `Retry-After` must not hold a call (and its slots) for an hour.
                Failure::Tool(e) => match (delay, e.retry_after_ms) {
                    (Some(d), Some(after)) => {
                        let after = after.min(policy.retry.max_delay_ms);
                        Some(d.max(Duration::from_millis(after)))
                    }
                    (d, _) => d,
                },
                _ => delay,
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Invoke;
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};
    use toolgraph_core::{FnTool, ToolError, ToolSpec};

    /// Fails transiently `fails` times (with an optional retry-after), then returns the
    /// attempt number.
    fn flaky(fails: u32, retry_after_ms: Option<u64>, idempotent: bool) -> Arc<dyn Tool> {
        let calls = Arc::new(AtomicU32::new(0));
        let mut spec = ToolSpec::new("flaky");
        if idempotent {
            spec = spec.idempotent();
        }
        Arc::new(FnTool::new(spec, move |_, ctx: CallContext| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n <= fails {
                    let e = ToolError::transient(format!("flaky {n}"));
                    return Err(match retry_after_ms {
                        Some(ms) => e.retry_after_ms(ms),
                        None => e,
                    });
                }
                Ok(json!(ctx.attempt))
            }
        }))
    }

    fn request(tool: Arc<dyn Tool>) -> CallRequest {
        let mut r = CallRequest::new(tool, json!({"big": "arguments"}), "c1");
        r.policy.retry = RetryPolicy {
            max_attempts: 3,
            base_delay_ms: 100,
            max_delay_ms: 5_000,
            jitter: false,
        };
        r
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_of_an_idempotent_call_are_retried_with_backoff() {
        let service = RetryLayer.layer(Arc::new(Invoke));
        let r = request(flaky(2, None, true));
        let meter = r.meter.clone();
        let started = tokio::time::Instant::now();
        assert_eq!(service.call(r).await, Ok(json!(3)));
        assert_eq!(meter.attempts(), 3);
        // 100 ms before the second attempt, 200 ms before the third.
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_run_out_and_the_last_failure_is_reported() {
        let service = RetryLayer.layer(Arc::new(Invoke));
        let r = request(flaky(10, None, true));
        let meter = r.meter.clone();
        let out = service.call(r).await;
        assert!(
            matches!(out, Err(Failure::Tool(ref e)) if e.message == "flaky 3"),
            "{out:?}"
        );
        assert_eq!(meter.attempts(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_at_least_the_tools_retry_after() {
        let service = RetryLayer.layer(Arc::new(Invoke));
        let started = tokio::time::Instant::now();
        assert_eq!(
            service.call(request(flaky(1, Some(750), true))).await,
            Ok(json!(2))
        );
        assert_eq!(started.elapsed(), Duration::from_millis(750));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_hint_is_capped_by_the_policys_max_delay() {
        let service = RetryLayer.layer(Arc::new(Invoke));
        let started = tokio::time::Instant::now();
        let r = request(flaky(1, Some(3_600_000), true));
        let cap = r.policy.retry.max_delay_ms;
        assert_eq!(service.call(r).await, Ok(json!(2)));
        assert_eq!(started.elapsed(), Duration::from_millis(cap));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_is_not_idempotent_is_never_retried() {
        let service = RetryLayer.layer(Arc::new(Invoke));
        let r = request(flaky(1, None, false));
        let meter = r.meter.clone();
        assert!(service.call(r).await.is_err());
        assert_eq!(meter.attempts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_never_retried() {
        let tool: Arc<dyn Tool> = Arc::new(FnTool::new(
            ToolSpec::new("bad").idempotent(),
            |_, _| async { Err(ToolError::permanent("no such thing")) },
        ));
        let service = RetryLayer.layer(Arc::new(Invoke));
        let r = request(tool);
        let meter = r.meter.clone();
        assert!(service.call(r).await.is_err());
        assert_eq!(meter.attempts(), 1);
    }
}
