//! [`Renewer`]: a thread a gateway runs in the background. It checks the
//! certificate every [`RenewerConfig::check_interval`] (with jitter, so a
//! fleet does not call at once), renews when it is due, and after a failed
//! attempt retries on a bounded exponential backoff with jitter
//! ([`Backoff`]). Time, sleeping and randomness come through a [`Pacer`]
//! so that tests run the schedule without waiting. [`Renewer::stop`] ends
//! it at once, even mid-sleep.

use super::renew::EstRenewal;
use crate::device::InstalledCert;
use keystore_api::{Backend, Error, Result};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};

/// One renewal check; what a [`Renewer`] runs.
pub trait RenewTask: Send + 'static {
    /// Renews if the certificate expires within `threshold` of `now`;
    /// `Ok(None)` when it is not due.
    ///
    /// # Errors
    /// Any failure of the attempt (the renewer retries).
    fn renew_if_due(
        &mut self,
        threshold: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<InstalledCert>>;
}

impl<D: Backend + 'static> RenewTask for EstRenewal<D> {
    fn renew_if_due(
        &mut self,
        threshold: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<InstalledCert>> {
        self.renew_if_due_at(threshold, now)
    }
}

/// Bounded exponential backoff with jitter: retry `n` (from 0) waits
/// `min(max, initial × 2ⁿ)`, less a random part of up to `jitter` of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: StdDuration,
    /// The longest delay.
    pub max: StdDuration,
    /// The largest fraction (0 to 1) taken off at random.
    pub jitter: f64,
}

impl Backoff {
    /// The delay before retry `attempt` (0 = the first retry), with
    /// `random` uniform in [0, 1).
    pub fn delay(&self, attempt: u32, random: f64) -> StdDuration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let full = self.initial.saturating_mul(factor).min(self.max);
        jittered(full, self.jitter, random)
    }
}

/// `d` less a fraction `jitter × random` of it (both clamped to [0, 1]).
fn jittered(d: StdDuration, jitter: f64, random: f64) -> StdDuration {
    let cut = jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
    d.mul_f64(1.0 - cut)
}

/// What a [`Renewer`] does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewerConfig {
    /// Renew when the certificate expires within this.
    pub threshold: Duration,
    /// Time between checks while nothing fails (jittered like retries).
    pub check_interval: StdDuration,
    /// Retries after a failure.
    pub backoff: Backoff,
}

impl RenewerConfig {
    /// Renew within `threshold` of expiry, check hourly, retry after 30 s
    /// doubling to at most an hour, half of each delay jittered.
    pub fn new(threshold: Duration) -> Self {
        RenewerConfig {
            threshold,
            check_interval: StdDuration::from_secs(3600),
            backoff: Backoff {
                initial: StdDuration::from_secs(30),
                max: StdDuration::from_secs(3600),
                jitter: 0.5,
            },
        }
    }
}

/// A stop request, which wakes a sleeping renewer at once.
#[derive(Debug, Default)]
pub struct StopFlag {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopFlag {
    /// Raises the flag.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Whether it is raised.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits `d` or until the flag is raised; false when it is.
    pub fn wait(&self, d: StdDuration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        !*guard
    }
}

/// Time, sleep and randomness for a [`Renewer`].
pub trait Pacer: Send + 'static {
    /// Now.
    fn now(&self) -> OffsetDateTime;
    /// Sleeps `d` unless `stop` is raised first; false when it was.
    fn sleep(&self, d: StdDuration, stop: &StopFlag) -> bool;
    /// A number uniform in [0, 1).
    fn random(&self) -> f64;
}

/// The real pacer: system time, a sleep that `stop` interrupts, OS randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemPacer;

impl Pacer for SystemPacer {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep(&self, d: StdDuration, stop: &StopFlag) -> bool {
        stop.wait(d)
    }

    fn random(&self) -> f64 {
        let mut b = [0u8; 8];
        match getrandom::getrandom(&mut b) {
            Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
            Err(_) => 0.5,
        }
    }
}

/// What a renewer has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewerStatus {
    /// Checks made.
    pub checks: u64,
    /// Renewals made.
    pub renewals: u64,
    /// Failed checks.
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The last failure's report.
    pub last_error: Option<String>,
    /// The last certificate renewed.
    pub last_renewed: Option<InstalledCert>,
    /// The delay chosen after the last check.
    pub next_delay: Option<StdDuration>,
}

/// Called with each new certificate (e.g. to rebuild a TLS identity).
pub type OnRenewed = Box<dyn FnMut(&InstalledCert) + Send>;

/// A background renewer; dropping it stops it.
pub struct Renewer {
    stop: Arc<StopFlag>,
    status: Arc<Mutex<RenewerStatus>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Renewer {
    /// Runs `task` on a thread with the system pacer; the first check is
    /// made at once.
    ///
    /// # Errors
    /// `Backend` when the thread cannot be started.
    pub fn spawn<T: RenewTask>(task: T, config: RenewerConfig) -> Result<Renewer> {
        Self::spawn_with(task, config, SystemPacer, None)
    }

    /// Runs `task` with `pacer`, calling `on_renewed` after each renewal.
    ///
    /// # Errors
    /// `Backend` when the thread cannot be started.
    pub fn spawn_with<T: RenewTask, P: Pacer>(
        mut task: T,
        config: RenewerConfig,
        pacer: P,
        mut on_renewed: Option<OnRenewed>,
    ) -> Result<Renewer> {
        let stop = Arc::new(StopFlag::default());
        let status = Arc::new(Mutex::new(RenewerStatus::default()));
        let (stop2, status2) = (Arc::clone(&stop), Arc::clone(&status));
        let thread = std::thread::Builder::new()
            .name("est-renewer".into())
            .spawn(move || {
                let mut failures = 0u32;
                while !stop2.is_stopped() {
                    let outcome = task.renew_if_due(config.threshold, pacer.now());
                    let delay = match &outcome {
                        Ok(_) => {
                            jittered(config.check_interval, config.backoff.jitter, pacer.random())
                        }
                        Err(_) => config.backoff.delay(failures, pacer.random()),
                    };
                    failures = if outcome.is_ok() {
                        0
                    } else {
                        failures.saturating_add(1)
                    };
                    if let (Ok(Some(cert)), Some(f)) = (&outcome, on_renewed.as_mut()) {
                        f(cert);
                    }
                    record(&status2, outcome, failures, delay);
                    if !pacer.sleep(delay, &stop2) {
                        break;
                    }
                }
            })
            .map_err(|e| {
                Error::backend(
                    keystore_api::Component::Provisioning,
                    "cannot start the renewer thread",
                    e,
                )
            })?;
        Ok(Renewer {
            stop,
            status,
            thread: Some(thread),
        })
    }

    /// What it has done so far.
    pub fn status(&self) -> RenewerStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops it (waking it if it sleeps) and waits for the check in
    /// progress, if any, to end.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Records one check's outcome.
fn record(
    status: &Mutex<RenewerStatus>,
    outcome: Result<Option<InstalledCert>>,
    consecutive_failures: u32,
    delay: StdDuration,
) {
    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
    s.checks += 1;
    s.consecutive_failures = consecutive_failures;
    s.next_delay = Some(delay);
    match outcome {
        Ok(Some(cert)) => {
            s.renewals += 1;
            s.last_renewed = Some(cert);
        }
        Ok(None) => {}
        Err(e) => {
            s.failures += 1;
            s.last_error = Some(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_and_jitter_only_shortens() {
        let b = Backoff {
            initial: StdDuration::from_secs(1),
            max: StdDuration::from_secs(60),
            jitter: 0.5,
        };
        let full: Vec<u64> = (0..10).map(|n| b.delay(n, 0.0).as_secs()).collect();
        assert_eq!(full, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(b.delay(3, 0.999_999).as_millis(), 4000);
        assert_eq!(b.delay(u32::MAX, 0.0), StdDuration::from_secs(60));
        for r in [0.0, 0.3, 0.999] {
            let d = b.delay(3, r);
            assert!(
                d <= StdDuration::from_secs(8) && d >= StdDuration::from_secs(4),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_system_pacer_draws_in_range_and_a_stop_wakes_it() {
        let p = SystemPacer;
        for _ in 0..100 {
            let r = p.random();
            assert!((0.0..1.0).contains(&r));
        }
        let stop = Arc::new(StopFlag::default());
        let s2 = Arc::clone(&stop);
        let t = std::thread::spawn(move || p.sleep(StdDuration::from_secs(60), &s2));
        std::thread::sleep(StdDuration::from_millis(50));
        let started = std::time::Instant::now();
        stop.stop();
        assert!(!t.join().unwrap());
        assert!(started.elapsed() < StdDuration::from_secs(5));
    }
}
