//! The engine's `tracing` spans, seen by a real subscriber: one `execution` span, a `call`
//! span per call under it (GenAI attributes, status, attempts, queue and run time, the limit
//! it waited on), an `attempt` span per attempt under its call.
//!
//! One test in this binary: tracing caches each callsite's interest process-wide, and a
//! test running at once with no subscriber can race a scoped subscriber's registration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use toolgraph_core::{ParallelExecutorConfig, RetryPolicy, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::ParallelExecutor;
use toolgraph_test_support::{Probe, ScriptedTool};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One span as the collector saw it.
#[derive(Debug, Clone)]
struct Seen {
    name: &'static str,
    parent: Option<u64>,
    fields: HashMap<String, String>,
}

/// Keeps every span with its parent and its fields (as text), by id.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(u64, Seen)>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Collector
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let seen = Seen {
            name: attrs.metadata().name(),
            parent,
            fields,
        };
        self.0.lock().expect("lock").push((id.into_u64(), seen));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().expect("lock");
        if let Some((_, seen)) = spans.iter_mut().find(|(i, _)| *i == id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
}

fn executor(config: ParallelExecutorConfig) -> ParallelExecutor {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", &probe)).expect("t");
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("idem").idempotent(),
            &probe,
        ))
        .expect("idem");
    ParallelExecutor::new(tools, config).expect("config")
}

#[tokio::test]
async fn every_call_has_a_span_under_the_execution_and_every_attempt_one_under_its_call() {
    let collector = Collector::default();
    let subscriber = tracing_subscriber::registry().with(collector.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let config = ParallelExecutorConfig {
        max_parallel_calls: 1,
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay_ms: 1,
            max_delay_ms: 5,
            jitter: false,
        },
        ..ParallelExecutorConfig::default()
    };
    let calls = vec![
        ToolCall::new("a", "t", json!({"ms": 5})),
        ToolCall::new("b", "t", json!({"x": "${a.id}"})),
        ToolCall::new("broken", "t", json!({"fail": "no such thing"})),
        ToolCall::new("flaky", "idem", json!({"fail_times": 1})),
        ToolCall::new("after", "t", json!({"x": "${broken.id}"})),
    ];
    let result = executor(config)
        .execute_parallel(calls)
        .await
        .expect("valid");
    assert!(!result.success);

    let spans = collector.0.lock().expect("lock").clone();
    let executions: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.name == "execution")
        .collect();
    assert_eq!(executions.len(), 1, "{spans:#?}");
    let (execution, e) = executions[0];
    assert_eq!(e.fields["calls"], "5");
    assert_eq!(e.fields["success"], "false");
    assert_eq!(e.fields["otel.status_code"], "ERROR");

    let call = |id: &str| {
        spans
            .iter()
            .find(|(_, s)| {
                s.name == "call"
                    && s.fields.get("gen_ai.tool.call.id").map(String::as_str) == Some(id)
            })
            .unwrap_or_else(|| panic!("no span for call {id}: {spans:#?}"))
    };
    for id in ["a", "b", "broken", "flaky", "after"] {
        let (_, s) = call(id);
        assert_eq!(s.parent, Some(*execution), "call {id} under the execution");
        assert_eq!(s.fields["gen_ai.operation.name"], "execute_tool");
    }
    let (a, a_span) = call("a");
    assert_eq!(a_span.fields["gen_ai.tool.name"], "t");
    assert_eq!(a_span.fields["otel.name"], "execute_tool t");
    assert_eq!(a_span.fields["status"], "ok");
    assert_eq!(a_span.fields["attempts"], "1");
    assert!(a_span.fields.contains_key("run_ms"), "{a_span:?}");
    assert!(!a_span.fields.contains_key("otel.status_code"));

    let (_, broken) = call("broken");
    assert_eq!(broken.fields["status"], "error");
    assert_eq!(broken.fields["otel.status_code"], "ERROR");
    assert_eq!(broken.fields["error.type"], "permanent");
    assert_eq!(broken.fields["otel.status_description"], "no such thing");

    let (flaky, flaky_span) = call("flaky");
    assert_eq!(flaky_span.fields["status"], "ok");
    assert_eq!(flaky_span.fields["attempts"], "2");

    // The skipped dependant never ran: its span says so, with no attempt.
    let (after, after_span) = call("after");
    assert_eq!(after_span.fields["status"], "skipped");

    // One call at a time: the calls that were ready while another ran waited on it.
    let waited: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.name == "call")
        .filter_map(|(_, s)| s.fields.get("limit"))
        .collect();
    assert!(waited.iter().any(|l| *l == "global"), "{spans:#?}");

    let attempts_of = |call: u64| -> Vec<&Seen> {
        spans
            .iter()
            .filter(|(_, s)| s.name == "attempt" && s.parent == Some(call))
            .map(|(_, s)| s)
            .collect()
    };
    assert_eq!(attempts_of(*a).len(), 1);
    assert_eq!(attempts_of(*a)[0].fields["outcome"], "ok");
    let flaky_attempts = attempts_of(*flaky);
    assert_eq!(flaky_attempts.len(), 2, "{spans:#?}");
    assert_eq!(flaky_attempts[0].fields["number"], "1");
    assert_eq!(flaky_attempts[0].fields["outcome"], "error");
    assert_eq!(flaky_attempts[0].fields["error.kind"], "transient");
    assert_eq!(flaky_attempts[1].fields["outcome"], "ok");
    assert!(attempts_of(*after).is_empty());
    assert_eq!(
        spans.iter().filter(|(_, s)| s.name == "attempt").count(),
        5,
        "a, b, broken, and flaky twice"
    );
}
