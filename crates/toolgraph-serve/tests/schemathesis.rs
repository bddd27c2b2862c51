//! The OpenAPI document is true: schemathesis (PyPI) generates requests from
//! `/v1/openapi.json` — valid and invalid — against a real server (SQLite store, scripted
//! tools) and checks every answer: no 5xx, status codes, content types and bodies as
//! documented. `cargo test-all` installs a pinned schemathesis into `target/` and names it
//! in `TOOLGRAPH_TEST_SCHEMATHESIS`; without it the check is skipped (a failure under
//! `TOOLGRAPH_REQUIRE_SERVICES`).

mod common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_as_the_openapi_document_says() {
    let Ok(st) = std::env::var("TOOLGRAPH_TEST_SCHEMATHESIS") else {
        toolgraph_test_support::skip(
            "TOOLGRAPH_TEST_SCHEMATHESIS is unset (the path of schemathesis's `st`; `cargo test-all` installs it)",
        );
        return;
    };
    let server = common::start(4).await;
    // One recorded execution, so the list, stats and events have something to answer.
    let (status, _) = server
        .post(
            "/v1/executions?wait=true",
            &serde_json::json!([common::work("a", serde_json::json!({}))]),
        )
        .await;
    assert_eq!(status, 200);
    let report = tempfile::tempdir().expect("tempdir");
    let schema = server.url("/v1/openapi.json");
    let args: Vec<String> = vec![
        "run".into(),
        schema,
        "--checks".into(),
        "all".into(),
        // Excluded, and why:
        // - positive_data_acceptance: a batch the schema allows (any tool name, any
        //   arguments, any `depends_on`) is still refused with 400 when it names a tool
        //   the server does not have or forms a cycle — the tool registry is data, not
        //   schema.
        // - use_after_free / ensure_resource_availability: stateful checks that expect a
        //   DELETE to make a resource disappear; a cancelled execution stays readable
        //   (its record is the point).
        "--exclude-checks".into(),
        "positive_data_acceptance,use_after_free,ensure_resource_availability".into(),
        "--max-examples".into(),
        "25".into(),
        "--seed".into(),
        "7".into(),
        "--no-shrink".into(),
        "--generation-database".into(),
        "none".into(),
        "--request-timeout".into(),
        "10".into(),
        "--workers".into(),
        "2".into(),
        "--no-color".into(),
        "--report-dir".into(),
        report.path().display().to_string(),
    ];
    // Run in the temporary directory: schemathesis keeps a cache in its working directory.
    let cwd = report.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&st).args(&args).current_dir(cwd).output()
    })
    .await
    .expect("join")
    .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}
