//! [`ParallelExecutorConfig`]: every knob of an execution, as data.
//!
//! Field names follow the seed's `ParallelExecutorConfig` so its users feel at home.
//! Unknown keys are rejected (`deny_unknown_fields`), and [`ParallelExecutorConfig::validate`]
//! checks values once, at the edge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How transient failures of idempotent tools are retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay_ms: u64,
    /// Upper bound of one delay.
    pub max_delay_ms: u64,
    /// Randomise each delay (full jitter) so retries of many calls do not align.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay_ms: 100,
            max_delay_ms: 5_000,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 = first retry), before jitter.
    pub fn backoff_ms(&self, next_attempt: u32) -> u64 {
        let exp = next_attempt.saturating_sub(2).min(30);
        self.base_delay_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_delay_ms)
    }
}

/// Limits and policies of a [`ParallelExecutor`](../toolgraph_engine/struct.ParallelExecutor.html).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParallelExecutorConfig {
    /// Calls running at once, at most.
    pub max_parallel_calls: usize,
    /// Per tool name: calls of that tool running at once, at most (wins over the tool's own).
    pub per_tool_parallel_limits: BTreeMap<String, usize>,
    /// Per resource key (`host:example.com`) or kind (`host`): calls touching it at once.
    pub per_resource_parallel_limits: BTreeMap<String, usize>,
    /// Timeout of a call when neither the call nor its tool sets one; 0 = none.
    pub default_timeout_ms: u64,
    /// False runs calls one at a time in dependency order.
    pub enable_parallel: bool,
    /// Keep per-tool latency history and execution statistics.
    pub track_performance: bool,
    /// Order calls by resource hazards and run exclusive tools alone. Turning it off trusts
    /// the model's batch to be free of conflicts.
    pub validate_thread_safety: bool,
    /// CPU units that running calls may declare in all (None = unlimited).
    pub resource_limit_cpu: Option<f64>,
    /// Memory (MiB) that running calls may declare in all (None = unlimited).
    pub resource_limit_memory_mb: Option<u64>,
    /// Retries of transient failures, for idempotent tools only.
    pub retry: RetryPolicy,
    /// Cancel everything at the first failure.
    pub fail_fast: bool,
    /// Largest arguments a call may get once its references are resolved, in bytes of
    /// compact JSON: past it the call fails (`too_large`) before it is built.
    pub max_argument_bytes: u64,
    /// Largest output one call may return, in bytes of compact JSON: past it the output is
    /// dropped and the call fails (`too_large`).
    pub max_output_bytes: u64,
    /// Bytes of outputs one execution may hold at once: a call whose output would pass it
    /// fails (`too_large`) and its output is dropped; the rest of the execution goes on.
    pub output_budget_bytes: u64,
    /// Adaptive concurrency per tool and per host (`[executor.adaptive]`); off by default.
    pub adaptive: AdaptiveConfig,
    /// Per tool name: a token bucket every attempt of that tool waits for.
    pub per_tool_rate_limits: BTreeMap<String, RateLimit>,
    /// Per resource key (`host:api.example.com`) or kind (`host`): a token bucket every
    /// attempt touching it waits for (the key's own, else its kind's — one bucket per key).
    pub per_resource_rate_limits: BTreeMap<String, RateLimit>,
}

/// Adaptive concurrency (`[executor.adaptive]`): per tool and per host, a limit under the
/// configured ceiling that halves-ish on overload and grows on success (AIMD).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Turns adaptive concurrency on (read when the executor is built).
    pub enabled: bool,
    /// The limit a key starts at (capped by its ceiling).
    pub initial_limit: usize,
    /// The limit is multiplied by this on overload (a 429 or 503, a timeout, a transient
    /// error): strictly between 0 and 1.
    pub decrease_factor: f64,
    /// The longest pause a `Retry-After` imposes on its key, in ms.
    pub max_retry_after_ms: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            enabled: false,
            initial_limit: 4,
            decrease_factor: 0.7,
            max_retry_after_ms: 60_000,
        }
    }
}

/// A token bucket: `requests_per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Tokens added per second (> 0; fractions allowed: 0.5 = one every 2 s).
    pub requests_per_second: f64,
    /// Tokens the bucket holds (at least 1): attempts that may go at once after a pause.
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl RateLimit {
    /// Checks the values; `field` names the entry in errors.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let rps = self.requests_per_second;
        if !(rps.is_finite() && rps > 0.0 && 1.0 / rps < 1e9) {
            return Err(ConfigError {
                field: format!("{field}.requests_per_second"),
                message: "must be a positive number".into(),
            });
        }
        if self.burst == 0 {
            return Err(ConfigError {
                field: format!("{field}.burst"),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// 16 MiB.
pub const DEFAULT_MAX_ARGUMENT_BYTES: u64 = 16 << 20;
/// 64 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 << 20;
/// 1 GiB.
pub const DEFAULT_OUTPUT_BUDGET_BYTES: u64 = 1 << 30;

impl Default for ParallelExecutorConfig {
    fn default() -> Self {
        ParallelExecutorConfig {
            max_parallel_calls: 16,
            per_tool_parallel_limits: BTreeMap::new(),
            per_resource_parallel_limits: BTreeMap::new(),
            default_timeout_ms: 30_000,
            enable_parallel: true,
            track_performance: true,
            validate_thread_safety: true,
            resource_limit_cpu: None,
            resource_limit_memory_mb: None,
            retry: RetryPolicy::default(),
            fail_fast: false,
            max_argument_bytes: DEFAULT_MAX_ARGUMENT_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            output_budget_bytes: DEFAULT_OUTPUT_BUDGET_BYTES,
            adaptive: AdaptiveConfig::default(),
            per_tool_rate_limits: BTreeMap::new(),
            per_resource_rate_limits: BTreeMap::new(),
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {message}")]
pub struct ConfigError {
    /// The field, e.g. `per_tool_parallel_limits.fetch`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ParallelExecutorConfig {
    /// Checks every value; the first bad one is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: String, message: &str| {
            Err(ConfigError {
                field,
                message: message.into(),
            })
        };
        if self.max_parallel_calls == 0 {
            return bad("max_parallel_calls".into(), "must be at least 1");
        }
        for (name, limit) in &self.per_tool_parallel_limits {
            if *limit == 0 {
                return bad(
                    format!("per_tool_parallel_limits.{name}"),
                    "must be at least 1",
                );
            }
        }
        for (key, limit) in &self.per_resource_parallel_limits {
            if *limit == 0 {
                return bad(
                    format!("per_resource_parallel_limits.{key}"),
                    "must be at least 1",
                );
            }
        }
        if let Some(cpu) = self.resource_limit_cpu
            && !(cpu.is_finite() && cpu > 0.0)
        {
            return bad("resource_limit_cpu".into(), "must be a positive number");
        }
        if self.resource_limit_memory_mb == Some(0) {
            return bad("resource_limit_memory_mb".into(), "must be at least 1");
        }
        for (field, value) in [
            ("max_argument_bytes", self.max_argument_bytes),
            ("max_output_bytes", self.max_output_bytes),
            ("output_budget_bytes", self.output_budget_bytes),
        ] {
            if value == 0 {
                return bad(field.into(), "must be at least 1");
            }
        }
        if self.retry.max_attempts == 0 {
            return bad(
                "retry.max_attempts".into(),
                "must be at least 1 (1 = no retries)",
            );
        }
        self.validate_adaptive()
    }

    /// Checks `adaptive` and the rate limits.
    fn validate_adaptive(&self) -> Result<(), ConfigError> {
        let a = &self.adaptive;
        if a.initial_limit == 0 {
            return Err(ConfigError {
                field: "adaptive.initial_limit".into(),
                message: "must be at least 1".into(),
            });
        }
        if !(a.decrease_factor > 0.0 && a.decrease_factor < 1.0) {
            return Err(ConfigError {
                field: "adaptive.decrease_factor".into(),
                message: "must be between 0 and 1 (exclusive)".into(),
            });
        }
        for (name, limit) in &self.per_tool_rate_limits {
            limit.validate(&format!("per_tool_rate_limits.{name}"))?;
        }
        for (key, limit) in &self.per_resource_rate_limits {
            limit.validate(&format!("per_resource_rate_limits.{key}"))?;
        }
        Ok(())
    }

    /// The rate limit for a resource key: the key's own, else its kind's.
    pub fn resource_rate_limit(&self, key: &str) -> Option<RateLimit> {
        self.per_resource_rate_limits.get(key).copied().or_else(|| {
            let kind = key.split_once(':').map(|(k, _)| k)?;
            self.per_resource_rate_limits.get(kind).copied()
        })
    }

    /// The limit for a resource key: the key's own, else its kind's (the part before `:`).
    pub fn resource_limit(&self, key: &str) -> Option<usize> {
        self.per_resource_parallel_limits
            .get(key)
            .copied()
            .or_else(|| {
                let kind = key.split_once(':').map(|(k, _)| k)?;
                self.per_resource_parallel_limits.get(kind).copied()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = serde_json::from_str::<ParallelExecutorConfig>(r#"{"max_paralel_calls": 3}"#)
            .expect_err("typo");
        assert!(err.to_string().contains("max_paralel_calls"), "{err}");
    }

    #[test]
    fn zero_limits_are_invalid() {
        let mut c = ParallelExecutorConfig::default();
        c.per_tool_parallel_limits.insert("fetch".into(), 0);
        assert_eq!(
            c.validate().map_err(|e| e.field),
            Err("per_tool_parallel_limits.fetch".into())
        );
        for (field, set) in [
            (
                "max_argument_bytes",
                (|c: &mut ParallelExecutorConfig| c.max_argument_bytes = 0) as fn(&mut _),
            ),
            ("max_output_bytes", |c| c.max_output_bytes = 0),
            ("output_budget_bytes", |c| c.output_budget_bytes = 0),
            ("resource_limit_cpu", |c| {
                c.resource_limit_cpu = Some(f64::NAN)
            }),
            ("resource_limit_cpu", |c| c.resource_limit_cpu = Some(-1.0)),
        ] {
            let mut c = ParallelExecutorConfig::default();
            set(&mut c);
            assert_eq!(c.validate().map_err(|e| e.field), Err(field.into()));
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 9,
            base_delay_ms: 100,
            max_delay_ms: 350,
            jitter: false,
        };
        assert_eq!(
            [p.backoff_ms(2), p.backoff_ms(3), p.backoff_ms(4)],
            [100, 200, 350]
        );
    }

    #[test]
    fn adaptive_and_rate_limit_values_are_checked_by_name() {
        let toml_like = serde_json::json!({
            "adaptive": {"enabled": true, "decrease_factor": 0.5},
            "per_resource_rate_limits": {"host": {"requests_per_second": 2.5}}
        });
        let c: ParallelExecutorConfig = serde_json::from_value(toml_like).expect("parses");
        assert!(c.adaptive.enabled);
        assert_eq!(c.adaptive.initial_limit, 4, "tuning keeps its defaults");
        assert_eq!(
            c.resource_rate_limit("host:a.example").map(|r| r.burst),
            Some(1),
            "burst defaults to 1 and the kind's limit applies to each host"
        );
        assert_eq!(c.validate(), Ok(()));
        let typo = serde_json::from_value::<ParallelExecutorConfig>(
            serde_json::json!({"adaptive": {"enable": true}}),
        );
        assert!(typo.is_err_and(|e| e.to_string().contains("enable")));
        for (field, set) in [
            (
                "adaptive.decrease_factor",
                (|c: &mut ParallelExecutorConfig| c.adaptive.decrease_factor = 1.0) as fn(&mut _),
            ),
            ("adaptive.initial_limit", |c| c.adaptive.initial_limit = 0),
            ("per_tool_rate_limits.fetch.requests_per_second", |c| {
                c.per_tool_rate_limits.insert(
                    "fetch".into(),
                    RateLimit {
                        requests_per_second: 0.0,
                        burst: 1,
                    },
                );
            }),
            ("per_resource_rate_limits.host.burst", |c| {
                c.per_resource_rate_limits.insert(
                    "host".into(),
                    RateLimit {
                        requests_per_second: 1.0,
                        burst: 0,
                    },
                );
            }),
        ] {
            let mut c = ParallelExecutorConfig::default();
            set(&mut c);
            assert_eq!(c.validate().map_err(|e| e.field), Err(field.into()));
        }
    }

    #[test]
    fn resource_limits_fall_back_to_the_kind() {
        let mut c = ParallelExecutorConfig::default();
        c.per_resource_parallel_limits.insert("host".into(), 2);
        c.per_resource_parallel_limits
            .insert("host:slow.example".into(), 1);
        assert_eq!(c.resource_limit("host:a.example"), Some(2));
        assert_eq!(c.resource_limit("host:slow.example"), Some(1));
        assert_eq!(c.resource_limit("file:a"), None);
    }
}
