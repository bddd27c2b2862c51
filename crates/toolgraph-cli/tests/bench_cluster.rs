//! `toolgraph bench --nats`: the cluster's figures, measured through worker processes the
//! bench starts, and nothing left behind — no worker process, no stream, no bucket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

fn nats() -> Option<String> {
    match std::env::var("TOOLGRAPH_TEST_NATS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            toolgraph_test_support::skip(
                "TOOLGRAPH_TEST_NATS_URL is not set (a NATS server with JetStream, e.g. nats://127.0.0.1:4222)",
            );
            None
        }
    }
}

/// A JetStream API request (`$JS.API.<request>`, empty payload) over the NATS protocol
/// itself: no client library here, and nothing created by asking.
fn jetstream_api(url: &str, request: &str) -> Value {
    let first = url.split(',').next().unwrap_or(url).trim();
    let address = first.strip_prefix("nats://").unwrap_or(first);
    let socket = TcpStream::connect(address).expect("the NATS server answers");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut writer = socket.try_clone().expect("socket clone");
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).expect("the server's INFO");
    assert!(line.starts_with("INFO"), "{line}");
    write!(
        writer,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.tgbench 1\r\n\
         PUB $JS.API.{request} _INBOX.tgbench 0\r\n\r\n"
    )
    .expect("request sent");
    loop {
        line.clear();
        reader.read_line(&mut line).expect("an answer");
        if line.starts_with("PING") {
            writer.write_all(b"PONG\r\n").expect("pong");
            continue;
        }
        if !line.starts_with("MSG") {
            assert!(!line.starts_with("-ERR"), "{line}");
            continue;
        }
        let size: usize = line
            .split_whitespace()
            .last()
            .and_then(|s| s.parse().ok())
            .expect("MSG ends with the payload's size");
        let mut payload = vec![0; size + 2];
        reader.read_exact(&mut payload).expect("the payload");
        return serde_json::from_slice(&payload[..size]).expect("a JetStream API answer");
    }
}

/// Whether the stream `name` exists.
fn stream_exists(url: &str, name: &str) -> bool {
    let answer = jetstream_api(url, &format!("STREAM.INFO.{name}"));
    if answer.get("config").is_some() {
        return true;
    }
    assert_eq!(
        answer["error"]["err_code"], 10059,
        "neither a stream nor `stream not found`: {answer}"
    );
    false
}

#[test]
fn the_cluster_bench_measures_through_workers_and_leaves_nothing_behind() {
    let Some(url) = nats() else { return };
    let out = toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"))
        .args([
            "bench", "--nats", &url, "--runs", "1", "--calls", "500", "--json",
        ])
        .output()
        .expect("toolgraph bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let figures: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let figures = figures.as_array().expect("an array of figures");
    let value = |prefix: &str| -> f64 {
        let f = figures
            .iter()
            .find(|f| f["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no figure `{prefix}…` in {figures:?}"));
        f["value"].as_f64().expect("a number")
    };
    assert!(value("cluster: throughput, 500 echo calls") > 0.0);
    assert!(value("cluster: added latency per call") > 0.0);
    assert!(value("cluster: per-call time added, p50") > 0.0);
    assert!(value("cluster: per-call time added, p99") > 0.0);
    assert!(value("cluster: 100 × sleep 50 ms, limit 10").is_finite());
    assert!(value("cluster: skewed DAG").is_finite());
    assert!(value("local: skewed DAG").is_finite());
    assert!(value("cluster: the same, cluster-wide limit 10").is_finite());
    // Only the cluster's figures.
    assert!(
        figures.iter().all(|f| f["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("cluster: ") || n.starts_with("local: "))),
        "{figures:?}"
    );

    // The namespace and the workers' pids, as the bench named them on standard error.
    let started = stderr
        .lines()
        .find(|l| l.starts_with("cluster bench: namespace "))
        .unwrap_or_else(|| panic!("no namespace line: {stderr}"));
    let ns = started
        .split_whitespace()
        .nth(3)
        .expect("the namespace follows `namespace`");
    assert!(ns.starts_with("bench-"), "{started}");
    // Every worker it started: `--workers` (2), then as many again with a cluster-wide limit.
    let pids: Vec<u32> = stderr
        .lines()
        .filter(|l| l.starts_with("cluster bench: "))
        .filter_map(|l| l.split("(pids ").nth(1))
        .flat_map(|s| s.trim_end_matches(')').split(", "))
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 4, "{stderr}");
    if cfg!(target_os = "linux") {
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "worker process {pid} is still running"
            );
        }
    }
    assert!(!stream_exists(&url, &format!("toolgraph-{ns}-calls")));
    assert!(!stream_exists(&url, &format!("KV_toolgraph-{ns}-workers")));
    // The check itself sees a stream that exists: the one a `toolgraph workers` creates.
    let listed = toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"))
        .args(["workers", "--nats", &url, "--namespace", ns])
        .output()
        .expect("toolgraph workers runs");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("no live worker"),
        "{listed:?}"
    );
    for stream in [
        format!("toolgraph-{ns}-calls"),
        format!("KV_toolgraph-{ns}-workers"),
    ] {
        assert!(stream_exists(&url, &stream), "{stream}");
        jetstream_api(&url, &format!("STREAM.DELETE.{stream}"));
        assert!(!stream_exists(&url, &stream), "{stream}");
    }
}
