//! The one backoff policy of RaftMQ, for every loop that waits before trying again: the
//! producer's send retries, the consumer's pulls after an error, and the Raft transport's
//! reconnects to a peer.
//!
//! Waits double from a first delay up to a cap, and each wait is drawn at random from the upper
//! half of its step ("equal jitter"): step `k` waits between `d/2` and `d`, where
//! `d = min(first * 2^k, max)`. The nominal delays are upper bounds, so a wait is never longer
//! than the step's delay nor than the cap; the random half spreads out clients that failed
//! together (every producer of a group whose leader just died, every member reconnecting to a
//! restarted peer) instead of sending them back in lock-step.
//!
//! | policy | first wait | longest wait | used by |
//! |---|---|---|---|
//! | [`BackoffPolicy::SEND_RETRY`] | 50-100 ms | 1-2 s | producer retries (first delay configurable) |
//! | [`BackoffPolicy::PULL_RETRY`] | 50-100 ms | 1.5-3 s (RocketMQ's 3 s) | consumer pulls after an error |
//! | [`BackoffPolicy::RAFT_RECONNECT`] | 25-50 ms | 1-2 s | Raft peer reconnects, openraft's replication backoff |
//!
//! The policies are [`backon`] builders ([`BackoffPolicy::builder`]); a loop that holds an
//! iterator uses [`BackoffPolicy::delays`], one that counts its failures uses
//! [`BackoffPolicy::delay_at`]. Only policy and iteration live here: callers sleep with their
//! own runtime, so this crate stays free of I/O and of tokio.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Steps after which every policy has reached its cap (`2^64` times any first delay exceeds
/// any cap): [`BackoffPolicy::delay_at`] never walks further than this.
pub const MAX_STEPS: u32 = 64;

/// Waits that double from `first` up to `max`, each drawn from the upper half of its step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The nominal first wait (the first wait lies between half of it and all of it).
    pub first: Duration,
    /// The nominal longest wait: no wait is longer.
    pub max: Duration,
}

impl BackoffPolicy {
    /// A producer's retries after a failed send attempt (RocketMQ-style 100 ms, doubling, at
    /// most 2 s).
    pub const SEND_RETRY: BackoffPolicy =
        BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(2));

    /// A consumer's next pull of a queue after a failed pull (at most RocketMQ's 3 s).
    pub const PULL_RETRY: BackoffPolicy =
        BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(3));

    /// The Raft transport's next connection attempt to a peer it could not reach, and
    /// openraft's replication backoff after an unreachable peer.
    pub const RAFT_RECONNECT: BackoffPolicy =
        BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(2));

    pub const fn new(first: Duration, max: Duration) -> Self {
        BackoffPolicy { first, max }
    }

    /// The same policy from another first wait (the producer's `retry_backoff` setting).
    pub const fn with_first(self, first: Duration) -> Self {
        BackoffPolicy { first, ..self }
    }

    /// The policy as a `backon` builder: doubling, jittered, never running out.
    pub fn builder(self) -> ExponentialBuilder {
        // backon's jitter adds up to one more step's worth: from half the nominal delays its
        // waits fall between half and all of each step, and never above `max`.
        let first = self.first.min(self.max);
        ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(first / 2)
            .with_max_delay(self.max / 2)
            .with_jitter()
            .without_max_times()
    }

    /// The waits, one per failure, freshly jittered; the sequence never ends.
    pub fn delays(self) -> impl Iterator<Item = Duration> + Send + 'static {
        self.builder().build()
    }

    /// The wait at step `step` (0: the wait after the first failure), freshly jittered.
    pub fn delay_at(self, step: u32) -> Duration {
        let step = usize::try_from(step.min(MAX_STEPS)).unwrap_or(0);
        // The sequence never ends, so `nth` always has a value; the cap is the safe answer.
        self.delays().nth(step).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// backon computes steps in f32: a doubled delay may land a few nanoseconds off.
    const ROUNDING: Duration = Duration::from_micros(1);

    /// The nominal delay of `step`: `first * 2^step`, at most `max`.
    fn nominal(policy: BackoffPolicy, step: u32) -> Duration {
        let factor = 1u32.checked_shl(step).unwrap_or(u32::MAX);
        policy
            .first
            .min(policy.max)
            .saturating_mul(factor)
            .min(policy.max)
    }

    fn assert_within_step(policy: BackoffPolicy, step: u32, wait: Duration) {
        let delay = nominal(policy, step);
        assert!(
            wait + ROUNDING >= delay / 2 && wait <= delay + ROUNDING,
            "{policy:?} step {step}: {wait:?} outside {:?}..={delay:?}",
            delay / 2
        );
        assert!(wait <= policy.max, "{policy:?} step {step}: {wait:?}");
    }

    #[test]
    fn every_wait_lies_in_the_upper_half_of_its_step_and_never_above_the_cap() {
        for policy in [
            BackoffPolicy::SEND_RETRY,
            BackoffPolicy::PULL_RETRY,
            BackoffPolicy::RAFT_RECONNECT,
        ] {
            for _ in 0..50 {
                for (step, wait) in (0u32..).zip(policy.delays().take(40)) {
                    assert_within_step(policy, step, wait);
                }
                for step in [0, 1, 2, 5, 10, MAX_STEPS, u32::MAX] {
                    assert_within_step(policy, step, policy.delay_at(step));
                }
            }
        }
    }

    #[test]
    fn the_named_policies_keep_their_delays() {
        let send = BackoffPolicy::SEND_RETRY;
        assert_eq!(
            (send.first, send.max),
            (Duration::from_millis(100), Duration::from_secs(2))
        );
        let pull = BackoffPolicy::PULL_RETRY;
        assert_eq!(
            (pull.first, pull.max),
            (Duration::from_millis(100), Duration::from_secs(3))
        );
        let raft = BackoffPolicy::RAFT_RECONNECT;
        assert_eq!(
            (raft.first, raft.max),
            (Duration::from_millis(50), Duration::from_secs(2))
        );
        // From the fifth step on (1.6 s nominal, then 2 s) the send retry waits at its cap.
        assert_eq!(nominal(send, 4), Duration::from_millis(1600));
        assert_eq!(nominal(send, 5), send.max);
    }

    #[test]
    fn jitter_spreads_waits_over_the_whole_upper_half() {
        // A fixed seed makes the draw reproducible; the spread is what is asserted.
        let policy = BackoffPolicy::SEND_RETRY;
        let mut first_waits = Vec::new();
        for seed in 0..1000 {
            let mut delays = policy.builder().with_jitter_seed(seed).build();
            first_waits.extend(delays.next());
        }
        let lowest = first_waits.iter().min().copied().unwrap_or_default();
        let highest = first_waits.iter().max().copied().unwrap_or_default();
        assert!(lowest < Duration::from_millis(55), "lowest {lowest:?}");
        assert!(highest > Duration::from_millis(95), "highest {highest:?}");
        let distinct: std::collections::BTreeSet<_> = first_waits.iter().collect();
        assert!(distinct.len() > 900, "{} distinct waits", distinct.len());
        // Unseeded sequences differ from one another.
        let a: Vec<_> = policy.delays().take(8).collect();
        let b: Vec<_> = policy.delays().take(8).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn odd_policies_stay_bounded() {
        // A first wait above the cap starts at the cap.
        let inverted = BackoffPolicy::new(Duration::from_secs(10), Duration::from_secs(1));
        for step in 0..5 {
            assert_within_step(inverted, step, inverted.delay_at(step));
        }
        // Zero means no wait at all.
        let zero = BackoffPolicy::SEND_RETRY.with_first(Duration::ZERO);
        assert!(zero.delays().take(10).all(|wait| wait.is_zero()));
        // The sequence does not run out.
        assert_eq!(
            BackoffPolicy::RAFT_RECONNECT.delays().take(1000).count(),
            1000
        );
    }
}
