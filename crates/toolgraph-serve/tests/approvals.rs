//! Approvals over real HTTP: a call the server's policy asks about waits at
//! `GET /v1/approvals` (holding no slot: with one slot in all, the other calls run to their
//! end meanwhile) until `POST /v1/approvals/{id}` answers it; a denied call ends `denied`
//! and its dependant is skipped; the live events say `awaiting_approval`.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use toolgraph_core::{ApprovalPolicy, ApprovalPreset};

use common::{Server, start_asking, work};

async fn asking_server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = toolgraph_store::sqlite_url(&dir.path().join("store.db"));
    let store = toolgraph_store::open(&url).await.expect("store");
    let policy = ApprovalPolicy::preset(ApprovalPreset::AskWrites);
    start_asking(1, Some(store), dir, Vec::new(), Some(policy)).await
}

/// Polls `GET /v1/approvals` until `n` calls wait.
async fn pending(server: &Server, n: usize) -> Vec<Value> {
    for _ in 0..400 {
        let (status, body) = server.get("/v1/approvals").await;
        assert_eq!(status, 200, "{body}");
        let list = body["approvals"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{n} approvals never waited");
}

#[tokio::test]
async fn calls_wait_at_the_approvals_endpoint_without_a_slot_until_answered() {
    let server = asking_server().await;
    let batch = json!({"tool_calls": [
        work("w1", json!({"ms": 1, "writes": ["file:a"]})),
        work("w2", json!({"ms": 1, "writes": ["file:b"]})),
        work("after", json!({"reads": ["file:c"], "from": "${w2.id}"})),
        work("r1", json!({"ms": 20, "reads": ["file:r"]})),
        work("r2", json!({"ms": 20, "reads": ["file:r"]})),
    ]});
    let (status, accepted) = server.post("/v1/executions", &batch).await;
    assert_eq!(status, 202, "{accepted}");
    let execution = accepted["id"].as_str().expect("id").to_owned();

    let list = pending(&server, 2).await;
    let by_call = |call: &str| {
        list.iter()
            .find(|a| a["call_id"] == call)
            .cloned()
            .unwrap_or_else(|| panic!("{call} not pending: {list:?}"))
    };
    let (w1, w2) = (by_call("w1"), by_call("w2"));
    assert_eq!(w1["tool"], "work");
    assert_eq!(w1["class"], "write");
    assert_eq!(w1["execution_id"], execution.as_str());
    assert_eq!(w1["arguments"], json!({"ms": 1, "writes": ["file:a"]}));
    assert_eq!(w1["resources"][0]["key"], "file:a");
    assert_eq!(w1["resources"][0]["access"], "write");

    // With one slot in all, the readers run to their end while both writes wait.
    for _ in 0..400 {
        if server.probe.invocations() == 2 && server.probe.live() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(server.probe.invocations(), 2, "only the readers ran");
    assert_eq!(server.probe.live(), 0, "the readers ended");

    let id = |a: &Value| a["id"].as_str().expect("id").to_owned();
    let (status, problem) = server
        .post(
            &format!("/v1/approvals/{}", id(&w1)),
            &json!({"decision": "maybe"}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let (status, problem) = server
        .post(
            &format!("/v1/approvals/{}", id(&w1)),
            &json!({"decision": "approve_always"}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    // A cross-site form or text/plain POST (no CORS preflight) cannot answer.
    let forged = server
        .http
        .post(server.url(&format!("/v1/approvals/{}", id(&w1))))
        .header("content-type", "text/plain")
        .body(json!({"decision": "approve"}).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(forged.status().as_u16(), 415);
    let (status, answered) = server
        .post(
            &format!("/v1/approvals/{}", id(&w1)),
            &json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["call_id"], "w1");
    let (status, answered) = server
        .post(
            &format!("/v1/approvals/{}", id(&w2)),
            &json!({"decision": "deny", "reason": "not that file"}),
        )
        .await;
    assert_eq!(status, 200, "{answered}");
    let (status, _) = server
        .post(
            &format!("/v1/approvals/{}", id(&w2)),
            &json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, 404, "answered once");

    let events = server.events(&execution, None).await;
    let summary = &events.last().expect("summary").2;
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("summary"));
    assert_eq!(summary["success"], false);
    let awaiting: Vec<&Value> = events
        .iter()
        .filter(|e| e.1 == "awaiting_approval")
        .map(|e| &e.2["call_id"])
        .collect();
    assert_eq!(awaiting.len(), 2, "{events:?}");
    let finished = |call: &str| {
        events
            .iter()
            .find(|e| e.1 == "finished" && e.2["call_id"] == call)
            .map(|e| e.2.clone())
            .unwrap_or_else(|| panic!("{call} did not finish"))
    };
    assert_eq!(finished("w1")["status"], "ok");
    let denied = finished("w2");
    assert_eq!(denied["status"], "error");
    assert_eq!(denied["error"]["kind"], "denied");
    let message = denied["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("denied by the user") && message.contains("not that file"),
        "{message}"
    );
    assert_eq!(finished("after")["status"], "skipped");
    let (_, list) = server.get("/v1/approvals").await;
    assert_eq!(list["approvals"], json!([]), "nothing left waiting");
}

#[tokio::test]
async fn cancelling_an_execution_withdraws_its_pending_approvals() {
    let server = asking_server().await;
    let (status, accepted) = server
        .post(
            "/v1/executions",
            &json!([work("w", json!({"writes": ["file:a"]}))]),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let execution = accepted["id"].as_str().expect("id").to_owned();
    pending(&server, 1).await;
    let r = server
        .http
        .delete(server.url(&format!("/v1/executions/{execution}")))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "{}", r.status());
    for _ in 0..400 {
        let (_, list) = server.get("/v1/approvals").await;
        if list["approvals"] == json!([]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the question was not withdrawn");
}
