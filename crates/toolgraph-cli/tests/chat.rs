//! `toolgraph chat` end to end against the scripted model server on loopback (no model runs
//! here): the seed's case — a first reply asking for two tool calls, a second reply
//! "Complete" — gives success with two calls made, their results sent back in the
//! provider's shape, and the session recorded; the shipped example script through
//! `--mock`; a missing API key refused before anything runs; and which model settings win.

use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};
use toolgraph::llm::Provider;
use toolgraph::llm::mock::{MockServer, Reply, openai_calls, openai_text};
use toolgraph_test_support::isolated;

/// The binary with `args`, run off the async threads, with no model variables of the
/// caller's and `env` set.
async fn toolgraph(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = isolated(env!("CARGO_BIN_EXE_toolgraph"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("toolgraph runs"))
        .await
        .expect("joined")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_runs_the_tools_the_model_asks_for_and_records_the_session() {
    let server = MockServer::start(vec![
        Reply::json(openai_calls(&[
            ("call_1", "sleep", r#"{"ms": 30}"#),
            (
                "call_2",
                "echo",
                r#"{"said": "hello", "depends_on": ["call_1"]}"#,
            ),
        ])),
        Reply::json(openai_text("Complete")),
    ])
    .await
    .expect("bind");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("chat.db").display());
    let base = server.base_url(Provider::OpenAi);
    // The file tools are offered only with a root.
    let root = dir.path().to_string_lossy().into_owned();
    let out = toolgraph(
        &[
            "chat",
            "say hello after a nap",
            "--root",
            &root,
            "--quiet",
            "--base-url",
            &base,
            "--model",
            "scripted",
            "--db",
            &db,
        ],
        &[("OPENAI_API_KEY", "test-key")],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("Complete"), "{stdout}");
    assert!(
        stdout.contains("2 turn(s) · 2 tool call(s) in 1 execution(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("recorded as session"), "{stdout}");

    let requests: Vec<Value> = server.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        server.requests()[0].headers["authorization"]
            .to_str()
            .expect("ascii"),
        "Bearer test-key"
    );
    let tools: Vec<&str> = requests[0]["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x["function"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        tools.contains(&"sleep") && tools.contains(&"file_read"),
        "{tools:?}"
    );
    let messages = requests[1]["messages"].as_array().expect("messages");
    let results: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap_or(""),
                m["content"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(results.len(), 2, "{messages:?}");
    assert_eq!(results[0], ("call_1", r#"{"slept_ms":30}"#));
    assert_eq!(results[1], ("call_2", r#"{"said":"hello"}"#));

    let history = toolgraph(&["history", "--json", "--db", &db], &[]).await;
    let rows: Value = serde_json::from_slice(&history.stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[0]["calls"], 2);
    assert_eq!(rows[0]["success"], true);
    // The turn was recorded with its real plan: call_2's `depends_on` is an edge.
    let id = rows[0]["id"].as_str().expect("id").to_owned();
    let show = toolgraph(&["show", &id, "--json", "--db", &db], &[]).await;
    let stored: Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(stored["metadata"]["edges"], 1, "{stored}");
    assert_eq!(stored["results"][1]["level"], 1, "call_2 ran after call_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_script_runs_offline_with_several_calls_and_a_reference_in_one_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("workspace");
    std::fs::create_dir_all(&root).expect("mkdir");
    // The notes the script reads, copied: the test writes nothing into the source tree.
    let notes = PathBuf::from(example("workspace/notes"));
    std::fs::create_dir_all(root.join("notes")).expect("mkdir");
    for entry in std::fs::read_dir(&notes).expect("notes") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("a name").to_owned();
        std::fs::copy(&path, root.join("notes").join(name)).expect("copy");
    }
    let root_arg = root.to_string_lossy().into_owned();
    for (provider, stream) in [("openai", false), ("anthropic", true)] {
        let mut args = vec![
            "chat",
            "What is left to do in my notes?",
            "--mock",
            "",
            "--root",
            &root_arg,
            // The script writes a file: `chat` asks before writes, and nobody answers here.
            "--approval",
            "auto",
            "--no-record",
            "--json",
            "--provider",
            provider,
        ];
        let script = example("chat-script.json");
        args[3] = &script;
        if stream {
            args.push("--stream");
        }
        let out = toolgraph(&args, &[]).await;
        let case = format!("{provider} stream={stream}");
        assert_eq!(out.status.code(), Some(0), "{case}: {}", text(&out.stderr));
        let result: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {}", text(&out.stdout)));
        assert_eq!(result["success"], true, "{case}");
        assert_eq!(result["tool_calls_made"], 4, "{case}");
        assert!(
            result["answer"]
                .as_str()
                .is_some_and(|a| a.contains("out/todos.md")),
            "{case}: {result}"
        );
        let written = std::fs::read_to_string(root.join("out/todos.md")).expect("written");
        assert!(
            written.contains("Notes: architecture.md, incidents.md, roadmap.md"),
            "{case}: the write got the listing through its reference: {written}"
        );
        assert!(
            written.contains("notes/roadmap.md:5: 3. TODO: streaming dispatch"),
            "{case}: and the search's matches: {written}"
        );
        std::fs::remove_file(root.join("out/todos.md")).expect("cleaned");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_without_an_api_key_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.db");
    let db_url = format!("sqlite://{}", db.display());
    for (provider, variable) in [
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
    ] {
        let out = toolgraph(
            &["chat", "hello", "--provider", provider, "--db", &db_url],
            &[],
        )
        .await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with(&format!("toolgraph: no API key for {provider} at https://")),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("set {variable}")), "{stderr}");
        assert!(
            stderr.contains("--mock examples/chat-script.json"),
            "{stderr}"
        );
        assert!(!stderr.contains("dns"), "nothing was sent: {stderr}");
    }
    assert!(!db.exists(), "nothing was started, not even the store");

    // `[llm] provider = "anthropic"` alone means Anthropic's endpoint, not OpenAI's.
    let config = dir.path().join("toolgraph.toml");
    std::fs::write(&config, "[llm]\nprovider = \"anthropic\"\n").expect("config");
    let config = config.to_string_lossy().into_owned();
    let out = toolgraph(&["chat", "hello", "--config", &config, "--no-record"], &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(
            "toolgraph: no API key for anthropic at https://api.anthropic.com: set ANTHROPIC_API_KEY"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_comes_from_flags_then_the_environment_then_the_llm_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("toolgraph.toml");
    let ask = |server: &MockServer| {
        let base = server.base_url(Provider::OpenAi);
        std::fs::write(
            &config,
            format!("[llm]\nprovider = \"openai\"\nbase_url = \"{base}\"\nmodel = \"from-file\"\n"),
        )
        .expect("config");
        config.to_string_lossy().into_owned()
    };
    let model_sent = |server: &MockServer| {
        server.requests()[0].body["model"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for (flag, env, want) in [
        (None, vec![], "from-file"),
        (None, vec![("OPENAI_MODEL", "from-env")], "from-env"),
        (
            None,
            vec![
                ("OPENAI_MODEL", "from-env"),
                ("TOOLGRAPH_LLM_MODEL", "from-toolgraph-env"),
            ],
            "from-toolgraph-env",
        ),
        (
            Some("from-flag"),
            vec![("OPENAI_MODEL", "from-env")],
            "from-flag",
        ),
    ] {
        let server = MockServer::start(vec![Reply::json(json!(openai_text("hi")))])
            .await
            .expect("bind");
        let config = ask(&server);
        let mut args = vec!["chat", "hi", "--quiet", "--no-record", "--config", &config];
        if let Some(model) = flag {
            args.extend(["--model", model]);
        }
        let out = toolgraph(&args, &env).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(model_sent(&server), want, "flag {flag:?}, env {env:?}");
    }
    // TOOLGRAPH_CONFIG names the file when --config does not.
    let server = MockServer::start(vec![Reply::json(openai_text("hi"))])
        .await
        .expect("bind");
    let config = ask(&server);
    let out = toolgraph(
        &["chat", "hi", "--quiet", "--no-record"],
        &[("TOOLGRAPH_CONFIG", &config)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(model_sent(&server), "from-file");
}
