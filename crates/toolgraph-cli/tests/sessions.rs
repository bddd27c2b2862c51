//! Conversations that persist: `toolgraph chat` without a prompt in a real terminal (tmux)
//! against the scripted model server (`--mock`), whose turns check that each request
//! carries the conversation so far (`expect`); `toolgraph sessions`, `show SESSION` and
//! `chat --resume` with id prefixes; a prompt piped into standard input.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use toolgraph_test_support::{Terminal, isolated};

const WAIT: Duration = Duration::from_secs(30);

/// Runs the binary with `args` and `stdin` as its standard input.
fn toolgraph(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut cmd = isolated(env!("CARGO_BIN_EXE_toolgraph"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("toolgraph runs");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("stdin written");
    }
    child.wait_with_output().expect("toolgraph ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a model script into `dir` and answers its path.
fn script(dir: &Path, name: &str, json: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, json).expect("script written");
    path.to_string_lossy().into_owned()
}

/// The sessions of the store at `db`, as `sessions --json` lists them.
fn sessions(db: &str) -> Vec<Value> {
    let out = toolgraph(&["sessions", "--json", "--db", db], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// A conversation in a terminal: `chat` with these extra arguments.
fn chat_in_terminal(dir: &Path, db: &str, mock: &str, extra: &[&str]) -> Option<Terminal> {
    let mut args = vec!["chat", "--mock", mock, "--db", db];
    args.extend_from_slice(extra);
    Terminal::start(env!("CARGO_BIN_EXE_toolgraph"), &args, dir, &[])
}

#[test]
fn a_conversation_keeps_its_history_across_turns_and_is_resumed_by_prefix_in_a_new_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("chat.db").display());
    // The second request must carry the first turn: its prompt, tool result and answer.
    let first = script(
        dir.path(),
        "first.json",
        r#"[{"text": "Napping.", "tool_calls": [{"id": "nap", "name": "sleep", "arguments": {"ms": 20}}]},
            {"text": "Rested: answer one."},
            {"text": "Answer two, after answer one.", "expect": ["please nap", "slept_ms", "Rested: answer one.", "what next"]}]"#,
    );
    let Some(mut term) = chat_in_terminal(dir.path(), &db, &first, &[]) else {
        return;
    };
    term.wait_for("chat>", WAIT);
    term.send_line("please nap");
    term.wait_for("Rested: answer one.", WAIT);
    term.wait_for_n("chat>", 2, WAIT);
    term.send_line("what next");
    let screen = term.wait_for("Answer two, after answer one.", WAIT);
    assert!(!screen.contains("expected request"), "{screen}");
    term.wait_for_n("chat>", 3, WAIT);
    term.send_line("/session");
    term.wait_for("· model mock · 2 turn(s) ·", WAIT);
    // Keys are typed only at a prompt: between two, the terminal is not the editor's.
    term.wait_for_n("chat>", 4, WAIT);
    term.send_line("/exit");
    assert_eq!(term.wait_exit(WAIT), 0, "{}", term.screen());

    let listed = sessions(&db);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(listed[0]["title"], "please nap");
    assert_eq!(listed[0]["turns"], 2);
    assert_eq!(listed[0]["model"], "mock");
    assert!(listed[0]["input_tokens"].as_i64() > Some(0));
    let table = toolgraph(&["sessions", "--db", &db], "");
    assert!(
        text(&table.stdout).contains(&id[..8]),
        "{}",
        text(&table.stdout)
    );

    // A new process continues it from a prefix: the model receives the whole history.
    let second = script(
        dir.path(),
        "second.json",
        r#"[{"text": "Resumed with everything.", "expect": ["please nap", "Rested: answer one.", "Answer two, after answer one.", "and now"]}]"#,
    );
    let Some(mut term) = chat_in_terminal(dir.path(), &db, &second, &["--resume", &id[..6]]) else {
        return;
    };
    term.wait_for("resumed after 2 turn(s)", WAIT);
    term.send_line("and now");
    let screen = term.wait_for("Resumed with everything.", WAIT);
    assert!(!screen.contains("expected request"), "{screen}");
    term.wait_for_n("chat>", 2, WAIT);
    term.send_keys(&["C-d"]);
    assert_eq!(term.wait_exit(WAIT), 0, "{}", term.screen());

    // `show` with a prefix: every turn's messages and the execution of the first.
    let out = toolgraph(&["show", &id[..7], "--db", &db], "");
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for line in [
        "turn 1 · answered",
        "user: please nap",
        "assistant → nap sleep",
        "tool nap:",
        "turn 3 · answered",
        "assistant: Resumed with everything.",
        "1 call(s) · success yes",
    ] {
        assert!(shown.contains(line), "{line:?} missing from:\n{shown}");
    }
    let out = toolgraph(&["show", &id, "--json", "--db", &db], "");
    let session: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(session["turns"].as_array().map(Vec::len), Some(3));
    assert_eq!(session["executions"].as_array().map(Vec::len), Some(1));
}

#[test]
fn ctrl_c_during_a_slow_call_cancels_the_turn_and_the_next_prompt_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("chat.db").display());
    let mock = script(
        dir.path(),
        "slow.json",
        r#"[{"text": "A long nap.", "tool_calls": [{"id": "long", "name": "sleep", "arguments": {"ms": 60000}}]},
            {"text": "Still here after the cancel.", "expect": ["nap for a minute", "cancelled", "are you there"]}]"#,
    );
    let Some(mut term) = chat_in_terminal(dir.path(), &db, &mock, &[]) else {
        return;
    };
    term.wait_for("chat>", WAIT);
    term.send_line("nap for a minute");
    // The progress display shows the call running.
    term.wait_for("running 1", WAIT);
    term.send_keys(&["C-c"]);
    term.wait_for("the conversation goes on", WAIT);
    term.wait_for_n("chat>", 2, WAIT);
    term.send_line("are you there");
    let screen = term.wait_for("Still here after the cancel.", WAIT);
    assert!(!screen.contains("expected request"), "{screen}");
    term.wait_for_n("chat>", 3, WAIT);
    // Ctrl-C at the prompt clears the line; the session goes on until Ctrl-D.
    term.send_literal("never sent");
    term.send_keys(&["C-c"]);
    term.wait_for_n("chat>", 4, WAIT);
    term.send_keys(&["C-d"]);
    assert_eq!(term.wait_exit(WAIT), 0, "{}", term.screen());

    let listed = sessions(&db);
    let id = listed[0]["id"].as_str().expect("id");
    assert_eq!(listed[0]["turns"], 2, "the line cleared was never asked");
    let out = toolgraph(&["show", id, "--json", "--db", &db], "");
    let session: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(session["turns"][0]["status"], "cancelled", "{session}");
    assert_eq!(session["turns"][1]["status"], "answered", "{session}");
    assert_eq!(session["executions"][0]["status"], "cancelled", "{session}");
}

#[test]
fn a_piped_prompt_is_one_turn_and_an_empty_one_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("chat.db").display());
    let mock = script(dir.path(), "one.json", r#"[{"text": "Piped answer."}]"#);
    let out = toolgraph(
        &["chat", "--mock", &mock, "--db", &db, "-q"],
        "from a pipe\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("Piped answer."),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(sessions(&db)[0]["title"], "from a pipe");

    let out = toolgraph(&["chat", "--mock", &mock, "--db", &db, "-q"], "  \n");
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains("no prompt") && said.contains("in a terminal"),
        "{said}"
    );
}

#[test]
fn a_one_turn_chat_resumes_a_session_and_prefixes_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("chat.db").display());
    let first = script(dir.path(), "a.json", r#"[{"text": "First."}]"#);
    let out = toolgraph(
        &["chat", "remember 42", "--mock", &first, "--db", &db, "-q"],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = sessions(&db)[0]["id"].as_str().expect("id").to_owned();
    let second = script(
        dir.path(),
        "b.json",
        r#"[{"text": "It was 42.", "expect": ["remember 42", "First."]}]"#,
    );
    let out = toolgraph(
        &[
            "chat",
            "what number?",
            "--resume",
            &id[..5],
            "--mock",
            &second,
            "--db",
            &db,
            "-q",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("It was 42."),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(sessions(&db)[0]["turns"], 2);

    // An unknown session, and one held with another provider, are refused by name.
    let out = toolgraph(
        &[
            "chat", "x", "--resume", "ffff0", "--mock", &second, "--db", &db,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no session ffff0"),
        "{}",
        text(&out.stderr)
    );
    let out = toolgraph(
        &[
            "chat",
            "x",
            "--resume",
            &id,
            "--provider",
            "anthropic",
            "--mock",
            &second,
            "--db",
            &db,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--provider openai"),
        "{}",
        text(&out.stderr)
    );
    let out = toolgraph(&["show", "ffff0", "--db", &db], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no execution ffff0 in the store")
            && text(&out.stderr).contains("nor a session"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_prefix_two_sessions_share_is_refused_with_both_listed() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("chat.db").display());
    let mock = script(dir.path(), "a.json", r#"[{"text": "First."}]"#);
    let (args, db2, mock2) = (db.clone(), db.clone(), mock.clone());
    let out = tokio::task::spawn_blocking(move || {
        toolgraph(
            &["chat", "hello", "--mock", &mock2, "--db", &args, "-q"],
            "",
        )
    })
    .await
    .expect("joined");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Two more sessions whose ids share their first five characters.
    let mut conn = sqlx::SqliteConnection::connect(&db2).await.expect("sqlite");
    for id in [
        "abcde000-0000-4000-8000-000000000001",
        "abcde111-0000-4000-8000-000000000002",
    ] {
        sqlx::query("INSERT INTO sessions (id, created_at, label) VALUES ($1, 1, 'x')")
            .bind(id)
            .execute(&mut conn)
            .await
            .expect("insert");
    }
    conn.close().await.expect("closed");
    let outs = tokio::task::spawn_blocking(move || {
        [
            toolgraph(&["show", "ABCDE", "--db", &db], ""),
            toolgraph(
                &[
                    "chat", "x", "--resume", "abcde", "--mock", &mock, "--db", &db,
                ],
                "",
            ),
            toolgraph(&["show", "abcde1", "--db", &db], ""),
        ]
    })
    .await
    .expect("joined");
    for out in &outs[..2] {
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(said.contains("abcde is ambiguous"), "{said}");
        assert!(
            said.contains("abcde000-0000-4000-8000-000000000001")
                && said.contains("abcde111-0000-4000-8000-000000000002"),
            "{said}"
        );
    }
    assert_eq!(outs[2].status.code(), Some(0), "{}", text(&outs[2].stderr));
    assert!(
        text(&outs[2].stdout).starts_with("session abcde111-"),
        "{}",
        text(&outs[2].stdout)
    );
}
