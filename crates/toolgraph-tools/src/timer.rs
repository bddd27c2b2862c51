//! Precise sleeping for the `sleep` and `fail` tools.
//!
//! tokio's timer rounds every deadline up to its next millisecond tick, so `sleep {ms: 2}`
//! takes about 3 ms and a chain of fifty 2 ms sleeps about 150 ms. Here one background
//! thread serves every sleep of the process: pending deadlines sit in an ordered map, one
//! Linux `timerfd` is armed at the earliest of them, and when it fires the thread wakes the
//! tasks whose deadlines have passed. That is one file descriptor and one thread however
//! many sleeps are pending (thousands are fine), and no thread spins. The thread wakes a
//! sleep [`FINAL_APPROACH`] (150 µs) before its deadline, as waking the thread and then a
//! runtime worker takes about that long; the sleep then yields to the runtime until the
//! deadline passes, so it ends within microseconds of it (timerfd applies no timer slack).
//!
//! Each [`Sleep`] also races tokio's own timer for the same duration, so it still
//! honours a paused tokio clock (`tokio::time::pause`, `start_paused` tests advance past
//! it at once) and still ends — a little late — if the timer thread cannot be had (no
//! timerfd on this platform, or the system refused the fd or the thread). Dropping a
//! [`Sleep`] withdraws its deadline: nothing is left behind. This module never blocks an
//! async task: the lock it takes is held for a map operation and one syscall at most.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Waits `duration` (on the wall clock precisely; on tokio's clock when it is paused).
///
/// Must be polled inside a tokio runtime with its time driver enabled, as
/// `tokio::time::sleep` must.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep::on(shared(), duration)
}

/// Starts the shared timer thread if it is not running yet (else [`sleep`] starts it on
/// first use). Never fails: without the thread, sleeps use tokio's timer.
pub fn start() {
    let _ = shared();
}

/// A pending [`sleep`]: completes once `duration` has passed; dropping it cancels it.
pub struct Sleep {
    /// None when the duration is beyond what `Instant` can hold: tokio's timer alone.
    deadline: Option<Instant>,
    timer: Option<Arc<Timer>>,
    /// This sleep's place in the timer's queue, once it has one.
    key: Option<Key>,
    /// tokio's timer for the same duration: the paused clock and the fallback.
    tokio: Pin<Box<tokio::time::Sleep>>,
}

impl Sleep {
    fn on(timer: Option<Arc<Timer>>, duration: Duration) -> Self {
        Self {
            deadline: Instant::now().checked_add(duration),
            timer,
            key: None,
            tokio: Box::pin(tokio::time::sleep(duration)),
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let passed = self.deadline.is_some_and(|d| Instant::now() >= d);
        if passed || self.tokio.as_mut().poll(cx).is_ready() {
            self.withdraw();
            return Poll::Ready(());
        }
        let this = &mut *self;
        if let (Some(timer), Some(deadline)) = (&this.timer, this.deadline) {
            let wake_at = deadline.checked_sub(FINAL_APPROACH).unwrap_or(deadline);
            if Instant::now() >= wake_at {
                // The last stretch: yield to the runtime until the deadline passes.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match this.key {
                Some(key) => timer.rewake(key, cx.waker()),
                None => this.key = timer.enqueue(wake_at, cx.waker()),
            }
        }
        Poll::Pending
    }
}

impl Sleep {
    fn withdraw(&mut self) {
        if let (Some(timer), Some(key)) = (&self.timer, self.key.take()) {
            timer.withdraw(key);
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// How long before its deadline the timer thread wakes a sleep, which then yields to the
/// runtime (re-polled each time, never blocking a thread) until the deadline passes. Waking
/// a thread costs tens of microseconds twice over (the timer thread, then a runtime worker;
/// about 120 µs in all on this project's virtual machines): waking early by about that much
/// lands the end within microseconds of the deadline, for a bounded bit of polling.
const FINAL_APPROACH: Duration = Duration::from_micros(150);

/// A deadline and a sequence number that keeps equal deadlines apart.
type Key = (Instant, u64);

/// The process's timer thread, started on first use; None where it cannot run.
fn shared() -> Option<Arc<Timer>> {
    static SHARED: OnceLock<Option<Arc<Timer>>> = OnceLock::new();
    SHARED.get_or_init(|| Timer::start().ok()).clone()
}

/// The queue of pending deadlines and the timerfd armed at the earliest.
struct Timer {
    state: Mutex<State>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fd: std::os::fd::OwnedFd,
}

#[derive(Default)]
struct State {
    pending: BTreeMap<Key, Waker>,
    next_seq: u64,
    /// The deadline the timerfd is armed for, if any.
    armed: Option<Instant>,
    /// The thread has stopped (its fd failed): sleeps rely on tokio's timer alone.
    stopped: bool,
}

impl Timer {
    /// Creates the timerfd and the thread that waits on it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn start() -> std::io::Result<Arc<Self>> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
        let timer = Arc::new(Self {
            state: Mutex::new(State::default()),
            fd,
        });
        let served = Arc::clone(&timer);
        std::thread::Builder::new()
            .name("toolgraph-timer".into())
            .spawn(move || served.serve())?;
        Ok(timer)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn start() -> std::io::Result<Arc<Self>> {
        Err(std::io::Error::other("no timerfd on this platform"))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `deadline`; None when the thread has stopped.
    fn enqueue(&self, deadline: Instant, waker: &Waker) -> Option<Key> {
        let mut state = self.lock();
        if state.stopped {
            return None;
        }
        let key = (deadline, state.next_seq);
        state.next_seq += 1;
        state.pending.insert(key, waker.clone());
        if state.armed.is_none_or(|armed| deadline < armed) {
            self.arm(&mut state, deadline);
        }
        Some(key)
    }

    /// Keeps the waker of a queued sleep current (a task may move between polls).
    fn rewake(&self, key: Key, waker: &Waker) {
        let mut state = self.lock();
        if let Some(queued) = state.pending.get_mut(&key)
            && !queued.will_wake(waker)
        {
            waker.clone_into(queued);
        }
    }

    /// Takes a sleep out of the queue (it ended or was dropped). The timerfd may stay armed
    /// for it: the thread then finds nothing due and re-arms for what is left.
    fn withdraw(&self, key: Key) {
        self.lock().pending.remove(&key);
    }

    /// The thread: wait for the timerfd, wake whatever is due, re-arm for the rest.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn serve(&self) {
        let mut expirations = [0u8; 8];
        loop {
            match rustix::io::read(&self.fd, &mut expirations) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    // Cannot happen with a valid timerfd; if it does, hand every sleep
                    // over to tokio's timer rather than leave one waiting on us.
                    let mut state = self.lock();
                    state.stopped = true;
                    let all = std::mem::take(&mut state.pending);
                    drop(state);
                    all.into_values().for_each(Waker::wake);
                    return;
                }
            }
            let mut state = self.lock();
            state.armed = None;
            let later = state.pending.split_off(&(Instant::now(), u64::MAX));
            let due = std::mem::replace(&mut state.pending, later);
            if let Some(&(next, _)) = state.pending.keys().next() {
                self.arm(&mut state, next);
            }
            drop(state);
            due.into_values().for_each(Waker::wake);
        }
    }

    /// Arms the timerfd for `deadline` (at once when it has passed).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn arm(&self, state: &mut State, deadline: Instant) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        // A zero value would disarm the timer: one nanosecond fires it at once.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let Ok(value) = Timespec::try_from(wait) else {
            return; // centuries away: tokio's timer will do
        };
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        if timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec).is_ok() {
            state.armed = Some(deadline);
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn arm(&self, _state: &mut State, _deadline: Instant) {}

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_lasts_at_least_its_duration() {
        for ms in [0, 1, 2, 5] {
            let started = Instant::now();
            sleep(Duration::from_millis(ms)).await;
            assert!(
                started.elapsed() >= Duration::from_millis(ms),
                "sleep of {ms} ms returned after {:?}",
                started.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn dropping_a_sleep_withdraws_its_deadline() {
        let Ok(timer) = Timer::start() else {
            panic!("no timerfd: {:?}", Timer::start().err());
        };
        let long = Sleep::on(Some(Arc::clone(&timer)), Duration::from_secs(3600));
        let short = Sleep::on(Some(Arc::clone(&timer)), Duration::from_millis(1));
        tokio::select! {
            () = long => panic!("the hour-long sleep ended first"),
            () = short => {}
        }
        assert_eq!(
            timer.pending(),
            0,
            "the cancelled sleep left its deadline queued"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousands_of_concurrent_sleeps_share_one_timer_and_all_end() {
        let Ok(timer) = Timer::start() else {
            panic!("no timerfd: {:?}", Timer::start().err());
        };
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..5_000u64 {
            let timer = Arc::clone(&timer);
            tasks.spawn(async move {
                let ms = 1 + i % 5;
                let started = Instant::now();
                Sleep::on(Some(timer), Duration::from_millis(ms)).await;
                (ms, started.elapsed())
            });
        }
        let mut ended = 0;
        while let Some(joined) = tasks.join_next().await {
            let (ms, took) = joined.expect("sleep task");
            assert!(
                took >= Duration::from_millis(ms),
                "{ms} ms sleep took {took:?}"
            );
            ended += 1;
        }
        assert_eq!(ended, 5_000);
        assert_eq!(timer.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_is_honoured() {
        let started = tokio::time::Instant::now();
        let wall = Instant::now();
        sleep(Duration::from_secs(600)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(600));
        assert!(
            wall.elapsed() < Duration::from_secs(600),
            "waited on the wall clock"
        );
    }

    #[tokio::test]
    async fn without_the_timer_thread_tokio_s_timer_ends_the_sleep() {
        let started = Instant::now();
        Sleep::on(None, Duration::from_millis(3)).await;
        assert!(started.elapsed() >= Duration::from_millis(3));
    }
}
