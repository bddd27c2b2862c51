//! Logging: `tracing` events of every crate, written to standard error (never standard
//! output, which carries results and `--json`).
//!
//! The filter is chosen by, in order: `-v` flags (`-v` toolgraph at info, `-vv` at debug,
//! `-vvv` everything at debug and toolgraph at trace), `TOOLGRAPH_LOG`, `RUST_LOG` (the
//! `tracing_subscriber::EnvFilter` syntax: `info`, `toolgraph_mcp=debug,warn`), and by
//! default warnings only (none from rmcp, whose failures the MCP bridge reports itself).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter for `verbose` `-v` flags and the environment, and where it came from.
fn filter(verbose: u8, var: impl Fn(&str) -> Option<String>) -> (EnvFilter, Option<String>) {
    // rmcp logs its transport failures itself, with Rust type names; the MCP bridge
    // reports them in words (naming the server), so rmcp's own lines wait for -vvv.
    let by_flags = match verbose {
        0 => None,
        1 => Some("warn,rmcp=off,toolgraph=info"),
        2 => Some("warn,rmcp=off,toolgraph=debug"),
        _ => Some("debug,toolgraph=trace"),
    };
    if let Some(directives) = by_flags {
        return (EnvFilter::new(directives), None);
    }
    for name in ["TOOLGRAPH_LOG", "RUST_LOG"] {
        let Some(value) = var(name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        return match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (
                EnvFilter::new(DEFAULT),
                Some(format!(
                    "{name}={value:?} is not a log filter ({e}); logging warnings only"
                )),
            ),
        };
    }
    (EnvFilter::new(DEFAULT), None)
}

/// Warnings, except rmcp's (see above).
const DEFAULT: &str = "warn,rmcp=off";

/// Installs the subscriber; a filter that does not parse is said, and warnings are logged.
pub fn init(verbose: u8) {
    let (filter, problem) = filter(verbose, |name| std::env::var(name).ok());
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    if let Some(problem) = problem {
        crate::out::errln!("toolgraph: warning: {problem}");
    }
    drop(installed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn flags_win_over_toolgraph_log_which_wins_over_rust_log() {
        let vars = [
            ("TOOLGRAPH_LOG", "toolgraph_mcp=debug"),
            ("RUST_LOG", "trace"),
        ];
        let (f, _) = filter(1, env(&vars));
        assert_eq!(f.to_string(), "toolgraph=info,rmcp=off,warn");
        let (f, _) = filter(0, env(&vars));
        assert_eq!(f.to_string(), "toolgraph_mcp=debug");
        let (f, _) = filter(0, env(&vars[1..]));
        assert_eq!(f.to_string(), "trace");
        let (f, problem) = filter(0, env(&[]));
        assert_eq!((f.to_string(), problem), ("rmcp=off,warn".to_owned(), None));
    }

    #[test]
    fn a_filter_that_does_not_parse_is_named_and_warnings_still_show() {
        let (f, problem) = filter(0, env(&[("RUST_LOG", "toolgraph=loud")]));
        assert_eq!(f.to_string(), "rmcp=off,warn");
        let problem = problem.unwrap_or_default();
        assert!(
            problem.starts_with("RUST_LOG=\"toolgraph=loud\" is not a log filter"),
            "{problem}"
        );
    }
}
