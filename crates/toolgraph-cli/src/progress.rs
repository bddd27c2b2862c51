//! Live progress on standard error: a bar with done / running / queued / failed and per-tool
//! counts on a terminal; one plain line per finished call otherwise.
//!
//! One [`Progress`] is the display; each execution gets a sink of its own from
//! [`Progress::sink_factory`] (the runtime asks for one per execution), so executions that
//! run at once — a chat starts calls early, each as an execution of its own, while the
//! model still streams — are told apart: a line names the call by its id in its own
//! execution, and the bar adds up every execution's calls. A line's time is the call's end:
//! for `run` and `resume` on its execution's clock, the clock of the result table
//! (`start` + `run`); for a chat, which runs many executions, since the chat began.
//!
//! Sinks are called from the scheduler's loop: they only update counters and print one
//! line, and let indicatif draw at its own pace. Nothing here can panic on a closed
//! standard error.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use toolgraph::SinkFactory;
use toolgraph_core::{CallOutcome, CallStatus, Event, EventSink, ToolCall};

use crate::out::errln;

#[derive(Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Queued,
    Running,
    Done,
}

/// The counters shown, over every execution so far.
#[derive(Default)]
struct Counts {
    total: usize,
    queued: usize,
    running: usize,
    failed: usize,
    /// Tool name, calls done, calls in all.
    per_tool: Vec<(String, usize, usize)>,
}

impl Counts {
    fn tool(&mut self, name: &str) -> usize {
        match self.per_tool.iter().position(|(n, _, _)| n == name) {
            Some(t) => t,
            None => {
                self.per_tool.push((name.to_owned(), 0, 0));
                self.per_tool.len() - 1
            }
        }
    }

    fn message(&self) -> String {
        let tools: Vec<String> = self
            .per_tool
            .iter()
            .map(|(n, d, t)| format!("{n} {d}/{t}"))
            .collect();
        format!(
            "running {} · queued {} · failed {} · {}",
            self.running,
            self.queued,
            self.failed,
            tools.join(" ")
        )
    }
}

/// The progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    counts: Mutex<Counts>,
    /// Lines give times since this moment (a chat), not on each execution's clock.
    since: Option<Instant>,
}

impl Progress {
    /// The display of one execution (`run`, `resume`): a line's time is on the clock of the
    /// result table.
    pub fn for_run() -> Arc<Self> {
        Progress::new(None)
    }

    /// The display of a chat: a line's time is since the chat began.
    pub fn for_chat() -> Arc<Self> {
        Progress::new(Some(Instant::now()))
    }

    /// A bar when standard error is a terminal, plain lines otherwise.
    fn new(since: Option<Instant>) -> Arc<Self> {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{elapsed_precise:.dim} {bar:28.cyan/blue} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ ");
            bar.set_style(style);
            bar
        });
        Arc::new(Progress {
            bar,
            counts: Mutex::new(Counts::default()),
            since,
        })
    }

    /// What the runtime calls to get a sink for each execution.
    pub fn sink_factory(self: &Arc<Self>) -> SinkFactory {
        let display = self.clone();
        Arc::new(move || {
            Arc::new(ExecutionProgress {
                display: display.clone(),
                calls: Mutex::new(Vec::new()),
            }) as Arc<dyn EventSink>
        })
    }

    /// Clears the bar (the summary follows).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Hides the bar while a question is asked on the terminal (`approve_prompt`), and
    /// shows it again after.
    pub fn hide_bar(&self, hidden: bool) {
        if let Some(bar) = &self.bar {
            if hidden {
                bar.set_draw_target(ProgressDrawTarget::hidden());
            } else {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn redraw(&self, counts: &Counts) {
        if let Some(bar) = &self.bar {
            bar.set_length(counts.total as u64);
            bar.set_message(counts.message());
        }
    }
}

/// One call as its execution's display knows it.
struct Call {
    id: String,
    tool: usize,
    state: State,
}

/// One execution's view of the display.
struct ExecutionProgress {
    display: Arc<Progress>,
    calls: Mutex<Vec<Call>>,
}

impl ExecutionProgress {
    fn calls(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventSink for ExecutionProgress {
    fn on_plan(&self, calls: &[&ToolCall]) {
        let mut counts = self.display.counts();
        counts.total += calls.len();
        let mut mine = self.calls();
        mine.clear();
        for c in calls {
            let tool = counts.tool(&c.name);
            counts.per_tool[tool].2 += 1;
            mine.push(Call {
                id: c.id.clone(),
                tool,
                state: State::Waiting,
            });
        }
        self.display.redraw(&counts);
    }

    fn on_event(&self, event: &Event) {
        let mut mine = self.calls();
        let mut counts = self.display.counts();
        match *event {
            Event::CallReady { position } => {
                if let Some(c) = mine.get_mut(position) {
                    c.state = State::Queued;
                    counts.queued += 1;
                }
            }
            Event::CallStarted { position } => {
                if let Some(c) = mine.get_mut(position) {
                    if c.state == State::Queued {
                        counts.queued -= 1;
                    }
                    c.state = State::Running;
                    counts.running += 1;
                }
            }
            Event::CallFinished {
                position, status, ..
            } => {
                if let Some(c) = mine.get_mut(position) {
                    match c.state {
                        State::Queued => counts.queued -= 1,
                        State::Running => counts.running -= 1,
                        State::Waiting | State::Done => {}
                    }
                    c.state = State::Done;
                    if status != CallStatus::Ok {
                        counts.failed += 1;
                    }
                    counts.per_tool[c.tool].1 += 1;
                    if let Some(bar) = &self.display.bar {
                        bar.inc(1);
                    }
                }
            }
            Event::ExecutionStarted { .. }
            | Event::ExecutionFinished { .. }
            | Event::CallAwaitingApproval { .. }
            | Event::LimitChanged { .. } => {}
        }
        self.display.redraw(&counts);
    }

    fn on_outcome(&self, position: usize, o: &CallOutcome<'_>) {
        if self.display.bar.is_some() {
            return;
        }
        let mine = self.calls();
        let Some(c) = mine.get(position) else {
            return;
        };
        let tool = self
            .display
            .counts()
            .per_tool
            .get(c.tool)
            .map_or_else(String::new, |t| t.0.clone());
        let at = self
            .display
            .since
            .map_or(o.finished_ms, |t| t.elapsed().as_secs_f64() * 1e3);
        errln!("{}", finished_line(at, c.id.as_str(), &tool, o));
    }
}

/// The plain line of a finished call: when (ms), status, id, tool, how long it ran, and the
/// worker process that ran it when another process did, and `(cached)` when the cache
/// answered it.
fn finished_line(at: f64, id: &str, tool: &str, o: &CallOutcome<'_>) -> String {
    let ran = o
        .started_ms
        .map_or_else(String::new, |s| format!(" {:.1} ms", o.finished_ms - s));
    let worker = o.worker.map_or_else(String::new, |w| format!(" on {w}"));
    let cached = if o.cached { " (cached)" } else { "" };
    format!(
        "[{at:>9.1} ms] {:<9} {id} ({tool}){ran}{worker}{cached}",
        o.status.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_line_names_the_worker_only_when_one_ran_the_call() {
        let mut o = CallOutcome {
            status: CallStatus::Ok,
            output: None,
            error: None,
            attempts: 1,
            queued_ms: 0.0,
            started_ms: Some(2.0),
            finished_ms: 12.5,
            worker: None,
            cached: false,
        };
        assert_eq!(
            finished_line(12.5, "a", "sleep", &o),
            "[     12.5 ms] ok        a (sleep) 10.5 ms"
        );
        o.worker = Some("w-1");
        assert_eq!(
            finished_line(12.5, "a", "sleep", &o),
            "[     12.5 ms] ok        a (sleep) 10.5 ms on w-1"
        );
    }
}
