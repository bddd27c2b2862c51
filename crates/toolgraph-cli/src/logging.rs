//! Logging and trace export: `tracing` events and spans of every crate, written to standard
//! error (never standard output, which carries results and `--json`), and sent to an
//! OpenTelemetry collector when one is configured ([`otlp`]).
//!
//! The log filter is chosen by, in order: `-v` flags (`-v` toolgraph at info, `-vv` at
//! debug, `-vvv` everything at debug and toolgraph at trace), `TOOLGRAPH_LOG`, `RUST_LOG`
//! (the `tracing_subscriber::EnvFilter` syntax: `info`, `toolgraph_mcp=debug,warn`), and by
//! default warnings only (none from rmcp, whose failures the MCP bridge reports itself).
//! `--log-format json` writes one JSON object a line, with the current span's fields and
//! the list of spans it is in, and a line as each span closes (`"message":"close"`, with
//! the span's fields: an execution's, a call's, an attempt's). The exporter has its own filter (toolgraph's spans at info),
//! so traces do not depend on what is logged.
//!
//! Invariant: with no `-v`, no log variable and no collector, no subscriber wants an info
//! span, so the engine's spans cost a relaxed load each (`toolgraph bench`).

mod otlp;

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, with span fields.
    Json,
}

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

/// What [`init`] set up, to be shut down before the process exits.
pub struct Logging {
    exporter: Option<otlp::Exporter>,
}

impl Logging {
    /// Sends the spans not yet exported (bounded: a collector that does not answer costs
    /// a few seconds at most, and a warning).
    pub fn shutdown(self) {
        if let Some(exporter) = self.exporter {
            exporter.shutdown();
        }
    }
}

/// Installs the subscriber: logs to standard error in `format`, and spans to the collector
/// the `OTEL_*` variables name, if any. A filter that does not parse, or an exporter that
/// cannot be built, is said, and the rest still works.
pub fn init(verbose: u8, format: LogFormat) -> Logging {
    let (filter, problem) = filter(verbose, |name| std::env::var(name).ok());
    let ansi = std::io::stderr().is_terminal();
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            // A line when a span closes, with everything recorded on it (a call's status,
            // attempts, queue and run time): the spans are info, so `-v` shows them.
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let (exporter, export_problem) = match otlp::Exporter::from_env(|name| std::env::var(name).ok())
    {
        Ok(exporter) => (exporter, None),
        Err(e) => (None, Some(e)),
    };
    let traces = exporter.as_ref().map(otlp::Exporter::layer);
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    for problem in [problem, export_problem].into_iter().flatten() {
        crate::out::errln!("toolgraph: warning: {problem}");
    }
    drop(installed);
    Logging { exporter }
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
