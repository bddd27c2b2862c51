//! What the tools saw, across every execution of one executor: every attempt's start and
//! end in one global order, calls in flight and their peaks (overall, per tool, per
//! resource key, CPU units), and each execution's `CallFinished` events.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Once};

use serde_json::Value;
use tokio::time::Instant;
use toolgraph_core::{
    CallContext, CallStatus, Event, EventSink, ResourceAccess, Tool, ToolFuture, ToolSpec,
};
use toolgraph_test_support::ScriptedTool;

use crate::scenario::PANIC_MESSAGE;

/// What the tools saw, across every execution: calls in flight (overall, per tool, per
/// resource key, CPU units), their peaks, and each call's attempts in a global order.
#[derive(Default)]
pub struct Seen {
    pub in_flight: usize,
    pub peak: usize,
    pub tool: [usize; 3],
    pub tool_peak: [usize; 3],
    pub key: HashMap<String, usize>,
    pub key_peak: HashMap<String, usize>,
    pub cpu: usize,
    pub cpu_peak: usize,
    pub clock: u64,
    /// When the executions began (the paused clock's start).
    pub origin: Option<Instant>,
    /// Per call id.
    pub calls: HashMap<String, CallSeen>,
}

#[derive(Debug, Clone, Copy)]
pub struct CallSeen {
    /// Tick of the first attempt's start.
    pub first_start: u64,
    /// Tick of the last attempt's end.
    pub last_end: Option<u64>,
    pub attempts: u32,
    /// When the last attempt started, in ms since the executions began.
    pub last_start_ms: u64,
}

#[derive(Default)]
pub struct Recorder(pub Mutex<Seen>);

impl Recorder {
    pub fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        match self.0.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// Ends an attempt in the recorder when its future completes or is dropped.
struct Attempt {
    recorder: Arc<Recorder>,
    id: String,
    tool: usize,
    keys: Vec<String>,
    cpu: bool,
}

impl Attempt {
    pub fn start(
        recorder: &Arc<Recorder>,
        id: &str,
        tool: usize,
        keys: Vec<String>,
        cpu: bool,
    ) -> Self {
        recorder.with(|s| {
            s.clock += 1;
            let tick = s.clock;
            s.in_flight += 1;
            s.peak = s.peak.max(s.in_flight);
            s.tool[tool] += 1;
            s.tool_peak[tool] = s.tool_peak[tool].max(s.tool[tool]);
            for k in &keys {
                let n = s.key.entry(k.clone()).or_insert(0);
                *n += 1;
                let n = *n;
                let peak = s.key_peak.entry(k.clone()).or_insert(0);
                *peak = (*peak).max(n);
            }
            if cpu {
                s.cpu += 1;
                s.cpu_peak = s.cpu_peak.max(s.cpu);
            }
            let now = Instant::now();
            let ms = s
                .origin
                .map_or(0, |o| now.saturating_duration_since(o).as_millis() as u64);
            let call = s.calls.entry(id.to_owned()).or_insert(CallSeen {
                first_start: tick,
                last_end: None,
                attempts: 0,
                last_start_ms: ms,
            });
            call.attempts += 1;
            call.last_start_ms = ms;
        });
        Attempt {
            recorder: recorder.clone(),
            id: id.to_owned(),
            tool,
            keys,
            cpu,
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.recorder.with(|s| {
            s.clock += 1;
            let tick = s.clock;
            s.in_flight -= 1;
            s.tool[self.tool] -= 1;
            for k in &self.keys {
                if let Some(n) = s.key.get_mut(k) {
                    *n -= 1;
                }
            }
            if self.cpu {
                s.cpu -= 1;
            }
            if let Some(call) = s.calls.get_mut(&self.id) {
                call.last_end = Some(tick);
            }
        });
    }
}

/// A scripted tool whose every attempt is counted in the recorder.
pub struct Recorded {
    pub inner: ScriptedTool,
    pub index: usize,
    pub recorder: Arc<Recorder>,
}

impl Tool for Recorded {
    fn spec(&self) -> &ToolSpec {
        self.inner.spec()
    }

    fn resources(&self, args: &Value) -> Vec<ResourceAccess> {
        self.inner.resources(args)
    }

    fn call<'a>(&'a self, args: Arc<Value>, ctx: CallContext) -> ToolFuture<'a> {
        let keys: BTreeSet<String> = self
            .inner
            .resources(&args)
            .into_iter()
            .map(|r| r.key)
            .collect();
        let cpu = self.inner.spec().traits.cost.cpu > 0.0;
        let attempt = Attempt::start(
            &self.recorder,
            &ctx.call_id,
            self.index,
            keys.into_iter().collect(),
            cpu,
        );
        let call = self.inner.call(args, ctx);
        Box::pin(async move {
            let _attempt = attempt;
            call.await
        })
    }
}

/// The `CallFinished` events of one execution, by position.
#[derive(Default)]
pub struct Finishes(pub Mutex<Vec<(usize, CallStatus)>>);

impl EventSink for Finishes {
    fn on_event(&self, event: &Event) {
        if let Event::CallFinished {
            position, status, ..
        } = event
            && let Ok(mut f) = self.0.lock()
        {
            f.push((*position, *status));
        }
    }
}

pub fn quiet_scripted_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info.payload().downcast_ref::<String>().map(String::as_str)
                == Some(PANIC_MESSAGE)
                || info.payload().downcast_ref::<&str>() == Some(&PANIC_MESSAGE);
            if !scripted {
                default(info);
            }
        }));
    });
}
