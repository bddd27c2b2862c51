//! toolgraph's vocabulary: the types every other crate speaks.
//!
//! A [`ToolCall`] is what an LLM emitted; a [`Tool`] is what runs it, described by a
//! [`ToolSpec`] whose [`ToolTraits`] tell the scheduler what is safe; a [`ToolSet`] is the
//! registry; a [`ParallelExecutionResult`] is what an execution returns. The wire shapes we
//! accept (OpenAI `tool_calls`, Anthropic `tool_use`) are parsed in [`call`], the `${call_id}`
//! reference syntax lives in [`reference`].
//!
//! Invariant: this crate does no I/O and needs no async runtime. It must stay cheap to
//! depend on for every other crate.

pub mod approval;
pub mod call;
pub mod config;
pub mod error;
pub mod event;
pub mod reference;
pub mod result;
pub mod tool;
pub mod toolset;

pub use approval::{
    ApprovalClass, ApprovalDecision, ApprovalMode, ApprovalPolicy, ApprovalPreset, ApprovalRequest,
    Approver, SharedApprover,
};
pub use call::{ToolCall, parse_tool_calls, parse_tool_calls_str};
pub use config::{AdaptiveConfig, ConfigError, ParallelExecutorConfig, RateLimit, RetryPolicy};
pub use error::{InputError, Problem, error_chain};
pub use event::{CallOutcome, Event, EventSink};
pub use result::{
    BatchReport, CallError, CallResult, CallStatus, ErrorKind, ExecutionMetadata, ExecutionMode,
    ParallelExecutionResult, ResumeMetadata, StatusCounts,
};
pub use tool::{
    Access, CallContext, CancelFlag, FnTool, ResourceAccess, ResourceCost, Tool, ToolError,
    ToolFuture, ToolSpec, ToolTraits,
};
pub use toolset::{ToolOverride, ToolSet, ToolSetError};
