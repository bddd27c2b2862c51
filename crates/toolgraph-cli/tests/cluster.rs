//! The cluster with real processes: `toolgraph worker`s and `toolgraph run --nats`
//! coordinators on a real NATS server with JetStream.
//!
//! Needs `TOOLGRAPH_TEST_NATS_URL` (e.g. `nats://127.0.0.1:4222`); without it every test is
//! skipped with the reason. The restart test starts a NATS server of its own (the
//! `nats-server` binary: `TOOLGRAPH_TEST_NATS_SERVER`, else `/usr/sbin/nats-server`) so it
//! can stop and start it. Each test works in a namespace of its own, deleted at the end.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolgraph_test_support::{isolated, skip};

const BIN: &str = env!("CARGO_BIN_EXE_toolgraph");

fn nats_url() -> Option<String> {
    match std::env::var("TOOLGRAPH_TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            skip(
                "TOOLGRAPH_TEST_NATS_URL is not set (a NATS server with JetStream, e.g. \
                 nats://127.0.0.1:4222)",
            );
            None
        }
    }
}

/// A namespace on a NATS server, its configuration file, and the workers started in it.
struct Cluster {
    url: String,
    namespace: String,
    dir: tempfile::TempDir,
    workers: Vec<(String, Child)>,
}

impl Cluster {
    /// `extra` is appended to the configuration file (after `[cluster]`'s own settings).
    fn new(url: &str, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let namespace = format!(
            "test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() % 1_000_000_000)
                .unwrap_or(0)
        );
        let config = format!(
            "[cluster]\nnats_url = \"{url}\"\nnamespace = \"{namespace}\"\nheartbeat_ms = 200\n\
             ack_wait_ms = 1500\nno_worker_wait_ms = 1500\ngrace_ms = 2000\n\n\
             [shell]\nenabled = true\nallow = [\"sleep\"]\n\n{extra}\n"
        );
        std::fs::write(dir.path().join("toolgraph.toml"), config).expect("config");
        Cluster {
            url: url.to_owned(),
            namespace,
            dir,
            workers: Vec::new(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("toolgraph.toml")
    }

    fn command(&self) -> Command {
        let mut cmd = isolated(BIN);
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Starts worker `id` with `args` and waits until it serves.
    fn worker(&mut self, id: &str, args: &[&str]) {
        let mut child = self
            .command()
            .args(["worker", "--config"])
            .arg(self.config())
            .args(["--id", id, "--call-log"])
            .arg(self.log_path(id))
            .args(args)
            .env("RUST_LOG", "toolgraph_cluster=debug")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(self.dir.path().join(format!("{id}.stderr")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("worker starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let _ = BufReader::new(stdout).read_line(&mut first);
            let _ = tx.send(first);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the worker says it serves");
        assert!(line.contains("serving"), "worker {id}: {line}");
        self.workers.push((id.to_owned(), child));
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.calls.jsonl"))
    }

    /// Worker `id`'s call log: one JSON object per start and end.
    fn log(&self, id: &str) -> Vec<Value> {
        std::fs::read_to_string(self.log_path(id))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn starts(&self, id: &str) -> usize {
        self.log(id)
            .iter()
            .filter(|e| e["event"] == "start")
            .count()
    }

    fn kill(&mut self, id: &str) {
        if let Some((_, child)) = self.workers.iter_mut().find(|(w, _)| w == id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn batch(&self, name: &str, calls: &Value) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, calls.to_string()).expect("batch");
        path
    }

    /// `toolgraph run` of `batch` on the cluster (`--json`, plus `args`).
    fn run(&self, batch: &Path, args: &[&str]) -> Command {
        let mut cmd = self.command();
        cmd.arg("run")
            .arg(batch)
            .args(["--json", "--config"])
            .arg(self.config())
            .args(args);
        cmd
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The namespace's stream and bucket go with the test.
        let _ = self
            .command()
            .args(["workers", "--delete-namespace", "--nats", &self.url])
            .args(["--namespace", &self.namespace])
            .output();
    }
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// What must be the same between a local run and a cluster run: per call, in order, its
/// id, status, output, error and level.
fn essentials(result: &Value) -> Vec<Value> {
    result["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|c| {
            json!({
                "id": c["id"], "name": c["name"], "status": c["status"],
                "output": c["output"], "error": c["error"], "level": c["level"],
            })
        })
        .collect()
}

#[test]
fn results_through_workers_are_those_of_a_local_run() {
    let Some(url) = nats_url() else { return };
    let mut cluster = Cluster::new(&url, "");
    cluster.worker("w1", &[]);
    cluster.worker("w2", &["--concurrency", "8"]);
    let workloads = cluster.dir.path().join("workloads");
    let written = cluster
        .command()
        .args(["bench", "--write-workloads"])
        .arg(&workloads)
        .output()
        .expect("bench");
    assert!(written.status.success());
    let mixed = cluster.batch(
        "mixed.json",
        &json!([
            {"id": "a", "name": "echo", "arguments": {"v": 1}},
            {"id": "b", "name": "sleep", "arguments": {"ms": 30}},
            {"id": "c", "name": "echo", "arguments": {"x": "${a.v}"}},
            {"id": "d", "name": "fail", "arguments": {"message": "boom"}},
            {"id": "e", "name": "echo", "arguments": {"y": "${d}"}},
            {"id": "f", "name": "sleep", "arguments": {"ms": 10}, "depends_on": ["b"]},
            {"id": "g", "name": "echo", "arguments": {"z": "${f.slept_ms}"}}
        ]),
    );
    for batch in [
        mixed,
        workloads.join("skewed-layers.json"),
        workloads.join("random-dag.json"),
    ] {
        let remote = cluster
            .run(&batch, &["--no-record"])
            .output()
            .expect("cluster run");
        let local = isolated(BIN)
            .arg("run")
            .arg(&batch)
            .args(["--json", "--no-record"])
            .output()
            .expect("local run");
        assert_eq!(remote.status.code(), local.status.code(), "{batch:?}");
        let (remote, local) = (json_of(&remote), json_of(&local));
        assert_eq!(essentials(&remote), essentials(&local), "{batch:?}");
        // Every call that ran says which worker ran it; skipped ones ran nowhere.
        for call in remote["results"].as_array().expect("results") {
            let ran = call["attempts"].as_u64().unwrap_or(0) > 0;
            let worker = call["worker"].as_str();
            assert_eq!(ran, worker.is_some(), "{call}");
            if let Some(w) = worker {
                assert!(w == "w1" || w == "w2", "{call}");
            }
        }
    }
    // Both workers took part.
    assert!(cluster.starts("w1") > 0 && cluster.starts("w2") > 0);
}

/// The largest number of `tool` calls running at once across these call logs.
fn peak(logs: &[Vec<Value>], tool: &str) -> usize {
    let mut edges: Vec<(u64, i32)> = logs
        .iter()
        .flatten()
        .filter(|e| e["tool"] == tool)
        .filter_map(|e| {
            let at = e["at_us"].as_u64()?;
            Some(if e["event"] == "start" {
                (at, 1)
            } else {
                (at, -1)
            })
        })
        .collect();
    // Ends before starts at the same instant.
    edges.sort();
    let (mut now, mut top) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        top = top.max(now);
    }
    usize::try_from(top).unwrap_or(0)
}

#[test]
fn a_cluster_wide_limit_holds_across_coordinators_and_workers() {
    let Some(url) = nats_url() else { return };
    let mut cluster = Cluster::new(&url, "[cluster.tool_limits]\nsleep = 3\n");
    for id in ["w1", "w2", "w3"] {
        cluster.worker(id, &["--concurrency", "8"]);
    }
    let calls: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("s{i}"), "name": "sleep", "arguments": {"ms": 100}}))
        .collect();
    let batch = cluster.batch("sleeps.json", &Value::Array(calls));
    let coordinators: Vec<Child> = (0..2)
        .map(|_| {
            cluster
                .run(&batch, &["--no-record", "--max-parallel", "64"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("coordinator")
        })
        .collect();
    for child in coordinators {
        let out = child.wait_with_output().expect("coordinator ends");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result = json_of(&out);
        assert_eq!(result["results"].as_array().map(Vec::len), Some(12));
    }
    let logs: Vec<Vec<Value>> = ["w1", "w2", "w3"].iter().map(|w| cluster.log(w)).collect();
    let starts: usize = logs
        .iter()
        .flatten()
        .filter(|e| e["event"] == "start")
        .count();
    assert_eq!(starts, 24, "every call ran once");
    // Measured worker-side: never more than the limit at once, and the limit was reached.
    assert_eq!(peak(&logs, "sleep"), 3);
}

#[test]
fn a_worker_killed_mid_batch_loses_nothing_and_runs_nothing_twice() {
    let Some(url) = nats_url() else { return };
    // `shell` runs alone unless told it may run beside others.
    let mut cluster = Cluster::new(&url, "[tools.shell]\nparallel_safe = true\n");
    cluster.worker("doomed", &["--concurrency", "16"]);
    let mut calls: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("idem{i}"), "name": "sleep", "arguments": {"ms": 6000}}))
        .collect();
    calls.extend((0..1).map(
        |i| json!({"id": format!("once{i}"), "name": "shell", "arguments": {"command": "sleep 6"}}),
    ));
    let batch = cluster.batch("mixed.json", &Value::Array(calls));
    let db = format!("sqlite://{}", cluster.dir.path().join("runs.db").display());
    let coordinator = cluster
        .run(&batch, &["--db", &db])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator");
    // Every call started on the doomed worker; then a second worker joins and it dies.
    let started = Instant::now();
    while cluster.starts("doomed") < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "calls never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.worker("survivor", &[]);
    cluster.kill("doomed");
    let out = coordinator.wait_with_output().expect("coordinator ends");
    let result = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "interrupted calls fail the run");
    let by_id: HashMap<String, &Value> = result["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|c| (c["id"].as_str().unwrap_or_default().to_owned(), c))
        .collect();
    assert_eq!(by_id.len(), 5, "one result per call id");
    for i in 0..4 {
        let call = by_id[&format!("idem{i}")];
        // Idempotent: delivered again to the survivor, finished there.
        assert_eq!(call["status"], "ok", "{call}");
        assert_eq!(call["worker"], "survivor", "{call}");
    }
    for i in 0..1 {
        let call = by_id[&format!("once{i}")];
        // Not idempotent: reported interrupted, naming the worker, never run again.
        assert_eq!(call["status"], "interrupted", "{call}");
        assert_eq!(call["worker"], "doomed", "{call}");
        let message = call["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("doomed") && message.contains("not safe to run twice"),
            "{message}"
        );
    }
    let survivor_starts: Vec<String> = cluster
        .log("survivor")
        .iter()
        .filter(|e| e["event"] == "start")
        .filter_map(|e| e["call_id"].as_str().map(str::to_owned))
        .collect();
    assert!(
        survivor_starts.iter().all(|id| id.starts_with("idem")),
        "only idempotent calls ran again: {survivor_starts:?}"
    );
    // Calls four times `ack_wait` long kept their lease (progress acknowledgements): none
    // was delivered again while it ran.
    assert!(
        !cluster
            .log("survivor")
            .iter()
            .any(|e| e["event"] == "duplicate"),
        "{:?}",
        cluster.log("survivor")
    );
    // The store holds the same six results.
    let id = result["metadata"]["execution_id"]
        .as_str()
        .or_else(|| result["execution_id"].as_str())
        .map(str::to_owned);
    let shown = cluster
        .command()
        .args(["history", "--json", "--db", &db])
        .output()
        .expect("history");
    let history = json_of(&shown);
    let recorded = history
        .as_array()
        .and_then(|h| h.first())
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(id) = id {
        assert_eq!(recorded["id"], id.as_str(), "{history}");
    }
    let shown = cluster
        .command()
        .args([
            "show",
            recorded["id"].as_str().unwrap_or_default(),
            "--json",
            "--db",
            &db,
        ])
        .output()
        .expect("show");
    let stored = json_of(&shown);
    assert_eq!(essentials(&stored).len(), 5, "{stored}");
    assert_eq!(essentials(&stored), essentials(&result));
}

#[test]
fn a_worker_gets_only_the_tools_it_serves_and_a_tool_nobody_serves_fails_by_name() {
    let Some(url) = nats_url() else { return };
    let mut cluster = Cluster::new(&url, "");
    cluster.worker("sleeper", &["--tools", "sleep"]);
    cluster.worker("echoer", &["--tools", "echo,fail"]);
    let batch = cluster.batch(
        "split.json",
        &json!([
            {"id": "s1", "name": "sleep", "arguments": {"ms": 20}},
            {"id": "e1", "name": "echo", "arguments": {"v": 1}},
            {"id": "s2", "name": "sleep", "arguments": {"ms": 20}},
            {"id": "e2", "name": "echo", "arguments": {"v": 2}},
            {"id": "b1", "name": "burn", "arguments": {"ms": 1}}
        ]),
    );
    let started = Instant::now();
    let out = cluster.run(&batch, &["--no-record"]).output().expect("run");
    assert!(started.elapsed() < Duration::from_secs(15), "no hang");
    assert_eq!(out.status.code(), Some(1));
    let result = json_of(&out);
    let calls = result["results"].as_array().expect("results");
    for call in calls {
        match call["name"].as_str() {
            Some("sleep") => assert_eq!(call["worker"], "sleeper", "{call}"),
            Some("echo") => assert_eq!(call["worker"], "echoer", "{call}"),
            _ => {
                assert_eq!(call["status"], "error", "{call}");
                let message = call["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("no live worker serves tool `burn`"),
                    "{message}"
                );
            }
        }
    }
    let tools_of = |w: &str| -> Vec<String> {
        cluster
            .log(w)
            .iter()
            .filter_map(|e| e["tool"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(tools_of("sleeper").iter().all(|t| t == "sleep"));
    assert!(tools_of("echoer").iter().all(|t| t == "echo"));
    // `toolgraph workers` lists both, with their tools.
    let listed = cluster
        .command()
        .args(["workers", "--json", "--config"])
        .arg(cluster.config())
        .output()
        .expect("workers");
    let state = json_of(&listed);
    let ids: Vec<&str> = state["workers"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert_eq!(ids, ["echoer", "sleeper"]);
    // And each tool's queue: nothing left waiting or taken once the run is over.
    let tools: Vec<(&str, u64, u64)> = state["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| {
            Some((
                t["tool"].as_str()?,
                t["queued"].as_u64()?,
                t["taken"].as_u64()?,
            ))
        })
        .collect();
    assert_eq!(
        tools,
        [("echo", 0, 0), ("fail", 0, 0), ("sleep", 0, 0)],
        "{state}"
    );
}

#[test]
fn timeouts_and_cancellation_reach_the_worker() {
    let Some(url) = nats_url() else { return };
    let mut cluster = Cluster::new(&url, "");
    cluster.worker("w", &[]);
    // A timeout: the worker stops the call at its deadline.
    let slow = cluster.batch(
        "slow.json",
        &json!([{"id": "slow", "name": "sleep", "arguments": {"ms": 5000}}]),
    );
    let out = cluster
        .run(&slow, &["--no-record", "--timeout-ms", "300"])
        .output()
        .expect("run");
    let result = json_of(&out);
    assert_eq!(result["results"][0]["status"], "timeout", "{result}");
    let span = |log: &[Value], id: &str| -> Option<u64> {
        let at = |event: &str| {
            log.iter()
                .find(|e| e["call_id"] == id && e["event"] == event)
                .and_then(|e| e["at_us"].as_u64())
        };
        Some(at("end")? - at("start")?)
    };
    let ran = span(&cluster.log("w"), "slow").expect("the worker ran it");
    assert!(
        ran < 1_500_000,
        "stopped at its timeout, not after 5 s: {ran} µs"
    );

    // A cancellation: Ctrl-C of the coordinator stops the call on the worker.
    let cancelled = cluster.batch(
        "cancel.json",
        &json!([{"id": "long", "name": "sleep", "arguments": {"ms": 8000}}]),
    );
    let coordinator = cluster
        .run(&cancelled, &["--no-record"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator");
    let started = Instant::now();
    while !cluster.log("w").iter().any(|e| e["call_id"] == "long") {
        assert!(started.elapsed() < Duration::from_secs(10), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = coordinator.id().to_string();
    let signalled = Command::new("kill").args(["-INT", &pid]).status();
    assert!(signalled.is_ok_and(|s| s.success()));
    let out = coordinator.wait_with_output().expect("coordinator ends");
    assert_eq!(out.status.code(), Some(130));
    let waited = Instant::now();
    let ran = loop {
        if let Some(ran) = span(&cluster.log("w"), "long") {
            break ran;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "the worker went on"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        ran < 4_000_000,
        "cancelled on the worker, not run for 8 s: {ran} µs"
    );
}

/// A NATS server of this test's own, on a free loopback port, storing in `dir`.
struct PrivateNats {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    fn start(dir: &Path) -> Option<PrivateNats> {
        let binary = std::env::var_os("TOOLGRAPH_TEST_NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
        if !binary.is_file() {
            skip(&format!(
                "no nats-server binary at {} (set TOOLGRAPH_TEST_NATS_SERVER)",
                binary.display()
            ));
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut server = PrivateNats {
            binary,
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        server.up();
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server is not up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.down();
    }
}

#[test]
fn a_broker_restarted_mid_run_does_not_lose_the_run() {
    if nats_url().is_none() {
        return;
    }
    let store = tempfile::tempdir().expect("temp dir");
    let Some(mut nats) = PrivateNats::start(store.path()) else {
        return;
    };
    let mut cluster = Cluster::new(&nats.url(), "");
    cluster.worker("w", &[]);
    let calls: Vec<Value> = (0..8)
        .map(|i| {
            let mut call =
                json!({"id": format!("c{i}"), "name": "sleep", "arguments": {"ms": 400}});
            if i > 0 {
                call["depends_on"] = json!([format!("c{}", i - 1)]);
            }
            call
        })
        .collect();
    let batch = cluster.batch("chain.json", &Value::Array(calls));
    let started = Instant::now();
    let coordinator = cluster
        .run(&batch, &["--no-record", "--timeout-ms", "10000", "-v"])
        .env("RUST_LOG", "toolgraph_cluster=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator");
    while cluster.starts("w") < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "calls never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nats.down();
    std::thread::sleep(Duration::from_millis(1000));
    nats.up();
    let out = coordinator.wait_with_output().expect("coordinator ends");
    let took = started.elapsed();
    let result = json_of(&out);
    let calls = result["results"].as_array().expect("results");
    assert_eq!(calls.len(), 8);
    // Bounded by the calls' timeouts, never a hang.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let ok = calls.iter().filter(|c| c["status"] == "ok").count();
    if ok < 8 {
        eprintln!(
            "coordinator:\n{}\nworker:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(cluster.dir.path().join("w.stderr")).unwrap_or_default()
        );
    }
    assert_eq!(ok, 8, "the run went on after the restart: {result}");
    eprintln!(
        "restart: {ok}/8 ok in {took:?}: {}",
        calls
            .iter()
            .map(|c| format!("{}={}", c["id"], c["status"]))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

#[test]
fn bad_input_and_an_unreachable_broker_are_reported_before_anything_runs() {
    let Some(url) = nats_url() else { return };
    let cluster = Cluster::new(&url, "");
    let bad = cluster.batch(
        "bad.json",
        &json!([
            {"id": "a", "name": "echo", "arguments": {}},
            {"id": "b", "name": "no_such_tool", "arguments": {}}
        ]),
    );
    let out = cluster.run(&bad, &["--no-record"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no_such_tool") && stderr.contains('b'),
        "{stderr}"
    );

    // A port nobody listens on: one clear line, quickly, exit 2.
    let good = cluster.batch(
        "good.json",
        &json!([{"id": "a", "name": "echo", "arguments": {}}]),
    );
    let started = Instant::now();
    let out = isolated(BIN)
        .arg("run")
        .arg(&good)
        .args(["--no-record", "--nats", "nats://127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NATS at nats://127.0.0.1:1"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_worker_restarted_under_its_id_does_not_run_again_what_it_had_claimed() {
    let Some(url) = nats_url() else { return };
    let mut cluster = Cluster::new(&url, "[tools.shell]\nparallel_safe = true\n");
    cluster.worker("same", &[]);
    let batch = cluster.batch(
        "once.json",
        &json!([{"id": "once", "name": "shell", "arguments": {"command": "sleep 4"}}]),
    );
    let coordinator = cluster
        .run(&batch, &["--no-record"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coordinator");
    let started = Instant::now();
    while cluster.starts("same") < 1 {
        assert!(started.elapsed() < Duration::from_secs(20), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed, and back at once under the same id: another process, which must not run
    // the call its predecessor had claimed when JetStream delivers it again.
    cluster.kill("same");
    cluster.workers.retain(|(id, _)| id != "same");
    cluster.worker("same", &[]);
    let out = coordinator.wait_with_output().expect("coordinator ends");
    let result = json_of(&out);
    assert_eq!(result["results"][0]["status"], "interrupted", "{result}");
    assert_eq!(cluster.starts("same"), 1, "{:?}", cluster.log("same"));
}

#[test]
fn a_call_too_large_for_the_broker_fails_at_once_by_name() {
    let Some(url) = nats_url() else { return };
    let mut cluster = Cluster::new(&url, "");
    cluster.worker("w", &[]);
    let big = "x".repeat(2 * 1024 * 1024);
    let batch = cluster.batch(
        "big.json",
        &json!([{"id": "big", "name": "echo", "arguments": {"text": big}}]),
    );
    let started = Instant::now();
    let out = cluster.run(&batch, &["--no-record"]).output().expect("run");
    assert!(started.elapsed() < Duration::from_secs(10));
    let result = json_of(&out);
    let call = &result["results"][0];
    assert_eq!(call["status"], "error", "{call}");
    let message = call["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_payload"), "{message}");
}
