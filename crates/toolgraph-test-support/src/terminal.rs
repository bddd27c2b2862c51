//! A real terminal for tests of interactive commands: the command runs in a detached `tmux`
//! session on a server of the test's own (`tmux -L <unique socket>`), so it sees a pty with
//! a size, line editing works, and Ctrl-C reaches it as a terminal signal — as when a person
//! types. The test types with [`Terminal::send_line`] / [`Terminal::send_keys`] and reads the
//! screen with [`Terminal::wait_for`] / [`Terminal::screen`].
//!
//! [`Terminal::start`] answers `None` (after [`skip`](crate::skip)) when `tmux` is missing;
//! CI installs it. Dropping a [`Terminal`] kills its tmux server and the command with it.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One command running in a terminal of its own.
pub struct Terminal {
    socket: String,
    /// The server's configuration file.
    config: std::path::PathBuf,
    /// Where the command's exit status is written when it exits.
    status_file: std::path::PathBuf,
    /// Everything shown so far, kept when the command exits (`remain-on-exit`).
    last_screen: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Terminal {
    /// Starts `program args…` in a 160×50 terminal with the working directory `dir`, in the
    /// environment [`isolated`](crate::isolated) gives (no toolgraph, model or log variables
    /// of the caller; the test's home) plus `env`.
    ///
    /// The terminal stays after the command exits, so its last screen can still be read.
    pub fn start(
        program: impl AsRef<Path>,
        args: &[&str],
        dir: &Path,
        env: &[(String, String)],
    ) -> Option<Terminal> {
        if Command::new("tmux").arg("-V").output().is_err() {
            crate::skip("tmux is not installed (apt-get install tmux)");
            return None;
        }
        let socket = format!(
            "tg-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // Read by the server as it starts, before the command runs: a command that exits at
        // once still leaves its screen and status. One file per terminal: tests start
        // terminals in parallel.
        let config = std::env::temp_dir().join(format!("{socket}.conf"));
        if let Err(e) = std::fs::write(&config, "set-option -g remain-on-exit on\n") {
            panic!("could not write {}: {e}", config.display());
        }
        // tmux 3.3 does not always keep a dead pane's status: the shell that runs the command
        // writes it, whole (a rename), to a file of the terminal's own.
        let status_file = std::env::temp_dir().join(format!("{socket}.status"));
        let terminal = Terminal {
            socket,
            config,
            status_file,
            last_screen: String::new(),
        };
        // `env VAR=… program args…` as one shell-quoted command line: tmux runs it through
        // `sh -c`.
        let mut line = vec!["env".to_owned()];
        for (name, value) in env {
            line.push(quote(&format!("{name}={value}")));
        }
        line.push(quote(&program.as_ref().to_string_lossy()));
        line.extend(args.iter().map(|a| quote(a)));
        let partial = quote(&format!("{}.partial", terminal.status_file.display()));
        line.push(format!(
            "; echo $? > {partial} && mv {partial} {}",
            quote(&terminal.status_file.to_string_lossy())
        ));
        let started = terminal.tmux(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-c",
            &dir.to_string_lossy(),
            &line.join(" "),
        ]);
        assert!(
            started.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        Some(terminal)
    }

    /// Types `text` and Enter.
    pub fn send_line(&self, text: &str) {
        self.send_literal(text);
        self.send_keys(&["Enter"]);
    }

    /// Types `text` as it is (no key names).
    pub fn send_literal(&self, text: &str) {
        let sent = self.tmux(&["send-keys", "-t", "0", "-l", text]);
        assert!(sent.status.success(), "tmux send-keys failed");
    }

    /// Presses keys by tmux's names: `Enter`, `C-c`, `C-d`, `Up`, `BSpace`….
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        let sent = self.tmux(&args);
        assert!(sent.status.success(), "tmux send-keys failed");
    }

    /// The screen and its scrollback now, trailing blank lines removed.
    pub fn screen(&mut self) -> String {
        let captured = self.tmux(&["capture-pane", "-p", "-J", "-S", "-2000", "-t", "0"]);
        if captured.status.success() {
            self.last_screen = String::from_utf8_lossy(&captured.stdout)
                .trim_end()
                .to_owned();
        }
        self.last_screen.clone()
    }

    /// Waits until the screen shows `text` at least `times` times, and answers the screen.
    ///
    /// # Panics
    /// After `timeout`, with the screen in the message.
    pub fn wait_for_n(&mut self, text: &str, times: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal did not show {text:?} ×{times} within {timeout:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the screen shows `text`, and answers the screen.
    ///
    /// # Panics
    /// After `timeout`, with the screen in the message.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> String {
        self.wait_for_n(text, 1, timeout)
    }

    /// The command's exit status, once it has exited.
    pub fn exit_status(&self) -> Option<i32> {
        std::fs::read_to_string(&self.status_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits for the command to exit and answers its status.
    ///
    /// # Panics
    /// After `timeout`, with the screen in the message.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            if Instant::now() >= deadline {
                let screen = self.screen();
                panic!("the command did not exit within {timeout:?}; it shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tmux(&self, args: &[&str]) -> Output {
        // The tmux server is new (a socket of its own), so every command in it runs in this
        // environment.
        let mut tmux = Command::new("tmux");
        crate::process::isolate(&mut tmux);
        tmux.arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.config)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| panic!("tmux could not run: {e}"))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.status_file);
    }
}

/// `text` quoted for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_reads_what_is_typed_and_its_exit_is_seen() {
        let dir = std::env::temp_dir();
        let Some(mut term) = Terminal::start(
            "sh",
            &["-c", "printf 'name? '; read n; echo \"hello $n\"; exit 3"],
            &dir,
            &[("GREETING".into(), "x y".into())],
        ) else {
            return;
        };
        term.wait_for("name?", Duration::from_secs(10));
        term.send_line("it's me");
        term.wait_for("hello it's me", Duration::from_secs(10));
        assert_eq!(term.wait_exit(Duration::from_secs(10)), 3);
    }

    #[test]
    fn ctrl_c_reaches_the_command_as_a_signal() {
        let dir = std::env::temp_dir();
        let Some(mut term) = Terminal::start(
            "sh",
            &[
                "-c",
                "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done",
            ],
            &dir,
            &[],
        ) else {
            return;
        };
        term.wait_for("ready", Duration::from_secs(10));
        term.send_keys(&["C-c"]);
        term.wait_for("got-int", Duration::from_secs(10));
        assert_eq!(term.wait_exit(Duration::from_secs(10)), 7);
    }

    #[test]
    fn a_command_that_exits_at_once_leaves_its_screen() {
        let dir = std::env::temp_dir();
        let Some(mut term) = Terminal::start("sh", &["-c", "echo gone; exit 4"], &dir, &[]) else {
            return;
        };
        assert_eq!(term.wait_exit(Duration::from_secs(10)), 4);
        assert!(term.screen().contains("gone"), "{}", term.screen());
    }
}
