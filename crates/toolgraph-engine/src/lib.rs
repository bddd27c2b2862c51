//! toolgraph's engine: plan a batch of tool calls into a dependency graph, then run it
//! event-driven under every limit, and measure it honestly.
//!
//! Data flows one way: calls → [`plan`] (pure) → `schedule` (tokio) → `report` →
//! [`ParallelExecutionResult`](toolgraph_core::ParallelExecutionResult). [`ParallelExecutor`] wires them and keeps the
//! performance history; [`workload`] builds the benchmark and test batches.
//!
//! Invariant: no database, network or file I/O here; tools do I/O, sinks record.

pub mod approval;
pub mod executor;
pub mod layer;
pub mod limiter;
pub mod plan;
mod report;
mod schedule;
pub mod stats;
mod trace;
pub mod workload;

pub use approval::Approvals;
pub use executor::{ParallelExecutor, RunOptions};
pub use limiter::{LimitUsage, Limiter, LimiterPeaks, Permit};
pub use plan::{DependencyGraph, Edge, EdgeReason, GraphEdge, GraphNode, Hazard, Plan};
pub use schedule::Preset;
pub use stats::{PerformanceStats, ToolStats};
pub use tokio_util::sync::CancellationToken;
