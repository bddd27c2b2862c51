//! ARCHITECTURE.md's dependency rules, checked: each crate may depend only on the
//! toolgraph crates listed for it (dev-dependencies listed apart), and the third-party
//! crates for an outside world (sqlx, reqwest, rmcp, async-nats, moka, redis, the OpenTelemetry
//! SDK) only in the crates that
//! own that world.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// crate → (allowed dependencies, allowed dev-dependencies)
fn allowed() -> BTreeMap<&'static str, (Vec<&'static str>, Vec<&'static str>)> {
    let core = "toolgraph-core";
    let engine = "toolgraph-engine";
    let tools = "toolgraph-tools";
    let store = "toolgraph-store";
    let support = "toolgraph-test-support";
    let mcp = "toolgraph-mcp";
    BTreeMap::from([
        (core, (vec![], vec![])),
        (engine, (vec![core], vec![support])),
        (tools, (vec![core], vec![engine])),
        (support, (vec![core], vec![])),
        (store, (vec![core, engine], vec![support])),
        (mcp, (vec![core], vec![engine, support])),
        ("toolgraph-llm", (vec![core, engine], vec![support, tools])),
        (
            "toolgraph-cluster",
            (vec![core, engine], vec![support, tools]),
        ),
        ("toolgraph-cache", (vec![core, engine], vec![support])),
        (
            "toolgraph",
            (
                vec![
                    core,
                    engine,
                    tools,
                    store,
                    mcp,
                    "toolgraph-llm",
                    "toolgraph-cluster",
                    "toolgraph-cache",
                ],
                vec![support],
            ),
        ),
        (
            "toolgraph-serve",
            (vec!["toolgraph", core, engine, store], vec![support, tools]),
        ),
        (
            "toolgraph-cli",
            (
                vec!["toolgraph", core, engine, tools, store, "toolgraph-serve"],
                vec![support],
            ),
        ),
        // The Python package's native half (`python/`): the runtime, through the facade.
        ("toolgraph-python", (vec!["toolgraph"], vec![])),
    ])
}

/// Every crate of the workspace: its directory name, and each dependency its manifest
/// names as `(section, dependency)`, e.g. `("[dev-dependencies]", "tempfile")`.
fn manifests() -> Vec<(String, Vec<(String, String)>)> {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .expect("crates/")
        .map(|entry| entry.expect("entry").path())
        .collect();
    dirs.push(crates.join("../python"));
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = match dir.file_name().and_then(|n| n.to_str()).unwrap_or_default() {
            "python" => "toolgraph-python".to_owned(),
            other => other.to_owned(),
        };
        let mut section = String::new();
        let mut deps = Vec::new();
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            let dep = line.split(['=', '.', ' ']).next().unwrap_or_default();
            deps.push((section.clone(), dep.to_owned()));
        }
        out.push((name, deps));
    }
    out
}

#[test]
fn crates_depend_only_on_what_the_architecture_allows() {
    let rules = allowed();
    let mut seen = Vec::new();
    for (name, manifest) in manifests() {
        let Some((deps, dev_deps)) = rules.get(name.as_str()) else {
            panic!("crate {name} is not in ARCHITECTURE.md's dependency rules (and this test)");
        };
        for (section, dep) in &manifest {
            let dep = dep.as_str();
            let ours = dep == "toolgraph" || dep.starts_with("toolgraph-");
            if !ours || dep == name {
                continue;
            }
            match section.as_str() {
                "[dependencies]" => assert!(deps.contains(&dep), "{name} may not depend on {dep}"),
                "[dev-dependencies]" => assert!(
                    deps.contains(&dep) || dev_deps.contains(&dep),
                    "{name} may not dev-depend on {dep}"
                ),
                _ => {}
            }
        }
        seen.push(name);
    }
    assert_eq!(seen.len(), rules.len(), "every crate checked: {seen:?}");
}

/// Third-party crates for an outside world → the crates that own that world. Everyone else
/// reaches that world through the owner.
fn outside_worlds() -> BTreeMap<&'static str, (Vec<&'static str>, Vec<&'static str>)> {
    BTreeMap::from([
        // SQL: the store. The CLI's tests create a PostgreSQL schema per test with it.
        ("sqlx", (vec!["toolgraph-store"], vec!["toolgraph-cli"])),
        // HTTP clients: the http_fetch tool, the model APIs, MCP's streamable HTTP transport;
        // the service's tests are its clients.
        (
            "reqwest",
            (
                vec!["toolgraph-tools", "toolgraph-llm", "toolgraph-mcp"],
                vec!["toolgraph-serve"],
            ),
        ),
        // MCP: the bridge (client and `mcp-serve`'s server); the binary's tests drive
        // `toolgraph mcp-serve` with rmcp's client.
        ("rmcp", (vec!["toolgraph-mcp"], vec!["toolgraph-cli"])),
        ("async-nats", (vec!["toolgraph-cluster"], vec![])),
        ("pyo3", (vec!["toolgraph-python"], vec![])),
        // The cache's backends: an in-process cache and Redis.
        ("moka", (vec!["toolgraph-cache"], vec![])),
        ("redis", (vec!["toolgraph-cache"], vec!["toolgraph-cache"])),
        // A trace collector: the binary exports spans; the libraries only emit them.
        ("opentelemetry-otlp", (vec!["toolgraph-cli"], vec![])),
        ("opentelemetry_sdk", (vec!["toolgraph-cli"], vec![])),
    ])
}

#[test]
fn outside_world_crates_are_used_only_by_the_crates_that_own_that_world() {
    let worlds = outside_worlds();
    let mut checked = 0;
    for (name, manifest) in manifests() {
        for (section, dep) in &manifest {
            let Some((owners, dev_owners)) = worlds.get(dep.as_str()) else {
                continue;
            };
            checked += 1;
            match section.as_str() {
                "[dependencies]" => assert!(
                    owners.contains(&name.as_str()),
                    "{name} may not depend on {dep}: only {owners:?} do"
                ),
                "[dev-dependencies]" => assert!(
                    owners.contains(&name.as_str()) || dev_owners.contains(&name.as_str()),
                    "{name} may not dev-depend on {dep}"
                ),
                _ => {}
            }
        }
    }
    assert!(
        checked >= 5,
        "the manifests were read ({checked} uses found)"
    );
}
