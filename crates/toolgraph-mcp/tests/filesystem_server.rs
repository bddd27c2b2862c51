//! Through `@modelcontextprotocol/server-filesystem` over stdio (root: a temporary
//! directory): the operator's resource mappings order a write and a read of one file by the
//! hazard rules, the server's own annotations give the documented classes, and `register`
//! namespaces tools and adds plain aliases only when unambiguous.

mod common;

use serde_json::json;
use toolgraph_core::{
    Access, CallStatus, ErrorKind, ParallelExecutorConfig, ResourceAccess, Tool, ToolCall, ToolSet,
};
use toolgraph_mcp::{
    McpServer, McpToolOverride, ResourceMapping, SafetyClass, connect_all, register,
};

fn maps(arg: &str, access: Access, kind: &str) -> McpToolOverride {
    McpToolOverride {
        resources: vec![ResourceMapping {
            arg: arg.into(),
            access,
            kind: kind.into(),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_server_write_then_read_of_one_file_is_ordered_by_its_mapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical root");
    let Some(mut config) = common::filesystem("fs", &root) else {
        return;
    };
    config
        .tools
        .insert("write_file".into(), maps("path", Access::Write, "file"));
    config
        .tools
        .insert("read_text_file".into(), maps("path", Access::Read, "file"));
    let servers = connect_all(&[config]).await.expect("the server starts");
    let tools = servers[0].tools();
    let write = tools
        .iter()
        .find(|t| t.remote_name() == "write_file")
        .expect("listed");
    assert_eq!(write.class(), SafetyClass::Writer, "{}", write.why());
    assert!(write.spec().traits.parallel_safe);
    assert!(
        write
            .why()
            .starts_with("operator resource mapping: path → write file"),
        "{}",
        write.why()
    );

    let mut set = ToolSet::new();
    register(&mut set, &servers).expect("registers");
    let executor = common::executor(set, ParallelExecutorConfig::default());
    let path = root.join("notes.txt").to_string_lossy().into_owned();
    let other = root.join("other.txt").to_string_lossy().into_owned();
    let calls = vec![
        ToolCall::new(
            "w",
            "fs.write_file",
            json!({"path": path, "content": "hello from toolgraph"}),
        ),
        ToolCall::new("r", "fs.read_text_file", json!({"path": path})),
        ToolCall::new(
            "w2",
            "fs.write_file",
            json!({"path": other, "content": "elsewhere"}),
        ),
        ToolCall::new("dirs", "fs.list_allowed_directories", json!({})),
    ];
    let graph = executor
        .build_dependency_graph(&calls)
        .expect("valid batch");
    let expected = format!("read-after-write on file:{path}");
    assert!(
        graph
            .edges
            .iter()
            .any(|e| e.from == "w" && e.to == "r" && e.reason == expected),
        "{:?}",
        graph.edges
    );
    assert!(
        !graph.edges.iter().any(|e| e.from == "w2" || e.to == "w2"),
        "a write of another file stays parallel: {:?}",
        graph.edges
    );
    assert!(graph.independent.contains(&"dirs".to_string()));

    let result = common::run(&executor, calls).await;
    assert!(result.success, "{:?}", result.errors);
    let read = result.get("r").expect("present");
    assert_eq!(
        read.output(),
        Some(&json!({"content": "hello from toolgraph"}))
    );
    let (_, w_end) = common::interval(&result, "w");
    let (r_start, _) = common::interval(&result, "r");
    assert!(w_end <= r_start, "the read starts after the write ended");
    servers[0].close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_server_annotations_make_write_file_exclusive_without_a_mapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical root");
    let Some(config) = common::filesystem("fs", &root) else {
        return;
    };
    let server = McpServer::connect(&config)
        .await
        .expect("the server starts");
    let tools = server.tools();
    for t in &tools {
        println!(
            "{:<32} {:<10} retry={:<5} {}",
            t.spec().name,
            t.class().as_str(),
            t.spec().traits.idempotent,
            t.why()
        );
    }
    let find = |name: &str| {
        tools
            .iter()
            .find(|t| t.remote_name() == name)
            .unwrap_or_else(|| panic!("{name} listed"))
    };
    let write = find("write_file");
    assert_eq!(write.class(), SafetyClass::Exclusive);
    assert!(!write.spec().traits.parallel_safe && !write.spec().traits.idempotent);
    assert_eq!(
        write.why(),
        "readOnlyHint=false, destructiveHint=true; idempotentHint ignored: exclusive; openWorldHint=false"
    );
    let read = find("read_text_file");
    assert_eq!(read.class(), SafetyClass::Reader);
    assert!(read.spec().traits.idempotent, "read-only, so retryable");
    assert_eq!(
        read.why(),
        "readOnlyHint=true; retryable: read-only; openWorldHint=false"
    );
    let mkdir = find("create_directory");
    assert_eq!(mkdir.class(), SafetyClass::Writer);
    assert!(mkdir.spec().traits.idempotent);
    assert_eq!(
        mkdir.resources(&json!({"path": "x"})),
        [ResourceAccess::write("mcpserver:fs")]
    );

    let mut set = ToolSet::new();
    register(&mut set, std::slice::from_ref(&server)).expect("registers");
    let executor = common::executor(set, ParallelExecutorConfig::default());
    let path = root.join("a.txt").to_string_lossy().into_owned();
    let calls = vec![
        ToolCall::new("list", "fs.list_directory", json!({"path": root})),
        ToolCall::new("w", "write_file", json!({"path": path, "content": "x"})),
        ToolCall::new(
            "missing",
            "read_text_file",
            json!({"path": root.join("nope.txt")}),
        ),
    ];
    let graph = executor
        .build_dependency_graph(&calls)
        .expect("valid batch");
    assert!(
        graph
            .edges
            .iter()
            .any(|e| e.to == "w" && e.reason == "exclusive: tool fs.write_file runs alone"),
        "{:?}",
        graph.edges
    );
    let result = common::run(&executor, calls).await;
    let missing = result.get("missing").expect("present");
    assert_eq!(missing.status, CallStatus::Error);
    let error = missing.error.as_ref().expect("an error");
    assert_eq!(
        error.kind,
        ErrorKind::Permanent,
        "an isError result is a tool error"
    );
    assert!(error.message.contains("nope.txt"), "{}", error.message);
    assert_eq!(missing.attempts, 1, "permanent: not retried");
    assert!(result.get("w").is_some_and(|c| c.is_ok()));
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_servers_register_namespaced_with_aliases_only_when_unambiguous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical root");
    let (Some(fs), Some(fs2), Some(mem)) = (
        common::filesystem("fs", &root),
        common::filesystem("fs2", &root),
        common::memory("mem", &root.join("memory.jsonl")),
    ) else {
        return;
    };

    let one = connect_all(&[fs.clone(), mem.clone()])
        .await
        .expect("start");
    let mut set = ToolSet::new();
    set.register_fn("list_directory", |_, _| async { Ok(json!("built-in")) })
        .expect("a built-in tool");
    register(&mut set, &one).expect("registers");
    assert!(set.get("fs.read_file").is_some() && set.get("mem.read_graph").is_some());
    assert_eq!(set.index_of("read_file"), set.index_of("fs.read_file"));
    assert_eq!(set.index_of("read_graph"), set.index_of("mem.read_graph"));
    assert_ne!(
        set.index_of("list_directory"),
        set.index_of("fs.list_directory"),
        "an existing tool keeps its name"
    );
    let expected = one.iter().map(|s| s.tool_names().len()).sum::<usize>() + 1;
    assert_eq!(set.len(), expected, "aliases are names, not tools");

    let two = connect_all(&[fs, fs2, mem]).await.expect("start");
    let mut set = ToolSet::new();
    register(&mut set, &two).expect("registers");
    assert!(set.get("fs.read_file").is_some() && set.get("fs2.read_file").is_some());
    assert!(
        set.get("read_file").is_none(),
        "two servers list read_file: no alias"
    );
    assert!(set.get("read_graph").is_some(), "only mem lists read_graph");

    let again = common::filesystem("fs", &root).expect("installed");
    let dup = connect_all(&[again.clone(), again]).await;
    let e = dup.expect_err("duplicate names").to_string();
    assert!(e.contains("two MCP servers have this name"), "{e}");
    for s in one.iter().chain(two.iter()) {
        s.close().await;
    }
}
