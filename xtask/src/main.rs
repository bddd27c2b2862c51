//! `cargo test-all [ARGS…]` (an alias of `cargo run -p xtask -- test`): the whole test
//! suite with what it needs, ending with a count of the checks it could not run.
//!
//! 1. Installs the tests' pinned npm projects (`npm ci --prefix DIR`) when their
//!    `node_modules` is missing or older than their `package-lock.json`: the reference MCP
//!    servers (`crates/toolgraph-mcp/tests/servers`) and the dashboard's browser driver
//!    (`crates/toolgraph-serve/tests/browser`, playwright-core; the browser is Debian's).
//! 2. Installs the pinned schemathesis (PyPI) into a virtual environment under the target
//!    folder when it is missing, and names its `st` in `TOOLGRAPH_TEST_SCHEMATHESIS` (the
//!    OpenAPI check of `toolgraph serve`) — never overriding one already set.
//! 3. Probes PostgreSQL (5432), NATS (4222) and Redis (6379) on 127.0.0.1 and, for each that
//!    answers, sets its `TOOLGRAPH_TEST_*_URL` — never overriding one already set.
//! 4. Runs `cargo test --workspace --locked ARGS…` with `TOOLGRAPH_TEST_SKIP_LOG` naming a file
//!    where each skipped check leaves a line (`toolgraph_test_support::skip`).
//! 5. Prints `N checks skipped:` with each check and why, and exits with cargo's status.
//!
//! It changes nothing outside the repository (and the target folder) but that one temporary
//! file, and starts no service: a service that is down is reported, and the checks that need it say so.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// The services tests can use: name, port on 127.0.0.1, variable, URL to set.
const SERVICES: [(&str, u16, &str, &str); 3] = [
    (
        "PostgreSQL",
        5432,
        "TOOLGRAPH_TEST_PG_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ),
    (
        "NATS",
        4222,
        "TOOLGRAPH_TEST_NATS_URL",
        "nats://127.0.0.1:4222",
    ),
    (
        "Redis",
        6379,
        "TOOLGRAPH_TEST_REDIS_URL",
        "redis://127.0.0.1:6379",
    ),
];

/// The tests' npm projects, from the workspace root: folder, what it holds, which checks
/// skip without it.
const NPM_PROJECTS: [(&str, &str, &str); 2] = [
    (
        "crates/toolgraph-mcp/tests/servers",
        "the MCP test servers",
        "the MCP checks",
    ),
    (
        "crates/toolgraph-serve/tests/browser",
        "the dashboard's browser driver",
        "the browser check",
    ),
];

/// The schemathesis release the OpenAPI check runs (`pip install schemathesis==…`).
const SCHEMATHESIS: &str = "4.32.5";

/// The variable naming schemathesis's `st` for the tests.
const SCHEMATHESIS_VAR: &str = "TOOLGRAPH_TEST_SCHEMATHESIS";

const USAGE: &str = "usage: cargo test-all [ARGS…]   (cargo run -p xtask -- test [ARGS…])
  installs the tests' npm projects when needed, finds PostgreSQL, NATS and Redis on 127.0.0.1,
  runs `cargo test --workspace --locked ARGS…` and lists the checks it skipped.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!(
                "xtask: unknown task {}\n{USAGE}",
                other.map_or_else(|| "(none)".into(), |t| format!("{t:?}"))
            );
            ExitCode::from(2)
        }
    }
}

fn test(args: Vec<String>) -> ExitCode {
    let root = workspace_root();
    for (dir, what, checks) in NPM_PROJECTS {
        install_npm_project(&root, dir, what, checks);
    }
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&root)
        .args(["test", "--workspace", "--locked"])
        .args(&args);
    if let Some(set) = std::env::var_os(SCHEMATHESIS_VAR) {
        eprintln!(
            "test-all: {SCHEMATHESIS_VAR} is already set ({})",
            set.to_string_lossy()
        );
    } else if let Some(st) = install_schemathesis(&root) {
        eprintln!(
            "test-all: schemathesis: {SCHEMATHESIS_VAR}={}",
            st.display()
        );
        cargo.env(SCHEMATHESIS_VAR, st);
    }
    for (name, port, var, url) in SERVICES {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Some(set) = std::env::var_os(var) {
            eprintln!(
                "test-all: {name}: {var} is already set ({})",
                set.to_string_lossy()
            );
        } else if answers(addr) {
            eprintln!("test-all: {name} answers on {addr}: {var}={url}");
            cargo.env(var, url);
        } else {
            eprintln!("test-all: {name} does not answer on {addr}: {var} stays unset");
        }
    }
    let log = std::env::temp_dir().join(format!("toolgraph-skips-{}.log", std::process::id()));
    // A stale file of an earlier run with this pid would add its lines.
    let _ = std::fs::remove_file(&log);
    cargo.env("TOOLGRAPH_TEST_SKIP_LOG", &log);
    let status = cargo.status();
    let skipped = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    eprintln!("\n{}", skip_summary(&skipped));
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("test-all: cargo test failed ({status})");
            ExitCode::from(
                status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .unwrap_or(1),
            )
        }
        Err(e) => {
            eprintln!("test-all: could not run cargo test: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: this crate's parent directory.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs `npm ci` for the npm project in `dir` (holding `what`) when its install is missing
/// or stale. A failure is reported, not fatal: `checks` then skip and say why.
fn install_npm_project(root: &Path, dir: &str, what: &str, checks: &str) {
    let path = root.join(dir);
    if !needs_install(&path) {
        return;
    }
    eprintln!("test-all: installing {what}: npm ci --prefix {dir}");
    let result = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&path)
        .status();
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("test-all: npm ci failed ({status}): {checks} will skip"),
        Err(e) => eprintln!("test-all: could not run npm ({e}): {checks} will skip"),
    }
}

/// schemathesis's `st` in `<target>/schemathesis-<version>/`, made with `python3 -m venv`
/// and `pip install schemathesis==<version>` when missing. A failure is reported, not
/// fatal: the OpenAPI check then skips and says why.
fn install_schemathesis(root: &Path) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let venv = target.join(format!("schemathesis-{SCHEMATHESIS}"));
    let st = venv.join("bin").join("st");
    if st.exists() {
        return Some(st);
    }
    eprintln!(
        "test-all: installing schemathesis {SCHEMATHESIS} into {}",
        venv.display()
    );
    let ran = |what: &str, command: &mut Command| match command.status() {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("test-all: {what} failed ({status}): the OpenAPI check will skip");
            false
        }
        Err(e) => {
            eprintln!("test-all: could not run {what} ({e}): the OpenAPI check will skip");
            false
        }
    };
    let made = ran(
        "python3 -m venv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    ) && ran(
        "pip install schemathesis",
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("schemathesis=={SCHEMATHESIS}")),
    );
    if made && st.exists() {
        Some(st)
    } else {
        // A half-made environment would be taken for a good one next time.
        let _ = std::fs::remove_dir_all(&venv);
        None
    }
}

/// True when `dir/node_modules` is missing or older than `dir/package-lock.json` (npm
/// writes `node_modules/.package-lock.json` on every install).
fn needs_install(dir: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed < locked,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// True when something accepts a TCP connection at `addr` within half a second.
fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// `N checks skipped:`, one indented line per check with its reasons, then how many
/// checks each reason held back. The skip log holds one `<check>: <reason>` line per skip; a
/// check that skipped twice (two servers missing) counts once.
fn skip_summary(log: &str) -> String {
    let mut checks: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let (check, reason) = line.split_once(": ").unwrap_or((line, "no reason given"));
        match checks.iter_mut().find(|(c, _)| *c == check) {
            Some((_, reasons)) if !reasons.contains(&reason) => reasons.push(reason),
            Some(_) => {}
            None => checks.push((check, vec![reason])),
        }
    }
    let mut text = match checks.len() {
        0 => return "test-all: 0 checks skipped.".to_owned(),
        1 => "test-all: 1 check skipped:".to_owned(),
        n => format!("test-all: {n} checks skipped:"),
    };
    let mut tally: Vec<(&str, usize)> = Vec::new();
    for (check, reasons) in &checks {
        text.push_str(&format!("\n  {check}: {}", reasons.join("; ")));
        for reason in reasons {
            match tally.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += 1,
                None => tally.push((reason, 1)),
            }
        }
    }
    text.push_str("\ntest-all: why:");
    for (reason, n) in tally {
        text.push_str(&format!("\n  {n} × {reason}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_and_lists_every_skipped_check() {
        assert_eq!(skip_summary(""), "test-all: 0 checks skipped.");
        assert_eq!(
            skip_summary("store a: no PostgreSQL\n"),
            "test-all: 1 check skipped:\n  store a: no PostgreSQL\ntest-all: why:\n  1 × no PostgreSQL"
        );
        assert_eq!(
            skip_summary("s a: x\n\nc b: y\nc b: z\nc b: y\ns d: x\n"),
            "test-all: 3 checks skipped:\n  s a: x\n  c b: y; z\n  s d: x\n\
             test-all: why:\n  2 × x\n  1 × y\n  1 × z"
        );
    }

    #[test]
    fn a_missing_or_older_install_is_redone() {
        let dir = std::env::temp_dir().join(format!("xtask-npm-{}", std::process::id()));
        let modules = dir.join("node_modules");
        std::fs::create_dir_all(&modules).expect("temp dir");
        let lock = dir.join("package-lock.json");
        let installed = modules.join(".package-lock.json");
        std::fs::write(&lock, "{}").expect("lock");
        let missing = needs_install(&dir);
        std::fs::write(&installed, "{}").expect("install marker");
        let set_mtime = |path: &Path, secs: u64| {
            let file = std::fs::File::options()
                .write(true)
                .open(path)
                .expect("open");
            file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))
                .expect("mtime");
        };
        set_mtime(&lock, 1_000);
        set_mtime(&installed, 2_000);
        let fresh = needs_install(&dir);
        set_mtime(&lock, 3_000);
        let stale = needs_install(&dir);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(missing, "no node_modules: install");
        assert!(!fresh, "installed after the lock changed: keep");
        assert!(stale, "the lock changed after the install: reinstall");
    }

    #[test]
    fn a_listening_port_answers_and_a_closed_one_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let open = listener.local_addr().expect("address");
        assert!(answers(open));
        drop(listener);
        assert!(!answers(open), "nothing listens on {open} any more");
    }
}
