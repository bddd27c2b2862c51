//! Built-in tools: `sleep`, `echo`, `fail`, `burn` (here, for demos, tests and benchmarks),
//! the sandboxed file tools (`fs`), `http_fetch` (`http`) and the allow-listed `shell`.
//!
//! Each declares a JSON schema and honest scheduling traits: `sleep` and `echo` are
//! idempotent, `fail` is not, `burn` is CPU-bound (blocking pool, one CPU unit). `sleep` and
//! `fail`'s `after_ms` wait on the precise shared timer in `timer` (≈ 0.1 ms, not tokio's
//! 1 ms tick). All four touch nothing outside the process: they declare the `read_only`
//! approval class.

pub mod fs;
pub mod http;
pub mod shell;
pub mod timer;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolgraph_core::{
    ApprovalClass, CallContext, FnTool, ToolError, ToolSet, ToolSetError, ToolSpec,
};

/// A tool set holding every built-in tool.
pub fn builtins() -> ToolSet {
    let mut set = ToolSet::new();
    // The built-ins have distinct names and valid schemas, so registering cannot fail.
    let _ = register_builtins(&mut set);
    set
}

/// Registers every built-in tool into `set`.
pub fn register_builtins(set: &mut ToolSet) -> Result<(), ToolSetError> {
    // Start the timer thread now, so the first sleep does not pay for it.
    timer::start();
    set.register(FnTool::new(sleep_spec(), sleep))?;
    set.register(FnTool::new(echo_spec(), |args, _| async move { Ok(args) }))?;
    set.register(FnTool::new(fail_spec(), fail))?;
    set.register(FnTool::new(burn_spec(), burn))?;
    Ok(())
}

fn ms_schema(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "description": description})
}

fn sleep_spec() -> ToolSpec {
    ToolSpec::new("sleep")
        .description(
            "Waits `ms` milliseconds without using a thread, then returns {\"slept_ms\": ms}.",
        )
        .parameters(json!({
            "type": "object",
            "properties": {"ms": ms_schema("How long to wait.")},
            "required": ["ms"],
            "additionalProperties": false
        }))
        .idempotent()
        .approval_class(ApprovalClass::ReadOnly)
}

async fn sleep(args: Value, _ctx: CallContext) -> Result<Value, ToolError> {
    let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
    timer::sleep(Duration::from_millis(ms)).await;
    Ok(json!({"slept_ms": ms}))
}

fn echo_spec() -> ToolSpec {
    ToolSpec::new("echo")
        .description("Returns its arguments unchanged.")
        .idempotent()
        .approval_class(ApprovalClass::ReadOnly)
}

fn fail_spec() -> ToolSpec {
    ToolSpec::new("fail")
        .description("Fails with `message` after `after_ms` milliseconds (transient when `transient` is true).")
        .parameters(json!({
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "The error message."},
                "after_ms": ms_schema("How long to wait before failing."),
                "transient": {"type": "boolean", "description": "Report the failure as transient."}
            },
            "additionalProperties": false
        }))
        .approval_class(ApprovalClass::ReadOnly)
}

async fn fail(args: Value, _ctx: CallContext) -> Result<Value, ToolError> {
    let ms = args.get("after_ms").and_then(Value::as_u64).unwrap_or(0);
    timer::sleep(Duration::from_millis(ms)).await;
    let message = args
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("failed as asked")
        .to_owned();
    if args.get("transient").and_then(Value::as_bool) == Some(true) {
        Err(ToolError::transient(message))
    } else {
        Err(ToolError::permanent(message))
    }
}

fn burn_spec() -> ToolSpec {
    ToolSpec::new("burn")
        .description("Keeps one CPU core busy for `ms` milliseconds (stops early when cancelled).")
        .parameters(json!({
            "type": "object",
            "properties": {"ms": ms_schema("How long to spin.")},
            "required": ["ms"],
            "additionalProperties": false
        }))
        .blocking()
        .idempotent()
        .cost(1.0, 0)
        .approval_class(ApprovalClass::ReadOnly)
}

async fn burn(args: Value, ctx: CallContext) -> Result<Value, ToolError> {
    let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
    let until = Instant::now() + Duration::from_millis(ms);
    let mut spins: u64 = 0;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while Instant::now() < until {
        for _ in 0..1_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        spins += 1;
        if ctx.cancel.is_cancelled() {
            return Err(ToolError::permanent("cancelled while burning"));
        }
    }
    Ok(json!({"burned_ms": ms, "spins": spins, "checksum": x % 1000}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn builtins_do_what_they_say() {
        let set = builtins();
        assert_eq!(set.names(), ["sleep", "echo", "fail", "burn"]);
        let call = |name: &str, args: Value| {
            let tool = set.get(name).map(|e| e.tool.clone());
            async move {
                match tool {
                    Some(t) => {
                        t.call(std::sync::Arc::new(args), CallContext::detached("t"))
                            .await
                    }
                    None => Err(ToolError::permanent("missing")),
                }
            }
        };
        let start = tokio::time::Instant::now();
        assert_eq!(
            call("sleep", json!({"ms": 250})).await,
            Ok(json!({"slept_ms": 250}))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(call("echo", json!({"a": [1]})).await, Ok(json!({"a": [1]})));
        let err = call("fail", json!({"message": "boom", "transient": true}))
            .await
            .expect_err("fails");
        assert!(err.is_transient());
        assert_eq!(err.message, "boom");
        assert!(
            set.get("burn")
                .is_some_and(|e| e.tool.spec().traits.blocking)
        );
    }

    #[test]
    fn schemas_reject_bad_arguments() {
        let set = builtins();
        let sleep = set.get("sleep").expect("sleep");
        assert!(sleep.schema_violations(&json!({"ms": 5})).is_empty());
        assert!(!sleep.schema_violations(&json!({"ms": -1})).is_empty());
        assert!(!sleep.schema_violations(&json!({})).is_empty());
        assert!(
            !sleep
                .schema_violations(&json!({"ms": 1, "extra": true}))
                .is_empty()
        );
    }

    #[test]
    fn burn_stops_when_cancelled() {
        let ctx = CallContext::detached("b");
        ctx.cancel.cancel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let started = Instant::now();
        let r = rt.block_on(burn(json!({"ms": 10_000}), ctx));
        assert!(r.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
