//! Performance history across executions: the seed's `get_performance_stats`, plus per-tool
//! count, error rate, cache hit rate and latency percentiles (of the calls that ran their
//! tool: a cache hit is not a sample of the tool's latency).
//!
//! Updated once per execution (never per call on the hot path); latency samples per tool
//! are kept in a bounded ring so memory stays flat however long the process lives.

use std::collections::BTreeMap;

use serde::Serialize;
use toolgraph_core::{CallStatus, ParallelExecutionResult};

const SAMPLES_PER_TOOL: usize = 10_000;

/// Statistics over every execution so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PerformanceStats {
    /// Executions recorded.
    pub total_executions: u64,
    /// Mean speedup.
    pub avg_speedup: f64,
    /// Mean makespan, in ms.
    pub avg_execution_time_ms: f64,
    /// Mean share of calls that succeeded.
    pub avg_success_rate: f64,
    /// Mean efficiency (critical path / makespan).
    pub avg_efficiency: f64,
    /// Calls recorded.
    pub total_calls: u64,
    /// Per tool name.
    pub tools: BTreeMap<String, ToolStats>,
    /// The adaptive concurrency limits (`[executor.adaptive]`) recorded when the latest
    /// execution that had one ended, by key (`tool:NAME`, `host:…`); read from a store
    /// (the executor's own statistics leave it empty: its live limits are
    /// `ParallelExecutor::throttle`'s).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adaptive_limits: BTreeMap<String, usize>,
}

/// Statistics of one tool.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ToolStats {
    /// Calls that ran or were decided (skipped and cancelled calls excluded).
    pub count: u64,
    /// Calls that ended in error or timeout.
    pub errors: u64,
    /// `errors / count`.
    pub error_rate: f64,
    /// Calls answered by the cache (or by an identical call in flight) without running
    /// the tool.
    pub cache_hits: u64,
    /// `cache_hits / count`.
    pub hit_rate: f64,
    /// Mean run time of the calls that ran the tool, in ms.
    pub mean_ms: f64,
    /// Median run time over the recent samples.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

#[derive(Default)]
struct ToolHistory {
    count: u64,
    errors: u64,
    cache_hits: u64,
    total_ms: f64,
    samples: Vec<f64>,
    next: usize,
}

/// The running totals behind [`PerformanceStats`].
#[derive(Default)]
pub(crate) struct History {
    executions: u64,
    speedup: f64,
    time_ms: f64,
    success_rate: f64,
    efficiency: f64,
    calls: u64,
    tools: BTreeMap<String, ToolHistory>,
}

impl History {
    pub(crate) fn record(&mut self, result: &ParallelExecutionResult) {
        self.executions += 1;
        self.speedup += result.speedup;
        self.time_ms += result.total_time_ms;
        self.efficiency += result.efficiency;
        let n = result.results.len();
        let ok = result.results.iter().filter(|r| r.is_ok()).count();
        self.success_rate += if n == 0 { 1.0 } else { ok as f64 / n as f64 };
        self.calls += n as u64;
        for r in &result.results {
            if matches!(r.status, CallStatus::Skipped | CallStatus::Cancelled) {
                continue;
            }
            let h = match self.tools.get_mut(&r.name) {
                Some(h) => h,
                None => self.tools.entry(r.name.clone()).or_default(),
            };
            h.count += 1;
            if !r.is_ok() {
                h.errors += 1;
            }
            if r.cached {
                h.cache_hits += 1;
                continue;
            }
            h.total_ms += r.duration_ms;
            if h.samples.len() < SAMPLES_PER_TOOL {
                h.samples.push(r.duration_ms);
            } else {
                h.samples[h.next] = r.duration_ms;
                h.next = (h.next + 1) % SAMPLES_PER_TOOL;
            }
        }
    }

    /// Mean run time of a tool, when known.
    pub(crate) fn mean_ms(&self, tool: &str) -> Option<f64> {
        self.tools
            .get(tool)
            .filter(|h| h.count > h.cache_hits)
            .map(|h| h.total_ms / (h.count - h.cache_hits) as f64)
    }

    pub(crate) fn snapshot(&self) -> PerformanceStats {
        let per = |sum: f64| {
            if self.executions == 0 {
                0.0
            } else {
                sum / self.executions as f64
            }
        };
        PerformanceStats {
            total_executions: self.executions,
            avg_speedup: per(self.speedup),
            avg_execution_time_ms: per(self.time_ms),
            avg_success_rate: per(self.success_rate),
            avg_efficiency: per(self.efficiency),
            total_calls: self.calls,
            adaptive_limits: BTreeMap::new(),
            tools: self
                .tools
                .iter()
                .map(|(name, h)| {
                    let mut sorted = h.samples.clone();
                    sorted.sort_by(f64::total_cmp);
                    let stats = ToolStats {
                        count: h.count,
                        errors: h.errors,
                        error_rate: if h.count == 0 {
                            0.0
                        } else {
                            h.errors as f64 / h.count as f64
                        },
                        cache_hits: h.cache_hits,
                        hit_rate: if h.count == 0 {
                            0.0
                        } else {
                            h.cache_hits as f64 / h.count as f64
                        },
                        mean_ms: if h.count <= h.cache_hits {
                            0.0
                        } else {
                            h.total_ms / (h.count - h.cache_hits) as f64
                        },
                        p50_ms: percentile(&sorted, 50.0),
                        p95_ms: percentile(&sorted, 95.0),
                        p99_ms: percentile(&sorted, 99.0),
                    };
                    (name.clone(), stats)
                })
                .collect(),
        }
    }
}

/// Nearest-rank percentile of sorted samples (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
