//! The web dashboard: plain HTML, CSS and ES modules from `assets/`, embedded in the binary
//! with `include_str!` (no build step, nothing fetched at run time, works offline).
//!
//! Every page path (`/`, `/executions/{id}`, `/stats`, `/run`) answers the same shell page;
//! the modules route on the client and read everything through the `/v1` API, like any
//! other client. Assets are served under `/assets/` with their content type, a strong
//! ETag (a hash of their bytes) and `Cache-Control: no-cache`, so a browser revalidates and
//! gets `304 Not Modified` until the binary changes. This module never touches the runtime
//! or the store.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// One embedded file: its name under `/assets/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the pages use. The shell page is `index.html`.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("format.js", JS),
    asset!("svg.js", JS),
    asset!("gantt.js", JS),
    asset!("list.js", JS),
    asset!("execution.js", JS),
    asset!("stats.js", JS),
    asset!("run.js", JS),
];

/// Each asset's ETag, computed once: a quoted FNV-1a hash of its bytes.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(a.body.as_bytes())))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// 64-bit FNV-1a: stable across builds and platforms, enough to tell two versions apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The pages and `/assets/{file}`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(shell))
        .route("/run", get(shell))
        .route("/stats", get(shell))
        .route("/executions/{id}", get(shell))
        .route("/assets/{file}", get(asset))
        .route("/favicon.ico", get(favicon))
}

async fn shell(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

async fn favicon(headers: HeaderMap) -> Response {
    serve("favicon.svg", &headers)
}

/// The asset named `name` (404 when there is none), or 304 when the client holds it.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return crate::Problem::not_found(format!("no dashboard asset named {name:?}"))
            .into_response();
    };
    let asset = &ASSETS[index];
    let etag = ETAGS[index].clone();
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_a_page_imports_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            for line in asset.body.lines() {
                let Some(rest) = line.split(" from \"./").nth(1) else {
                    continue;
                };
                let Some(module) = rest.split('"').next() else {
                    continue;
                };
                assert!(
                    names.contains(&module),
                    "{} imports {module}, which is not embedded",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn etags_differ_between_assets_and_are_quoted() {
        let mut seen: Vec<&HeaderValue> = ETAGS.iter().collect();
        assert!(seen.iter().all(|e| e.as_bytes().starts_with(b"\"")));
        seen.sort_by_key(|e| e.as_bytes());
        seen.dedup();
        assert_eq!(seen.len(), ASSETS.len());
    }
}
