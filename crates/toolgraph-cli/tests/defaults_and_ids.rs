//! Where the store lives by default, and naming executions, through the binary: the
//! default store in the user's data directory (and never in the current folder), reading
//! commands that create nothing, id prefixes for `show` and `resume`, ids `history` shows
//! that paste back, ambiguous prefixes listing their candidates, `show`'s exit code, and
//! `prune`'s dry run, JSON, refusals and named executions.
//!
//! Every command runs in a folder of its own with `HOME` and `XDG_DATA_HOME` in a temporary
//! directory: no test touches the real user's data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use toolgraph_core::{ParallelExecutorConfig, ToolCall, ToolSet};
use toolgraph_engine::ParallelExecutor;
use toolgraph_store::{ExecutionStore, MIN_ID_PREFIX, Store};

/// A user's world: a home, a data directory, and an empty folder to work in.
struct Sandbox {
    _root: tempfile::TempDir,
    home: PathBuf,
    data: PathBuf,
    cwd: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("tempdir");
        let (home, data, cwd) = (
            root.path().join("home"),
            root.path().join("data"),
            root.path().join("work"),
        );
        for dir in [&home, &data, &cwd] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        Sandbox {
            _root: root,
            home,
            data,
            cwd,
        }
    }

    /// The binary in the work folder, with no store configured by the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"));
        cmd.args(args)
            .current_dir(&self.cwd)
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", &self.data);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("toolgraph runs")
    }

    /// The default store's file.
    fn default_file(&self) -> PathBuf {
        self.data.join("toolgraph").join("toolgraph.db")
    }

    fn default_url(&self) -> String {
        toolgraph_store::sqlite_url(&self.default_file())
    }
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&out.stdout), text(&out.stderr)))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Records `toolgraph run FILE`'s execution; its id.
fn run_recorded(sandbox: &Sandbox, file: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "--quiet", "--json"];
    args.extend_from_slice(extra);
    args.push(file);
    let out = sandbox.run(&args);
    let r = json(&out);
    r["metadata"]["execution_id"]
        .as_str()
        .unwrap_or_else(|| panic!("recorded: {r}"))
        .to_owned()
}

/// An execution begun in `store` and never run (as a crash leaves one): one `echo` call.
async fn begin(store: &dyn ExecutionStore) -> String {
    let mut tools = ToolSet::new();
    tools
        .register_fn("echo", |args, _ctx| async move { Ok(args) })
        .expect("echo");
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("ok");
    let plan = executor
        .plan(vec![ToolCall::new("a", "echo", json!({"said": "hi"}))])
        .expect("valid");
    store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin")
}

#[test]
fn reading_commands_in_an_empty_folder_create_no_store_and_say_nothing_is_recorded() {
    let sandbox = Sandbox::new();
    let store = sandbox.default_url();
    for args in [
        &["history"][..],
        &["stats"],
        &["prune", "--older-than", "1d"],
        &["prune", "--older-than", "1d", "--dry-run"],
    ] {
        let out = sandbox.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let said = text(&out.stdout);
        assert!(
            said.contains("nothing recorded yet") && said.contains(&store),
            "{args:?} names the store: {said}"
        );
    }
    for (args, empty) in [
        (&["history", "--json"][..], json!([])),
        (&["stats", "--json"], json!(0)),
        (&["prune", "--older-than", "1d", "--json"], json!([])),
    ] {
        let out = sandbox.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let v = json(&out);
        let got = match args[0] {
            "stats" => v["total_executions"].clone(),
            "prune" => v["deleted"].clone(),
            _ => v,
        };
        assert_eq!(got, empty, "{args:?}");
        assert!(text(&out.stderr).contains(&store), "{args:?}");
    }
    for args in [
        &["show", "3f2c1a8e"][..],
        &["resume", "3f2c1a8e"],
        &["prune", "3f2c1a8e"],
    ] {
        let out = sandbox.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let said = text(&out.stderr);
        assert!(
            said.contains("no execution 3f2c1a8e") && said.contains(&store),
            "{args:?}: {said}"
        );
    }
    assert!(
        entries(&sandbox.cwd).is_empty(),
        "{:?}",
        entries(&sandbox.cwd)
    );
    assert!(
        entries(&sandbox.data).is_empty(),
        "nothing was created in the data directory: {:?}",
        entries(&sandbox.data)
    );
    let out = sandbox.run(&["history", "--db", "memory:"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("a memory store lives only while one command runs"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn run_records_into_the_users_data_directory_creating_it() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["run", "--quiet", &example("turn.json")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("({})", sandbox.default_url())),
        "{}",
        text(&out.stdout)
    );
    assert!(sandbox.default_file().is_file());
    assert!(
        entries(&sandbox.cwd).is_empty(),
        "{:?}",
        entries(&sandbox.cwd)
    );
    let history = json(&sandbox.run(&["history", "--json"]));
    assert_eq!(history.as_array().map(Vec::len), Some(1));
}

#[cfg(target_os = "linux")]
#[test]
fn without_xdg_data_home_the_store_is_under_home_local_share() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .command(&["run", "--quiet", &example("turn.json")])
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        sandbox
            .home
            .join(".local/share/toolgraph/toolgraph.db")
            .is_file()
    );
    assert!(entries(&sandbox.cwd).is_empty());
}

#[test]
fn a_toolgraph_toml_in_the_folder_the_db_flag_or_the_variable_put_the_store_elsewhere() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.cwd.join("toolgraph.toml"),
        "[store]\nurl = \"sqlite://local.db\"\n",
    )
    .expect("config");
    let local = run_recorded(&sandbox, &example("turn.json"), &[]);
    assert!(sandbox.cwd.join("local.db").is_file());
    let shown = json(&sandbox.run(&["show", &local, "--json"]));
    assert_eq!(shown["metadata"]["execution_id"], json!(local));

    let flag = sandbox.cwd.join("flag.db");
    let flag_url = toolgraph_store::sqlite_url(&flag);
    run_recorded(&sandbox, &example("turn.json"), &["--db", &flag_url]);
    assert!(flag.is_file());

    let variable = sandbox.cwd.join("variable.db");
    let out = sandbox
        .command(&["run", "--quiet", &example("turn.json")])
        .env(
            "TOOLGRAPH_DATABASE_URL",
            toolgraph_store::sqlite_url(&variable),
        )
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(variable.is_file());
    assert!(
        entries(&sandbox.data).is_empty(),
        "the default store was not used: {:?}",
        entries(&sandbox.data)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_resume_and_history_take_the_ids_history_shows() {
    let sandbox = Sandbox::new();
    let ok = run_recorded(&sandbox, &example("turn.json"), &[]);
    let failed = run_recorded(&sandbox, &example("partial-failure.json"), &[]);
    let store = Store::open(&sandbox.default_url()).await.expect("store");
    let crashed = begin(&store).await;

    let out = sandbox.run(&["history"]);
    assert_eq!(out.status.code(), Some(0));
    let listed = text(&out.stdout);
    let shown: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(shown.len(), 3, "{listed}");
    for (short, full) in shown.iter().zip([&crashed, &failed, &ok]) {
        assert!(
            short.len() >= 8 && short.len() < full.len() && full.starts_with(short),
            "{short} is a prefix of {full}"
        );
    }
    // Each id history shows names its execution; a failed one is shown with exit 0.
    for (short, full) in shown.iter().zip([&crashed, &failed, &ok]) {
        let out = sandbox.run(&["show", short]);
        assert_eq!(out.status.code(), Some(0), "{short}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).starts_with(&format!("execution {full} ·")),
            "{}",
            text(&out.stdout)
        );
    }
    let out = sandbox.run(&["show", &failed[..8].to_uppercase(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "a failed execution, shown");
    assert_eq!(json(&out)["success"], json!(false));

    // An execution a crash left: resume finishes it by the prefix history shows.
    let out = sandbox.run(&["resume", shown[0], "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("resumed execution {crashed}:")),
        "{}",
        text(&out.stdout)
    );
    let finished = store.load(&crashed).await.expect("load");
    assert_eq!(finished.states, ["ok"]);

    // A prefix of nothing, and what cannot be an id: exit 2, naming the store.
    let unknown = ["0000", "ffff"]
        .into_iter()
        .find(|p| ![&ok, &failed, &crashed].iter().any(|id| id.starts_with(p)))
        .expect("one matches nothing");
    for args in [["show", unknown], ["resume", unknown]] {
        let out = sandbox.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let said = text(&out.stderr);
        assert!(
            said.contains(&format!(
                "no execution {unknown} in the store {}",
                sandbox.default_url()
            )),
            "{said}"
        );
    }
    let out = sandbox.run(&["show", "3f2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("at least 4 characters"));
    let out = sandbox.run(&["show", "latest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not an execution id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_prefix_is_refused_listing_its_candidates() {
    let sandbox = Sandbox::new();
    let db = toolgraph_store::sqlite_url(&sandbox.cwd.join("many.db"));
    let store = Store::open(&db).await.expect("store");
    // Until two ids share their first characters (a birthday over 16 bits: ~300 on average).
    let mut seen: HashMap<String, String> = HashMap::new();
    let (one, other) = loop {
        assert!(seen.len() < 4000, "no two ids share 4 characters");
        let id = begin(&store).await;
        if let Some(earlier) = seen.insert(id[..MIN_ID_PREFIX].to_owned(), id.clone()) {
            break (earlier, id);
        }
    };
    let prefix = &one[..MIN_ID_PREFIX];
    for command in ["show", "resume"] {
        let out = sandbox.run(&[command, prefix, "--db", &db]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let said = text(&out.stderr);
        assert!(
            said.contains(&format!("{prefix} is ambiguous in the store {db}")),
            "{said}"
        );
        for id in [&one, &other] {
            let line = said
                .lines()
                .find(|l| l.trim_start().starts_with(id.as_str()))
                .unwrap_or_else(|| panic!("{id} is listed: {said}"));
            // id, started (UTC), status: nobody runs these, so they are interrupted.
            assert!(line.contains("interrupted"), "{line}");
            assert!(line.contains(" 20"), "a date: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_interrupted_and_live_executions_and_says_what_it_would_delete() {
    let sandbox = Sandbox::new();
    let finished = run_recorded(&sandbox, &example("turn.json"), &[]);
    let store = Store::open(&sandbox.default_url()).await.expect("store");
    let crashed = begin(&store).await;
    let live = begin(&store).await;
    // Another process runs `live` and beats (its lease is fresh for 10 s).
    store
        .claim(&live, "pid 1 on elsewhere (ab12cd34)", 60_000, None)
        .await
        .expect("claim");
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };

    let dry = sandbox.run(&["prune", "--older-than", "0s", "--dry-run", "--json"]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let dry = json(&dry);
    assert_eq!(dry["dry_run"], json!(true));
    assert_eq!(ids(&dry["deleted"]), [finished.as_str()]);
    assert_eq!(ids(&dry["kept_unfinished"]), [crashed.as_str()]);
    assert_eq!(ids(&dry["kept_live"]), [live.as_str()]);
    assert_eq!(store.history(10).await.expect("history").len(), 3);
    let human = sandbox.run(&["prune", "--older-than", "0s", "--dry-run"]);
    let said = text(&human.stdout);
    assert!(said.contains("would prune 1 execution(s)"), "{said}");
    assert!(
        said.contains(&finished) && said.contains(&crashed),
        "{said}"
    );
    assert_eq!(store.history(10).await.expect("history").len(), 3);

    let out = sandbox.run(&["prune", "--older-than", "0s"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(said.contains("pruned 1 execution(s)"), "{said}");
    assert!(
        said.contains("kept 1 that never finished") && said.contains("--include-interrupted"),
        "{said}"
    );
    assert!(
        said.contains("kept 1 that a live process holds") && said.contains("pid 1 on elsewhere"),
        "{said}"
    );
    assert!(store.load(&finished).await.is_err());

    let out = json(&sandbox.run(&[
        "prune",
        "--older-than",
        "0s",
        "--include-interrupted",
        "--json",
    ]));
    assert_eq!(out["dry_run"], json!(false));
    assert_eq!(ids(&out["deleted"]), [crashed.as_str()]);
    assert_eq!(
        ids(&out["kept_live"]),
        [live.as_str()],
        "a live process's execution is never deleted"
    );
    let left: Vec<String> = store
        .history(10)
        .await
        .expect("history")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [live]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_the_executions_named_by_id_or_prefix_and_only_those() {
    let sandbox = Sandbox::new();
    let first = run_recorded(&sandbox, &example("turn.json"), &[]);
    let second = run_recorded(&sandbox, &example("turn.json"), &[]);
    let third = run_recorded(&sandbox, &example("turn.json"), &[]);
    let store = Store::open(&sandbox.default_url()).await.expect("store");
    let crashed = begin(&store).await;
    let left = || async {
        let mut ids: Vec<String> = store
            .history(10)
            .await
            .expect("history")
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<String>>()
    };

    // Neither ids nor --older-than: refused, as a usage error.
    let out = sandbox.run(&["prune"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--older-than"),
        "{}",
        text(&out.stderr)
    );

    // One unknown id among known ones: nothing is deleted, the unknown one is named.
    let unknown = ["0000", "ffff"]
        .into_iter()
        .find(|p| {
            ![&first, &second, &third, &crashed]
                .iter()
                .any(|id| id.starts_with(p))
        })
        .expect("one matches nothing");
    let out = sandbox.run(&["prune", &first[..8], unknown]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("no execution {unknown} in the store")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(left().await.len(), 4, "nothing went");

    // A dry run by prefix says which would go; then it goes, and only it.
    let out = sandbox.run(&["prune", &first[..8], "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("would prune 1 of the 1 execution(s) named"),
        "{said}"
    );
    assert!(said.contains(&first), "{said}");
    assert_eq!(left().await.len(), 4);
    let out = sandbox.run(&["prune", &first[..8], &first]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pruned 1 of the 1 execution(s) named"),
        "the same execution twice counts once: {}",
        text(&out.stdout)
    );
    assert_eq!(left().await, sorted(vec![&second, &third, &crashed]));

    // Named but younger than --older-than: kept, and said so.
    let out = sandbox.run(&["prune", &second[..8], "--older-than", "1d", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["deleted"], json!([]));
    assert_eq!(v["ids"], json!([second]));
    let out = sandbox.run(&["prune", &second[..8], "--older-than", "1d"]);
    assert!(
        text(&out.stdout).contains("kept 1 created since (not older than 1d)"),
        "{}",
        text(&out.stdout)
    );

    // A named execution that never finished stays unless included.
    let out = sandbox.run(&["prune", &crashed[..8], &third[..8]]);
    let said = text(&out.stdout);
    assert!(
        said.contains("pruned 1 of the 2 execution(s) named"),
        "{said}"
    );
    assert!(said.contains("kept 1 that never finished"), "{said}");
    assert_eq!(left().await, sorted(vec![&second, &crashed]));
    let out = json(&sandbox.run(&["prune", &crashed[..8], "--include-interrupted", "--json"]));
    assert_eq!(out["deleted"][0]["id"], json!(crashed));
    assert_eq!(left().await, [second]);
}
