//! The dashboard in a real browser: a real server (in-process on 127.0.0.1:0, the built-in
//! tools, a SQLite store in a temporary directory) driven by `tests/browser/dashboard.mjs`
//! through playwright-core and Debian's Chromium. The script runs a batch from the run page,
//! checks the live timeline, the final table and the critical path, the list and the stats
//! pages, and saves screenshots (in `CARGO_TARGET_TMPDIR/dashboard-screenshots`, or
//! `TOOLGRAPH_TEST_SCREENSHOTS`). Skips when node, the npm install or Chromium is missing
//! (`TOOLGRAPH_TEST_CHROMIUM` names the browser; default `/usr/bin/chromium`).

use std::path::{Path, PathBuf};
use std::process::Command;

use toolgraph::{Config, Runtime};
use toolgraph_serve::AppState;
use toolgraph_test_support::skip;

/// What the browser test needs, or why it cannot run here.
fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var_os("TOOLGRAPH_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install -y chromium, or set TOOLGRAPH_TEST_CHROMIUM)",
            chromium.display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is not installed".into());
    }
    if !project.join("node_modules/playwright-core").is_dir() {
        return Err(format!(
            "playwright-core is not installed (npm ci --prefix {}; cargo test-all does it)",
            project.display()
        ));
    }
    Ok((project, chromium))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_a_batch_and_draws_it_live_in_chromium() {
    let (project, chromium) = match prerequisites() {
        Ok(found) => found,
        Err(reason) => return skip(&reason),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.store.url = toolgraph_store::sqlite_url(&dir.path().join("store.db"));
    config.store.record = true;
    let runtime = Runtime::start(&config).await.expect("runtime");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = toolgraph_serve::app(AppState::new(runtime));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let shots = std::env::var_os("TOOLGRAPH_TEST_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots"));
    let output = tokio::task::spawn_blocking({
        let shots = shots.clone();
        move || {
            Command::new("node")
                .arg(project.join("dashboard.mjs"))
                .arg(&base)
                .arg(&shots)
                .env("TOOLGRAPH_TEST_CHROMIUM", &chromium)
                .current_dir(&project)
                .output()
        }
    })
    .await
    .expect("join")
    .expect("run node");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("screenshots in {}", shots.display());
    assert!(
        output.status.success(),
        "dashboard.mjs failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
