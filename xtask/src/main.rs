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
//! 5. The Python package (`python/`), whatever cargo's tests gave: a virtual environment
//!    `<target>/python-tests` with `python/requirements-test.txt` installed (re-made when that
//!    file changes), `pip install --no-build-isolation ./python` into it (maturin builds the
//!    extension in the dev profile, in the target folder: the tests check behaviour, and
//!    most of what it needs is left there by cargo's tests — a release build of the whole
//!    runtime took minutes), `pytest python/tests` with the same
//!    variables and skip log (`python/tests/conftest.py` writes the lines), and
//!    `mypy --strict` over `python/examples` and `python/toolgraph` (those holding Python
//!    files). No `python3` 3.11+ (or no way to install the requirements) is a skipped check.
//! 6. Prints `N checks skipped:` with each check and why, and exits with cargo's status, or
//!    failure when only the Python step failed.
//!
//! `cargo test-all --python-only [PYTEST ARGS…]` does 3, 5 and 6 only, passing its arguments
//! to pytest (`cargo test-all --python-only -k smoke`).
//!
//! It changes nothing outside the repository (and the target folder) but that one temporary
//! file, and starts no service: a service that is down is reported, and the checks that need it say so.

use std::ffi::OsString;
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
const NPM_PROJECTS: [(&str, &str, &str); 3] = [
    (
        "crates/toolgraph-mcp/tests/servers",
        "the MCP test servers",
        "the MCP checks",
    ),
    (
        "crates/toolgraph-cli/tests/mcp_client",
        "the MCP TypeScript SDK client",
        "the mcp-serve TypeScript check",
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

/// The Python tests' pinned tools, from the workspace root.
const PYTHON_REQUIREMENTS: &str = "python/requirements-test.txt";

/// The oldest `python3` the Python tests' requirements install on (langchain-core 1.8).
const PYTHON_MIN: (u32, u32) = (3, 11);

/// The Python checks as a whole, as the skip log names them when they cannot run at all.
const PYTHON_CHECK: &str = "python/tests";

/// The folders `mypy --strict` checks, from the workspace root (those holding Python files).
const MYPY_DIRS: [&str; 2] = ["python/examples", "python/toolgraph"];

/// The file where each skipped check leaves a line, and the variable that names it.
const SKIP_LOG_VAR: &str = "TOOLGRAPH_TEST_SKIP_LOG";

/// Makes a skip a failure when set (as CI sets it).
const REQUIRE_VAR: &str = "TOOLGRAPH_REQUIRE_SERVICES";

const USAGE: &str = "usage: cargo test-all [ARGS…]   (cargo run -p xtask -- test [ARGS…])
  installs the tests' npm projects when needed, finds PostgreSQL, NATS and Redis on 127.0.0.1,
  runs `cargo test --workspace --locked ARGS…`, then builds the Python package and runs its
  pytest suite and mypy, and lists the checks it skipped.
       cargo test-all --python-only [PYTEST ARGS…]
  the Python part only (services are still found).";

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

fn test(mut args: Vec<String>) -> ExitCode {
    let python_only = args.first().is_some_and(|a| a == "--python-only");
    if python_only {
        args.remove(0);
    }
    let root = workspace_root();
    let target = target_dir(&root);
    // The variables both test runs get.
    let mut env: Vec<(&str, OsString)> = Vec::new();
    if !python_only {
        for (dir, what, checks) in NPM_PROJECTS {
            install_npm_project(&root, dir, what, checks);
        }
        if let Some(set) = std::env::var_os(SCHEMATHESIS_VAR) {
            eprintln!(
                "test-all: {SCHEMATHESIS_VAR} is already set ({})",
                set.to_string_lossy()
            );
        } else if let Some(st) = install_schemathesis(&target) {
            eprintln!(
                "test-all: schemathesis: {SCHEMATHESIS_VAR}={}",
                st.display()
            );
            env.push((SCHEMATHESIS_VAR, st.into()));
        }
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
            env.push((var, url.into()));
        } else {
            eprintln!("test-all: {name} does not answer on {addr}: {var} stays unset");
        }
    }
    let log = std::env::temp_dir().join(format!("toolgraph-skips-{}.log", std::process::id()));
    // A stale file of an earlier run with this pid would add its lines.
    let _ = std::fs::remove_file(&log);
    env.push((SKIP_LOG_VAR, log.clone().into()));
    let cargo_failed = if python_only {
        None
    } else {
        cargo_test(&root, &args, &env)
    };
    let pytest_args = if python_only { args } else { Vec::new() };
    let python_passed = python_tests(&root, &target, &pytest_args, &env, &log);
    let skipped = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    eprintln!("\n{}", skip_summary(&skipped));
    match (cargo_failed, python_passed) {
        (Some(code), _) => ExitCode::from(code),
        (None, false) => ExitCode::FAILURE,
        (None, true) => ExitCode::SUCCESS,
    }
}

/// Runs `cargo test --workspace --locked ARGS…` with `env`: `None` when it passed, else the
/// exit code to end with.
fn cargo_test(root: &Path, args: &[String], env: &[(&str, OsString)]) -> Option<u8> {
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args(["test", "--workspace", "--locked"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status();
    match status {
        Ok(status) if status.success() => None,
        Ok(status) => {
            eprintln!("test-all: cargo test failed ({status})");
            Some(
                status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .filter(|&c| c != 0)
                    .unwrap_or(1),
            )
        }
        Err(e) => {
            eprintln!("test-all: could not run cargo test: {e}");
            Some(1)
        }
    }
}

/// The Python step (module doc, 5): true when it passed or skipped (a line in `log`).
fn python_tests(
    root: &Path,
    target: &Path,
    pytest_args: &[String],
    env: &[(&str, OsString)],
    log: &Path,
) -> bool {
    let version = python_version();
    let Some((major, minor)) = version.as_ref().ok().copied().filter(|&v| v >= PYTHON_MIN) else {
        let found = match version {
            Ok((major, minor)) => format!("python3 is {major}.{minor}"),
            Err(e) => format!("no python3 ({e})"),
        };
        let (want_major, want_minor) = PYTHON_MIN;
        return skip_check(
            log,
            PYTHON_CHECK,
            &format!("{found}; the Python tests need python3 {want_major}.{want_minor}+"),
        );
    };
    let venv = target.join("python-tests");
    let python = venv.join("bin").join("python");
    let stamp = venv.join("requirements-test.txt");
    let requirements = root.join(PYTHON_REQUIREMENTS);
    let wanted = match std::fs::read(&requirements) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("test-all: python: cannot read {PYTHON_REQUIREMENTS}: {e}");
            return false;
        }
    };
    if std::fs::read(&stamp).ok().as_ref() != Some(&wanted) {
        eprintln!(
            "test-all: python: making {} (python3 {major}.{minor}, {PYTHON_REQUIREMENTS})",
            venv.display()
        );
        let _ = std::fs::remove_dir_all(&venv);
        let made = make_venv(
            &venv,
            &["-r".into(), requirements.into()],
            "the Python checks will skip",
        ) && std::fs::write(&stamp, &wanted).is_ok();
        if !made {
            let _ = std::fs::remove_dir_all(&venv);
            return skip_check(
                log,
                PYTHON_CHECK,
                &format!(
                    "could not install {PYTHON_REQUIREMENTS} into a virtual environment (needs \
                     python3-venv and PyPI)"
                ),
            );
        }
    }
    // As if activated: maturin's Python entry point runs the `maturin` on PATH.
    let path = std::env::join_paths(std::iter::once(venv.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap_or_default();
    let step = |what: &str, command: &mut Command| {
        eprintln!("test-all: python: {what}");
        let command = command
            .current_dir(root)
            .env("VIRTUAL_ENV", &venv)
            .env("PATH", &path);
        match command.status() {
            Ok(status) if status.success() => true,
            Ok(status) => {
                eprintln!("test-all: python: {what}: failed ({status})");
                false
            }
            Err(e) => {
                eprintln!("test-all: python: {what}: could not run it ({e})");
                false
            }
        }
    };
    // maturin (the venv's) builds the extension in the dev profile, in the target folder.
    let installed = step(
        "pip install --no-build-isolation ./python (a dev build of the extension)",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-build-isolation", "./python"])
            .env("MATURIN_PEP517_ARGS", "--locked --profile dev"),
    );
    if !installed {
        return false;
    }
    let tested = step(
        "pytest python/tests",
        Command::new(&python)
            .args(["-m", "pytest", "python/tests", "-q", "-rs", "-o"])
            .arg(format!("cache_dir={}", venv.join("pytest-cache").display()))
            .args(pytest_args)
            .envs(env.iter().map(|(k, v)| (k, v))),
    );
    let sources: Vec<&str> = MYPY_DIRS
        .into_iter()
        .filter(|dir| holds_python(&root.join(dir)))
        .collect();
    let typed = if sources.is_empty() {
        eprintln!("test-all: python: no Python files in {MYPY_DIRS:?}: no mypy");
        true
    } else {
        step(
            &format!("mypy --strict {}", sources.join(" ")),
            Command::new(&python)
                .args(["-m", "mypy", "--strict", "--cache-dir"])
                .arg(venv.join("mypy-cache"))
                .args(&sources),
        )
    };
    tested && typed
}

/// `python3`'s version, or why there is none.
fn python_version() -> Result<(u32, u32), String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(*sys.version_info[:2])"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(str::parse::<u32>);
    match (out.status.success(), parts.next(), parts.next()) {
        (true, Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
        _ => Err(format!("python3 -c failed ({})", out.status)),
    }
}

/// True when `dir` holds a `.py` or `.pyi` file, at any depth.
fn holds_python(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                holds_python(&path)
            } else {
                path.extension().is_some_and(|e| e == "py" || e == "pyi")
            }
        })
}

/// Skips `check` because of `reason` as `toolgraph_test_support::skip` does: a line in
/// `log`, or a failure (false) when `TOOLGRAPH_REQUIRE_SERVICES` is set.
fn skip_check(log: &Path, check: &str, reason: &str) -> bool {
    if std::env::var_os(REQUIRE_VAR).is_some() {
        eprintln!("test-all: {check} cannot run: {reason}, and {REQUIRE_VAR} is set");
        return false;
    }
    eprintln!("test-all: SKIPPED {check}: {reason}");
    use std::io::Write;
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut file| file.write_all(format!("{check}: {reason}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "test-all: could not note the skip in {}: {e}",
            log.display()
        );
    }
    true
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

/// The target folder: `CARGO_TARGET_DIR` (from the workspace root when relative), else
/// `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"))
}

/// schemathesis's `st` in `<target>/schemathesis-<version>/`, made by [`make_venv`] when
/// missing. A failure is reported, not fatal: the OpenAPI check then skips and says why.
fn install_schemathesis(target: &Path) -> Option<PathBuf> {
    let venv = target.join(format!("schemathesis-{SCHEMATHESIS}"));
    let st = venv.join("bin").join("st");
    if st.exists() {
        return Some(st);
    }
    eprintln!(
        "test-all: installing schemathesis {SCHEMATHESIS} into {}",
        venv.display()
    );
    let made = make_venv(
        &venv,
        &[format!("schemathesis=={SCHEMATHESIS}").into()],
        "the OpenAPI check will skip",
    );
    if made && st.exists() {
        Some(st)
    } else {
        // A half-made environment would be taken for a good one next time.
        let _ = std::fs::remove_dir_all(&venv);
        None
    }
}

/// Makes a virtual environment in `venv` with `python3 -m venv` and runs `pip install
/// PIP_ARGS…` in it. A failure is reported with its `consequence` ("… will skip"); the
/// caller removes what was half made.
fn make_venv(venv: &Path, pip_args: &[OsString], consequence: &str) -> bool {
    let ran = |what: &str, command: &mut Command| match command.status() {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("test-all: {what} failed ({status}): {consequence}");
            false
        }
        Err(e) => {
            eprintln!("test-all: could not run {what} ({e}): {consequence}");
            false
        }
    };
    ran(
        "python3 -m venv",
        Command::new("python3").args(["-m", "venv"]).arg(venv),
    ) && ran(
        "pip install",
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(pip_args),
    )
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
