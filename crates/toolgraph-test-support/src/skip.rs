//! The one way a test skips a check it cannot run here (a service or a program missing).
//!
//! [`skip`] fails the test instead when `TOOLGRAPH_REQUIRE_SERVICES` is set (as CI sets
//! it), so nothing is skipped there unnoticed. Otherwise it prints `SKIPPED …` and, when
//! `TOOLGRAPH_TEST_SKIP_LOG` names a file, appends one line to it — `<package>/<test
//! binary> <test>: <reason>` — so a test runner (`cargo test-all`) can count and list the
//! skipped checks after the run, where captured output would hide them. It never fails for
//! a reason of its own: a log that cannot be written loses its line, not the test.

use std::io::Write;
use std::path::Path;

/// Names the file [`skip`] appends its lines to. `TOOLGRAPH_TEST_…`, as the configuration
/// loader ignores that prefix: the binary under test must not take it for a setting.
pub const SKIP_LOG_VAR: &str = "TOOLGRAPH_TEST_SKIP_LOG";

/// Turns a skip into a failure when set.
pub const REQUIRE_VAR: &str = "TOOLGRAPH_REQUIRE_SERVICES";

/// Skips the calling check because of `reason` (say what is missing and how to get it).
///
/// # Panics
/// When `TOOLGRAPH_REQUIRE_SERVICES` is set: a skip is then a failure.
pub fn skip(reason: &str) {
    let check = current_check();
    assert!(
        std::env::var_os(REQUIRE_VAR).is_none(),
        "{check} cannot run: {reason}, and {REQUIRE_VAR} is set"
    );
    eprintln!("SKIPPED {check}: {reason}");
    if let Some(log) = std::env::var_os(SKIP_LOG_VAR) {
        append_line(Path::new(&log), &format!("{check}: {reason}"));
    }
}

/// `<package>/<test binary> <test name>`: the package cargo runs the test for, the
/// binary's name without cargo's hash, and the test's thread name (libtest names each
/// test's thread after the test).
fn current_check() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_else(|| "test".into());
    let binary = match std::env::var("CARGO_PKG_NAME") {
        Ok(package) => format!("{package}/{binary}"),
        Err(_) => binary,
    };
    match std::thread::current().name() {
        Some(test) if test != "main" => format!("{binary} {test}"),
        _ => binary,
    }
}

/// Appends `line` in one write (`O_APPEND`), so lines of parallel tests do not interleave.
fn append_line(log: &Path, line: &str) {
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut file| file.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes()));
    if let Err(e) = written {
        eprintln!("could not note the skip in {}: {e}", log.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_one_per_skip() {
        let dir = std::env::temp_dir().join(format!("tg-skip-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("skips");
        append_line(&log, "a b: first");
        append_line(&log, "a c: second\nline");
        let text = std::fs::read_to_string(&log).expect("log written");
        std::fs::remove_dir_all(&dir).expect("temp dir removed");
        assert_eq!(text, "a b: first\na c: second line\n");
    }

    #[test]
    fn the_check_is_named_by_binary_and_test() {
        let name = current_check();
        assert!(
            name.ends_with(" skip::tests::the_check_is_named_by_binary_and_test"),
            "{name}"
        );
        assert!(
            name.starts_with("toolgraph-test-support/toolgraph_test_support "),
            "{name}"
        );
    }
}
