//! The file tools on the awkward corners of a real filesystem: a FIFO (or any other
//! non-regular file) is refused at once instead of blocking a thread for ever, a symbolic
//! link loop is reported as a loop, and a cancelled search stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rustix::fs::{CWD, FileType, Mode, mknodat};
use serde_json::{Value, json};
use toolgraph_core::{CallContext, Tool, ToolSet};
use toolgraph_tools::fs::{FilesConfig, register_file_tools};

struct Rig {
    _dir: tempfile::TempDir,
    root: PathBuf,
    tools: ToolSet,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
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
        tools,
    }
}

fn tool(rig: &Rig, name: &str) -> Arc<dyn Tool> {
    rig.tools.get(name).expect("registered").tool.clone()
}

/// Runs one call on its own thread and gives up after `limit`: a call that blocks for ever
/// fails the test instead of hanging it (the stuck thread dies with the test process).
fn call_within(
    tool: Arc<dyn Tool>,
    args: Value,
    ctx: CallContext,
    limit: Duration,
) -> Result<Value, String> {
    let (tx, rx) = mpsc::channel();
    let shown = args.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _ = tx.send(rt.block_on(tool.call(Arc::new(args), ctx)));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.map_err(|e| e.message),
        Err(_) => panic!("{shown} still running after {limit:?}"),
    }
}

fn call(rig: &Rig, name: &str, args: Value) -> Result<Value, String> {
    call_within(
        tool(rig, name),
        args,
        CallContext::detached("edge"),
        Duration::from_secs(5),
    )
}

fn mkfifo(path: &Path) {
    mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o644), 0).expect("mkfifo");
}

#[test]
fn a_fifo_is_refused_at_once_by_read_and_write() {
    let rig = rig();
    mkfifo(&rig.root.join("pipe"));
    std::fs::create_dir(rig.root.join("d")).expect("mkdir");
    mkfifo(&rig.root.join("d/pipe"));
    for (name, args) in [
        ("file_read", json!({"path": "pipe"})),
        ("file_write", json!({"path": "pipe", "content": "x"})),
        (
            "file_write",
            json!({"path": "pipe", "content": "x", "append": true}),
        ),
        ("file_read", json!({"path": "d/pipe"})),
    ] {
        let err = call(&rig, name, args.clone()).expect_err(&format!("{name} {args}"));
        assert!(
            err.contains("not a regular file") && err.contains("pipe"),
            "{name} {args}: {err}"
        );
    }
    // A search walks past it; a listing shows it as something other than a file.
    let found = call(&rig, "file_search", json!({"pattern": "x"})).expect("search");
    assert_eq!(found["files_searched"], 0);
    let listed = call(&rig, "list_dir", json!({})).expect("list");
    assert!(
        listed["entries"].as_array().is_some_and(|a| a
            .iter()
            .any(|e| e["name"] == "pipe" && e["kind"] == "other")),
        "{listed}"
    );
}

#[test]
fn a_symlink_loop_is_reported_as_a_loop_naming_the_path() {
    let rig = rig();
    std::os::unix::fs::symlink("loop_b", rig.root.join("loop_a")).expect("symlink");
    std::os::unix::fs::symlink("loop_a", rig.root.join("loop_b")).expect("symlink");
    std::os::unix::fs::symlink("myself", rig.root.join("myself")).expect("symlink");
    for (name, args) in [
        ("file_read", json!({"path": "loop_a"})),
        ("file_read", json!({"path": "myself"})),
        ("file_write", json!({"path": "loop_a", "content": "x"})),
        (
            "file_write",
            json!({"path": "loop_a/inner.txt", "content": "x"}),
        ),
        ("list_dir", json!({"path": "loop_b"})),
        ("file_search", json!({"path": "myself", "pattern": "x"})),
    ] {
        let path = args["path"].as_str().unwrap_or_default().to_owned();
        let err = call(&rig, name, args.clone()).expect_err(&format!("{name} {args}"));
        assert!(
            err.contains("symbolic link loop") && err.contains(&path),
            "{name} {args}: {err}"
        );
    }
}

#[test]
fn a_cancelled_search_stops_instead_of_walking_the_tree() {
    let rig = rig();
    for d in 0..20 {
        let dir = rig.root.join(format!("d{d:02}"));
        std::fs::create_dir(&dir).expect("mkdir");
        for f in 0..20 {
            std::fs::write(dir.join(format!("f{f:02}.txt")), "needle\n").expect("write");
        }
    }
    let ctx = CallContext::detached("search");
    ctx.cancel.cancel();
    let err = match call_within(
        tool(&rig, "file_search"),
        json!({"pattern": "needle"}),
        ctx,
        Duration::from_secs(5),
    ) {
        Ok(out) => panic!(
            "a cancelled search ran on: {} files searched",
            out["files_searched"]
        ),
        Err(e) => e,
    };
    assert!(err.contains("cancelled"), "{err}");
    // Not cancelled, the same search finds them all (up to its limit).
    let found = call(&rig, "file_search", json!({"pattern": "needle"})).expect("search");
    assert_eq!(found["truncated"], true);
}

#[test]
fn links_inside_the_root_work_for_every_tool_and_relative_links_out_are_refused() {
    let rig = rig();
    let root = &rig.root;
    let outside = root.with_file_name("outside");
    std::fs::create_dir_all(root.join("docs/deep")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(root.join("docs/a.md"), "alpha\n").expect("write");
    std::fs::write(outside.join("secret.txt"), "secret\n").expect("write");
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, root.join(name)).expect("symlink");
    };
    link(Path::new("docs/a.md"), "rel.md");
    link(Path::new("rel.md"), "chain.md");
    link(Path::new("../a.md"), "docs/deep/up.md");
    link(&root.join("docs"), "abs_dir");
    link(Path::new("../outside"), "rel_out");
    link(Path::new("nothere.txt"), "dangling_rel");

    for path in ["rel.md", "chain.md", "docs/deep/up.md", "abs_dir/a.md"] {
        let out = call(&rig, "file_read", json!({"path": path})).expect(path);
        assert_eq!(
            (out["content"].as_str(), out["path"].as_str()),
            (Some("alpha\n"), Some(path))
        );
    }
    let w = call(
        &rig,
        "file_write",
        json!({"path": "abs_dir/new/n.txt", "content": "n"}),
    )
    .expect("write below a link to a directory inside");
    assert_eq!(w["created"], true);
    assert_eq!(
        std::fs::read_to_string(root.join("docs/new/n.txt"))
            .ok()
            .as_deref(),
        Some("n")
    );
    let w = call(
        &rig,
        "file_write",
        json!({"path": "chain.md", "content": "beta\n"}),
    )
    .expect("write through links inside");
    assert_eq!(w["created"], false);
    assert_eq!(
        std::fs::read_to_string(root.join("docs/a.md"))
            .ok()
            .as_deref(),
        Some("beta\n")
    );
    let listed = call(&rig, "list_dir", json!({"path": "abs_dir"})).expect("list");
    assert_eq!(
        listed["entries"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    let found = call(
        &rig,
        "file_search",
        json!({"path": "abs_dir", "pattern": "beta"}),
    )
    .expect("search");
    assert_eq!(found["matches"][0]["path"], "abs_dir/a.md");

    for (name, args, why) in [
        (
            "file_read",
            json!({"path": "rel_out/secret.txt"}),
            "leads outside the root",
        ),
        (
            "file_write",
            json!({"path": "rel_out/new.txt", "content": "x"}),
            "leads outside the root",
        ),
        (
            "list_dir",
            json!({"path": "rel_out"}),
            "leads outside the root",
        ),
        (
            "file_write",
            json!({"path": "dangling_rel", "content": "x"}),
            "symbolic link to a missing target",
        ),
        (
            "file_read",
            json!({"path": "docs/a.md/x"}),
            "Not a directory",
        ),
    ] {
        let err = call(&rig, name, args.clone()).expect_err(&format!("{name} {args}"));
        assert!(err.contains(why), "{name} {args}: {err}");
    }
    assert!(!outside.join("new.txt").exists() && !root.join("nothere.txt").exists());
}
