//! Live progress on standard error: a bar with done / running / queued / failed and per-tool
//! counts on a terminal; one plain line per finished call otherwise.
//!
//! It is an [`EventSink`]: called from the scheduler's loop, it only updates counters and
//! lets indicatif draw at its own pace. Each execution announces its calls (`on_plan`), so
//! one display follows a run or the successive executions of a chat.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use toolgraph_core::{CallStatus, Event, EventSink, ToolCall};

#[derive(Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Queued,
    Running,
    Done,
}

/// The counters of the execution in progress.
#[derive(Default)]
struct Counts {
    calls: Vec<(String, usize)>,
    state: Vec<State>,
    queued: usize,
    running: usize,
    failed: usize,
    per_tool: Vec<(String, usize, usize)>,
}

impl Counts {
    fn of(calls: &[&ToolCall]) -> Counts {
        let mut per_tool: Vec<(String, usize, usize)> = Vec::new();
        let mut call_tools = Vec::with_capacity(calls.len());
        for c in calls {
            let t = match per_tool.iter().position(|(name, _, _)| *name == c.name) {
                Some(t) => t,
                None => {
                    per_tool.push((c.name.clone(), 0, 0));
                    per_tool.len() - 1
                }
            };
            per_tool[t].2 += 1;
            call_tools.push((c.id.clone(), t));
        }
        Counts {
            calls: call_tools,
            state: vec![State::Waiting; calls.len()],
            per_tool,
            ..Counts::default()
        }
    }
}

/// The progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    counts: Mutex<Counts>,
    start: Instant,
}

impl Progress {
    /// A display: a bar when standard error is a terminal, plain lines otherwise.
    pub fn new() -> Self {
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
        Progress {
            bar,
            counts: Mutex::new(Counts::default()),
            start: Instant::now(),
        }
    }

    /// Clears the bar (the summary follows).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl EventSink for Progress {
    fn on_plan(&self, calls: &[&ToolCall]) {
        if let Ok(mut c) = self.counts.lock() {
            *c = Counts::of(calls);
        }
        if let Some(bar) = &self.bar {
            bar.set_length(calls.len() as u64);
            bar.set_position(0);
        }
    }

    fn on_event(&self, event: &Event) {
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        match *event {
            Event::CallReady { position } if position < c.state.len() => {
                c.state[position] = State::Queued;
                c.queued += 1;
            }
            Event::CallStarted { position } if position < c.state.len() => {
                if c.state[position] == State::Queued {
                    c.queued -= 1;
                }
                c.state[position] = State::Running;
                c.running += 1;
            }
            Event::CallFinished {
                position,
                status,
                duration_ms,
            } if position < c.state.len() => {
                match c.state[position] {
                    State::Queued => c.queued -= 1,
                    State::Running => c.running -= 1,
                    _ => {}
                }
                c.state[position] = State::Done;
                if status != CallStatus::Ok {
                    c.failed += 1;
                }
                let (id, tool) = c.calls[position].clone();
                c.per_tool[tool].1 += 1;
                match &self.bar {
                    Some(bar) => bar.inc(1),
                    None => eprintln!(
                        "[{:>9.1} ms] {:<9} {id} ({}) {duration_ms:.1} ms",
                        self.start.elapsed().as_secs_f64() * 1e3,
                        status.as_str(),
                        c.per_tool[tool].0
                    ),
                }
            }
            _ => {}
        }
        if let Some(bar) = &self.bar {
            let tools: Vec<String> = c
                .per_tool
                .iter()
                .map(|(n, d, t)| format!("{n} {d}/{t}"))
                .collect();
            bar.set_message(format!(
                "running {} · queued {} · failed {} · {}",
                c.running,
                c.queued,
                c.failed,
                tools.join(" ")
            ));
        }
    }
}
