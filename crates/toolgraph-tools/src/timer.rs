//! Precise sleeping for the `sleep` and `fail` tools.
//!
//! tokio's timer rounds every deadline up to its next millisecond tick, so `sleep {ms: 2}`
//! takes about 3 ms and a chain of fifty 2 ms sleeps about 150 ms. Here one background
//! thread serves every sleep of the process: pending deadlines sit in an ordered map, one
//! Linux `timerfd` is armed at the earliest of them, and when it fires the thread wakes the
//! tasks whose deadlines have passed. That is one file descriptor and one thread however
//! many sleeps are pending (thousands are fine), and no thread spins. Waking the thread and
//! then a runtime worker takes about 120 µs on this project's virtual machines, so the
//! thread wakes a sleep [`FINAL_APPROACH`] (150 µs) before its deadline and the sleep yields
//! to the runtime until the deadline passes: it ends within microseconds of it (timerfd
//! applies no timer slack). That polling is only worth it for a few sleeps at once: when
//! more than [`SPIN_LIMIT`] deadlines fall within one final approach (a wide fan-out), the
//! thread wakes each at its deadline instead, and they end about 0.1 ms late.
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
            match this.key {
                None => this.key = timer.enqueue(deadline, cx.waker()),
                // Released before its deadline: the final approach, yielding to the runtime
                // until the deadline passes (re-polled each time, never blocking a thread).
                Some(key) if !timer.rewake(key, cx.waker()) => cx.waker().wake_by_ref(),
                Some(_) => {}
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
/// runtime until the deadline passes. About what waking the timer thread and then a runtime
/// worker costs on this project's virtual machines (~120 µs), so the sleep ends within
/// microseconds of its deadline, for a bounded bit of polling.
const FINAL_APPROACH: Duration = Duration::from_micros(150);

/// At most this many sleeps poll through a final approach together; with more deadlines in
/// one approach, each is woken at its deadline (polling thousands would delay them all).
const SPIN_LIMIT: usize = 16;

/// The thread wakes at most once per this gap: a crowd of deadlines is released in batches
/// rather than one wake-up each.
const REARM_GAP: Duration = Duration::from_micros(50);

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
        // Only a new first deadline moves the next release earlier. (One that crowds the
        // first's approach moves it later: the thread finds that out when it wakes.)
        if state.pending.keys().next() == Some(&key) {
            self.arm_next(&state, None);
        }
        Some(key)
    }

    /// Keeps the waker of a queued sleep current (a task may move between polls); false when
    /// the sleep is no longer queued: the thread released it.
    fn rewake(&self, key: Key, waker: &Waker) -> bool {
        let mut state = self.lock();
        match state.pending.get_mut(&key) {
            Some(queued) => {
                if !queued.will_wake(waker) {
                    waker.clone_into(queued);
                }
                true
            }
            None => false,
        }
    }

    /// When the earliest pending sleep should be released: a final approach ahead of its
    /// deadline, or at it when too many deadlines crowd that approach.
    fn release_time(pending: &BTreeMap<Key, Waker>) -> Option<Instant> {
        let (&(first, _), _) = pending.iter().next()?;
        let horizon = first.checked_add(FINAL_APPROACH).unwrap_or(first);
        let crowded = pending
            .range(..(horizon, u64::MAX))
            .nth(SPIN_LIMIT)
            .is_some();
        Some(match first.checked_sub(FINAL_APPROACH) {
            Some(early) if !crowded => early,
            _ => first,
        })
    }

    /// Arms the timerfd for the next release (not before `not_before`). With nothing queued it
    /// is left as it is: a stale wake-up finds nothing to release.
    fn arm_next(&self, state: &State, not_before: Option<Instant>) {
        if let Some(at) = Self::release_time(&state.pending) {
            self.arm(not_before.map_or(at, |t| at.max(t)));
        }
    }

    /// Takes a sleep out of the queue (it ended or was dropped). The timerfd may stay armed
    /// for it: the thread then finds nothing to release and re-arms for what is left.
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
                    // over to tokio's timer rather than leave one waiting on us. They stay
                    // queued (so none takes itself for released) until they end.
                    let mut state = self.lock();
                    state.stopped = true;
                    let all: Vec<Waker> = state.pending.values().cloned().collect();
                    drop(state);
                    all.into_iter().for_each(Waker::wake);
                    return;
                }
            }
            let mut state = self.lock();
            let now = Instant::now();
            // Release what is due and, unless that approach is crowded, what is about to be.
            let horizon = now.checked_add(FINAL_APPROACH).unwrap_or(now);
            let crowded = state
                .pending
                .range(..(horizon, u64::MAX))
                .nth(SPIN_LIMIT)
                .is_some();
            let until = if crowded { now } else { horizon };
            let later = state.pending.split_off(&(until, u64::MAX));
            let released = std::mem::replace(&mut state.pending, later);
            // Deadlines a few microseconds apart (a wide fan-out) are released together.
            self.arm_next(&state, now.checked_add(REARM_GAP));
            drop(state);
            released.into_values().for_each(Waker::wake);
        }
    }

    /// Arms the timerfd for `at` (at once when it has passed).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn arm(&self, at: Instant) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        // A zero value would disarm the timer: one nanosecond fires it at once.
        let wait = at
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
        // On failure (it cannot fail with a valid fd and value) tokio's timer ends the sleeps.
        let _ = timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec);
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn arm(&self, _at: Instant) {}

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

    #[test]
    fn a_lone_deadline_is_released_early_and_a_crowded_one_on_time() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut pending = BTreeMap::new();
        assert_eq!(Timer::release_time(&pending), None);
        pending.insert((deadline, 0), Waker::noop().clone());
        assert_eq!(
            Timer::release_time(&pending),
            Some(deadline - FINAL_APPROACH)
        );
        for seq in 1..=SPIN_LIMIT as u64 {
            pending.insert(
                (deadline + Duration::from_micros(seq), seq),
                Waker::noop().clone(),
            );
        }
        assert_eq!(Timer::release_time(&pending), Some(deadline));
        // Deadlines beyond the final approach do not crowd it.
        pending.retain(|&(_, seq), _| seq == 0);
        for seq in 1..=SPIN_LIMIT as u64 {
            pending.insert((deadline + FINAL_APPROACH * 2, seq), Waker::noop().clone());
        }
        assert_eq!(
            Timer::release_time(&pending),
            Some(deadline - FINAL_APPROACH)
        );
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
