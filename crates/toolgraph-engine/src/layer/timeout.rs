//! A call's deadline: the whole call — every attempt and every backoff between them — must
//! end within the call's timeout, or it ends `timeout` and the inner work is dropped
//! (cancelled).
//!
//! The call's [`Meter`](super::Meter) is marked timed out before the work is dropped.
//!
//! Invariant: a call without a timeout is passed through untouched.

use std::sync::Arc;

use super::{CallFuture, CallRequest, CallService, Failure, Layer};

/// Adds the call's timeout ([`CallPolicy::timeout`](super::CallPolicy::timeout)).
pub struct TimeoutLayer;

impl Layer for TimeoutLayer {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(Timeout { inner })
    }
}

/// Ends a call at its deadline.
pub struct Timeout {
    inner: Arc<dyn CallService>,
}

impl CallService for Timeout {
    fn call(&self, request: CallRequest) -> CallFuture {
        let Some(limit) = request.policy.timeout else {
            return self.inner.call(request);
        };
        let meter = request.meter.clone();
        let work = self.inner.call(request);
        Box::pin(async move {
            let deadline = Box::pin(tokio::time::sleep(limit));
            match futures_util::future::select(work, deadline).await {
                futures_util::future::Either::Left((r, _)) => r,
                futures_util::future::Either::Right(((), work)) => {
                    // Marked before the work is dropped, so the layers below can tell a
                    // timeout from a cancellation as their attempt goes.
                    meter.note_timeout();
                    drop(work);
                    Err(Failure::Timeout(limit))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Invoke;
    use serde_json::json;
    use std::time::Duration;
    use toolgraph_core::{FnTool, ToolSpec};

    fn sleeper() -> Arc<dyn toolgraph_core::Tool> {
        Arc::new(FnTool::new(
            ToolSpec::new("sleep"),
            |args: serde_json::Value, _| async move {
                let ms = args["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!(ms))
            },
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_times_out() {
        let service = TimeoutLayer.layer(Arc::new(Invoke));
        let mut request = CallRequest::new(sleeper(), json!({"ms": 500}), "c1");
        request.policy.timeout = Some(Duration::from_millis(100));
        let started = tokio::time::Instant::now();
        let out = service.call(request).await;
        assert_eq!(out, Err(Failure::Timeout(Duration::from_millis(100))));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_its_deadline_or_without_one_finishes() {
        let service = TimeoutLayer.layer(Arc::new(Invoke));
        let mut request = CallRequest::new(sleeper(), json!({"ms": 50}), "c1");
        request.policy.timeout = Some(Duration::from_millis(100));
        assert_eq!(service.call(request).await, Ok(json!(50)));
        let request = CallRequest::new(sleeper(), json!({"ms": 5000}), "c2");
        assert_eq!(service.call(request).await, Ok(json!(5000)));
    }
}
