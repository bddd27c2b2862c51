//! The dashboard's pages and assets over real HTTP: every page path answers the shell,
//! assets carry their content type and an ETag that a revalidation answers with 304.

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use toolgraph::{Config, Runtime};
use toolgraph_serve::AppState;

/// A server on 127.0.0.1:0 (no store), its base URL.
async fn start() -> String {
    let mut config = Config::default();
    config.store.record = false;
    let runtime = Runtime::start(&config).await.expect("runtime");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = listener.local_addr().expect("address");
    let app = toolgraph_serve::app(AppState::new(runtime));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test]
async fn every_page_path_answers_the_same_shell_page() {
    let base = start().await;
    let http = client();
    let mut bodies = Vec::new();
    for path in ["/", "/run", "/stats", "/executions/0123abcd"] {
        let response = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{path}"
        );
        bodies.push(response.text().await.expect("body"));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert!(bodies[0].contains(r#"<script type="module" src="/assets/app.js">"#));
}

#[tokio::test]
async fn assets_have_their_type_and_an_etag_that_revalidates() {
    let base = start().await;
    let http = client();
    for (file, kind) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("gantt.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let url = format!("{base}/assets/{file}");
        let first = http.get(&url).send().await.expect("get");
        assert_eq!(first.status(), StatusCode::OK, "{file}");
        assert_eq!(first.headers()[CONTENT_TYPE], kind, "{file}");
        assert_eq!(first.headers()[CACHE_CONTROL], "no-cache", "{file}");
        let etag = first.headers()[ETAG].clone();
        assert!(!first.bytes().await.expect("body").is_empty());
        let again = http
            .get(&url)
            .header(IF_NONE_MATCH, etag.clone())
            .send()
            .await
            .expect("revalidate");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{file}");
        assert_eq!(again.headers()[ETAG], etag);
        assert!(again.bytes().await.expect("body").is_empty());
        let stale = http
            .get(&url)
            .header(IF_NONE_MATCH, "\"0000\"")
            .send()
            .await
            .expect("stale");
        assert_eq!(
            stale.status(),
            StatusCode::OK,
            "{file}: another ETag gets the file"
        );
    }
}

#[tokio::test]
async fn an_unknown_asset_is_a_404_problem() {
    let base = start().await;
    let response = client()
        .get(format!("{base}/assets/nope.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let problem: serde_json::Value = response.json().await.expect("json");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nope.js")),
        "{problem}"
    );
}
