//! Planning through the public API: edges and their reasons, hazards, exclusivity, levels,
//! and every kind of bad input rejected with the call ids named.

use std::sync::Arc;

use serde_json::json;
use toolgraph_core::{ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::{ParallelExecutor, Plan};
use toolgraph_test_support::{Probe, ScriptedTool};

fn executor_with(config: ParallelExecutorConfig) -> ParallelExecutor {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", &probe)).expect("t");
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("shell").exclusive(),
            &probe,
        ))
        .expect("shell");
    let strict = ToolSpec::new("strict").parameters(json!({
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"]
    }));
    tools
        .register(ScriptedTool::with_spec(strict, &probe))
        .expect("strict");
    ParallelExecutor::new(tools, config).expect("valid config")
}

fn executor() -> ParallelExecutor {
    executor_with(ParallelExecutorConfig::default())
}

fn call(id: &str, args: serde_json::Value) -> ToolCall {
    ToolCall::new(id, "t", args)
}

fn edges(plan: &Plan) -> Vec<(String, String, String)> {
    let id = |i: usize| plan.calls()[i].call.id.clone();
    plan.edges()
        .iter()
        .map(|e| (id(e.from), id(e.to), e.reason.to_string()))
        .collect()
}

fn edge(from: &str, to: &str, reason: &str) -> (String, String, String) {
    (from.into(), to.into(), reason.into())
}

#[test]
fn depends_on_and_references_become_edges_with_reasons() {
    let plan = executor()
        .plan(vec![
            call("a", json!({})),
            call("b", json!({"x": "${a.items.0}"})),
            call("c", json!({})).depends_on(["a", "b"]),
        ])
        .expect("valid");
    assert_eq!(
        edges(&plan),
        [
            edge("a", "b", "reference ${a.items.0}"),
            edge("a", "c", "depends_on"),
            edge("b", "c", "depends_on")
        ]
    );
    assert_eq!(plan.level_groups(), [vec![0], vec![1], vec![2]]);
}

#[test]
fn a_pair_gets_one_edge_and_data_reasons_win() {
    let plan = executor()
        .plan(vec![
            call("a", json!({"writes": ["file:x"]})),
            call(
                "b",
                json!({"v": "${a}", "w": "${a.k}", "reads": ["file:x"]}),
            )
            .depends_on(["a"]),
        ])
        .expect("valid");
    assert_eq!(edges(&plan), [edge("a", "b", "depends_on")]);
}

#[test]
fn resource_hazards_are_ordered_as_emitted_and_reads_stay_parallel() {
    let plan = executor()
        .plan(vec![
            call("w1", json!({"writes": ["file:a"]})),
            call("r1", json!({"reads": ["file:a"]})),
            call("r2", json!({"reads": ["file:a"]})),
            call("w2", json!({"writes": ["file:a"]})),
            call("w3", json!({"writes": ["file:a"]})),
            call("other", json!({"writes": ["file:b"]})),
        ])
        .expect("valid");
    assert_eq!(
        edges(&plan),
        [
            edge("w1", "r1", "read-after-write on file:a"),
            edge("w1", "r2", "read-after-write on file:a"),
            edge("r1", "w2", "write-after-read on file:a"),
            edge("r2", "w2", "write-after-read on file:a"),
            edge("w2", "w3", "write-after-write on file:a"),
        ]
    );
    // r1 and r2 share a level; the unrelated write runs at once.
    assert_eq!(
        plan.level_groups(),
        [vec![0, 5], vec![1, 2], vec![3], vec![4]]
    );
}

#[test]
fn a_call_reading_and_writing_one_resource_counts_as_a_writer() {
    let plan = executor()
        .plan(vec![
            call("r", json!({"reads": ["k:v"]})),
            call("rw", json!({"reads": ["k:v"], "writes": ["k:v"]})),
        ])
        .expect("valid");
    assert_eq!(edges(&plan), [edge("r", "rw", "write-after-read on k:v")]);
}

#[test]
fn exclusive_tools_are_ordered_against_every_call() {
    let plan = executor()
        .plan(vec![
            call("a", json!({})),
            call("b", json!({})),
            ToolCall::new("sh", "shell", json!({})),
            call("c", json!({})),
            call("d", json!({})),
        ])
        .expect("valid");
    assert_eq!(
        edges(&plan),
        [
            edge("a", "sh", "exclusive: tool shell runs alone"),
            edge("b", "sh", "exclusive: tool shell runs alone"),
            edge("sh", "c", "exclusive: tool shell runs alone"),
            edge("sh", "d", "exclusive: tool shell runs alone"),
        ]
    );
    assert_eq!(plan.level_groups(), [vec![0, 1], vec![2], vec![3, 4]]);
}

#[test]
fn a_resource_named_by_a_reference_makes_the_call_exclusive() {
    let plan = executor()
        .plan(vec![
            call("a", json!({})),
            call("b", json!({"reads": ["file:x"]})),
            call("w", json!({"writes": ["${a.path}"]})),
        ])
        .expect("valid");
    let reasons: Vec<String> = edges(&plan)
        .into_iter()
        .filter(|e| e.1 == "w")
        .map(|e| e.2)
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("reference ${a.path}")));
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown until its references resolve")),
        "{reasons:?}"
    );
}

#[test]
fn hazards_are_ignored_when_thread_safety_validation_is_off() {
    let config = ParallelExecutorConfig {
        validate_thread_safety: false,
        ..Default::default()
    };
    let plan = executor_with(config)
        .plan(vec![
            call("w", json!({"writes": ["file:a"]})),
            call("r", json!({"reads": ["file:a"]})),
            ToolCall::new("sh", "shell", json!({})),
        ])
        .expect("valid");
    assert!(plan.edges().is_empty());
}

#[test]
fn every_problem_is_reported_with_its_call_id() {
    let err = executor()
        .plan(vec![
            call("a", json!({"x": "${ghost.out}"})),
            call("b", json!({})).depends_on(["nobody"]),
            ToolCall::new("c", "no_such_tool", json!({})),
            ToolCall::new("d", "strict", json!({"n": "seven"})),
            ToolCall::new("e", "strict", json!({})),
            call("f", json!({"x": "${f}"})),
            call("g", json!([1, 2])),
            call("h", json!({"x": "${unterminated"})),
            call("a", json!({})),
        ])
        .expect_err("rejected");
    let text = err.to_string();
    for expected in [
        "call a: reference ${ghost.out} at /x names no call in this batch",
        "call b: depends_on names unknown call \"nobody\"",
        "call c: unknown tool \"no_such_tool\" (known: t, shell, strict)",
        "call d: arguments break the schema of \"strict\" at /n",
        "call e: arguments break the schema of \"strict\"",
        "call f: ${f} references the call itself",
        "call g: arguments must be a JSON object, got an array",
        "call h: at /x: unterminated reference",
        "call a: duplicate call id",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn schema_checks_skip_values_that_references_will_bring() {
    let plan = executor().plan(vec![
        call("a", json!({})),
        ToolCall::new("d", "strict", json!({"n": "${a.count}"})),
    ]);
    assert!(plan.is_ok(), "{:?}", plan.err());
}

#[test]
fn cycles_are_rejected_with_the_ids_on_them() {
    let err = executor()
        .plan(vec![
            call("a", json!({})).depends_on(["c"]),
            call("b", json!({"x": "${a}"})),
            call("c", json!({})).depends_on(["b"]),
            call("free", json!({})),
            call("downstream", json!({})).depends_on(["a"]),
            call("p", json!({})).depends_on(["q"]),
            call("q", json!({})).depends_on(["p"]),
        ])
        .expect_err("cyclic");
    assert_eq!(err.problems.len(), 2, "{err}");
    let first = &err.problems[0].message;
    assert!(first.starts_with("dependency cycle:"), "{first}");
    for id in ["a", "b", "c"] {
        assert!(
            first.contains(&format!("{id} →")) || first.ends_with(id),
            "{first}"
        );
    }
    assert!(first.contains("reference ${a}"), "{first}");
    assert!(
        !first.contains("free") && !first.contains("downstream"),
        "{first}"
    );
    let second = &err.problems[1].message;
    assert!(second.contains("p →") && second.contains("q →"), "{second}");
}

#[test]
fn seed_api_levels_and_independence() {
    let ex = executor();
    let calls = vec![
        call("a", json!({})),
        call("b", json!({})),
        call("c", json!({})),
        call("d", json!({"x": "${a}"})),
        call("e", json!({})).depends_on(["b"]),
        call("f", json!({})).depends_on(["d", "e"]),
    ];
    assert_eq!(
        ex.topological_sort(&calls).expect("ok"),
        [vec![0, 1, 2], vec![3, 4], vec![5]]
    );
    assert_eq!(ex.identify_independent_calls(&calls).expect("ok"), [2]);
    assert_eq!(
        ex.identify_dependent_calls(&calls).expect("ok"),
        [0, 1, 3, 4, 5]
    );
    let graph = ex.build_dependency_graph(&calls).expect("ok");
    assert_eq!(
        graph.levels,
        [vec!["a", "b", "c"], vec!["d", "e"], vec!["f"]]
    );
    assert_eq!(graph.edges.len(), 4);
    assert_eq!(graph.edges[0].reason, "reference ${a}");
}

#[test]
fn large_batches_plan_with_linear_edge_counts() {
    // 20,000 readers and writers of 10 resources: a pairwise scan would find ~10^8 pairs;
    // the planner adds at most a few edges per call.
    let calls: Vec<ToolCall> = (0..20_000)
        .map(|i| {
            let key = format!("r:{}", i % 10);
            let args = if i % 7 == 0 {
                json!({"writes": [key]})
            } else {
                json!({"reads": [key]})
            };
            call(&format!("c{i}"), args)
        })
        .collect();
    let plan = executor().plan(calls).expect("valid");
    assert!(
        plan.edges().len() < 3 * 20_000,
        "{} edges",
        plan.edges().len()
    );
    let _ = Arc::new(plan);
}

#[test]
fn intent_writes_run_together_but_order_against_reads_and_writes_of_the_container() {
    use toolgraph_core::{FnTool, ResourceAccess};
    let mut tools = ToolSet::new();
    let touch = FnTool::new(ToolSpec::new("touch"), |_, _| async {
        Ok(serde_json::Value::Null)
    })
    .with_resources(|args| {
        let key = |k: &str| {
            args[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let mut out: Vec<ResourceAccess> =
            key("reads").into_iter().map(ResourceAccess::read).collect();
        out.extend(key("inside").into_iter().map(ResourceAccess::intent_write));
        out.extend(key("writes").into_iter().map(ResourceAccess::write));
        out
    });
    tools.register(touch).expect("touch");
    let ex = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("config");
    let t = |id: &str, args| ToolCall::new(id, "touch", args);
    let plan = ex
        .plan(vec![
            t("list1", json!({"reads": ["dir:a"]})),
            t("put_x", json!({"inside": ["dir:a"]})),
            t("put_y", json!({"inside": ["dir:a"]})),
            t("list2", json!({"reads": ["dir:a"]})),
            t("both", json!({"reads": ["dir:a"], "inside": ["dir:a"]})),
        ])
        .expect("valid");
    assert_eq!(
        edges(&plan),
        [
            edge("list1", "put_x", "write-after-read on dir:a"),
            edge("list1", "put_y", "write-after-read on dir:a"),
            edge("put_x", "list2", "read-after-write on dir:a"),
            edge("put_y", "list2", "read-after-write on dir:a"),
            edge("list2", "both", "write-after-read on dir:a"),
        ]
    );
}

/// `n` readers of `key`, then `n` writers inside it.
fn readers_then_writers_inside(n: usize, key: &str) -> Vec<ToolCall> {
    let readers = (0..n).map(|i| call(&format!("list{i}"), json!({"reads": [key]})));
    let writers = (0..n).map(|i| call(&format!("put{i}"), json!({"inside": [key]})));
    readers.chain(writers).collect()
}

#[test]
fn two_large_groups_of_accesses_meet_at_one_join_not_an_edge_per_pair() {
    // 2,000 readers of a folder, then 2,000 writes into it: every write waits for every read
    // (4,000,000 pairs), through one join: 4,000 edges.
    let n = 2_000;
    let plan = executor()
        .plan(readers_then_writers_inside(n, "dir:a"))
        .expect("valid");
    assert_eq!(plan.len(), 2 * n);
    assert_eq!(plan.joins(), ["dir:a"]);
    assert_eq!(plan.node_count(), 2 * n + 1);
    assert_eq!(plan.edges().len(), 2 * n);
    assert!(
        plan.edges()
            .iter()
            .all(|e| (e.from == 2 * n) != (e.to == 2 * n))
    );
    assert!(
        plan.edges()
            .iter()
            .all(|e| e.reason.to_string() == "write-after-read on dir:a")
    );
    // The order is the same as with an edge per pair.
    let pairs: Vec<(usize, usize)> = plan.ordered_pairs().map(|(f, t, _)| (f, t)).collect();
    assert_eq!(pairs.len(), n * n);
    assert!(pairs.iter().all(|&(f, t)| f < n && t >= n));
    // A join adds no level: the writers are one level after the readers.
    assert_eq!(plan.level_groups().len(), 2);
    assert!(plan.levels()[..n].iter().all(|&l| l == 0));
    assert!(plan.levels()[n..].iter().all(|&l| l == 1));
    assert_eq!(plan.independent(), Vec::<usize>::new());
    assert_eq!(plan.dependent().len(), 2 * n);
}

#[test]
fn groups_alternate_through_joins_and_a_write_follows_the_whole_group() {
    let mut calls = readers_then_writers_inside(5, "dir:a");
    calls.extend((0..5).map(|i| call(&format!("again{i}"), json!({"reads": ["dir:a"]}))));
    calls.push(call("rm", json!({"writes": ["dir:a"]})));
    let plan = executor().plan(calls).expect("valid");
    // Readers → join → writers inside → join → readers → the write (an edge from each reader:
    // one write after a group is linear already).
    assert_eq!(plan.joins(), ["dir:a", "dir:a"]);
    assert_eq!(plan.edges().len(), 5 + 5 + 5 + 5 + 5);
    assert_eq!(
        plan.level_groups()
            .iter()
            .map(|level| level.len())
            .collect::<Vec<_>>(),
        [5, 5, 5, 1]
    );
    let reasons: Vec<String> = plan
        .edges()
        .iter()
        .filter(|e| e.to == plan.len() + 1)
        .map(|e| e.reason.to_string())
        .collect();
    assert_eq!(reasons, vec!["read-after-write on dir:a"; 5]);
    let pairs = plan.ordered_pairs().count();
    assert_eq!(pairs, 25 + 25 + 5);
    // Groups below the threshold keep an edge per pair (the join would not pay for itself).
    let small = executor()
        .plan(readers_then_writers_inside(
            toolgraph_engine::plan::JOIN_MIN_GROUP - 1,
            "dir:a",
        ))
        .expect("valid");
    assert!(small.joins().is_empty());
    assert_eq!(small.edges().len(), 9);
}

#[test]
fn a_cycle_through_a_join_names_the_calls_on_it() {
    let mut calls = readers_then_writers_inside(4, "dir:a");
    calls[0] = call("list0", json!({"reads": ["dir:a"]})).depends_on(["put2"]);
    let problems = executor().plan(calls).expect_err("a cycle").problems;
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].contains(
            "dependency cycle: list0 → put2 → list0 (list0 → put2: write-after-read on dir:a, \
             through the join of the earlier group; put2 → list0: depends_on)"
        ),
        "{}",
        text[0]
    );
}

#[test]
fn the_dependency_graph_names_a_join_as_a_node_of_its_own() {
    let graph = executor()
        .build_dependency_graph(&readers_then_writers_inside(4, "dir:a"))
        .expect("valid");
    assert_eq!(graph.edges.len(), 8);
    assert_eq!(graph.edges[0].from, "list0");
    assert_eq!(
        graph.edges[0].to,
        toolgraph_engine::GraphNode::Join {
            join: 0,
            resource: "dir:a".into()
        }
    );
    let json = serde_json::to_value(&graph.edges[4]).expect("serializes");
    assert_eq!(
        json,
        json!({"from": {"join": 0, "resource": "dir:a"}, "to": "put0", "reason": "write-after-read on dir:a"})
    );
    assert_eq!(graph.levels[1], ["put0", "put1", "put2", "put3"]);
}
