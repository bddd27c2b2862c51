//! The context hook: work a layer spawns for a call keeps the embedder's task-local context.
//! (Its own test binary: the hook is installed once per process.)

use std::sync::Arc;

use toolgraph_engine::layer::{carry_context, set_context_hook};

tokio::task_local! {
    static BRIDGE: Arc<str>;
}

#[tokio::test]
async fn spawned_work_keeps_the_callers_task_local_once_a_hook_carries_it() {
    let seen = |tx: tokio::sync::oneshot::Sender<Option<Arc<str>>>| {
        Box::pin(async move {
            let _ = tx.send(BRIDGE.try_with(Arc::clone).ok());
        })
    };
    // Without a hook, tokio::spawn drops the task-local.
    let (tx, rx) = tokio::sync::oneshot::channel();
    BRIDGE
        .scope(Arc::from("loop-1"), async {
            tokio::spawn(carry_context(seen(tx)));
        })
        .await;
    assert_eq!(rx.await.expect("answered"), None);

    assert!(set_context_hook(Box::new(|work| {
        match BRIDGE.try_with(Arc::clone) {
            Ok(bridge) => Box::pin(BRIDGE.scope(bridge, work)),
            Err(_) => work,
        }
    })));
    assert!(!set_context_hook(Box::new(|work| work)), "installed once");
    let (tx, rx) = tokio::sync::oneshot::channel();
    BRIDGE
        .scope(Arc::from("loop-1"), async {
            tokio::spawn(carry_context(seen(tx)));
        })
        .await;
    assert_eq!(rx.await.expect("answered").as_deref(), Some("loop-1"));
    // Outside any scope the hook passes the work through.
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(carry_context(seen(tx)));
    assert_eq!(rx.await.expect("answered"), None);
}
