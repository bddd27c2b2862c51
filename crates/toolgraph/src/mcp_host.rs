//! [`RuntimeHost`]: the [`Runtime`] as what an MCP server serves (`toolgraph mcp-serve`,
//! through toolgraph-mcp's `serve`): its tools with their annotation hints, a direct call
//! of one tool, and `run_batch` — a batch in any shape `toolgraph run` accepts, parsed by
//! core's parser and run as one execution.
//!
//! Every call, direct or batched, is an execution of the runtime: limits, timeouts, the
//! cache and the store apply as they do to `toolgraph run`, and each is recorded. Each
//! execution runs in a task of its own, tracked, so a server that stops can cancel what
//! runs and wait for its records ([`RuntimeHost::finish`]). A rejected batch is an error
//! answer naming the call and the problem (core's `InputError` text), and touches neither
//! the tools nor the store. Nothing here prints.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;
use toolgraph_core::{
    ApprovalClass, CallStatus, InputError, ParallelExecutionResult, ToolCall, ToolTraits,
};
use toolgraph_engine::CancellationToken;
use toolgraph_mcp::Hints;
use toolgraph_mcp::serve::{HostAnswer, RUN_BATCH, ServedTool, ToolHost};

use crate::{ExecuteOptions, Runtime};

/// How much of one call's output the text answer of `run_batch` shows (the structured
/// answer has all of it).
const TEXT_OUTPUT_CHARS: usize = 2000;

/// The runtime as an MCP server's [`ToolHost`]. Cheap to clone.
#[derive(Clone)]
pub struct RuntimeHost {
    runtime: Runtime,
    tools: Arc<Vec<ServedTool>>,
    running: TaskTracker,
}

impl RuntimeHost {
    /// Serves `runtime`'s tools (the list is taken now: tools do not change while it runs).
    pub fn new(runtime: Runtime) -> RuntimeHost {
        let tools = Arc::new(served_tools(&runtime));
        RuntimeHost {
            runtime,
            tools,
            running: TaskTracker::new(),
        }
    }

    /// Waits — at most `wait` — for the executions still running to end and be recorded
    /// (cancel them first), and refuses none: call it once the server has stopped.
    /// Returns false when some were still running when `wait` ran out.
    pub async fn finish(&self, wait: Duration) -> bool {
        self.running.close();
        tokio::time::timeout(wait, self.running.wait())
            .await
            .is_ok()
    }

    /// Runs `calls` as one execution in a tracked task.
    async fn execute(
        &self,
        calls: Vec<ToolCall>,
        cancel: CancellationToken,
    ) -> Result<crate::Execution, String> {
        let plan = self.runtime.plan(calls).map_err(|e| rejected(&e))?;
        let runtime = self.runtime.clone();
        let options = ExecuteOptions {
            cancel,
            ..ExecuteOptions::default()
        };
        let task = self
            .running
            .spawn(async move { runtime.execute(&plan, options).await });
        match task.await {
            Ok(Ok(execution)) => Ok(execution),
            Ok(Err(e)) => Err(format!("nothing ran: {}", toolgraph_core::error_chain(&e))),
            Err(e) => Err(format!("the execution failed: {e}")),
        }
    }
}

/// A rejected batch in words: every problem, naming its call.
fn rejected(e: &InputError) -> String {
    format!("{e}\nnothing ran.")
}

impl ToolHost for RuntimeHost {
    fn tools(&self) -> Vec<ServedTool> {
        (*self.tools).clone()
    }

    fn call(
        &self,
        name: String,
        arguments: Value,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, HostAnswer> {
        let host = self.clone();
        Box::pin(async move {
            let call = ToolCall::new("call", name.clone(), arguments);
            match host.execute(vec![call], cancel).await {
                Err(text) => HostAnswer::error(format!("{name}: {text}")),
                Ok(execution) => {
                    let Some(result) = execution.result.results.into_iter().next() else {
                        return HostAnswer::error(format!("{name}: no result"));
                    };
                    let structured = result.output().filter(|v| v.is_object()).cloned();
                    HostAnswer {
                        text: result.content_text(),
                        structured,
                        is_error: !result.is_ok(),
                    }
                }
            }
        })
    }

    fn run_batch(
        &self,
        tool_calls: Value,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, HostAnswer> {
        let host = self.clone();
        Box::pin(async move {
            let calls = match toolgraph_core::parse_tool_calls(&tool_calls) {
                Ok(calls) => calls,
                Err(e) => return HostAnswer::error(format!("{RUN_BATCH}: {}", rejected(&e))),
            };
            if calls.is_empty() {
                return HostAnswer::error(format!(
                    "{RUN_BATCH}: `tool_calls` holds no call: nothing ran."
                ));
            }
            match host.execute(calls, cancel).await {
                Err(text) => HostAnswer::error(format!("{RUN_BATCH}: {text}")),
                Ok(execution) => batch_answer(&execution.result, execution.recording_error),
            }
        })
    }
}

/// `run_batch`'s answer: every call's result in call order and the figures, as a value
/// and as text. An error answer when some call did not succeed.
pub fn batch_answer(
    result: &ParallelExecutionResult,
    recording_error: Option<String>,
) -> HostAnswer {
    let id = result.metadata.execution_id.clone();
    let structured = json!({
        "execution_id": id,
        "success": result.success,
        "makespan_ms": result.total_time_ms,
        "sequential_ms": result.sequential_time_estimate_ms,
        "speedup": result.speedup,
        "critical_path_ms": result.critical_path_ms,
        "results": result.results,
        "errors": result.errors,
        "recording_error": recording_error,
    });
    let ok = result.results.iter().filter(|r| r.is_ok()).count();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}{} call(s), {ok} succeeded; makespan {:.1} ms, sequential {:.1} ms, speedup {:.2}x",
        id.as_deref()
            .map_or_else(String::new, |id| format!("execution {id}: ")),
        result.results.len(),
        result.total_time_ms,
        result.sequential_time_estimate_ms,
        result.speedup,
    );
    for (i, call) in result.results.iter().enumerate() {
        let mut content = call.content_text();
        if content.chars().count() > TEXT_OUTPUT_CHARS {
            content = content.chars().take(TEXT_OUTPUT_CHARS).collect::<String>() + "…";
        }
        let _ = writeln!(
            text,
            "{}. {} ({}): {}, {:.1} ms: {content}",
            i + 1,
            call.id,
            call.name,
            call.status.as_str(),
            call.duration_ms,
        );
    }
    if let Some(e) = &recording_error {
        let _ = writeln!(text, "warning: recording the execution failed: {e}");
    }
    HostAnswer {
        text,
        structured: Some(structured),
        is_error: result.results.iter().any(|r| r.status != CallStatus::Ok),
    }
}

/// The runtime's tools as MCP clients see them: an MCP server's tool with the hints its
/// server sent, a built-in with [`builtin_hints`].
fn served_tools(runtime: &Runtime) -> Vec<ServedTool> {
    let proxied: std::collections::HashMap<String, Hints> = runtime
        .mcp_servers()
        .iter()
        .flat_map(|server| server.tools())
        .map(|tool| {
            let name = toolgraph_core::Tool::spec(&tool).name.clone();
            (name, tool.hints())
        })
        .collect();
    runtime
        .executor()
        .tools()
        .entries()
        .iter()
        .map(|entry| {
            let spec = entry.tool.spec();
            let hints = proxied
                .get(&spec.name)
                .copied()
                .unwrap_or_else(|| builtin_hints(&spec.name, &spec.traits));
            ServedTool {
                name: spec.name.clone(),
                description: spec.description.clone(),
                input_schema: spec.parameters.clone(),
                hints,
            }
        })
        .collect()
}

/// The annotation hints of a tool that is not an MCP server's: `idempotentHint` from its
/// traits; read-only, destructive and open-world from what the built-in tools do (an
/// embedder's tool of another name says what its declared approval class says).
pub fn builtin_hints(name: &str, traits: &ToolTraits) -> Hints {
    let (read_only, destructive, open_world) = match name {
        // Compute or read inside the file root: change nothing, reach nothing outside.
        "sleep" | "echo" | "fail" | "burn" | "file_read" | "list_dir" | "file_search" => {
            (Some(true), Some(false), Some(false))
        }
        // Overwrites a file inside the root.
        "file_write" => (Some(false), Some(true), Some(false)),
        // Any URL (a POST may change something) / any program.
        "http_fetch" | "shell" => (Some(false), Some(true), Some(true)),
        _ => match traits.approval_class {
            Some(ApprovalClass::ReadOnly) => (Some(true), Some(false), None),
            Some(ApprovalClass::Destructive) => (Some(false), Some(true), None),
            Some(ApprovalClass::Write | ApprovalClass::NetworkWrite | ApprovalClass::Shell) => {
                (Some(false), None, None)
            }
            None => (None, None, None),
        },
    };
    Hints {
        read_only,
        destructive,
        idempotent: Some(traits.idempotent),
        open_world,
    }
}

/// How long a stopping server waits for the executions it cancelled to be recorded.
pub const FINISH_WAIT: Duration = Duration::from_secs(10);
