//! ARCHITECTURE.md's dependency rules, checked: each crate may depend only on the
//! toolgraph crates listed for it.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn allowed() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("toolgraph-core", vec![]),
        (
            "toolgraph-engine",
            vec!["toolgraph-core", "toolgraph-test-support"],
        ),
        ("toolgraph-tools", vec!["toolgraph-core", "toolgraph-engine"]),
        ("toolgraph-test-support", vec!["toolgraph-core"]),
        (
            "toolgraph-cli",
            vec!["toolgraph-core", "toolgraph-engine", "toolgraph-tools"],
        ),
    ])
}

#[test]
fn crates_depend_only_on_what_the_architecture_allows() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = allowed();
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let dir = entry.expect("entry").path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let Some(permitted) = rules.get(name.as_str()) else {
            panic!("crate {name} is not in ARCHITECTURE.md's dependency rules (and this test)");
        };
        for line in manifest.lines() {
            let dep = line.split(['=', '.', ' ']).next().unwrap_or_default();
            if dep.starts_with("toolgraph-") && dep != name {
                assert!(permitted.contains(&dep), "{name} may not depend on {dep}");
            }
        }
        seen.push(name);
    }
    assert_eq!(seen.len(), rules.len(), "every crate checked: {seen:?}");
}
