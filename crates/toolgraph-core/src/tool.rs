//! The [`Tool`] trait and the description a tool gives the scheduler about itself.
//!
//! A tool is an async function from JSON arguments to a JSON output, plus a [`ToolSpec`]:
//! name, description, parameter schema, and [`ToolTraits`] — whether it may run beside
//! others, how many at once, whether a retry is safe, whether it blocks a thread, what it
//! costs, and (through [`Tool::resources`]) which resources a call reads or writes.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::approval::ApprovalClass;

/// What a tool's `call` returns.
pub type ToolFuture<'a> = BoxFuture<'a, Result<Value, ToolError>>;

/// A tool the engine can run.
///
/// Implement it for a struct, or register a closure with [`crate::ToolSet::register_fn`].
pub trait Tool: Send + Sync + 'static {
    /// The tool's description and scheduling traits.
    fn spec(&self) -> &ToolSpec;

    /// The resources one call touches, derived from its arguments. Two calls that touch the
    /// same resource, one of them writing, run in the order they were emitted.
    fn resources(&self, _args: &Value) -> Vec<ResourceAccess> {
        Vec::new()
    }

    /// Whether this call may be retried; by default the tool's
    /// [`ToolTraits::idempotent`]. A tool whose safety depends on its arguments (an HTTP
    /// `GET` is, a `POST` is not) refines it here.
    fn is_idempotent(&self, _args: &Value) -> bool {
        self.spec().traits.idempotent
    }

    /// Why the tool has the scheduling traits it has, when that is worth saying (an MCP tool:
    /// which annotations or overrides decided its class). Shown by `toolgraph tools`.
    fn traits_reason(&self) -> Option<String> {
        None
    }

    /// What this call may do to the world, for approvals: the class the tool declares
    /// ([`ToolTraits::approval_class`]), else derived from [`Tool::resources`] (read-only
    /// when every declared resource is read, a write otherwise). A tool whose class depends
    /// on the arguments (`http_fetch`: `GET` or not) refines it here.
    fn approval_class(&self, args: &Value) -> ApprovalClass {
        self.spec()
            .traits
            .approval_class
            .unwrap_or_else(|| ApprovalClass::from_resources(&self.resources(args)))
    }

    /// Runs one call. The arguments are shared, not copied: a retry passes the same ones,
    /// and a tool that needs them owned takes them with `Arc::unwrap_or_clone` (a copy
    /// only while another attempt may still need them). Dropping the future cancels the
    /// call; a tool with [`ToolTraits::blocking`] runs on a blocking thread and should poll
    /// [`CallContext::cancel`] instead.
    fn call<'a>(&'a self, args: Arc<Value>, ctx: CallContext) -> ToolFuture<'a>;
}

/// How a call touches a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Reads: readers of one resource run together.
    Read,
    /// Writes: ordered against every other access to the resource.
    Write,
    /// Writes something *inside* the resource (a file inside a directory): ordered against
    /// reads and writes of the resource itself, but not against other intent writes, so
    /// writes of different files in one directory still run together.
    IntentWrite,
}

/// One resource a call touches, e.g. `file:notes/a.txt` or `host:example.com`.
///
/// Keys are `kind:name`; limits in configuration apply to a whole key or to every key of a
/// kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceAccess {
    /// The resource key.
    pub key: String,
    /// Read or write.
    pub access: Access,
}

impl ResourceAccess {
    /// A read of `key`.
    pub fn read(key: impl Into<String>) -> Self {
        ResourceAccess {
            key: key.into(),
            access: Access::Read,
        }
    }

    /// A write of `key`.
    pub fn write(key: impl Into<String>) -> Self {
        ResourceAccess {
            key: key.into(),
            access: Access::Write,
        }
    }

    /// A write of something inside `key`.
    pub fn intent_write(key: impl Into<String>) -> Self {
        ResourceAccess {
            key: key.into(),
            access: Access::IntentWrite,
        }
    }
}

/// What one call of a tool costs against the executor's CPU and memory budgets.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ResourceCost {
    /// CPU units (1.0 = one core busy).
    pub cpu: f64,
    /// Memory in MiB.
    pub memory_mb: u64,
}

/// What the scheduler may assume about a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolTraits {
    /// False for an exclusive tool: it runs alone, ordered against every other call as
    /// emitted.
    pub parallel_safe: bool,
    /// At most this many calls of the tool at once (configuration can lower or raise it).
    pub max_concurrency: Option<usize>,
    /// Safe to run twice: retried on transient errors (and cacheable later).
    pub idempotent: bool,
    /// Blocks its thread or burns CPU: runs on the blocking pool.
    pub blocking: bool,
    /// Declared cost per call.
    pub cost: ResourceCost,
    /// The tool's own default timeout; 0 = none.
    pub timeout_ms: Option<u64>,
    /// What its calls may do, for approvals; `None`: derived per call from its resources
    /// (see [`Tool::approval_class`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_class: Option<ApprovalClass>,
}

impl Default for ToolTraits {
    fn default() -> Self {
        ToolTraits {
            parallel_safe: true,
            max_concurrency: None,
            idempotent: false,
            blocking: false,
            cost: ResourceCost::default(),
            timeout_ms: None,
            approval_class: None,
        }
    }
}

/// A tool's name, description, parameter schema and traits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Unique name in a [`crate::ToolSet`].
    pub name: String,
    /// What the tool does (shown to models).
    pub description: String,
    /// JSON schema of the arguments object (e.g. from `schemars::schema_for!`).
    pub parameters: Value,
    /// Scheduling traits.
    pub traits: ToolTraits,
}

impl ToolSpec {
    /// A parallel-safe, non-idempotent tool taking any object.
    pub fn new(name: impl Into<String>) -> Self {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
            traits: ToolTraits::default(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Sets the JSON schema of the arguments.
    pub fn parameters(mut self, schema: Value) -> Self {
        self.parameters = schema;
        self
    }

    /// Marks the tool exclusive: it runs alone.
    pub fn exclusive(mut self) -> Self {
        self.traits.parallel_safe = false;
        self
    }

    /// Marks the tool idempotent (retryable).
    pub fn idempotent(mut self) -> Self {
        self.traits.idempotent = true;
        self
    }

    /// Marks the tool blocking / CPU-bound.
    pub fn blocking(mut self) -> Self {
        self.traits.blocking = true;
        self
    }

    /// Caps concurrent calls of this tool.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.traits.max_concurrency = Some(n);
        self
    }

    /// Declares the cost of one call.
    pub fn cost(mut self, cpu: f64, memory_mb: u64) -> Self {
        self.traits.cost = ResourceCost { cpu, memory_mb };
        self
    }

    /// Sets the tool's default timeout.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.traits.timeout_ms = Some(ms);
        self
    }

    /// Declares what every call of the tool may do, for approvals (e.g. `ReadOnly` for a
    /// tool that touches nothing it declares).
    pub fn approval_class(mut self, class: ApprovalClass) -> Self {
        self.traits.approval_class = Some(class);
        self
    }
}

/// A cancellation signal a blocking tool can poll.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// True once the call was cancelled (timeout, fail-fast, execution dropped).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a tool knows about the call it runs.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The call's id.
    pub call_id: Arc<str>,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Raised when the call is cancelled.
    pub cancel: CancelFlag,
}

impl CallContext {
    /// A context for a call outside any executor (tests, direct use).
    pub fn detached(call_id: &str) -> Self {
        CallContext {
            call_id: Arc::from(call_id),
            attempt: 1,
            cancel: CancelFlag::new(),
        }
    }
}

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transience {
    /// A timeout, 429, 5xx, a reset connection: a retry may succeed.
    Transient,
    /// Bad arguments, not found, refused: a retry would fail the same way.
    Permanent,
}

/// A tool's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ToolError {
    /// What went wrong.
    pub message: String,
    /// Whether a retry may help.
    pub transience: Transience,
    /// The tool's hint for when to retry (e.g. from `retry-after`).
    pub retry_after_ms: Option<u64>,
}

impl ToolError {
    /// A failure that a retry will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        ToolError {
            message: message.into(),
            transience: Transience::Permanent,
            retry_after_ms: None,
        }
    }

    /// A failure that a retry may fix.
    pub fn transient(message: impl Into<String>) -> Self {
        ToolError {
            message: message.into(),
            transience: Transience::Transient,
            retry_after_ms: None,
        }
    }

    /// Adds a retry-after hint.
    pub fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// True when a retry may help.
    pub fn is_transient(&self) -> bool {
        self.transience == Transience::Transient
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

type ResourceFn = dyn Fn(&Value) -> Vec<ResourceAccess> + Send + Sync;

/// A tool made from an async closure.
pub struct FnTool<F> {
    spec: ToolSpec,
    f: F,
    resources: Option<Box<ResourceFn>>,
}

impl<F, Fut> FnTool<F>
where
    F: Fn(Value, CallContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
{
    /// A tool with `spec` whose calls run `f`.
    pub fn new(spec: ToolSpec, f: F) -> Self {
        FnTool {
            spec,
            f,
            resources: None,
        }
    }

    /// Declares the resources a call touches, derived from its arguments.
    pub fn with_resources(
        mut self,
        resources: impl Fn(&Value) -> Vec<ResourceAccess> + Send + Sync + 'static,
    ) -> Self {
        self.resources = Some(Box::new(resources));
        self
    }
}

impl<F, Fut> Tool for FnTool<F>
where
    F: Fn(Value, CallContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
{
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn resources(&self, args: &Value) -> Vec<ResourceAccess> {
        self.resources.as_ref().map(|r| r(args)).unwrap_or_default()
    }

    fn call<'a>(&'a self, args: Arc<Value>, ctx: CallContext) -> ToolFuture<'a> {
        Box::pin((self.f)(Arc::unwrap_or_clone(args), ctx))
    }
}
