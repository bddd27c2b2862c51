//! The generated scenarios: a batch of scripted calls (a DAG of `depends_on` and
//! references, resources, priorities, timeouts), the limits, and what happens mid-run
//! (cancellation, `update_config`, a second execution); and what a call's script alone says
//! about how it ends.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;
use toolgraph_core::{CallStatus, ParallelExecutorConfig, RetryPolicy, ToolCall};

/// Tool names; `idem` and `costly` are idempotent, `costly` declares one CPU unit a call.
pub const TOOLS: [&str; 3] = ["plain", "idem", "costly"];
pub const RESOURCES: [&str; 4] = ["file:a", "file:b", "host:x", "host:y"];
/// Keys a per-resource limit may name: one key, and one kind (each host alike).
pub const LIMITED: [&str; 2] = ["file:a", "host"];
pub const PANIC_MESSAGE: &str = "scripted panic";

/// What a call does when it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Script {
    Succeed,
    Fail,
    Transient,
    /// Fails transiently on the first N attempts.
    Flaky(u8),
    Hang,
    Panic,
}

#[derive(Debug, Clone)]
pub struct CallSpec {
    pub tool: usize,
    /// 0 or 5, 15, … 95: never a multiple of 10, so never equal to a timeout.
    pub ms: u64,
    pub script: Script,
    pub reads: BTreeSet<usize>,
    pub writes: BTreeSet<usize>,
    /// Writes inside a resource (intent writes): together with each other, ordered against
    /// reads — with enough readers before them, through a join.
    pub inside: BTreeSet<usize>,
    /// Raw picks, mapped to earlier positions (`% i`).
    pub depends_on: Vec<usize>,
    pub references: Vec<usize>,
    pub priority: i64,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub global: usize,
    pub parallel: bool,
    pub per_tool: [Option<usize>; 3],
    pub per_resource: [Option<usize>; 2],
    pub cpu: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub calls: Vec<CallSpec>,
    pub limits: Limits,
    pub default_timeout_ms: u64,
    pub max_attempts: u32,
    pub fail_fast: bool,
    pub hazards: bool,
    /// Cancel the first execution this many ms in.
    pub cancel_at: Option<u64>,
    /// Swap in these limits this many ms in.
    pub update: Option<(u64, Limits)>,
    /// Run the same batch a second time, beside the first, through the same executor.
    pub second: bool,
}

fn script() -> impl Strategy<Value = Script> {
    prop_oneof![
        16 => Just(Script::Succeed),
        1 => Just(Script::Fail),
        1 => Just(Script::Transient),
        1 => (1u8..=3).prop_map(Script::Flaky),
        1 => Just(Script::Hang),
        1 => Just(Script::Panic),
    ]
}

fn call_spec() -> impl Strategy<Value = CallSpec> {
    (
        0..TOOLS.len(),
        prop_oneof![Just(0u64), (0u64..10).prop_map(|k| k * 10 + 5)],
        script(),
        proptest::collection::btree_set(0..RESOURCES.len(), 0..=2),
        proptest::option::weighted(0.3, 0..RESOURCES.len()).prop_map(|w| w.into_iter().collect()),
        proptest::option::weighted(0.3, 0..RESOURCES.len()).prop_map(|w| w.into_iter().collect()),
        proptest::collection::vec(any::<usize>(), 0..=1),
        proptest::collection::vec(any::<usize>(), 0..=1),
        -1i64..=1,
        proptest::option::weighted(0.25, (1u64..=20).prop_map(|k| k * 10)),
    )
        .prop_map(
            |(
                tool,
                ms,
                script,
                reads,
                writes,
                inside,
                depends_on,
                references,
                priority,
                timeout_ms,
            )| {
                CallSpec {
                    tool,
                    ms,
                    script,
                    reads,
                    writes,
                    inside,
                    depends_on,
                    references,
                    priority,
                    timeout_ms,
                }
            },
        )
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        1usize..=4,
        proptest::bool::weighted(0.85),
        proptest::array::uniform3(proptest::option::of(1usize..=2)),
        proptest::array::uniform2(proptest::option::of(1usize..=2)),
        proptest::option::weighted(0.3, (1u32..=2).prop_map(f64::from)),
    )
        .prop_map(|(global, parallel, per_tool, per_resource, cpu)| Limits {
            global,
            parallel,
            per_tool,
            per_resource,
            cpu,
        })
}

pub fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec(call_spec(), 1..=14),
        limits(),
        prop_oneof![Just(60u64), Just(150), Just(400)],
        1u32..=3,
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.8),
        proptest::option::weighted(0.3, 0u64..200),
        proptest::option::weighted(0.3, (0u64..200, limits())),
        proptest::bool::weighted(0.25),
    )
        .prop_map(
            |(
                calls,
                limits,
                default_timeout_ms,
                max_attempts,
                fail_fast,
                hazards,
                cancel_at,
                update,
                second,
            )| {
                Scenario {
                    calls,
                    limits,
                    default_timeout_ms,
                    max_attempts,
                    fail_fast,
                    hazards,
                    cancel_at,
                    update,
                    second,
                }
            },
        )
}

impl Scenario {
    pub fn config(&self, limits: &Limits) -> ParallelExecutorConfig {
        let mut config = ParallelExecutorConfig {
            max_parallel_calls: limits.global,
            enable_parallel: limits.parallel,
            default_timeout_ms: self.default_timeout_ms,
            validate_thread_safety: self.hazards,
            resource_limit_cpu: limits.cpu,
            fail_fast: self.fail_fast,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                base_delay_ms: 10,
                max_delay_ms: 40,
                jitter: false,
            },
            ..ParallelExecutorConfig::default()
        };
        for (name, limit) in TOOLS.iter().zip(limits.per_tool) {
            if let Some(n) = limit {
                config.per_tool_parallel_limits.insert((*name).into(), n);
            }
        }
        for (key, limit) in LIMITED.iter().zip(limits.per_resource) {
            if let Some(n) = limit {
                config.per_resource_parallel_limits.insert((*key).into(), n);
            }
        }
        config
    }

    /// Data dependencies of call `i`: positions it names in `depends_on` or references.
    pub fn data_deps(&self, i: usize) -> (Vec<usize>, Vec<usize>) {
        if i == 0 {
            return (Vec::new(), Vec::new());
        }
        let pick = |raw: &Vec<usize>| -> Vec<usize> {
            let set: BTreeSet<usize> = raw.iter().map(|r| r % i).collect();
            set.into_iter().collect()
        };
        (
            pick(&self.calls[i].depends_on),
            pick(&self.calls[i].references),
        )
    }

    /// How call `i` ends once it runs, by its script alone: the outcome, the tries it takes,
    /// and the statuses allowed (its timeout covers every try and the backoffs between them;
    /// when both fall on one instant, either may win).
    pub fn expected(&self, i: usize) -> (CallStatus, u32, Vec<CallStatus>) {
        let c = &self.calls[i];
        let idempotent = c.tool != 0;
        let tries_allowed = if idempotent { self.max_attempts } else { 1 };
        let policy = self.config(&self.limits).retry;
        let (outcome, tries) = match c.script {
            Script::Succeed => (CallStatus::Ok, 1),
            Script::Fail | Script::Panic => (CallStatus::Error, 1),
            Script::Hang => return (CallStatus::Timeout, 1, vec![CallStatus::Timeout]),
            Script::Transient => (CallStatus::Error, tries_allowed),
            Script::Flaky(k) if u32::from(k) < tries_allowed => (CallStatus::Ok, u32::from(k) + 1),
            Script::Flaky(_) => (CallStatus::Error, tries_allowed),
        };
        let backoffs: u64 = (2..=tries).map(|next| policy.backoff_ms(next)).sum();
        let ends_at = u64::from(tries) * c.ms + backoffs;
        let timeout = c.timeout_ms.unwrap_or(self.default_timeout_ms);
        let allowed = match ends_at.cmp(&timeout) {
            std::cmp::Ordering::Less => vec![outcome],
            std::cmp::Ordering::Equal => vec![outcome, CallStatus::Timeout],
            std::cmp::Ordering::Greater => vec![CallStatus::Timeout],
        };
        (outcome, tries, allowed)
    }

    pub fn batch(&self, prefix: &str) -> Vec<ToolCall> {
        (0..self.calls.len())
            .map(|i| {
                let c = &self.calls[i];
                let names = |set: &BTreeSet<usize>| -> Vec<&str> {
                    set.iter().map(|&r| RESOURCES[r]).collect()
                };
                let mut args = json!({
                    "ms": c.ms,
                    "reads": names(&c.reads),
                    "writes": names(&c.writes),
                    "inside": names(&c.inside),
                });
                match c.script {
                    Script::Succeed => {}
                    Script::Fail => args["fail"] = json!("scripted failure"),
                    Script::Transient => {
                        args["fail"] = json!("scripted transient failure");
                        args["transient"] = json!(true);
                    }
                    Script::Flaky(n) => args["fail_times"] = json!(n),
                    Script::Hang => args["hang"] = json!(true),
                    Script::Panic => args["panic"] = json!(PANIC_MESSAGE),
                }
                let (depends_on, references) = self.data_deps(i);
                for (k, r) in references.iter().enumerate() {
                    // A whole reference and a spliced one; both always resolve on success.
                    args[format!("from_{k}")] = if k % 2 == 0 {
                        json!(format!("${{{prefix}{r}.id}}"))
                    } else {
                        json!(format!("attempt ${{{prefix}{r}.attempt}} of {prefix}{r}"))
                    };
                }
                let mut call = ToolCall::new(format!("{prefix}{i}"), TOOLS[c.tool], args)
                    .depends_on(depends_on.iter().map(|d| format!("{prefix}{d}")))
                    .priority(c.priority);
                if let Some(ms) = c.timeout_ms {
                    call = call.timeout_ms(ms);
                }
                call
            })
            .collect()
    }
}
