//! Load on the service: `POST /v1/executions?wait=true` of a batch of no-op calls (the
//! built-in `echo`) from many concurrent clients for a while — executions per second and
//! latency percentiles, recording off and on (SQLite) — then Server-Sent Events: many
//! subscribers on one execution, each receiving every event, and how far apart in time the
//! first and the last subscriber receive each event.
//!
//! ```text
//! cargo run --release -p toolgraph-serve --example load [--features mimalloc] -- [--seconds 10]
//!     [--clients 64] [--calls 10] [--subscribers 100] [--only off,on,sse] [--bare]
//!     [--url http://127.0.0.1:7878 [--token T]]
//! ```
//!
//! Without `--url` it starts the server in this process on 127.0.0.1:0 (with every
//! operational layer: request ids, tracing, metrics, auth, timeout, concurrency limit,
//! body limit, compression), once without a store and once with a fresh SQLite file; with
//! `--url` it drives that server as it is configured. Client and server then share the
//! machine's cores, as a load generator on the same host would. Figures are printed; nothing
//! is asserted.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use toolgraph::{Config, Runtime};
use toolgraph_serve::{AppState, ServeOptions, Server};

struct Args {
    seconds: u64,
    clients: usize,
    calls: usize,
    subscribers: usize,
    url: Option<String>,
    token: Option<String>,
    /// Only these parts: `off`, `on`, `sse` (default: all).
    only: Vec<String>,
    /// The application without the operational layers, to measure what they cost.
    bare: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 10,
        clients: 64,
        calls: 10,
        subscribers: 100,
        url: None,
        token: None,
        only: Vec::new(),
        bare: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--seconds" => args.seconds = number(value()?)?,
            "--clients" => args.clients = number(value()?)? as usize,
            "--calls" => args.calls = number(value()?)? as usize,
            "--subscribers" => args.subscribers = number(value()?)? as usize,
            "--url" => args.url = Some(value()?.trim_end_matches('/').to_owned()),
            "--token" => args.token = Some(value()?),
            "--only" => args.only = value()?.split(',').map(str::to_owned).collect(),
            "--bare" => args.bare = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// A server in this process; dropped, it shuts down.
struct InProcess {
    base: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(record: bool, bare: bool) -> InProcess {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.files.root = dir.path().to_path_buf();
    config.store.record = record;
    config.store.url = toolgraph::store::sqlite_url(&dir.path().join("load.db"));
    let runtime = Runtime::start(&config).await.expect("a runtime");
    let stop = CancellationToken::new();
    if bare {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let app = toolgraph_serve::app(AppState::new(runtime));
        let stopped = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        });
        return InProcess {
            base,
            stop,
            _dir: dir,
        };
    }
    let server = Server::bind(ServeOptions {
        bind: "127.0.0.1:0".parse().expect("address"),
        ..ServeOptions::default()
    })
    .await
    .expect("bound");
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run(AppState::new(runtime), stop.clone().cancelled_owned()));
    InProcess {
        base,
        stop,
        _dir: dir,
    }
}

fn client(token: Option<&str>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .expect("a client")
}

fn batch(calls: usize) -> Vec<u8> {
    let calls: Vec<Value> = (0..calls)
        .map(|i| json!({"id": format!("c{i}"), "name": "echo", "arguments": {"i": i}}))
        .collect();
    serde_json::to_vec(&calls).unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `clients` loops posting `body` with `?wait=true` for `seconds`.
async fn drive(
    base: &str,
    token: Option<&str>,
    clients: usize,
    calls: usize,
    seconds: u64,
    label: &str,
) {
    let http = client(token);
    // One copy for the whole run, sent without copying.
    let body: &'static [u8] = Box::leak(batch(calls).into_boxed_slice());
    let url = format!("{base}/v1/executions?wait=true");
    // Warm up: connections open, first-use costs paid.
    for _ in 0..clients.min(16) {
        let _ = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let answer = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(_) => errors += 1,
                    },
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    println!(
        "{label}: {} executions of {calls} calls in {:.1} s from {clients} clients: {:.0} executions/s; latency p50 {}, p99 {}, max {}; {errors} errors",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
}

/// One subscriber: every `(id, kind)` it receives and when.
async fn subscribe(http: reqwest::Client, url: String) -> Vec<(u64, String, Instant)> {
    let mut received = Vec::new();
    let Ok(response) = http.get(&url).send().await else {
        return received;
    };
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let now = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut kind = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                }
            }
            if let Some(id) = id {
                received.push((id, kind, now));
            }
        }
    }
    received
}

/// `subscribers` streams on one execution whose calls end one after another.
async fn sse(base: &str, token: Option<&str>, subscribers: usize) {
    let http = client(token);
    // A first call long enough for every subscriber to connect, then a chain of short ones:
    // their events arrive live, spread over time.
    let mut calls = vec![json!({"id": "gate", "name": "sleep", "arguments": {"ms": 1000}})];
    for i in 0..20 {
        let after = if i == 0 {
            "gate".to_owned()
        } else {
            format!("s{}", i - 1)
        };
        calls.push(json!({"id": format!("s{i}"), "name": "sleep", "arguments": {"ms": 10}, "depends_on": [after]}));
    }
    let started: Value = match http
        .post(format!("{base}/v1/executions"))
        .json(&calls)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => {
            println!("sse: could not start the execution: {e}");
            return;
        }
    };
    let Some(id) = started["id"].as_str() else {
        println!("sse: no execution id in {started}");
        return;
    };
    let url = format!("{base}/v1/executions/{id}/events");
    let opened = Instant::now();
    let tasks: Vec<_> = (0..subscribers)
        .map(|_| tokio::spawn(subscribe(http.clone(), url.clone())))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.unwrap_or_default());
    }
    let total = all.first().map_or(0, Vec::len);
    let complete = all
        .iter()
        .filter(|events| events.len() == total && events.last().is_some_and(|e| e.1 == "summary"))
        .count();
    // Per event received live (after the gate call's start, by then every subscriber is
    // connected): from the first subscriber's receipt to the last one's.
    let gate_started = all
        .first()
        .and_then(|events| events.iter().find(|e| e.1 == "started").map(|e| e.0))
        .unwrap_or(0);
    let mut spreads = Vec::new();
    for seq in (gate_started + 1)..total as u64 {
        let times: Vec<Instant> = all
            .iter()
            .filter_map(|events| events.iter().find(|e| e.0 == seq).map(|e| e.2))
            .collect();
        if times.len() == subscribers
            && let (Some(first), Some(last)) = (times.iter().min(), times.iter().max())
        {
            spreads.push(*last - *first);
        }
    }
    spreads.sort();
    println!(
        "sse: {subscribers} subscribers on one execution ({} calls): {complete} received all {total} events through the summary (each stream lasted {}); per live event, first to last subscriber: p50 {}, p99 {}, max {} over {} events",
        calls.len(),
        ms(opened.elapsed()),
        ms(percentile(&spreads, 50.0)),
        ms(percentile(&spreads, 99.0)),
        ms(spreads.last().copied().unwrap_or_default()),
        spreads.len()
    );
}

/// `--features mimalloc`: the same load with mimalloc instead of the system allocator
/// (glibc's malloc and free are the largest item of the profile).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    let token = args.token.as_deref();
    if let Some(url) = &args.url {
        drive(url, token, args.clients, args.calls, args.seconds, url).await;
        sse(url, token, args.subscribers).await;
        return;
    }
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    println!(
        "in-process server{} and {} clients on {threads} worker threads",
        if args.bare {
            " (bare: no operational layers)"
        } else {
            ""
        },
        args.clients
    );
    let part = |name: &str| args.only.is_empty() || args.only.iter().any(|p| p == name);
    if part("off") || part("sse") {
        let off = start(false, args.bare).await;
        if part("off") {
            drive(
                &off.base,
                None,
                args.clients,
                args.calls,
                args.seconds,
                "recording off",
            )
            .await;
        }
        if part("sse") {
            sse(&off.base, None, args.subscribers).await;
        }
    }
    if part("on") {
        let on = start(true, args.bare).await;
        drive(
            &on.base,
            None,
            args.clients,
            args.calls,
            args.seconds,
            "recording on (SQLite)",
        )
        .await;
    }
}
