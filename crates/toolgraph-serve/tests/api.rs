//! The `/v1` API over real HTTP on loopback: a real server, a SQLite file (PostgreSQL when
//! `TOOLGRAPH_TEST_PG_URL` is set, for one test), scripted tools.

mod common;

use serde_json::{Value, json};

use std::sync::Arc;

use common::{ReportsWorker, Server, start, start_with, start_with_layers, work};

fn calls_in(body: &Value) -> Vec<(&str, &str)> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id"),
                r["status"].as_str().expect("status"),
            )
        })
        .collect()
}

async fn waited_run_is_listed_shown_and_replayed(server: &Server) {
    let batch = json!([
        work("a", json!({"ms": 5})),
        work("b", json!({"ms": 5, "from": "${a.id}"})),
        {"id": "c", "name": "echo", "arguments": {"x": 1}},
    ]);
    let (status, body) = server.post("/v1/executions?wait=true", &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(calls_in(&body), [("a", "ok"), ("b", "ok"), ("c", "ok")]);
    assert_eq!(body["results"][1]["output"]["args"]["from"], "a");
    let id = body["metadata"]["execution_id"]
        .as_str()
        .expect("recorded")
        .to_owned();

    let (status, list) = server.get("/v1/executions?limit=100").await;
    assert_eq!(status, 200);
    assert!(
        list["executions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["id"] == id.as_str() && e["status"] == "finished" && e["calls"] == 3),
        "{list}"
    );

    let (status, detail) = server.get(&format!("/v1/executions/{}", &id[..8])).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["id"], id.as_str());
    assert_eq!(detail["status"], "finished");
    assert_eq!(detail["calls"][1]["name"], "work");
    assert_eq!(detail["edges"][0][0], 0);
    assert_eq!(detail["edges"][0][1], 1);
    assert_eq!(detail["critical"][0], 0, "{detail}");
    assert_eq!(detail["result"]["results"][2]["output"]["x"], 1);

    // Served by the live registry; the same from the store alone below.
    let events = server.events(&id, None).await;
    assert_eq!(events.first().map(|e| e.1.as_str()), Some("plan"));
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("summary"));
    let finished = events.iter().filter(|e| e.1 == "finished").count();
    assert_eq!(finished, 3);
}

#[tokio::test]
async fn a_waited_run_answers_its_result_and_is_listed_shown_and_replayed() {
    let server = start(8).await;
    waited_run_is_listed_shown_and_replayed(&server).await;
}

#[tokio::test]
async fn postgres_a_waited_run_answers_its_result_and_is_listed_shown_and_replayed() {
    let Ok(url) = std::env::var("TOOLGRAPH_TEST_PG_URL") else {
        toolgraph_test_support::skip(
            "TOOLGRAPH_TEST_PG_URL is unset (no PostgreSQL to test against)",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_with(8, Some(&url), dir).await;
    waited_run_is_listed_shown_and_replayed(&server).await;
}

#[tokio::test]
async fn a_run_not_waited_for_answers_202_and_a_late_subscriber_gets_every_event_in_order() {
    let server = start(8).await;
    let batch = json!({"tool_calls": [
        work("a", json!({"ms": 40})),
        work("b", json!({"ms": 1})),
        {"id": "c", "name": "work", "arguments": {}, "depends_on": ["a", "b"]},
    ]});
    let (status, accepted) = server.post("/v1/executions", &batch).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "running");
    assert_eq!(accepted["calls"], 3);
    let id = accepted["id"].as_str().expect("id").to_owned();

    // Subscribes while it runs (or after): the whole log, then live events, then the end.
    let events = server.events(&id, None).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
    let (_, kind, plan) = &events[0];
    assert_eq!(kind, "plan");
    assert_eq!(plan["calls"][2]["id"], "c");
    assert_eq!(plan["edges"].as_array().map(Vec::len), Some(2));
    for call in ["a", "b", "c"] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e.2["call_id"] == call)
            .map(|e| e.1.as_str())
            .collect();
        assert_eq!(kinds, ["queued", "started", "finished"], "{call}");
    }
    let finished_c = events
        .iter()
        .find(|e| e.1 == "finished" && e.2["call_id"] == "c")
        .expect("c finished");
    assert_eq!(finished_c.2["status"], "ok");
    assert_eq!(finished_c.2["attempts"], 1);
    assert!(finished_c.2["output"].is_object());
    let summary = &events.last().expect("summary").2;
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("summary"));
    assert_eq!(summary["success"], true);
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["critical"], json!([0, 2]));

    // Last-Event-ID resumes after that event.
    let rest = server.events(&id, Some(2)).await;
    assert_eq!(rest.first().map(|e| e.0), Some(3));
    assert_eq!(rest, events[3..].to_vec());

    // An execution only in the store (a new server on the same file) replays too.
    let (status, detail) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["status"], "finished");
}

#[tokio::test]
async fn an_execution_only_in_the_store_replays_plan_finished_and_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = toolgraph_store::sqlite_url(&dir.path().join("store.db"));
    let first = start_with(4, Some(&url), tempfile::tempdir().expect("tempdir")).await;
    let (status, body) = first
        .post(
            "/v1/executions?wait=true",
            &json!([work("a", json!({})), work("b", json!({"fail": "boom"}))]),
        )
        .await;
    assert_eq!(status, 200);
    let id = body["metadata"]["execution_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let second = start_with(4, Some(&url), dir).await;
    let events = second.events(&id, None).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds, ["plan", "finished", "finished", "summary"]);
    assert_eq!(events[2].2["status"], "error");
    assert_eq!(events[2].2["error"]["message"], "boom");
    assert_eq!(events[3].2["success"], false);
    let rest = second.events(&id, Some(1)).await;
    assert_eq!(rest.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3]);
}

#[tokio::test]
async fn rejected_batches_answer_400_naming_the_call_and_nothing_is_recorded() {
    let server = start(4).await;
    let cases = [
        ("[{\"id\": ", "not valid JSON"),
        (
            &json!([{"id": "x1", "name": "nosuch", "arguments": {}}]).to_string()[..],
            "call x1: ",
        ),
        (
            &json!([
                {"id": "p", "name": "work", "arguments": {}, "depends_on": ["q"]},
                {"id": "q", "name": "work", "arguments": {}, "depends_on": ["p"]},
            ])
            .to_string()[..],
            "dependency cycle: p → q → p",
        ),
        (
            &json!({"tool_calls": [work("a", json!({}))], "options": {"max_parallel": 0}})
                .to_string()[..],
            "options:",
        ),
        (
            &json!({"tool_calls": [work("a", json!({}))], "options": {"nosuch": 1}})
                .to_string()[..],
            "unknown field `nosuch`",
        ),
        (
            &json!({"tool_calls": [work("a", json!({}))], "options": {"tool_limits": {"nosuch": 1}}})
                .to_string()[..],
            "per-tool limit for \"nosuch\"",
        ),
    ];
    for (body, expected) in cases {
        for path in ["/v1/executions", "/v1/executions?wait=true", "/v1/plan"] {
            let r = server
                .http
                .post(server.url(path))
                .body(body.to_owned())
                .send()
                .await
                .expect("POST");
            assert_eq!(r.status().as_u16(), 400, "{path} {body}");
            assert_eq!(
                r.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
            let problem: Value = r.json().await.expect("problem");
            let detail = problem["detail"].as_str().expect("detail");
            assert!(detail.contains(expected), "{path}: {detail}");
        }
    }
    let (_, problem) = server
        .post(
            "/v1/executions",
            &json!([{"id": "x1", "name": "nosuch", "arguments": {}}]),
        )
        .await;
    assert_eq!(problem["problems"][0]["call_id"], "x1");
    assert_eq!(problem["problems"][0]["position"], 0);
    let store = server.store.as_ref().expect("store");
    assert!(store.history(10).await.expect("history").is_empty());
    assert_eq!(server.probe.invocations(), 0);
    let (_, list) = server.get("/v1/executions").await;
    assert_eq!(list["executions"], json!([]));
}

#[tokio::test]
async fn unknown_or_malformed_ids_answer_404_or_400_as_problems() {
    let server = start(4).await;
    let (status, problem) = server
        .get("/v1/executions/00000000-0000-4000-8000-000000000000")
        .await;
    assert_eq!(status, 404);
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("no execution 00000000-0000-4000-8000-000000000000 in the store sqlite:"),
        "{detail}"
    );
    for path in [
        "/v1/executions/abc",
        "/v1/executions/zzzzzz",
        "/v1/executions/zzzzzz/events",
    ] {
        let (status, problem) = server.get(path).await;
        assert_eq!(status, 400, "{path}: {problem}");
    }
    let (status, _) = server.delete("/v1/executions/abcdef12").await;
    assert_eq!(status, 404);
    let (status, _) = server
        .post("/v1/executions/abcdef12/resume", &json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, problem) = server.get("/v1/executions?limit=0").await;
    assert_eq!(status, 400, "{problem}");
    let (status, problem) = server.get("/v1/executions?limit=x").await;
    assert_eq!(status, 400, "{problem}");
    let (status, problem) = server.get("/v1/stats?since=soon").await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("not a duration")
    );
}

#[tokio::test]
async fn cancel_stops_a_running_execution_records_it_cancelled_and_resume_finishes_it() {
    let server = start(4).await;
    let batch = json!([
        {"id": "held", "name": "held", "arguments": {}},
        {"id": "after", "name": "work", "arguments": {}, "depends_on": ["held"]},
        work("quick", json!({})),
    ]);
    let (status, accepted) = server.post("/v1/executions", &batch).await;
    assert_eq!(status, 202);
    let id = accepted["id"].as_str().expect("id").to_owned();
    // Until `held` started and `quick` ended.
    let mut started = false;
    for _ in 0..2000 {
        let (_, detail) = server.get(&format!("/v1/executions/{id}")).await;
        let results = &detail["result"]["results"];
        if results[0]["error"]["message"] == "running" && results[2]["status"] == "ok" {
            started = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(started, "held never started");
    let (status, detail) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["status"], "running");
    assert_eq!(
        detail["result"]["results"][1]["error"]["message"],
        "pending"
    );

    let (status, summary) = server.delete(&format!("/v1/executions/{id}")).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["id"], id.as_str());
    assert_eq!(summary["status"], "cancelled");
    let (status, problem) = server.delete(&format!("/v1/executions/{id}")).await;
    assert_eq!(status, 409, "{problem}");

    let (_, detail) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(detail["status"], "cancelled");
    let statuses = calls_in(&detail["result"]);
    assert_eq!(statuses[0], ("held", "cancelled"));
    assert_ne!(statuses[1].1, "ok", "the dependant never ran");
    assert_eq!(statuses[2], ("quick", "ok"));
    let stored = server
        .store
        .as_ref()
        .expect("store")
        .load(&id)
        .await
        .expect("stored");
    assert_eq!(stored.summary.status, "cancelled");
    let events = server.events(&id, None).await;
    assert_eq!(events.last().expect("summary").2["status"], "cancelled");

    // Resume runs what did not end: the gate (open now), then its dependant.
    server.gate.add_permits(1);
    let (status, result) = server
        .post(
            &format!("/v1/executions/{}/resume?wait=true", &id[..8]),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        calls_in(&result),
        [("held", "ok"), ("after", "ok"), ("quick", "ok")]
    );
    let (status, problem) = server
        .post(&format!("/v1/executions/{id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 409, "{problem}");
    let (_, detail) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(detail["status"], "finished");
}

#[tokio::test]
async fn two_concurrent_executions_share_the_global_limit() {
    let server = start(3).await;
    let batch = |prefix: &str| {
        json!(
            (0..6)
                .map(|i| work(&format!("{prefix}{i}"), json!({"ms": 30})))
                .collect::<Vec<_>>()
        )
    };
    let (batch_a, batch_b) = (batch("a"), batch("b"));
    let (a, b) = tokio::join!(
        server.post("/v1/executions?wait=true", &batch_a),
        server.post("/v1/executions?wait=true", &batch_b),
    );
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(a.1["success"], true);
    assert_eq!(b.1["success"], true);
    assert_eq!(server.probe.invocations(), 12);
    assert!(server.probe.peak() <= 3, "peak {}", server.probe.peak());
}

#[tokio::test]
async fn options_set_the_execution_limits_and_record_false_keeps_it_out_of_the_store() {
    let server = start(8).await;
    let body = json!({
        "tool_calls": (0..4).map(|i| work(&format!("c{i}"), json!({"ms": 5}))).collect::<Vec<_>>(),
        "options": {"max_parallel": 1, "record": false},
    });
    let (status, result) = server.post("/v1/executions?wait=true", &body).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["metadata"]["max_parallel_calls"], 1);
    assert_eq!(result["metadata"]["peak_in_flight"], 1);
    assert_eq!(server.probe.peak(), 1);
    let id = result["metadata"]["execution_id"]
        .as_str()
        .expect("server id")
        .to_owned();
    let store = server.store.as_ref().expect("store");
    assert!(store.history(10).await.expect("history").is_empty());
    let (status, detail) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["status"], "finished");
    let (_, list) = server.get("/v1/executions?tool=work").await;
    assert_eq!(list["executions"][0]["id"], id.as_str(), "{list}");
    let (_, list) = server.get("/v1/executions?tool=echo").await;
    assert_eq!(list["executions"], json!([]));
    let (_, list) = server.get("/v1/executions?status=running").await;
    assert_eq!(list["executions"], json!([]));
}

#[tokio::test]
async fn list_filters_by_tool_status_and_before_newest_first() {
    let server = start(8).await;
    let mut ids = Vec::new();
    for tool in ["work", "echo", "work"] {
        let (status, body) = server
            .post(
                "/v1/executions?wait=true",
                &json!([{"id": "x", "name": tool, "arguments": {}}]),
            )
            .await;
        assert_eq!(status, 200);
        ids.push(
            body["metadata"]["execution_id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let listed = |v: &Value| -> Vec<String> {
        v["executions"]
            .as_array()
            .expect("list")
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (_, all) = server.get("/v1/executions").await;
    assert_eq!(
        listed(&all),
        [ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    let (_, work) = server.get("/v1/executions?tool=work&limit=10").await;
    assert_eq!(listed(&work), [ids[2].clone(), ids[0].clone()]);
    let newest = all["executions"][0]["created_at"]
        .as_i64()
        .expect("created_at");
    let (_, older) = server
        .get(&format!("/v1/executions?before={newest}&limit=1"))
        .await;
    assert_eq!(listed(&older), [ids[1].clone()]);
    let (_, finished) = server.get("/v1/executions?status=finished&tool=echo").await;
    assert_eq!(listed(&finished), [ids[1].clone()]);
}

#[tokio::test]
async fn plan_tools_and_stats_answer_the_graph_the_registry_and_the_figures() {
    let server = start(4).await;
    let batch = json!([
        work("a", json!({})),
        work("b", json!({"x": "${a.id}"})),
        {"id": "c", "name": "echo", "arguments": {}},
    ]);
    let (status, plan) = server.post("/v1/plan", &batch).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["levels"], json!([["a", "c"], ["b"]]));
    assert_eq!(plan["edges"][0]["from"], "a");
    assert_eq!(plan["edges"][0]["to"], "b");
    assert_eq!(plan["critical_path"], json!(["a", "b"]));
    assert_eq!(plan["independent"], json!(["c"]));
    assert_eq!(server.probe.invocations(), 0, "planning runs nothing");

    let (status, tools) = server.get("/v1/tools").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["work", "gate", "held", "echo"]);
    assert_eq!(tools["tools"][0]["traits"]["parallel_safe"], true);

    let (status, _) = server.post("/v1/executions?wait=true", &batch).await;
    assert_eq!(status, 200);
    let (status, stats) = server.get("/v1/stats?since=1h").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["total_executions"], 1);
    assert_eq!(stats["tools"]["work"]["count"], 2);
    let (_, stats) = server.get("/v1/stats?tool=echo").await;
    assert_eq!(stats["tools"].as_object().map(|t| t.len()), Some(1));
}

#[tokio::test]
async fn tool_messages_answer_in_the_openai_and_anthropic_shapes() {
    let server = start(4).await;
    let completion = json!({"choices": [{"message": {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": "{\"q\": 1}"}},
        {"id": "call_2", "type": "function", "function": {"name": "work", "arguments": "{\"fail\": \"boom\"}"}},
    ]}}]});
    let (status, body) = server.post("/v1/tool-messages", &completion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "openai");
    assert_eq!(body["success"], false);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"q\":1}"},
            {"role": "tool", "tool_call_id": "call_2", "content": "error: boom"},
        ])
    );
    let (status, detail) = server
        .get(&format!(
            "/v1/executions/{}",
            body["execution_id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["calls"][1]["id"], "call_2");

    let message = json!({"role": "assistant", "content": [
        {"type": "text", "text": "let me look"},
        {"type": "tool_use", "id": "toolu_1", "name": "echo", "input": {"q": 2}},
        {"type": "tool_use", "id": "toolu_2", "name": "work", "input": {"fail": "bad"}},
    ]});
    let (status, body) = server.post("/v1/tool-messages", &message).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "anthropic");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "{\"q\":2}"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "error: bad", "is_error": true},
        ]}])
    );
    let (status, problem) = server
        .post(
            "/v1/tool-messages",
            &json!({"role": "assistant", "tool_calls": [{"id": "t9", "type": "function", "function": {"name": "nosuch", "arguments": "{}"}}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("call t9")
    );
}

#[tokio::test]
async fn drain_lets_executions_finish_then_cancels_the_rest_resumably_and_refuses_new_ones() {
    let server = start(4).await;
    let (status, quick) = server
        .post("/v1/executions", &json!([work("q", json!({"ms": 10}))]))
        .await;
    assert_eq!(status, 202);
    let (status, held) = server
        .post(
            "/v1/executions",
            &json!([{"id": "h", "name": "gate", "arguments": {}}]),
        )
        .await;
    assert_eq!(status, 202);
    server.until_live(1).await;
    let live = server.state.live.clone();
    assert!(live.running() >= 1, "the held execution runs");
    live.refuse_new();
    let (status, problem) = server
        .post("/v1/executions", &json!([work("n", json!({}))]))
        .await;
    assert_eq!(status, 503, "{problem}");
    live.drain(std::time::Duration::from_secs(2)).await;
    assert_eq!(live.running(), 0);
    let store = server.store.as_ref().expect("store");
    let q = store
        .load(quick["id"].as_str().expect("id"))
        .await
        .expect("quick");
    assert_eq!(q.summary.status, "finished");
    let h = store
        .load(held["id"].as_str().expect("id"))
        .await
        .expect("held");
    assert_eq!(h.summary.status, "cancelled", "resumable");
}

#[tokio::test]
async fn a_subscriber_follows_a_running_execution_live_to_its_summary() {
    let server = start(4).await;
    let batch = json!([
        {"id": "held", "name": "held", "arguments": {}},
        {"id": "next", "name": "work", "arguments": {}, "depends_on": ["held"]},
    ]);
    let (status, accepted) = server.post("/v1/executions", &batch).await;
    assert_eq!(status, 202);
    let id = accepted["id"].as_str().expect("id").to_owned();
    let mut response = server
        .http
        .get(server.url(&format!("/v1/executions/{id}/events")))
        .send()
        .await
        .expect("events");
    // Read live until `held` started: the execution cannot end before the gate opens.
    let mut text = String::new();
    while !text.contains("event: started\ndata: {\"position\":0") {
        let chunk = response.chunk().await.expect("chunk").expect("open stream");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("event: summary"));
    server.gate.add_permits(1);
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = common::parse_sse(&text);
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "plan", "queued", "started", "finished", "queued", "started", "finished", "summary"
        ]
    );
    assert_eq!(events[6].2["call_id"], "next");
    assert_eq!(events[7].2["success"], true);
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_describes_every_v1_operation() {
    let server = start(4).await;
    let (status, doc) = server.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().expect("version").starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let operations: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("item")
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    for expected in [
        "POST /v1/executions",
        "GET /v1/executions",
        "GET /v1/executions/{id}",
        "DELETE /v1/executions/{id}",
        "GET /v1/executions/{id}/events",
        "POST /v1/executions/{id}/resume",
        "POST /v1/plan",
        "GET /v1/tools",
        "GET /v1/stats",
        "POST /v1/tool-messages",
    ] {
        assert!(
            operations.contains(&expected.to_owned()),
            "{expected} in {operations:?}"
        );
    }
    let problem = &doc["components"]["schemas"]["Problem"];
    assert_eq!(problem["required"], json!(["status", "title", "detail"]));
    for schema in ["CallResult", "FinishedEvent"] {
        let shape = &doc["components"]["schemas"][schema];
        let worker = &shape["properties"]["worker"];
        assert!(
            worker["type"] == json!(["string", "null"]) || worker["type"] == "string",
            "{schema}.worker: {worker}"
        );
        let required = shape["required"].as_array().expect("required fields");
        assert!(
            !required.contains(&json!("worker")),
            "{schema}.worker is optional"
        );
    }
}

#[tokio::test]
async fn the_worker_that_ran_a_call_is_in_its_result_and_finished_event_live_and_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = toolgraph_store::sqlite_url(&dir.path().join("store.db"));
    let store = toolgraph_store::open(&url).await.expect("store");
    let first = start_with_layers(
        4,
        Some(store),
        tempfile::tempdir().expect("tempdir"),
        vec![Arc::new(ReportsWorker)],
    )
    .await;
    let batch = json!([
        work("remote", json!({"worker": "w-3"})),
        work("local", json!({}))
    ]);
    let (status, body) = first.post("/v1/executions?wait=true", &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["worker"], "w-3");
    assert!(
        body["results"][1].get("worker").is_none(),
        "no worker key for a call run in this process: {}",
        body["results"][1]
    );
    let id = body["metadata"]["execution_id"]
        .as_str()
        .expect("recorded")
        .to_owned();
    let workers = |events: &[(u64, String, Value)]| -> Vec<(String, Value)> {
        events
            .iter()
            .filter(|e| e.1 == "finished")
            .map(|e| {
                (
                    e.2["call_id"].as_str().unwrap_or("").to_owned(),
                    e.2["worker"].clone(),
                )
            })
            .collect()
    };
    let want = vec![
        ("remote".to_owned(), json!("w-3")),
        ("local".to_owned(), Value::Null),
    ];
    let mut live = workers(&first.events(&id, None).await);
    live.sort_by(|a, b| b.0.cmp(&a.0));
    assert_eq!(live, want, "served by the live registry");
    // A new server on the same file knows the execution only from the store.
    let second = start_with(4, Some(&url), dir).await;
    assert_eq!(workers(&second.events(&id, None).await), want, "replayed");
    let (status, detail) = second.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["result"]["results"][0]["worker"], "w-3");
}
