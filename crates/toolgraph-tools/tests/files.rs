//! The file tools against a real directory: every escape refused (nothing written outside),
//! the operations themselves, and hazard ordering between real file tools in one batch.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use toolgraph_core::{CallContext, ParallelExecutorConfig, ToolCall, ToolSet};
use toolgraph_engine::ParallelExecutor;
use toolgraph_tools::fs::{FilesConfig, register_file_tools};
use toolgraph_tools::shell::{Shell, ShellConfig};

struct Rig {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    tools: ToolSet,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("docs/deep")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(root.join("docs/a.md"), "alpha\nTODO: first\n").expect("write");
    std::fs::write(root.join("docs/deep/b.md"), "beta\nTODO: second\n").expect("write");
    std::fs::write(outside.join("secret.txt"), "top secret").expect("write");
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link_out.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(&outside, root.join("dir_out")).expect("symlink");
    std::os::unix::fs::symlink(root.join("missing"), root.join("dangling")).expect("symlink");
    std::os::unix::fs::symlink(root.join("docs/a.md"), root.join("link_in.md")).expect("symlink");
    let mut tools = ToolSet::new();
    register_file_tools(
        &mut tools,
        &FilesConfig {
            root: root.clone(),
            ..Default::default()
        },
    )
    .expect("file tools");
    Rig {
        _dir: dir,
        root,
        outside,
        tools,
    }
}

async fn call(rig: &Rig, tool: &str, args: Value) -> Result<Value, String> {
    let entry = rig.tools.get(tool).expect("registered");
    entry
        .tool
        .call(std::sync::Arc::new(args), CallContext::detached("t"))
        .await
        .map_err(|e| e.message)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn every_escape_is_refused_and_nothing_is_written_outside() {
    let rig = rig();
    let outside_file = rig.outside.join("secret.txt");
    let abs_outside = outside_file.to_string_lossy().into_owned();
    for (tool, args, why) in [
        (
            "file_read",
            json!({"path": "../outside/secret.txt"}),
            "climbs out of the root",
        ),
        (
            "file_read",
            json!({"path": "docs/../../outside/secret.txt"}),
            "climbs out of the root",
        ),
        (
            "file_read",
            json!({"path": abs_outside}),
            "outside the root",
        ),
        (
            "file_read",
            json!({"path": "link_out.txt"}),
            "leads outside the root through a symbolic link",
        ),
        (
            "file_read",
            json!({"path": "dir_out/secret.txt"}),
            "leads outside the root through a symbolic link",
        ),
        (
            "file_read",
            json!({"path": "dangling"}),
            "symbolic link to a missing target",
        ),
        (
            "list_dir",
            json!({"path": "dir_out"}),
            "leads outside the root",
        ),
        ("list_dir", json!({"path": ".."}), "climbs out of the root"),
        (
            "file_search",
            json!({"path": "dir_out", "pattern": "secret"}),
            "leads outside the root",
        ),
        (
            "file_write",
            json!({"path": "../outside/new.txt", "content": "x"}),
            "climbs out of the root",
        ),
        (
            "file_write",
            json!({"path": "link_out.txt", "content": "overwritten"}),
            "leads outside the root",
        ),
        (
            "file_write",
            json!({"path": "dir_out/new.txt", "content": "x"}),
            "leads outside the root",
        ),
        (
            "file_write",
            json!({"path": "dir_out/sub/new.txt", "content": "x"}),
            "leads outside the root",
        ),
        (
            "file_write",
            json!({"path": "dangling", "content": "x"}),
            "symbolic link to a missing target",
        ),
    ] {
        let err = call(&rig, tool, args.clone())
            .await
            .expect_err(&format!("{tool} {args} must be refused"));
        assert!(err.contains(why), "{tool} {args}: {err}");
    }
    assert_eq!(
        listing(&rig.outside),
        ["secret.txt"],
        "nothing was created outside"
    );
    assert_eq!(
        std::fs::read_to_string(&outside_file).ok().as_deref(),
        Some("top secret")
    );
    assert!(
        !rig.root.join("missing").exists(),
        "the dangling link's target was not created"
    );
}

#[tokio::test]
async fn read_write_list_and_search_inside_the_root() {
    let rig = rig();
    let w = call(
        &rig,
        "file_write",
        json!({"path": "out/new/notes.txt", "content": "one\n"}),
    )
    .await
    .expect("write");
    assert_eq!(w["created"], true);
    call(
        &rig,
        "file_write",
        json!({"path": "out/new/notes.txt", "content": "two\n", "append": true}),
    )
    .await
    .expect("append");
    let r = call(&rig, "file_read", json!({"path": "out/new/notes.txt"}))
        .await
        .expect("read");
    assert_eq!(r["content"], "one\ntwo\n");
    assert_eq!(r["path"], "out/new/notes.txt");
    let cut = call(
        &rig,
        "file_read",
        json!({"path": "docs/a.md", "max_bytes": 3}),
    )
    .await
    .expect("read");
    assert_eq!(
        (cut["content"].as_str(), cut["truncated"].as_bool()),
        (Some("alp"), Some(true))
    );
    let inside_link = call(&rig, "file_read", json!({"path": "link_in.md"}))
        .await
        .expect("a link inside the root is fine");
    assert!(
        inside_link["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("alpha"))
    );
    assert!(
        call(&rig, "file_read", json!({"path": "docs"}))
            .await
            .is_err_and(|e| e.contains("is a directory"))
    );

    let l = call(&rig, "list_dir", json!({})).await.expect("list");
    let names: Vec<&str> = l["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "dangling",
            "dir_out",
            "docs",
            "link_in.md",
            "link_out.txt",
            "out"
        ]
    );
    assert_eq!(l["entries"][1]["kind"], "symlink");

    let s = call(&rig, "file_search", json!({"pattern": "^TODO: \\w+"}))
        .await
        .expect("search");
    let hits: Vec<(String, u64)> = s["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap_or("").to_owned(),
                m["line"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        hits,
        [
            ("docs/a.md".to_owned(), 2),
            ("docs/deep/b.md".to_owned(), 2)
        ],
        "symlinks are not followed"
    );
    let limited = call(
        &rig,
        "file_search",
        json!({"path": "docs", "pattern": "TODO", "max_results": 1}),
    )
    .await
    .expect("search");
    assert_eq!(limited["truncated"], true);
    assert!(
        call(&rig, "file_search", json!({"pattern": "("}))
            .await
            .is_err_and(|e| e.contains("invalid pattern"))
    );
}

#[tokio::test]
async fn a_write_then_a_read_of_one_file_are_ordered_and_other_reads_run_together() {
    let rig = rig();
    let executor = ParallelExecutor::new(rig.tools.clone(), ParallelExecutorConfig::default())
        .expect("config");
    let calls = vec![
        ToolCall::new(
            "write",
            "file_write",
            json!({"path": "docs/a.md", "content": "rewritten"}),
        ),
        ToolCall::new("read_same", "file_read", json!({"path": "docs/a.md"})),
        ToolCall::new("read_other", "file_read", json!({"path": "docs/deep/b.md"})),
        ToolCall::new(
            "read_other_again",
            "file_read",
            json!({"path": "docs/deep/b.md"}),
        ),
        ToolCall::new(
            "write_sibling",
            "file_write",
            json!({"path": "docs/c.md", "content": "new"}),
        ),
        ToolCall::new("list_docs", "list_dir", json!({"path": "docs"})),
        ToolCall::new(
            "search_all",
            "file_search",
            json!({"pattern": "new|rewritten"}),
        ),
    ];
    let graph = executor.build_dependency_graph(&calls).expect("valid");
    let edges: Vec<(String, String, String)> = graph
        .edges
        .iter()
        .map(|e| (e.from.to_string(), e.to.to_string(), e.reason.clone()))
        .collect();
    let has = |from: &str, to: &str| edges.iter().any(|e| e.0 == from && e.1 == to);
    assert!(has("write", "read_same"), "{edges:?}");
    assert!(
        edges
            .iter()
            .any(|e| e.2 == "read-after-write on file:docs/a.md"),
        "{edges:?}"
    );
    assert!(
        !has("read_other", "read_other_again") && !has("write", "read_other"),
        "{edges:?}"
    );
    assert!(
        !has("write", "write_sibling"),
        "writes of two files in one directory stay parallel: {edges:?}"
    );
    assert!(
        has("write_sibling", "list_docs") && has("write", "list_docs"),
        "{edges:?}"
    );
    assert!(
        has("write_sibling", "search_all") && has("write", "search_all"),
        "{edges:?}"
    );

    let r = executor.execute_parallel(calls).await.expect("valid");
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(
        r.results[1].output.as_ref().map(|o| o["content"].clone()),
        Some(json!("rewritten"))
    );
    let listed: Vec<&str> = r.results[5]
        .output
        .as_ref()
        .and_then(|o| o["entries"].as_array())
        .map(|a| a.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        listed.contains(&"c.md"),
        "the listing ran after the write: {listed:?}"
    );
    assert_eq!(
        r.results[6]
            .output
            .as_ref()
            .map(|o| o["matches"].as_array().map(Vec::len)),
        Some(Some(2))
    );
}

#[tokio::test]
async fn shell_is_off_by_default_and_runs_only_allowed_programs_inside_the_root() {
    let rig = rig();
    let sandbox = Arc::new(toolgraph_tools::fs::Sandbox::new(&rig.root).expect("sandbox"));
    assert!(
        Shell::new(&ShellConfig::default(), sandbox.clone()).is_none(),
        "disabled unless enabled"
    );
    let config = ShellConfig {
        enabled: true,
        allow: vec!["ls".into(), "cat".into(), "sh".into()],
        max_output_bytes: 0,
        confine_args: false,
    };
    let shell = Shell::new(&config, sandbox).expect("enabled");
    let mut tools = ToolSet::new();
    tools.register(shell).expect("shell");
    let entry = tools.get("shell").expect("shell");
    assert!(
        !entry.tool.spec().traits.parallel_safe,
        "exclusive by default"
    );
    let run = |args: Value| {
        let tool = entry.tool.clone();
        async move {
            tool.call(std::sync::Arc::new(args), CallContext::detached("s"))
                .await
                .map_err(|e| e.message)
        }
    };
    let out = run(json!({"command": "ls docs"})).await.expect("ls runs");
    assert_eq!(out["stdout"], "a.md\ndeep\n");
    let out = run(json!({"command": "cat 'a.md'", "cwd": "docs"}))
        .await
        .expect("cat runs");
    assert_eq!(out["stdout"], "alpha\nTODO: first\n");
    assert!(
        run(json!({"command": "rm -rf docs"}))
            .await
            .is_err_and(|e| e.contains("not on the shell allow-list"))
    );
    assert!(
        run(json!({"command": "ls; rm -rf docs"})).await.is_err(),
        "no shell syntax"
    );
    assert!(rig.root.join("docs/a.md").exists());
    assert!(
        run(json!({"command": "ls", "cwd": ".."}))
            .await
            .is_err_and(|e| e.contains("climbs out"))
    );
    assert!(
        run(json!({"command": "cat nope.txt"}))
            .await
            .is_err_and(|e| e.contains("exited with 1"))
    );
    assert!(
        run(json!({"command": "ls 'unbalanced"}))
            .await
            .is_err_and(|e| e.contains("cannot split"))
    );
}
