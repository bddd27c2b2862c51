//! The write-ahead gate: a call whose start a recorder must make durable first (its tool is
//! not idempotent, so a crash must never leave it without a trace) waits here, alone, until
//! the recorder says the "running" row is committed. The scheduler is never held up.
//!
//! Invariant: nothing below this layer runs before every gate of the call resolved; a call
//! without gates passes straight through.

use std::sync::Arc;

use super::{CallFuture, CallRequest, CallService, Layer};

/// Adds the durability gate.
pub struct DurableLayer;

impl Layer for DurableLayer {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(Durable { inner })
    }
}

/// Holds a call until its start is durable.
pub struct Durable {
    inner: Arc<dyn CallService>,
}

impl CallService for Durable {
    fn call(&self, mut request: CallRequest) -> CallFuture {
        if request.gates.is_empty() {
            return self.inner.call(request);
        }
        let gates = std::mem::take(&mut request.gates);
        let inner = self.inner.clone();
        Box::pin(async move {
            for gate in gates {
                gate.await;
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Invoke;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use toolgraph_core::{FnTool, ToolSpec};

    #[tokio::test]
    async fn the_tool_runs_only_after_its_start_is_durable() {
        let ran = Arc::new(AtomicBool::new(false));
        let seen = ran.clone();
        let tool = Arc::new(FnTool::new(ToolSpec::new("write"), move |_, _| {
            let seen = seen.clone();
            async move {
                seen.store(true, Ordering::SeqCst);
                Ok(json!("written"))
            }
        }));
        let (durable, committed) = tokio::sync::oneshot::channel::<()>();
        let mut request = CallRequest::new(tool, json!({}), "w1");
        request.gates.push(Box::pin(async move {
            let _ = committed.await;
        }));
        let service = DurableLayer.layer(Arc::new(Invoke));
        let call = tokio::spawn(service.call(request));
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!ran.load(Ordering::SeqCst), "not before the commit");
        let _ = durable.send(());
        assert_eq!(call.await.expect("joined"), Ok(json!("written")));
        assert!(ran.load(Ordering::SeqCst));
    }
}
