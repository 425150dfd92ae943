//! The fault schedule: which fault starts when, for how long, generated from a seed.
//!
//! A fault starts every 5-15 s (start to start); each leaves a quiet gap of at least
//! [`ScheduleConfig::quiet_min_ms`] before the next one, so the cluster is seen recovering
//! between faults and faults never overlap. The final phase ([`ScheduleConfig::final_phase_ms`])
//! starts with a heal-all and has no faults: time for the cluster to converge and the workload
//! to drain. The generator is ChaCha8 seeded with the run's seed, whose output is fixed by its
//! specification, so the same seed (and settings) always replays the same schedule. Choices
//! that depend on the cluster at the time (which follower) use each step's `choice`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::nemesis::{
    CorruptFile, Fault, KillTarget, MembershipChange, PartitionShape, PauseTarget,
};

/// A generated schedule never has more steps than this (a guard against bad settings).
pub const MAX_STEPS: usize = 10_000;
/// Loss rate of the lossy-link fault in the profiles.
pub const PROFILE_LOSSY_PERCENT: u8 = 20;

/// How a schedule is drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// The scenario's whole length.
    pub run_ms: u64,
    /// Start-to-start interval of faults, drawn uniformly in this inclusive range.
    pub start_interval_ms: (u64, u64),
    /// The shortest quiet gap after a fault.
    pub quiet_min_ms: u64,
    /// The shortest fault.
    pub fault_min_ms: u64,
    /// The final phase: heal-all at `run_ms - final_phase_ms`, then no faults.
    pub final_phase_ms: u64,
    /// Faults drawn uniformly from this list.
    pub faults: Vec<Fault>,
    /// The first window's fault, when a scenario needs one for sure (it should be in `faults`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_fault: Option<Fault>,
}

impl ScheduleConfig {
    /// The cadence (a fault every 5-15 s, quiet gaps of at least 2 s) over `run_ms`,
    /// with `final_phase_ms` healed at the end.
    pub fn cadence(run_ms: u64, final_phase_ms: u64, faults: Vec<Fault>) -> Self {
        ScheduleConfig {
            run_ms,
            start_interval_ms: (5_000, 15_000),
            quiet_min_ms: 2_000,
            fault_min_ms: 2_000,
            final_phase_ms,
            faults,
            first_fault: None,
        }
    }

    /// The same, with `fault` as the first window's fault.
    pub fn with_first_fault(mut self, fault: Fault) -> Self {
        self.first_fault = Some(fault);
        self
    }

    /// When the final heal happens.
    pub fn heal_at_ms(&self) -> u64 {
        self.run_ms.saturating_sub(self.final_phase_ms)
    }
}

/// One fault window.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Step {
    /// Numbers the window in the history (from 1).
    pub window: u64,
    /// Milliseconds since the scenario started.
    pub start_ms: u64,
    pub stop_ms: u64,
    pub fault: Fault,
    /// Picks among equal candidates when the fault is resolved (see `nemesis::plan`).
    pub choice: u64,
}

/// A scenario's faults in time order, ending with a heal-all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Step>,
    /// The final heal (window number `steps.len() + 1`).
    pub heal_all_ms: u64,
    pub run_ms: u64,
}

impl Schedule {
    /// Draws the schedule for `seed`. Deterministic in (`seed`, `config`).
    pub fn generate(seed: u64, config: &ScheduleConfig) -> Schedule {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let heal_at = config.heal_at_ms();
        let (lo, hi) = config.start_interval_ms;
        let (lo, hi) = (lo.max(1), hi.max(lo.max(1)));
        let mut steps = Vec::new();
        // The first fault also waits one interval, so the run has a fault-free baseline.
        let mut start = rng.random_range(lo..=hi);
        while steps.len() < MAX_STEPS && !config.faults.is_empty() {
            let interval = rng.random_range(lo..=hi);
            // Quiet gap within [quiet_min, interval - fault_min] when that range exists.
            let quiet_max = interval.saturating_sub(config.fault_min_ms);
            let quiet = if quiet_max > config.quiet_min_ms {
                rng.random_range(config.quiet_min_ms..=quiet_max)
            } else {
                config.quiet_min_ms
            };
            let drawn = config.faults[rng.random_range(0..config.faults.len())].clone();
            let fault = match &config.first_fault {
                Some(first) if steps.is_empty() => first.clone(),
                _ => drawn,
            };
            let choice: u64 = rng.random();
            let duration = interval.saturating_sub(quiet).max(config.fault_min_ms);
            let clipped = start + duration >= heal_at;
            let stop = (start + duration).min(heal_at);
            if start >= heal_at || stop.saturating_sub(start) < config.fault_min_ms {
                break;
            }
            steps.push(Step {
                window: steps.len() as u64 + 1,
                start_ms: start,
                stop_ms: stop,
                fault,
                choice,
            });
            if clipped {
                break; // the final heal ends this one; nothing may start after it
            }
            start += interval.max(duration + config.quiet_min_ms);
        }
        Schedule {
            seed,
            steps,
            heal_all_ms: heal_at,
            run_ms: config.run_ms,
        }
    }

    /// The window number of the final heal-all.
    pub fn heal_all_window(&self) -> u64 {
        self.steps.len() as u64 + 1
    }

    /// One line per step, for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "seed {}: {} faults over {:.1} s, heal-all at {:.1} s\n",
            self.seed,
            self.steps.len(),
            self.run_ms as f64 / 1e3,
            self.heal_all_ms as f64 / 1e3
        );
        for s in &self.steps {
            out.push_str(&format!(
                "{:>4}  {:>7.1} s  {:>5.1} s  {}\n",
                s.window,
                s.start_ms as f64 / 1e3,
                (s.stop_ms - s.start_ms) as f64 / 1e3,
                s.fault
            ));
        }
        out
    }
}

/// The run profiles of the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Scenarios of 60-75 s (CI), power loss and disk faults among them.
    Short,
    /// Ten scenarios of 300 s: five mixing every fault (power losses, clock skew, bit flips and
    /// full disks too), then retention, transactions, power loss, clock skew and disk faults.
    Long,
}

/// One scenario of a profile: a name, how its schedule is drawn, and what its cluster needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub config: ScheduleConfig,
    /// Extra flags every broker of the scenario's cluster is started with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broker_args: Vec<String>,
    /// The run must show retention at work (the `retention` checker judges it).
    #[serde(default)]
    pub expect_retention: bool,
    /// Every member's data directory on a lazy filesystem of its own, so that power-loss
    /// faults can drop what was not synced.
    #[serde(default)]
    pub lazy_fs: bool,
    /// TLS on every link: remoting, gRPC and admin HTTP only over TLS, Raft over mutual TLS,
    /// the harness's clients over TLS.
    #[serde(default)]
    pub tls: bool,
    /// POP consumers beside the other workloads (`workload::pop`, judged by the `pop`
    /// checker).
    #[serde(default)]
    pub pop: bool,
}

impl Scenario {
    /// A scenario of default brokers.
    pub fn new(name: impl Into<String>, config: ScheduleConfig) -> Self {
        Scenario {
            name: name.into(),
            config,
            broker_args: Vec::new(),
            expect_retention: false,
            lazy_fs: false,
            tls: false,
            pop: false,
        }
    }

    /// The `power-loss` scenario over `run_ms`: members on lazy filesystems, power losses of
    /// one member, a minority and all members at once (the first fault, so that every seed has
    /// one) beside kills and partitions.
    pub fn power_loss(run_ms: u64, final_phase_ms: u64) -> Self {
        let all = Fault::PowerLoss {
            target: KillTarget::All,
        };
        Scenario {
            lazy_fs: true,
            ..Scenario::new(
                POWER_LOSS_SCENARIO,
                ScheduleConfig::cadence(run_ms, final_phase_ms, power_loss_scenario_faults())
                    .with_first_fault(all),
            )
        }
    }

    /// The `retention` scenario over `run_ms`: brokers with tiny segments that keep messages
    /// for [`RETENTION_RESERVED_TIME`], checked every [`RETENTION_CHECK_INTERVAL_MS`], snapshot
    /// every [`RETENTION_SNAPSHOT_EVERY_ENTRIES`] entries; kills, partitions and a follower
    /// replaced by a fresh member (the first fault, so that every seed has one).
    pub fn retention(run_ms: u64, final_phase_ms: u64) -> Self {
        let replace = Fault::Membership {
            change: MembershipChange::RemoveFollower,
        };
        let config = ScheduleConfig::cadence(run_ms, final_phase_ms, retention_faults())
            .with_first_fault(replace);
        Scenario {
            broker_args: [
                "--segment-size",
                RETENTION_SEGMENT_SIZE,
                "--file-reserved-time",
                RETENTION_RESERVED_TIME,
                "--retention-check-interval-ms",
                &RETENTION_CHECK_INTERVAL_MS.to_string(),
                "--snapshot-every-entries",
                &RETENTION_SNAPSHOT_EVERY_ENTRIES.to_string(),
                // Time, not how full this machine's disk is, drives retention here.
                "--disk-max-used-space-ratio",
                &RETENTION_DISK_RATIO_PERCENT.to_string(),
            ]
            .map(String::from)
            .to_vec(),
            expect_retention: true,
            ..Scenario::new("retention", config)
        }
    }

    /// The `clock-skew` scenario over `run_ms`: wall clocks of the leader or one member ahead
    /// or behind by seconds to minutes (the first fault skews the leader, so that every seed
    /// has one), beside leader kills and partitions, under the transactions workload (whose
    /// checks and timeouts run on the leader's wall clock).
    pub fn clock_skew(run_ms: u64, final_phase_ms: u64) -> Self {
        let mut faults = Fault::clock_skews();
        faults.extend(Fault::clock_skews());
        faults.push(Fault::Kill {
            target: KillTarget::Leader,
        });
        faults.push(Fault::Partition {
            shape: PartitionShape::IsolateLeader,
        });
        let first = Fault::ClockSkew {
            target: KillTarget::Leader,
            offset_secs: 120,
        };
        Scenario {
            broker_args: crate::workload::tx::broker_args(),
            ..Scenario::new(
                CLOCK_SKEW_SCENARIO,
                ScheduleConfig::cadence(run_ms, final_phase_ms, faults).with_first_fault(first),
            )
        }
    }

    /// The `disk-faults` scenario over `run_ms`: members on lazy filesystems with small
    /// segments (so that sealed ones exist within seconds), bit flips in a sealed segment (the
    /// first fault, so that every seed has one) and in the state machine's file, full disks on
    /// one member and on the leader, beside a power loss and a leader kill.
    pub fn disk_faults(run_ms: u64, final_phase_ms: u64) -> Self {
        let first = Fault::BitFlip {
            file: CorruptFile::Segment,
        };
        Scenario {
            lazy_fs: true,
            broker_args: small_segment_args(DISK_FAULTS_SEGMENT_SIZE),
            ..Scenario::new(
                DISK_FAULTS_SCENARIO,
                ScheduleConfig::cadence(run_ms, final_phase_ms, disk_fault_scenario_faults())
                    .with_first_fault(first),
            )
        }
    }

    /// Whether the scenario runs the transaction producers beside W1 (`transactions`, and
    /// `clock-skew`, whose skewed leaders time transaction checks).
    pub fn runs_transactions(&self) -> bool {
        self.name == crate::workload::tx::SCENARIO || self.name == CLOCK_SKEW_SCENARIO
    }

    /// The `transactions` scenario over `run_ms`: brokers with short transaction timeouts
    /// (`workload::tx::broker_args`), under kills and partitions.
    pub fn transactions(run_ms: u64, final_phase_ms: u64) -> Self {
        Scenario {
            broker_args: crate::workload::tx::broker_args(),
            ..Scenario::new(
                crate::workload::tx::SCENARIO,
                ScheduleConfig::cadence(run_ms, final_phase_ms, transaction_faults()),
            )
        }
    }
}

/// The clock-skew scenario's name (`run --scenario clock-skew`).
pub const CLOCK_SKEW_SCENARIO: &str = "clock-skew";

/// The disk-faults scenario's name (`run --scenario disk-faults`).
pub const DISK_FAULTS_SCENARIO: &str = "disk-faults";

/// Segment size of the `disk-faults` scenario's brokers: sealed segments to damage within
/// seconds, and a new segment's space reservation that a full disk refuses at once.
pub const DISK_FAULTS_SEGMENT_SIZE: &str = "64KiB";

/// Segment size of the long profile's mixed scenarios (bit flips need sealed segments).
pub const LONG_SEGMENT_SIZE: &str = "1MiB";

/// Broker flags for segments of `size`.
fn small_segment_args(size: &str) -> Vec<String> {
    vec!["--segment-size".into(), size.into()]
}

/// The `disk-faults` scenario's faults: bit flips and full disks (drawn more than half of the
/// time), a power loss of one member and a leader kill.
pub fn disk_fault_scenario_faults() -> Vec<Fault> {
    let mut v = Fault::disk_faults();
    v.push(Fault::BitFlip {
        file: CorruptFile::Segment,
    });
    v.push(Fault::PowerLoss {
        target: KillTarget::One,
    });
    v.push(Fault::Kill {
        target: KillTarget::Leader,
    });
    v
}

/// The power-loss scenario's name (`run --scenario power-loss`).
pub const POWER_LOSS_SCENARIO: &str = "power-loss";

/// Power loss of one member, of a minority and of every member at once.
pub fn power_loss_faults() -> Vec<Fault> {
    [KillTarget::One, KillTarget::Minority, KillTarget::All]
        .into_iter()
        .map(|target| Fault::PowerLoss { target })
        .collect()
}

/// The `power-loss` scenario's faults: power losses (drawn half of the time), kill -9 of the
/// leader, and the partitions that leave a member behind to catch up.
pub fn power_loss_scenario_faults() -> Vec<Fault> {
    let mut v = power_loss_faults();
    v.extend(power_loss_faults());
    v.push(Fault::Kill {
        target: KillTarget::Leader,
    });
    v.extend(
        [
            PartitionShape::IsolateLeader,
            PartitionShape::MajorityMinority,
        ]
        .into_iter()
        .map(|shape| Fault::Partition { shape }),
    );
    v
}

/// Segment size of the `retention` scenario's brokers: a few seconds of the workloads' writes,
/// so that segments seal and expire many times in one run.
pub const RETENTION_SEGMENT_SIZE: &str = "32KiB";
/// How long the `retention` scenario's brokers keep messages.
pub const RETENTION_RESERVED_TIME: &str = "3s";
/// How often they check (the broker's default is far slower).
pub const RETENTION_CHECK_INTERVAL_MS: u64 = 200;
/// How often they snapshot, in applied entries.
pub const RETENTION_SNAPSHOT_EVERY_ENTRIES: u64 = 2_000;
/// Their disk ratio: only a nearly full disk deletes segments before their time.
pub const RETENTION_DISK_RATIO_PERCENT: u8 = 95;

/// The `retention` scenario's faults: kills, partitions, and replacing a follower.
pub fn retention_faults() -> Vec<Fault> {
    let mut v: Vec<Fault> = [KillTarget::One, KillTarget::Leader, KillTarget::Minority]
        .into_iter()
        .map(|target| Fault::Kill { target })
        .collect();
    v.extend(
        [
            PartitionShape::IsolateLeader,
            PartitionShape::IsolateFollower,
            PartitionShape::MajorityMinority,
        ]
        .into_iter()
        .map(|shape| Fault::Partition { shape }),
    );
    v.push(Fault::Membership {
        change: MembershipChange::RemoveFollower,
    });
    v
}

/// Partition shapes, the stale route and lossy links.
pub fn network_faults() -> Vec<Fault> {
    use PartitionShape::*;
    let mut v: Vec<Fault> = [
        IsolateLeader,
        IsolateFollower,
        MajorityMinority,
        Bridge,
        OneWayFromLeader,
        OneWayToLeader,
    ]
    .into_iter()
    .map(|shape| Fault::Partition { shape })
    .collect();
    v.push(Fault::StaleRoute);
    v.push(Fault::Lossy {
        percent: PROFILE_LOSSY_PERCENT,
    });
    v
}

/// kill -9 and SIGSTOP faults.
pub fn process_faults() -> Vec<Fault> {
    let mut v: Vec<Fault> = [
        KillTarget::One,
        KillTarget::Leader,
        KillTarget::Minority,
        KillTarget::All,
    ]
    .into_iter()
    .map(|target| Fault::Kill { target })
    .collect();
    v.extend(
        [PauseTarget::Leader, PauseTarget::Minority]
            .into_iter()
            .map(|target| Fault::Pause { target }),
    );
    v
}

/// Leader kills and partitions: the faults that move a transaction's check-back to another
/// leader or cut it off (the `transactions` scenario).
pub fn transaction_faults() -> Vec<Fault> {
    use PartitionShape::*;
    let mut v: Vec<Fault> = [KillTarget::Leader, KillTarget::One]
        .into_iter()
        .map(|target| Fault::Kill { target })
        .collect();
    v.extend(
        [IsolateLeader, MajorityMinority, Bridge]
            .into_iter()
            .map(|shape| Fault::Partition { shape }),
    );
    v
}

/// Membership changes (mixed with the others in the "mixed-tls" and long scenarios).
pub fn membership_faults() -> Vec<Fault> {
    [
        MembershipChange::RemoveFollower,
        MembershipChange::RemoveLeader,
    ]
    .into_iter()
    .map(|change| Fault::Membership { change })
    .collect()
}

impl Profile {
    /// The scenarios of this profile. Scenario `i` uses seed [`scenario_seed`]`(seed, i)`.
    pub fn scenarios(self) -> Vec<Scenario> {
        let mixed: Vec<Fault> = network_faults()
            .into_iter()
            .chain(process_faults())
            .chain(membership_faults())
            .collect();
        match self {
            Profile::Short => vec![
                Scenario::new(
                    "partitions",
                    ScheduleConfig::cadence(60_000, 15_000, network_faults()),
                ),
                // POP consumers here: leader kills and pauses must not bring acked messages
                // back nor lose track of unacked ones.
                Scenario {
                    pop: true,
                    ..Scenario::new(
                        "crashes",
                        ScheduleConfig::cadence(60_000, 15_000, process_faults()),
                    )
                },
                // Every link over TLS here: reconnections after kills and partitions, and
                // members added back, all go through handshakes (mutual between members).
                Scenario {
                    tls: true,
                    ..Scenario::new("mixed-tls", ScheduleConfig::cadence(75_000, 15_000, mixed))
                },
                Scenario::retention(70_000, 15_000),
                Scenario::transactions(60_000, 15_000),
                Scenario::power_loss(60_000, 15_000),
                Scenario::disk_faults(60_000, 15_000),
            ],
            // The long runs mix power losses in too: their members run on lazy filesystems.
            Profile::Long => (1..=5)
                .map(|i| Scenario {
                    lazy_fs: true,
                    pop: true,
                    broker_args: small_segment_args(LONG_SEGMENT_SIZE),
                    ..Scenario::new(
                        format!("long-{i}"),
                        ScheduleConfig::cadence(
                            300_000,
                            30_000,
                            mixed
                                .iter()
                                .cloned()
                                .chain(power_loss_faults())
                                .chain(Fault::clock_skews())
                                .chain(Fault::disk_faults())
                                .collect(),
                        ),
                    )
                })
                .chain([
                    Scenario::retention(300_000, 30_000),
                    Scenario::transactions(300_000, 30_000),
                    Scenario::power_loss(300_000, 30_000),
                    Scenario::clock_skew(300_000, 30_000),
                    Scenario::disk_faults(300_000, 30_000),
                ])
                .collect(),
        }
    }
}

/// The seed of scenario `index` of a run with `seed` (a fixed mix, so scenarios differ).
pub fn scenario_seed(seed: u64, index: usize) -> u64 {
    // SplitMix64's increment and finalizer: distinct, well-spread seeds per index.
    let mut z = seed.wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixed() -> ScheduleConfig {
        Profile::Short.scenarios().remove(2).config
    }

    #[test]
    fn one_seed_gives_the_same_schedule_twice_and_seeds_differ() {
        let config = mixed();
        let a = Schedule::generate(42, &config);
        let b = Schedule::generate(42, &config);
        assert_eq!(a, b);
        assert!(!a.steps.is_empty());
        let c = Schedule::generate(43, &config);
        assert_ne!(a.steps, c.steps);
        // And across many seeds, schedules are (almost all) distinct.
        let distinct: std::collections::HashSet<Vec<Step>> = (0..50)
            .map(|seed| Schedule::generate(seed, &config).steps)
            .collect();
        assert_eq!(distinct.len(), 50);
    }

    /// Pins the generator: if this changes, old seeds no longer replay old runs.
    #[test]
    fn seed_replays_a_recorded_schedule() {
        let s = Schedule::generate(7, &mixed());
        let head: Vec<(u64, u64, String)> = s
            .steps
            .iter()
            .take(3)
            .map(|s| (s.start_ms, s.stop_ms, s.fault.to_string()))
            .collect();
        assert_eq!(
            head,
            PINNED_SEED_7
                .iter()
                .map(|(a, b, c)| (*a, *b, c.to_string()))
                .collect::<Vec<_>>()
        );
    }

    const PINNED_SEED_7: [(u64, u64, &str); 3] = [
        (6578, 9370, "partition-isolate-leader"),
        (13258, 22163, "partition-isolate-follower"),
        (26368, 28414, "lossy-20pct"),
    ];

    #[test]
    fn cadence_quiet_gaps_and_final_heal_hold_for_every_profile() {
        for profile in [Profile::Short, Profile::Long] {
            for (i, scenario) in profile.scenarios().into_iter().enumerate() {
                let c = &scenario.config;
                for seed in 0..20 {
                    let s = Schedule::generate(scenario_seed(seed, i), c);
                    assert_eq!(s.heal_all_ms, c.run_ms - c.final_phase_ms);
                    let first = &s.steps[0];
                    assert!(first.start_ms >= c.start_interval_ms.0);
                    for w in s.steps.windows(2) {
                        let gap = w[1].start_ms - w[0].start_ms;
                        assert!(
                            (c.start_interval_ms.0..=c.start_interval_ms.1).contains(&gap),
                            "start-to-start {gap} ms"
                        );
                        assert!(w[1].start_ms - w[0].stop_ms >= c.quiet_min_ms, "quiet gap");
                    }
                    for (n, step) in s.steps.iter().enumerate() {
                        assert_eq!(step.window, n as u64 + 1);
                        assert!(step.stop_ms - step.start_ms >= c.fault_min_ms);
                        assert!(step.stop_ms <= s.heal_all_ms);
                        assert!(c.faults.contains(&step.fault));
                    }
                    assert_eq!(s.heal_all_window(), s.steps.len() as u64 + 1);
                }
            }
        }
    }

    #[test]
    fn scenario_seeds_differ_per_scenario() {
        let seeds: std::collections::HashSet<u64> = (0..10).map(|i| scenario_seed(1, i)).collect();
        assert_eq!(seeds.len(), 10);
        assert_eq!(scenario_seed(1, 3), scenario_seed(1, 3));
    }

    #[test]
    fn the_retention_scenario_replaces_a_follower_first_and_tunes_its_brokers() {
        for profile in [Profile::Short, Profile::Long] {
            let scenarios = profile.scenarios();
            let (index, retention) = scenarios
                .iter()
                .enumerate()
                .find(|(_, s)| s.name == "retention")
                .expect("every profile runs the retention scenario");
            assert!(retention.expect_retention);
            for flag in [
                "--segment-size",
                "--file-reserved-time",
                "--retention-check-interval-ms",
                "--snapshot-every-entries",
            ] {
                assert!(retention.broker_args.iter().any(|a| a == flag), "{flag}");
            }
            let replace = Fault::Membership {
                change: MembershipChange::RemoveFollower,
            };
            for seed in 0..20 {
                let s = Schedule::generate(scenario_seed(seed, index), &retention.config);
                assert_eq!(s.steps[0].fault, replace, "seed {seed}");
                assert!(s.steps.len() > 1, "seed {seed}: more faults follow");
            }
            // The others start default brokers, but for the transaction timeouts of the
            // scenarios that run transactions and the small segments of those that flip bits.
            for other in scenarios.iter().filter(|s| s.name != "retention") {
                assert!(!other.expect_retention, "{}", other.name);
                let expected = if other.runs_transactions() {
                    crate::workload::tx::broker_args()
                } else if other.name == DISK_FAULTS_SCENARIO {
                    small_segment_args(DISK_FAULTS_SEGMENT_SIZE)
                } else if other.name.starts_with("long-") {
                    small_segment_args(LONG_SEGMENT_SIZE)
                } else {
                    Vec::new()
                };
                assert_eq!(other.broker_args, expected, "{}", other.name);
            }
        }
    }

    #[test]
    fn the_power_loss_scenario_runs_on_lazy_filesystems_and_loses_all_power_first() {
        for profile in [Profile::Short, Profile::Long] {
            let scenarios = profile.scenarios();
            let (index, scenario) = scenarios
                .iter()
                .enumerate()
                .find(|(_, s)| s.name == POWER_LOSS_SCENARIO)
                .expect("every profile runs the power-loss scenario");
            assert!(scenario.lazy_fs);
            let all = Fault::PowerLoss {
                target: KillTarget::All,
            };
            for seed in 0..20 {
                let s = Schedule::generate(scenario_seed(seed, index), &scenario.config);
                assert_eq!(s.steps[0].fault, all, "seed {seed}");
                assert!(s.steps.len() > 1, "seed {seed}: more faults follow");
            }
            for target in [KillTarget::One, KillTarget::Minority, KillTarget::All] {
                assert!(
                    scenario
                        .config
                        .faults
                        .contains(&Fault::PowerLoss { target })
                );
            }
            // A power loss needs lazy filesystems: only scenarios that have them draw one.
            for s in &scenarios {
                let draws_power_loss = s
                    .config
                    .faults
                    .iter()
                    .any(|f| matches!(f, Fault::PowerLoss { .. }));
                assert!(!draws_power_loss || s.lazy_fs, "{}", s.name);
            }
        }
        // The long mix has power losses in every mixed scenario.
        assert!(
            Profile::Long
                .scenarios()
                .iter()
                .filter(|s| s.name.starts_with("long-"))
                .all(|s| s.lazy_fs
                    && s.config.faults.contains(&Fault::PowerLoss {
                        target: KillTarget::Minority
                    }))
        );
    }

    #[test]
    fn the_disk_faults_scenario_flips_a_segment_bit_first_and_every_long_mix_has_disk_faults() {
        for profile in [Profile::Short, Profile::Long] {
            let scenarios = profile.scenarios();
            let (index, scenario) = scenarios
                .iter()
                .enumerate()
                .find(|(_, s)| s.name == DISK_FAULTS_SCENARIO)
                .expect("every profile runs the disk-faults scenario");
            assert!(scenario.lazy_fs, "full disks need lazy filesystems");
            let first = Fault::BitFlip {
                file: CorruptFile::Segment,
            };
            for seed in 0..20 {
                let s = Schedule::generate(scenario_seed(seed, index), &scenario.config);
                assert_eq!(s.steps[0].fault, first, "seed {seed}");
                assert!(s.steps.len() > 1, "seed {seed}: more faults follow");
            }
            for fault in Fault::disk_faults() {
                assert!(scenario.config.faults.contains(&fault), "{fault}");
            }
            // A full disk needs lazy filesystems: only scenarios that have them draw one.
            for s in &scenarios {
                let draws_disk_full = s
                    .config
                    .faults
                    .iter()
                    .any(|f| matches!(f, Fault::DiskFull { .. }));
                assert!(!draws_disk_full || s.lazy_fs, "{}", s.name);
            }
        }
        // The long profile: ten scenarios of 300 s, and its mixes draw from every fault.
        let long = Profile::Long.scenarios();
        assert_eq!(long.len(), 10);
        assert!(long.iter().all(|s| s.config.run_ms == 300_000));
        let every = Fault::vocabulary(PROFILE_LOSSY_PERCENT);
        for mix in long.iter().filter(|s| s.name.starts_with("long-")) {
            for fault in &every {
                assert!(mix.config.faults.contains(fault), "{}: {fault}", mix.name);
            }
        }
    }

    #[test]
    fn empty_fault_list_gives_only_the_heal() {
        let c = ScheduleConfig::cadence(60_000, 20_000, vec![]);
        let s = Schedule::generate(1, &c);
        assert!(s.steps.is_empty());
        assert_eq!(s.heal_all_ms, 40_000);
    }
}
