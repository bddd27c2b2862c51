//! A tool that panics fails its call instead of taking the execution down.
//!
//! Invariant: a panic in the inner service (on this thread) becomes [`Failure::Panic`] with
//! the panic's message; nothing else changes.

use std::sync::Arc;

use futures_util::FutureExt;

use super::{CallFuture, CallRequest, CallService, Failure, Layer};

/// Adds panic catching.
pub struct CatchPanicLayer;

impl Layer for CatchPanicLayer {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(CatchPanic { inner })
    }
}

/// Catches a panicking call.
pub struct CatchPanic {
    inner: Arc<dyn CallService>,
}

impl CallService for CatchPanic {
    fn call(&self, request: CallRequest) -> CallFuture {
        // Building the inner future may panic too (a tool's `call` before its first await).
        let inner = self.inner.clone();
        let future =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || inner.call(request)));
        match future {
            Ok(future) => Box::pin(
                std::panic::AssertUnwindSafe(future)
                    .catch_unwind()
                    .map(|r| match r {
                        Ok(r) => r,
                        Err(payload) => Err(Failure::Panic(panic_message(payload))),
                    }),
            ),
            Err(payload) => {
                let failure = Failure::Panic(panic_message(payload));
                Box::pin(async move { Err(failure) })
            }
        }
    }
}

/// The message a panic carried.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Invoke;
    use serde_json::json;
    use toolgraph_core::{FnTool, ToolSpec};

    #[tokio::test]
    async fn a_panicking_tool_fails_its_call_with_the_message() {
        let tool = Arc::new(FnTool::new(ToolSpec::new("boom"), |_, _| async {
            if true {
                panic!("kaboom");
            }
            Ok(json!(null))
        }));
        let service = CatchPanicLayer.layer(Arc::new(Invoke));
        let out = service.call(CallRequest::new(tool, json!({}), "c1")).await;
        assert_eq!(out, Err(Failure::Panic("kaboom".into())));
    }

    #[tokio::test]
    async fn a_panic_on_the_blocking_pool_is_caught_too() {
        let tool = Arc::new(FnTool::new(
            ToolSpec::new("boom").blocking(),
            |_, _| async {
                if true {
                    panic!("on a thread");
                }
                Ok(json!(null))
            },
        ));
        let service = CatchPanicLayer.layer(Arc::new(Invoke));
        let out = service.call(CallRequest::new(tool, json!({}), "c1")).await;
        assert_eq!(out, Err(Failure::Panic("on a thread".into())));
    }

    #[tokio::test]
    async fn a_tool_that_does_not_panic_passes_through() {
        let tool = Arc::new(FnTool::new(ToolSpec::new("ok"), |args, _| async move {
            Ok(args)
        }));
        let service = CatchPanicLayer.layer(Arc::new(Invoke));
        let out = service
            .call(CallRequest::new(tool, json!({"x": 1}), "c1"))
            .await;
        assert_eq!(out, Ok(json!({"x": 1})));
    }
}
