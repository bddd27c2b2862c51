//! `toolgraph serve` as a process: the line that gives its address, the refusal of an
//! unprotected address, the token, and the graceful shutdown at SIGTERM — a slow execution
//! cancelled after the grace period, recorded `cancelled`, then finished by
//! `toolgraph resume`.
//!
//! HTTP here is a few lines over `std::net::TcpStream` (HTTP/1.1, `Connection: close`):
//! the binary's tests take no HTTP client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary, kept away from the user's data directory and configuration.
fn command(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_toolgraph"));
    command
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("TOOLGRAPH_CONFIG")
        .env_remove("TOOLGRAPH_SERVE_TOKEN")
        .env_remove("TOOLGRAPH_SERVE_BIND")
        .current_dir(home);
    command
}

fn toolgraph(home: &Path, args: &[&str]) -> Output {
    command(home).args(args).output().expect("toolgraph runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `toolgraph serve` and the address its first line gave.
struct Served {
    child: Child,
    addr: String,
    first_line: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut child = command(home)
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("toolgraph serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut first_line = String::new();
    BufReader::new(stdout)
        .read_line(&mut first_line)
        .expect("a first line");
    let addr = first_line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("no address in {first_line:?}; stderr: {err}")
        })
        .to_owned();
    Served {
        child,
        addr,
        first_line,
    }
}

/// One request; the status and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("sent");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// SIGTERM to `child`.
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for `child` to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn an_address_outside_loopback_without_a_token_is_refused_before_anything_starts() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = toolgraph(
        home.path(),
        &["serve", "--bind", "0.0.0.0:0", "--db", "memory:"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{err}"
    );
    assert!(err.contains("TOOLGRAPH_SERVE_TOKEN"), "says how: {err}");
    assert!(out.stdout.is_empty(), "nothing listened");

    let out = command(home.path())
        .args(["serve", "--bind", "not-an-address"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_prints_where_it_listens_guards_with_the_token_and_exits_0_at_sigterm() {
    let home = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", home.path().join("served.db").display());
    let mut served = serve(
        home.path(),
        &["--bind", "127.0.0.1:0", "--db", &db],
        &[("TOOLGRAPH_SERVE_TOKEN", "tok-123")],
    );
    assert!(
        served
            .first_line
            .starts_with("toolgraph serve: listening on http://127.0.0.1:"),
        "{}",
        served.first_line
    );
    assert!(
        served.first_line.contains(&format!("(store {db}, "))
            && served.first_line.trim_end().ends_with(" tools)"),
        "{}",
        served.first_line
    );
    assert_eq!(http(&served.addr, "GET", "/healthz", None, None).0, 200);
    assert_eq!(http(&served.addr, "GET", "/readyz", None, None).0, 401);
    let (status, body) = http(&served.addr, "GET", "/readyz", Some("tok-123"), None);
    assert_eq!((status, body.as_str()), (200, "ok"));

    terminate(&served.child);
    let status = wait_exit(&mut served.child, Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0), "a shutdown asked for is a success");
}

#[test]
fn sigterm_cancels_what_outlives_the_grace_and_resume_finishes_it() {
    let home = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", home.path().join("served.db").display());
    let mut served = serve(
        home.path(),
        &["--bind", "127.0.0.1:0", "--db", &db],
        &[("TOOLGRAPH_SERVE_SHUTDOWN_GRACE_MS", "300")],
    );
    let batch = json!([
        {"id": "quick", "name": "echo", "arguments": {"x": 1}},
        {"id": "slow", "name": "sleep", "arguments": {"ms": 4000}},
        {"id": "after", "name": "echo", "arguments": {"from": "${slow}"}},
    ]);
    let (status, body) = http(&served.addr, "POST", "/v1/executions", None, Some(&batch));
    if status == 404 {
        toolgraph_test_support::skip(
            "POST /v1/executions is not in this build (the serve-api branch adds it)",
        );
        return;
    }
    assert_eq!(status, 202, "{body}");
    let started: Value = serde_json::from_str(&body).expect("json");
    let id = started["id"].as_str().expect("an id").to_owned();
    // The slow call is running when the signal comes.
    std::thread::sleep(Duration::from_millis(200));

    let signalled = Instant::now();
    terminate(&served.child);
    let status = wait_exit(&mut served.child, Duration::from_secs(20)).expect("exits");
    let took = signalled.elapsed();
    let mut err = String::new();
    if let Some(mut e) = served.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        took < Duration::from_millis(3000),
        "cancelled after the grace (300 ms), not after the call (4000 ms): {took:?}; {err}"
    );
    assert!(err.contains("shutting down"), "{err}");

    let history = toolgraph(home.path(), &["history", "--json", "--db", &db]);
    let history: Value = serde_json::from_slice(&history.stdout).expect("json");
    assert_eq!(history[0]["id"], json!(id));
    assert_eq!(history[0]["status"], "cancelled", "{history}");

    let resumed = toolgraph(home.path(), &["resume", &id, "--quiet", "--db", &db]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let shown = toolgraph(home.path(), &["show", &id, "--json", "--db", &db]);
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("json");
    let statuses: Vec<&str> = shown["results"]
        .as_array()
        .or_else(|| shown["result"]["results"].as_array())
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["ok", "ok", "ok"], "{shown}");
}
