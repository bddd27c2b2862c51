//! Running the `toolgraph` binary in a test as a new user would, never as the developer:
//! none of the caller's toolgraph, model or log variables reach it, and its home and data
//! directories are the test process's own — a test cannot read or write the real user's
//! default store or configuration, whatever it forgets to pass.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables of the caller a test run must not inherit, besides every `TOOLGRAPH_*` one.
const INHERITED: [&str; 8] = [
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// The home directory binaries run by this test process get: one per process, under the
/// system's temporary directory.
pub fn test_home() -> PathBuf {
    std::env::temp_dir().join(format!("toolgraph-test-home-{}", std::process::id()))
}

/// `binary` (e.g. `env!("CARGO_BIN_EXE_toolgraph")`) as a command with no inherited
/// toolgraph, model or log variables, and `HOME`, `XDG_DATA_HOME` and `XDG_CONFIG_HOME` in
/// [`test_home`]. Set what the test needs on the returned command (later settings win).
pub fn isolated(binary: impl AsRef<Path>) -> Command {
    let mut cmd = Command::new(binary.as_ref());
    isolate(&mut cmd);
    cmd
}

/// Takes the caller's toolgraph, model and log variables out of `cmd`'s environment and
/// puts its home in [`test_home`], as [`isolated`] does.
pub(crate) fn isolate(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        // OTEL_*: a developer's collector must not receive the tests' traces.
        let name_text = name.to_string_lossy();
        if name_text.starts_with("TOOLGRAPH_") || name_text.starts_with("OTEL_") {
            cmd.env_remove(&name);
        }
    }
    for name in INHERITED {
        cmd.env_remove(name);
    }
    let home = test_home();
    cmd.env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"));
}
