//! Startup failures name the server, its command and its stderr; the command-line form of
//! a server parses (or is refused with a reason); configuration mistakes are caught before
//! any call.

mod common;

use toolgraph_mcp::{
    McpError, McpServer, McpServerConfig, McpToolOverride, StartupStage, connect_all,
    parse_cli_spec,
};

/// True when `node` runs; otherwise prints why the test is skipped (or panics when
/// `TOOLGRAPH_REQUIRE_SERVICES` is set).
fn node_available() -> bool {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        toolgraph_test_support::skip("node is not on PATH");
    }
    ok
}

fn broken() -> McpServerConfig {
    McpServerConfig {
        name: "broken".into(),
        command: Some("node".into()),
        args: vec![
            "-e".into(),
            "console.error('boom on purpose'); process.exit(3)".into(),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn startup_failure_names_the_server_its_command_and_its_stderr() {
    if !node_available() {
        return;
    }
    let e = McpServer::connect(&broken())
        .await
        .expect_err("the server exits at once");
    match &e {
        McpError::Startup {
            server,
            target,
            stage,
            stderr,
            ..
        } => {
            assert_eq!(server, "broken");
            assert_eq!(
                target,
                "node -e \"console.error('boom on purpose'); process.exit(3)\""
            );
            assert_eq!(*stage, StartupStage::Initialize);
            assert_eq!(stderr, "boom on purpose");
        }
        other => panic!("expected a startup error, got {other:?}"),
    }
    let text = e.to_string();
    println!("{text}");
    assert!(text.starts_with("MCP server `broken` (node -e "), "{text}");
    assert!(text.contains("initialize failed"), "{text}");
    assert!(text.ends_with("\n  stderr:\n    boom on purpose"), "{text}");
}

#[tokio::test]
async fn a_program_that_does_not_exist_fails_to_spawn() {
    let config = McpServerConfig {
        name: "ghost".into(),
        command: Some("/nonexistent/toolgraph-no-such-server".into()),
        ..Default::default()
    };
    let e = McpServer::connect(&config)
        .await
        .expect_err("no such program");
    assert!(
        matches!(&e, McpError::Startup { stage: StartupStage::Spawn, server, .. } if server == "ghost"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("cannot run `/nonexistent/toolgraph-no-such-server`"),
        "{e}"
    );
    plain_words(&e.to_string());
}

/// A message for people: no Rust type names or paths from the libraries underneath.
fn plain_words(text: &str) {
    for leak in ["rmcp::", "reqwest::", "Transport [", "WorkerTransport", "<"] {
        assert!(!text.contains(leak), "{leak:?} in: {text}");
    }
}

#[tokio::test]
async fn an_http_server_where_nothing_listens_is_named_with_the_operation_and_the_reason() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let config = McpServerConfig {
        name: "down".into(),
        url: Some(url.clone()),
        ..Default::default()
    };
    let e = McpServer::connect(&config)
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(
            &e,
            McpError::Startup {
                stage: StartupStage::Initialize,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "MCP server `down` ({url}): initialize failed: cannot connect to {url}: "
        )),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("refused"),
        "the OS's reason: {text}"
    );
    plain_words(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_all_reports_the_server_that_failed() {
    let Some(good) = common::everything("ev") else {
        return;
    };
    let e = connect_all(&[good.clone(), broken()])
        .await
        .expect_err("one server is broken");
    assert!(e.to_string().contains("MCP server `broken`"), "{e}");
    assert!(e.to_string().contains("boom on purpose"), "{e}");

    let mut typo = good;
    typo.tools.insert("ech0".into(), McpToolOverride::default());
    let e = McpServer::connect(&typo).await.expect_err("unknown tool");
    let text = e.to_string();
    assert!(
        text.contains("tools.ech0: the server has no such tool (it lists: echo,"),
        "{text}"
    );
}

#[test]
fn cli_spec_parses_commands_like_a_shell_and_urls() {
    let c =
        parse_cli_spec("fs=npx -y @modelcontextprotocol/server-filesystem '/tmp/my dir' \"a b\"")
            .expect("valid");
    assert_eq!(c.name, "fs");
    assert_eq!(c.command.as_deref(), Some("npx"));
    assert_eq!(
        c.args,
        [
            "-y",
            "@modelcontextprotocol/server-filesystem",
            "/tmp/my dir",
            "a b"
        ]
    );
    assert_eq!(c.url, None);

    let c = parse_cli_spec("api=https://mcp.example.com/mcp?x=1").expect("valid");
    assert_eq!(c.url.as_deref(), Some("https://mcp.example.com/mcp?x=1"));
    assert_eq!(c.command, None);
    let c = parse_cli_spec("local = http://127.0.0.1:8080/mcp").expect("valid");
    assert_eq!(
        (c.name.as_str(), c.url.as_deref()),
        ("local", Some("http://127.0.0.1:8080/mcp"))
    );
    let c = parse_cli_spec("mem=mcp-server-memory").expect("valid");
    assert!(c.args.is_empty());
}

#[test]
fn cli_spec_refuses_bad_input_with_a_reason() {
    let cases = [
        ("fs", "expected NAME=COMMAND"),
        ("=npx server", "non-empty `name`"),
        ("a.b=npx", "letters, digits"),
        ("fs=", "nothing after `=`"),
        ("fs=   ", "nothing after `=`"),
        ("fs=npx 'unclosed", "unbalanced quotes"),
        ("api=http://", "has a host"),
        ("api=https://a b", "no spaces"),
    ];
    for (spec, needle) in cases {
        let e = parse_cli_spec(spec).expect_err(spec);
        assert!(matches!(e, McpError::CliSpec { .. }), "{spec}: {e:?}");
        let text = e.to_string();
        assert!(text.contains(needle), "{spec}: {text}");
        assert!(
            text.contains(&format!("\"{spec}\"")),
            "names the spec: {text}"
        );
    }
}

#[test]
fn configuration_deserializes_strictly() {
    let config: McpServerConfig = serde_json::from_value(serde_json::json!({
        "name": "fs",
        "command": "npx",
        "args": ["-y", "@modelcontextprotocol/server-filesystem", "/srv"],
        "env": {"NODE_OPTIONS": "--max-old-space-size=256"},
        "max_concurrency": 4,
        "tools": {
            "write_file": {"class": "writer", "idempotent": false, "max_concurrency": 1,
                           "resources": [{"arg": "path", "access": "write", "kind": "file"}]},
            "read_text_file": {"class": "reader"}
        }
    }))
    .expect("valid");
    config.validate().expect("valid");
    let unknown = serde_json::from_value::<McpServerConfig>(serde_json::json!({
        "name": "fs", "command": "npx", "comand": "typo"
    }));
    assert!(unknown.is_err());
    let bad_class = serde_json::from_value::<McpServerConfig>(serde_json::json!({
        "name": "fs", "command": "npx", "tools": {"x": {"class": "sometimes"}}
    }));
    assert!(bad_class.is_err());
}

#[tokio::test]
async fn a_server_answering_initialize_with_garbage_fails_fast() {
    let config = McpServerConfig {
        name: "garbage".into(),
        command: Some("sh".into()),
        args: vec![
            "-c".into(),
            "read line; echo 'this is not JSON-RPC'; sleep 100".into(),
        ],
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let e = McpServer::connect(&config)
        .await
        .expect_err("garbage is no handshake");
    let waited = started.elapsed();
    let text = e.to_string();
    println!("after {waited:?}: {text}");
    assert!(
        waited < std::time::Duration::from_secs(10),
        "failed after {waited:?}"
    );
    assert!(
        matches!(
            &e,
            McpError::Startup {
                stage: StartupStage::Initialize,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.contains("this is not JSON-RPC"),
        "quotes the garbage: {text}"
    );
}
