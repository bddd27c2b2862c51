//! Fakes shared by toolgraph's tests.
//!
//! [`ScriptedTool`] does what each call's arguments say (`ms` to sleep, `fail`, `fail_times`,
//! `panic`, `hang`, `reads`/`writes` resources) and a shared [`Probe`] records what really
//! happened: invocations, peak concurrency, live calls, and a log of starts and ends in
//! order. [`Gate`] holds calls until the test opens it. [`skip`] is how a test skips a
//! check that needs a service or program this machine lacks (counted by `cargo test-all`).
//! [`isolated`] runs the `toolgraph` binary as a new user would, never as the developer;
//! [`Terminal`] runs a command in a real terminal (tmux) for tests of interactive commands.

mod http_server;
mod process;
mod skip;
mod terminal;

pub use http_server::CountingServer;
pub use process::{isolated, test_home};
pub use skip::{REQUIRE_VAR, SKIP_LOG_VAR, skip};
pub use terminal::Terminal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use toolgraph_core::{CallContext, ResourceAccess, Tool, ToolError, ToolFuture, ToolSpec};

/// What happened to a call, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The call (attempt) started.
    Start(String),
    /// The call (attempt) ended, whatever the outcome.
    End(String),
}

/// Counters shared by scripted tools.
#[derive(Default)]
pub struct Probe {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    invocations: AtomicUsize,
    live: AtomicUsize,
    per_key: Mutex<HashMap<String, (usize, usize)>>,
    log: Mutex<Vec<Step>>,
}

impl Probe {
    /// A fresh probe.
    pub fn new() -> Arc<Self> {
        Arc::new(Probe::default())
    }

    /// Most calls ever in flight at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Attempts started so far.
    pub fn invocations(&self) -> usize {
        self.invocations.load(Ordering::SeqCst)
    }

    /// Calls whose future exists right now (started, not yet completed or dropped).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Most calls in flight at once with the given `key` argument (e.g. a resource).
    pub fn peak_for(&self, key: &str) -> usize {
        self.per_key
            .lock()
            .map(|m| m.get(key).map_or(0, |v| v.1))
            .unwrap_or(0)
    }

    /// The start/end log.
    pub fn log(&self) -> Vec<Step> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Position of a call's first start in the log.
    pub fn started_at(&self, id: &str) -> Option<usize> {
        self.log()
            .iter()
            .position(|s| *s == Step::Start(id.to_owned()))
    }

    /// Position of a call's last end in the log.
    pub fn ended_at(&self, id: &str) -> Option<usize> {
        self.log()
            .iter()
            .rposition(|s| *s == Step::End(id.to_owned()))
    }

    fn push(&self, step: Step) {
        if let Ok(mut l) = self.log.lock() {
            l.push(step);
        }
    }
}

/// Decrements the probe's counters when a call's future completes or is dropped.
struct Live {
    probe: Arc<Probe>,
    id: String,
    key: Option<String>,
}

impl Live {
    fn enter(probe: &Arc<Probe>, id: &str, key: Option<String>) -> Self {
        probe.invocations.fetch_add(1, Ordering::SeqCst);
        probe.live.fetch_add(1, Ordering::SeqCst);
        let now = probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        probe.peak.fetch_max(now, Ordering::SeqCst);
        if let (Some(k), Ok(mut m)) = (&key, probe.per_key.lock()) {
            let e = m.entry(k.clone()).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(e.0);
        }
        probe.push(Step::Start(id.to_owned()));
        Live {
            probe: probe.clone(),
            id: id.to_owned(),
            key,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.probe.push(Step::End(self.id.clone()));
        self.probe.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.probe.live.fetch_sub(1, Ordering::SeqCst);
        if let (Some(k), Ok(mut m)) = (&self.key, self.probe.per_key.lock())
            && let Some(e) = m.get_mut(k)
        {
            e.0 -= 1;
        }
    }
}

/// A tool scripted by its arguments:
/// - `ms`: sleep this long (tokio time, so paused-clock tests are exact);
/// - `fail`: return this error message (`"transient": true` makes it transient);
/// - `fail_times`: fail transiently on the first N attempts, then succeed;
/// - `panic`: panic with this message; `hang`: never finish;
/// - `key`: count concurrency per this key in the probe;
/// - `reads` / `writes`: resource keys the call declares.
///
/// A successful call returns its arguments.
pub struct ScriptedTool {
    spec: ToolSpec,
    probe: Arc<Probe>,
}

impl ScriptedTool {
    /// A scripted tool named `name` reporting to `probe`.
    pub fn new(name: &str, probe: &Arc<Probe>) -> Self {
        ScriptedTool {
            spec: ToolSpec::new(name),
            probe: probe.clone(),
        }
    }

    /// A scripted tool with a custom spec.
    pub fn with_spec(spec: ToolSpec, probe: &Arc<Probe>) -> Self {
        ScriptedTool {
            spec,
            probe: probe.clone(),
        }
    }
}

fn strings(args: &Value, key: &str) -> Vec<String> {
    args.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Tool for ScriptedTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn resources(&self, args: &Value) -> Vec<ResourceAccess> {
        let mut out: Vec<ResourceAccess> = strings(args, "reads")
            .into_iter()
            .map(ResourceAccess::read)
            .collect();
        out.extend(
            strings(args, "writes")
                .into_iter()
                .map(ResourceAccess::write),
        );
        out.extend(
            strings(args, "inside")
                .into_iter()
                .map(ResourceAccess::intent_write),
        );
        out
    }

    fn call<'a>(&'a self, args: Arc<Value>, ctx: CallContext) -> ToolFuture<'a> {
        Box::pin(async move {
            let args = Arc::unwrap_or_clone(args);
            let key = args.get("key").and_then(Value::as_str).map(str::to_owned);
            let _live = Live::enter(&self.probe, &ctx.call_id, key);
            if let Some(ms) = args.get("ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if args.get("hang").and_then(Value::as_bool) == Some(true) {
                std::future::pending::<()>().await;
            }
            if let Some(m) = args.get("panic").and_then(Value::as_str) {
                panic!("{m}");
            }
            if let Some(n) = args.get("fail_times").and_then(Value::as_u64)
                && u64::from(ctx.attempt) <= n
            {
                return Err(ToolError::transient(format!(
                    "flaky failure on attempt {}",
                    ctx.attempt
                )));
            }
            if let Some(m) = args.get("fail").and_then(Value::as_str) {
                let transient = args.get("transient").and_then(Value::as_bool) == Some(true);
                return Err(if transient {
                    ToolError::transient(m)
                } else {
                    ToolError::permanent(m)
                });
            }
            Ok(json!({"id": &*ctx.call_id, "attempt": ctx.attempt, "args": args}))
        })
    }
}

/// Holds calls until the test opens it: each call takes one permit.
pub struct Gate {
    spec: ToolSpec,
    permits: Arc<tokio::sync::Semaphore>,
    probe: Arc<Probe>,
}

impl Gate {
    /// A gated tool named `name`.
    pub fn new(name: &str, probe: &Arc<Probe>) -> (Self, Arc<tokio::sync::Semaphore>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(0));
        (
            Gate {
                spec: ToolSpec::new(name),
                permits: permits.clone(),
                probe: probe.clone(),
            },
            permits,
        )
    }
}

impl Tool for Gate {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, args: Arc<Value>, ctx: CallContext) -> ToolFuture<'a> {
        Box::pin(async move {
            let args = Arc::unwrap_or_clone(args);
            let _live = Live::enter(&self.probe, &ctx.call_id, None);
            match self.permits.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return Err(ToolError::permanent("gate closed")),
            }
            Ok(args)
        })
    }
}
