//! Writing to standard output and standard error without ever panicking.
//!
//! `println!` panics when its pipe is closed (`toolgraph plan --json big.json | head -1`).
//! Every command writes through [`outln!`] / [`out!`] instead: they write to a locked stdout
//! handle and treat `BrokenPipe` as a quiet end — nothing more is written, no message, and
//! the command finishes its work (a run is still recorded, a timeline still drawn). The
//! process then exits 141, the status a shell reports for `ls | head`, whose `ls` the
//! closed pipe ends. Other write errors (a full disk behind `>`) are returned, named.
//!
//! [`errln!`] writes to standard error and ignores every failure: a diagnostic that cannot
//! be shown must not turn into a panic either.
//!
//! The one piece of process-wide state here mirrors a process-wide fact: standard output
//! was closed by its reader.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// The exit status after standard output was closed: 128 + SIGPIPE, as a shell reports
/// a coreutils program the closed pipe ended.
pub const CLOSED_PIPE_EXIT: u8 = 141;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// True once a write found standard output closed.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Writes `args` to standard output and flushes. A closed pipe is not an error: it marks
/// standard output closed, and this and every later write do nothing.
pub fn stdout(args: std::fmt::Arguments<'_>) -> Result<()> {
    write_to(&mut io::stdout().lock(), args).context("writing to standard output")
}

fn write_to(w: &mut dyn Write, args: std::fmt::Arguments<'_>) -> io::Result<()> {
    if stdout_closed() {
        return Ok(());
    }
    match w.write_fmt(args).and_then(|()| w.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Writes `args` to standard error; failures are ignored.
pub fn stderr(args: std::fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// `println!` to standard output through [`stdout`]: returns `anyhow::Result<()>`.
macro_rules! outln {
    () => {
        $crate::out::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to standard output through [`stdout`]: returns `anyhow::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer that fails otherwise.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("no space left on device"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_output_quietly_and_other_failures_are_errors() {
        let full = write_to(&mut Full, format_args!("x"));
        assert!(full.is_err_and(|e| e.to_string().contains("no space")));
        assert!(!stdout_closed());
        assert!(write_to(&mut ClosedPipe, format_args!("x")).is_ok());
        assert!(stdout_closed());
        // Once closed, nothing is written (not even to a writer that would fail).
        assert!(write_to(&mut Full, format_args!("x")).is_ok());
    }
}
