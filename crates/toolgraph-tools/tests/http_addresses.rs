//! The address guard of `http_fetch` against an axum server on 127.0.0.1: loopback is
//! refused by default — as a literal IP, as a name that resolves there, and behind a
//! redirect — and reached once the configuration opens it. Every refusal is permanent,
//! names the host and the address, and happens before the server sees a request.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};
use toolgraph_core::{CallContext, Tool, ToolError};
use toolgraph_tools::http::{HttpConfig, HttpFetch};

/// A server on 127.0.0.1 and the paths it was asked for.
struct Server {
    port: u16,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("paths lock").clone()
    }
}

async fn record(
    State(paths): State<Arc<Mutex<Vec<String>>>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    paths.lock().expect("paths lock").push(path);
    next.run(req).await
}

async fn start() -> Server {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let router = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/to/{target}",
            get(|Path(target): Path<String>| async move {
                Redirect::temporary(&format!("http://{target}/hello"))
            }),
        )
        .layer(middleware::from_fn_with_state(paths.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Server { port, paths }
}

fn tool(config: HttpConfig) -> HttpFetch {
    HttpFetch::new(config).expect("valid configuration")
}

async fn fetch(tool: &HttpFetch, url: String) -> Result<Value, ToolError> {
    tool.call(
        Arc::new(json!({ "url": url })),
        CallContext::detached("test"),
    )
    .await
}

#[tokio::test]
async fn loopback_is_refused_by_default_naming_host_and_address() {
    let server = start().await;
    let url = format!("http://127.0.0.1:{}/hello", server.port);
    let err = fetch(&tool(HttpConfig::default()), url.clone())
        .await
        .expect_err("loopback is not public");
    assert!(!err.is_transient(), "{}", err.message);
    assert!(err.message.contains(&url), "{}", err.message);
    assert!(
        err.message
            .contains("127.0.0.1 is not a public address (loopback)"),
        "{}",
        err.message
    );
    assert!(err.message.contains("allow_private"), "{}", err.message);
    assert!(server.paths().is_empty());
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_after_resolution() {
    let server = start().await;
    let url = format!("http://localhost:{}/hello", server.port);
    let err = fetch(&tool(HttpConfig::default()), url.clone())
        .await
        .expect_err("localhost resolves to loopback");
    assert!(!err.is_transient(), "{}", err.message);
    assert!(
        err.message.starts_with(&format!("GET {url}: refused: ")),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("host \"localhost\" resolves only to non-public addresses"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("127.0.0.1 (loopback)") || err.message.contains("::1 (loopback)"),
        "{}",
        err.message
    );
    // Naming the host in allow_hosts does not open its address.
    let named = tool(HttpConfig {
        allow_hosts: vec!["localhost".into()],
        ..HttpConfig::default()
    });
    let err = fetch(&named, url).await.expect_err("still loopback");
    assert!(err.message.contains("(loopback)"), "{}", err.message);
    assert!(server.paths().is_empty());
}

#[tokio::test]
async fn loopback_is_reached_when_the_configuration_allows_it() {
    let server = start().await;
    let by_ip = format!("http://127.0.0.1:{}/hello", server.port);
    let by_name = format!("http://localhost:{}/hello", server.port);
    let private = tool(HttpConfig {
        allow_private: true,
        ..HttpConfig::default()
    });
    let listed = tool(HttpConfig {
        allow_networks: vec!["127.0.0.0/8".into()],
        ..HttpConfig::default()
    });
    for (t, url) in [
        (&private, &by_ip),
        (&private, &by_name),
        (&listed, &by_ip),
        // localhost may resolve to ::1 as well: that address is dropped, 127.0.0.1 is used.
        (&listed, &by_name),
    ] {
        let out = fetch(t, url.clone()).await.expect("allowed");
        assert_eq!(out["body"], json!("hello"), "{url}");
    }
    let elsewhere = tool(HttpConfig {
        allow_networks: vec!["10.0.0.0/8".into()],
        ..HttpConfig::default()
    });
    let err = fetch(&elsewhere, by_ip).await.expect_err("other network");
    assert!(err.message.contains("(loopback)"), "{}", err.message);
    assert_eq!(server.paths().len(), 4);
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_is_not_followed() {
    let server = start().await;
    let only_this = tool(HttpConfig {
        allow_networks: vec!["127.0.0.1".into()],
        ..HttpConfig::default()
    });
    let port = server.port;
    for target in [format!("[::1]:{port}"), format!("169.254.169.254:{port}")] {
        let url = format!("http://127.0.0.1:{port}/to/{target}");
        let err = fetch(&only_this, url).await.expect_err("redirect refused");
        assert!(!err.is_transient(), "{}", err.message);
        assert!(err.message.contains("redirect to"), "{}", err.message);
        assert!(
            err.message.contains("is not a public address"),
            "{}",
            err.message
        );
    }
    let out = fetch(
        &only_this,
        format!("http://127.0.0.1:{port}/to/127.0.0.1:{port}"),
    )
    .await
    .expect("a redirect to an allowed address is followed");
    assert_eq!(out["body"], json!("hello"));
    let expected = [
        format!("/to/[::1]:{port}"),
        format!("/to/169.254.169.254:{port}"),
        format!("/to/127.0.0.1:{port}"),
        "/hello".to_owned(),
    ];
    assert_eq!(server.paths(), expected);
}

#[test]
fn a_bad_network_is_refused_at_setup() {
    let err = HttpFetch::new(HttpConfig {
        allow_networks: vec!["127.0.0.1/64".into()],
        ..HttpConfig::default()
    })
    .expect_err("prefix too long");
    let text = err.to_string();
    assert!(text.contains("allow_networks"), "{text}");
    assert!(text.contains("127.0.0.1/64"), "{text}");
}
