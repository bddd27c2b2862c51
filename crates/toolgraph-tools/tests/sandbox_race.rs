//! The file sandbox under attack by a race: while a thread keeps swapping a directory
//! inside the root with a symbolic link to a directory outside it (an atomic
//! `renameat2(RENAME_EXCHANGE)`), thousands of `file_read`, `file_write` and `file_search`
//! calls go through the tools. None may ever return the outside file, create anything
//! outside, or list an outside entry.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{CWD, RenameFlags, renameat_with};
use serde_json::{Value, json};
use toolgraph_core::{CallContext, Tool, ToolSet};
use toolgraph_tools::fs::{FilesConfig, register_file_tools};

/// Only ever written outside the root: seeing it in an output is an escape.
const OUTSIDE_MARKER: &str = "OUTSIDE-THE-ROOT";

const READS: usize = 12_000;
const WRITES: usize = 8_000;
const SEARCHES: usize = 1_000;

fn tool(set: &ToolSet, name: &str) -> Arc<dyn Tool> {
    set.get(name).expect("registered").tool.clone()
}

fn call(rt: &tokio::runtime::Runtime, tool: &Arc<dyn Tool>, args: Value) -> Result<Value, String> {
    rt.block_on(tool.call(Arc::new(args), CallContext::detached("race")))
        .map_err(|e| e.message)
}

fn names(dir: &Path) -> Vec<String> {
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

#[derive(Default)]
struct Tally {
    read_escapes: AtomicUsize,
    read_ok: AtomicUsize,
    write_ok: AtomicUsize,
    search_escapes: AtomicUsize,
    search_ok: AtomicUsize,
}

#[test]
fn swapping_a_directory_for_an_outside_link_never_escapes_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("sw")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(root.join("sw/inner.txt"), "inside\n").expect("write");
    std::fs::write(outside.join("inner.txt"), format!("{OUTSIDE_MARKER}\n")).expect("write");
    std::fs::write(
        outside.join("only_outside.txt"),
        format!("{OUTSIDE_MARKER}\n"),
    )
    .expect("write");
    std::os::unix::fs::symlink(&outside, root.join("sw_link")).expect("symlink");
    let outside_before = names(&outside);

    let mut set = ToolSet::new();
    register_file_tools(
        &mut set,
        &FilesConfig {
            root: root.clone(),
            ..Default::default()
        },
    )
    .expect("file tools");
    let (read, write, search) = (
        tool(&set, "file_read"),
        tool(&set, "file_write"),
        tool(&set, "file_search"),
    );

    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let tally = Tally::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let (a, b) = (root.join("sw"), root.join("sw_link"));
            while !stop.load(Ordering::Relaxed) {
                renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).expect("exchange");
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        });
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (read, write, search, tally) = (&read, &write, &search, &tally);
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("runtime");
                    for i in (w..READS).step_by(2) {
                        if let Ok(out) = call(&rt, read, json!({"path": "sw/inner.txt"})) {
                            tally.read_ok.fetch_add(1, Ordering::Relaxed);
                            if out["content"]
                                .as_str()
                                .is_some_and(|c| c.contains(OUTSIDE_MARKER))
                            {
                                tally.read_escapes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if i < WRITES {
                            // A file directly in the swapped directory, and one in a
                            // subdirectory of it (directory creation races too). A few names
                            // over and over keep the tree the searches walk small; none of
                            // them exists outside, so one written there shows.
                            let k = i % 16;
                            let path = if i % 2 == 0 {
                                format!("sw/w{k}.txt")
                            } else {
                                format!("sw/d{k}/w.txt")
                            };
                            if call(&rt, write, json!({"path": path, "content": "x"})).is_ok() {
                                tally.write_ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if i < SEARCHES {
                            let path = if i % 2 == 0 { "." } else { "sw" };
                            let args = json!({"path": path, "pattern": "OUTSIDE|inside"});
                            if let Ok(out) = call(&rt, search, args) {
                                tally.search_ok.fetch_add(1, Ordering::Relaxed);
                                let text = out["matches"].to_string();
                                if text.contains(OUTSIDE_MARKER) || text.contains("only_outside") {
                                    tally.search_escapes.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let joined: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        // Stop the swapper before a worker's panic is passed on, or the scope never ends.
        stop.store(true, Ordering::Relaxed);
        for result in joined {
            result.expect("worker");
        }
    });
    let elapsed = started.elapsed();

    let created_outside: Vec<String> = names(&outside)
        .into_iter()
        .filter(|n| !outside_before.contains(n))
        .collect();
    let read_escapes = tally.read_escapes.load(Ordering::Relaxed);
    let search_escapes = tally.search_escapes.load(Ordering::Relaxed);
    eprintln!(
        "{} swaps in {elapsed:?}; reads: {} ok, {read_escapes} escaped; writes: {} ok, {} \
         created outside; searches: {} ok, {search_escapes} escaped",
        swaps.load(Ordering::Relaxed),
        tally.read_ok.load(Ordering::Relaxed),
        tally.write_ok.load(Ordering::Relaxed),
        created_outside.len(),
        tally.search_ok.load(Ordering::Relaxed),
    );
    assert_eq!(
        (read_escapes, created_outside.len(), search_escapes),
        (0, 0, 0),
        "escapes (reads, files created outside, searches); created outside: {:?}",
        created_outside.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("inner.txt")).ok(),
        Some(format!("{OUTSIDE_MARKER}\n")),
        "the outside file was not overwritten"
    );
    // The race must not have made the tools useless: plenty of calls got through.
    assert!(
        tally.read_ok.load(Ordering::Relaxed) > 0,
        "no read succeeded"
    );
    assert!(
        tally.write_ok.load(Ordering::Relaxed) > 0,
        "no write succeeded"
    );
    assert!(
        tally.search_ok.load(Ordering::Relaxed) > 0,
        "no search succeeded"
    );
    assert!(elapsed < Duration::from_secs(60));
}
