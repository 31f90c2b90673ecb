//! Hand-made histories: each violation kind caught, each allowed
//! behaviour accepted. Times in microseconds; the heartbeat is 100 ms.

use super::*;
use crate::history::{Fault, Save, Write};

const HEARTBEAT: Micros = 100_000;
const BOUND: Micros = 5_000_000;
const KEYED_BOUND: Micros = 8_000_000;
const RECOVERY: Micros = 3_000_000;

fn params() -> Params {
    Params {
        heartbeat: HEARTBEAT,
        check_bound: BOUND,
        keyed_check_bound: KEYED_BOUND,
        recovery: RECOVERY,
        initial: 0,
    }
}

fn save(writer: u16, target: Target, at: Micros, version: u64, accepted: bool) -> Event {
    Event::Save(Save {
        writer,
        target,
        at,
        version,
        accepted,
    })
}

fn write(
    writer: u16,
    target: Target,
    (start, end): (Micros, Micros),
    version: Option<u64>,
    outcome: WriteOutcome,
) -> Event {
    Event::Write(Write {
        writer,
        target,
        start,
        end,
        version,
        outcome,
    })
}

/// A write told Ok, its save accepted halfway through.
fn acked(writer: u16, target: Target, start: Micros, end: Micros, v: u64) -> [Event; 2] {
    [
        save(writer, target, (start + end) / 2, v, true),
        write(writer, target, (start, end), Some(v), WriteOutcome::Ok),
    ]
}

fn read(mode: Mode, (start, end): (Micros, Micros), version: u64, said: Said) -> Event {
    Event::Read(Read {
        instance: 0,
        mode,
        target: Target::Global,
        start,
        end,
        outcome: ReadOutcome::Served {
            version,
            parent: None,
            said,
        },
    })
}

fn keyed(
    mode: Mode,
    tenant: u16,
    (start, end): (Micros, Micros),
    (version, parent): (u64, u64),
    said: Said,
) -> Event {
    Event::Read(Read {
        instance: 7,
        mode,
        target: Target::Tenant(tenant),
        start,
        end,
        outcome: ReadOutcome::Served {
            version,
            parent: Some(parent),
            said,
        },
    })
}

fn failed(mode: Mode, (start, end): (Micros, Micros), loader: bool) -> Event {
    Event::Read(Read {
        instance: 7,
        mode,
        target: Target::Tenant(1),
        start,
        end,
        outcome: ReadOutcome::Failed {
            loader,
            error: "boom".into(),
        },
    })
}

fn fault(kind: &str, start: Micros, end: Micros) -> Event {
    Event::Fault(Fault {
        kind: kind.into(),
        start,
        end,
        detail: "test".into(),
    })
}

fn fin(target: Target, version: u64) -> Event {
    Event::Final { target, version }
}

/// One Global write of v1 by w1, 1.000..2.000 ms, and the store ending
/// at v1: what most histories are built around.
fn base() -> Vec<Event> {
    let mut events = acked(1, Target::Global, 1_000, 2_000, 1).to_vec();
    events.push(fin(Target::Global, 1));
    events
}

fn with(mut events: Vec<Event>, more: impl IntoIterator<Item = Event>) -> Vec<Event> {
    events.extend(more);
    events
}

/// Asserts the history breaks exactly `kind`, `n` times, and that the
/// listed violations carry a message and an excerpt.
#[track_caller]
fn only(events: &[Event], kind: &'static str, n: u64) -> Report {
    let report = check(events, &params());
    assert_eq!(
        report.violation_counts,
        BTreeMap::from([(kind, n)]),
        "{}",
        report.table(1)
    );
    assert!(report
        .violations
        .iter()
        .all(|v| v.kind == kind && !v.message.is_empty() && !v.excerpt.is_empty()));
    assert!(!report.ok());
    report
}

#[track_caller]
fn clean(events: &[Event]) -> Report {
    let report = check(events, &params());
    assert!(report.ok(), "{}", report.table(1));
    assert!(report.violations.is_empty());
    report
}

// Freshness.

#[test]
fn checker_strict_read_after_an_acked_write_serving_the_older_version() {
    let events = with(base(), [read(Mode::Strict, (2_001, 2_100), 0, Said::Read)]);
    let report = only(&events, kind::STALE_AS_CURRENT, 1);
    let v = &report.violations[0];
    assert_eq!(v.at, 2_001);
    assert!(v.message.contains("required v1"), "{}", v.message);
    assert!(v.message.contains("w1"), "{}", v.message);
    assert_eq!(v.excerpt.len(), 2, "the read and the write it missed");
    for mode in [Mode::Blocking, Mode::Push] {
        only(
            &with(base(), [read(mode, (2_001, 2_100), 0, Said::Read)]),
            kind::STALE_AS_CURRENT,
            1,
        );
    }
}

#[test]
fn checker_the_highest_acked_version_is_required_not_the_last_ended() {
    // w2's v2 ends before w1's v1 does (w1 stalled after its save): a
    // read after both must serve v2 at least.
    let events = vec![
        save(1, Target::Global, 600, 1, true),
        save(2, Target::Global, 700, 2, true),
        write(2, Target::Global, (650, 1_500), Some(2), WriteOutcome::Ok),
        write(1, Target::Global, (500, 2_000), Some(1), WriteOutcome::Ok),
        fin(Target::Global, 2),
        read(Mode::Strict, (3_000, 3_100), 1, Said::Read),
    ];
    let report = only(&events, kind::STALE_AS_CURRENT, 1);
    assert!(report.violations[0].message.contains("required v2"));
}

#[test]
fn checker_push_vouched_beyond_two_heartbeats() {
    let late = 2_000 + 2 * HEARTBEAT + 1;
    let events = with(
        base(),
        [read(Mode::Push, (late, late + 10), 0, Said::Vouched)],
    );
    only(&events, kind::STALE_AS_CURRENT, 1);
    let events = with(
        base(),
        [keyed(
            Mode::KeyedPush,
            1,
            (late, late + 10),
            (0, 0),
            Said::Vouched,
        )],
    );
    let events = with(
        events,
        acked(1, Target::Tenant(1), 1_000, 2_000, 1)
            .into_iter()
            .chain([fin(Target::Tenant(1), 1)]),
    );
    only(&events, kind::STALE_AS_CURRENT, 1);
}

#[test]
fn checker_push_read_not_vouched_has_no_lag() {
    // Inside the heartbeat window, but the reader said it read.
    let events = with(base(), [read(Mode::Push, (2_001, 2_010), 0, Said::Read)]);
    only(&events, kind::STALE_AS_CURRENT, 1);
}

#[test]
fn checker_interval_beyond_its_interval() {
    let interval = 500_000;
    for said in [Said::Read, Said::Vouched] {
        let start = 2_000 + interval + 1;
        let events = with(
            base(),
            [read(Mode::Interval(interval), (start, start + 10), 0, said)],
        );
        only(&events, kind::STALE_AS_CURRENT, 1);
    }
}

#[test]
fn checker_keyed_tenant_older_than_its_acked_write() {
    let events = vec![
        save(1, Target::Tenant(2), 500, 3, true),
        save(1, Target::Tenant(3), 500, 3, true),
        save(1, Target::Tenant(3), 1_500, 4, true),
        write(
            1,
            Target::Tenant(3),
            (1_000, 2_000),
            Some(4),
            WriteOutcome::Ok,
        ),
        fin(Target::Tenant(2), 3),
        fin(Target::Tenant(3), 4),
        // Tenant 3's write does not make tenant 2 stale.
        keyed(Mode::KeyedStrict, 2, (2_500, 2_600), (3, 0), Said::Read),
        keyed(Mode::KeyedStrict, 3, (2_500, 2_600), (3, 0), Said::Read),
    ];
    let report = only(&events, kind::STALE_AS_CURRENT, 1);
    assert!(report.violations[0].message.contains("Tenant(3) v3"));
}

#[test]
fn checker_keyed_parent_older_than_its_acked_bump() {
    let mut events = acked(1, Target::Parent, 1_000, 2_000, 1).to_vec();
    events.extend(acked(2, Target::Tenant(1), 100, 200, 1));
    events.extend([
        fin(Target::Parent, 1),
        fin(Target::Tenant(1), 1),
        // The tenant is fresh, its parent is not.
        keyed(Mode::KeyedStrict, 1, (2_500, 2_600), (1, 0), Said::Read),
    ]);
    let report = only(&events, kind::STALE_AS_CURRENT, 1);
    assert!(report.violations[0].message.contains("Parent v0"));
    // Push vouched: the parent has the same lag.
    let late = 2_000 + 2 * HEARTBEAT + 1;
    events.pop();
    events.push(keyed(
        Mode::KeyedPush,
        1,
        (late, late + 1),
        (1, 0),
        Said::Vouched,
    ));
    only(&events, kind::STALE_AS_CURRENT, 1);
    events.pop();
    events.push(keyed(
        Mode::KeyedPush,
        1,
        (late - 1, late),
        (1, 0),
        Said::Vouched,
    ));
    clean(&events);
}

// Phantoms.

#[test]
fn checker_a_refused_version_served() {
    let events = with(
        base(),
        [
            save(2, Target::Global, 2_500, 2, false),
            read(Mode::Strict, (3_000, 3_100), 2, Said::Read),
        ],
    );
    let report = only(&events, kind::NEVER_SAVED, 1);
    assert_eq!(report.violations[0].excerpt.len(), 2, "the read, the save");
    // Stale answers are no excuse for a phantom.
    let events = with(base(), [read(Mode::Strict, (3_000, 3_100), 9, Said::Stale)]);
    only(&events, kind::NEVER_SAVED, 1);
    // Nor is the parent.
    let events = with(
        base(),
        [keyed(
            Mode::KeyedStrict,
            1,
            (3_000, 3_100),
            (0, 5),
            Said::Read,
        )],
    );
    only(&events, kind::NEVER_SAVED, 1);
}

#[test]
fn checker_a_version_served_before_the_store_took_it() {
    let events = with(base(), [read(Mode::Strict, (1_000, 1_499), 1, Said::Read)]);
    only(&events, kind::NEVER_SAVED, 1);
    // Its save at 1.500 ms, by the read's end: fine.
    let events = with(base(), [read(Mode::Strict, (1_000, 1_500), 1, Said::Read)]);
    clean(&events);
}

// Writes.

#[test]
fn checker_an_acked_write_never_saved() {
    let events = vec![
        write(1, Target::Global, (1_000, 2_000), Some(1), WriteOutcome::Ok),
        fin(Target::Global, 0),
    ];
    let report = only(&events, kind::ACK_LOST, 2);
    assert!(report.violations.iter().any(|v| v.message.contains("ever")));
    assert!(report
        .violations
        .iter()
        .any(|v| v.message.contains("ends at v0")));
    // Another writer's save of the version is not its save.
    let events = vec![
        save(2, Target::Global, 1_500, 1, true),
        write(1, Target::Global, (1_000, 2_000), Some(1), WriteOutcome::Ok),
        fin(Target::Global, 1),
    ];
    only(&events, kind::ACK_LOST, 1);
    // Nor is a save after it was told Ok.
    let events = vec![
        write(1, Target::Global, (1_000, 2_000), Some(1), WriteOutcome::Ok),
        save(1, Target::Global, 2_001, 1, true),
        fin(Target::Global, 1),
    ];
    only(&events, kind::ACK_LOST, 1);
    // Nor is a save before it began (an earlier attempt's).
    let events = vec![
        save(1, Target::Global, 999, 1, true),
        write(1, Target::Global, (1_000, 2_000), Some(1), WriteOutcome::Ok),
        fin(Target::Global, 1),
    ];
    only(&events, kind::ACK_LOST, 1);
    // Ok with no version: nothing shows it kept.
    let events = vec![write(
        1,
        Target::Global,
        (1_000, 2_000),
        None,
        WriteOutcome::Ok,
    )];
    only(&events, kind::ACK_LOST, 1);
}

#[test]
fn checker_an_acked_write_below_the_final_state() {
    // w1's v2 accepted and acked, then an accepted v1 (lost update) the
    // store ends with: the ack is lost too.
    let mut events = acked(1, Target::Global, 1_000, 2_000, 2).to_vec();
    events.extend([
        save(2, Target::Global, 3_000, 1, true),
        fin(Target::Global, 1),
    ]);
    let report = check(&events, &params());
    assert_eq!(report.violation_counts.get(kind::ACK_LOST), Some(&1));
    assert_eq!(report.violation_counts.get(kind::LOST_UPDATE), Some(&1));
    assert_eq!(report.violation_counts.len(), 2, "{}", report.table(1));
}

#[test]
fn checker_two_acked_writes_of_one_version() {
    // One save, two writes told Ok for it (a retry re-acknowledged).
    let events = with(
        base(),
        [write(
            1,
            Target::Global,
            (1_200, 2_100),
            Some(1),
            WriteOutcome::Ok,
        )],
    );
    let report = only(&events, kind::LOST_UPDATE, 1);
    assert!(report.violations[0].message.contains("two writes"));
    assert_eq!(report.violations[0].excerpt.len(), 2);
    // Different targets may share a version.
    let events = with(base(), acked(1, Target::Parent, 1_000, 2_000, 1));
    let events = with(events, [fin(Target::Parent, 1)]);
    clean(&events);
}

#[test]
fn checker_accepted_saves_that_do_not_rise() {
    // w1's v2 told Ok, then w2's v2 accepted over it: overwritten.
    let mut events = acked(1, Target::Global, 900, 1_100, 2).to_vec();
    events.extend([
        save(1, Target::Global, 1_150, 3, false),
        save(2, Target::Global, 2_000, 2, true),
        fin(Target::Global, 2),
    ]);
    let report = only(&events, kind::LOST_UPDATE, 1);
    assert_eq!(report.violations[0].at, 2_000);
    let mut events = acked(1, Target::Global, 900, 1_100, 2).to_vec();
    events.extend([
        save(2, Target::Global, 2_000, 1, true),
        fin(Target::Global, 1),
    ]);
    let report = check(&events, &params());
    assert_eq!(report.violation_counts.get(kind::LOST_UPDATE), Some(&1));
}

#[test]
fn checker_accepts_a_save_over_one_whose_writer_was_told_its_lease_lapsed() {
    // w0 stalled past its lease saves v6 with its old fence (accepted: no
    // newer one was taken yet) and is told so; w1, which took the lease,
    // saves v6 too and is told Ok. No acknowledged write is overwritten.
    let events = vec![
        save(0, Target::Global, 1_000, 6, true),
        write(
            0,
            Target::Global,
            (500, 1_200),
            Some(6),
            WriteOutcome::LeaseLost { saved: Some(true) },
        ),
        save(1, Target::Global, 1_500, 6, true),
        write(1, Target::Global, (800, 1_600), Some(6), WriteOutcome::Ok),
        fin(Target::Global, 6),
    ];
    clean(&events);
}

#[test]
fn checker_told_unsaved_but_saved() {
    for outcome in [
        WriteOutcome::LeaseLost { saved: Some(false) },
        WriteOutcome::Failed {
            saved: Some(false),
            error: "refused".into(),
        },
    ] {
        let events = vec![
            save(1, Target::Global, 1_500, 1, true),
            write(1, Target::Global, (1_000, 2_000), Some(1), outcome.clone()),
            fin(Target::Global, 1),
        ];
        only(&events, kind::TOLD_UNSAVED, 1);
        // Accepted after it was told: still its save.
        let events = vec![
            write(1, Target::Global, (1_000, 2_000), Some(1), outcome.clone()),
            save(1, Target::Global, 2_500, 1, true),
            fin(Target::Global, 1),
        ];
        only(&events, kind::TOLD_UNSAVED, 1);
        // Refused indeed: fine.
        let events = vec![
            save(1, Target::Global, 1_500, 1, false),
            write(1, Target::Global, (1_000, 2_000), Some(1), outcome),
            fin(Target::Global, 0),
        ];
        clean(&events);
    }
}

#[test]
fn checker_accepts_a_refused_write_retried_with_its_version() {
    // Refused, then the same writer's next write saves the same version.
    let events = vec![
        save(1, Target::Global, 1_500, 1, false),
        write(
            1,
            Target::Global,
            (1_000, 2_000),
            Some(1),
            WriteOutcome::LeaseLost { saved: Some(false) },
        ),
        save(1, Target::Global, 3_000, 1, true),
        write(1, Target::Global, (3_000, 4_000), Some(1), WriteOutcome::Ok),
        fin(Target::Global, 1),
    ];
    clean(&events);
}

#[test]
fn checker_final_state_other_than_the_last_save() {
    let events = vec![
        save(1, Target::Global, 1_000, 1, true),
        fin(Target::Global, 0),
    ];
    only(&events, kind::FINAL_STATE, 1);
    let events = vec![fin(Target::Parent, 3)];
    only(&events, kind::FINAL_STATE, 1);
    // A target saved with no final state recorded.
    let events = vec![save(1, Target::Global, 1_000, 1, true)];
    only(&events, kind::FINAL_STATE, 1);
}

// Availability.

#[test]
fn checker_a_check_past_its_bound() {
    let events = with(
        base(),
        [read(Mode::Strict, (3_000, 3_001 + BOUND), 1, Said::Read)],
    );
    only(&events, kind::SLOW_CHECK, 1);
    let events = with(
        base(),
        [read(Mode::Strict, (3_000, 3_000 + BOUND), 1, Said::Read)],
    );
    clean(&events);
}

#[test]
fn checker_a_request_the_synchronizer_failed() {
    let events = with(base(), [failed(Mode::KeyedStrict, (3_000, 3_100), false)]);
    let report = only(&events, kind::REQUEST_FAILED, 1);
    assert!(report.violations[0].message.contains("boom"));
}

// Clean histories.

#[test]
fn checker_accepts_stale_answers_during_a_fault() {
    let events = with(
        base(),
        [
            fault("SIGSTOP", 1_900, 9_000),
            read(Mode::Strict, (3_000, 3_100), 0, Said::Stale),
            keyed(Mode::KeyedPush, 1, (3_000, 3_100), (0, 0), Said::Stale),
        ],
    );
    let report = clean(&events);
    assert_eq!(report.reads["strict"].stale, 1);
    assert_eq!(report.reads["keyed push"].stale, 1);
    assert_eq!(report.faults["SIGSTOP"], 1);
}

#[test]
fn checker_accepts_push_vouched_within_two_heartbeats() {
    let start = 2_000 + 2 * HEARTBEAT;
    clean(&with(
        base(),
        [
            read(Mode::Push, (start, start + 10), 0, Said::Vouched),
            read(Mode::Push, (2_500, 2_600), 0, Said::Vouched),
        ],
    ));
}

#[test]
fn checker_accepts_interval_within_its_interval() {
    let interval = 500_000;
    let start = 2_000 + interval;
    clean(&with(
        base(),
        [
            read(Mode::Interval(interval), (start, start + 10), 0, Said::Read),
            read(
                Mode::Interval(interval),
                (start, start + 10),
                0,
                Said::Vouched,
            ),
        ],
    ));
}

#[test]
fn checker_accepts_a_read_concurrent_with_a_write_serving_the_old_version() {
    for mode in [Mode::Strict, Mode::Blocking, Mode::Push] {
        clean(&with(
            base(),
            [
                read(mode, (1_900, 2_100), 0, Said::Read),
                // Began as the write was acknowledged: still concurrent.
                read(mode, (2_000, 2_100), 0, Said::Read),
                read(mode, (1_900, 2_100), 1, Said::Read),
            ],
        ));
    }
}

#[test]
fn checker_accepts_a_failed_loader() {
    let report = clean(&with(
        base(),
        [failed(Mode::KeyedStrict, (3_000, 3_100), true)],
    ));
    let count = &report.reads["keyed strict"];
    assert_eq!((count.reads, count.failed, count.loader_failed), (1, 1, 1));
}

#[test]
fn checker_accepts_a_dead_writer_whose_save_landed() {
    let mut events = base();
    events.pop();
    events.extend([
        save(2, Target::Global, 3_000, 2, true),
        write(
            2,
            Target::Global,
            (2_500, 3_500),
            Some(2),
            WriteOutcome::Died,
        ),
        read(Mode::Strict, (3_100, 3_200), 2, Said::Read),
        // Nobody was told v2 was saved: an older answer is no breach.
        read(Mode::Strict, (4_000, 4_100), 1, Said::Read),
        fin(Target::Global, 2),
    ]);
    assert_eq!(clean(&events).writes["died"], 1);
}

#[test]
fn checker_accepts_a_lease_lost_write_that_reports_its_save() {
    let events = vec![
        save(1, Target::Global, 1_500, 1, true),
        write(
            1,
            Target::Global,
            (1_000, 2_000),
            Some(1),
            WriteOutcome::LeaseLost { saved: Some(true) },
        ),
        write(
            2,
            Target::Global,
            (1_000, 2_000),
            Some(2),
            WriteOutcome::LeaseLost { saved: None },
        ),
        fin(Target::Global, 1),
    ];
    let report = clean(&events);
    assert_eq!(report.writes["lease lost"], 2);
}

/// `n` writes one after another, each read strictly right after its
/// end and read vouched by push one version behind, and the final
/// state: a clean history of 4n + 1 events.
fn long_history(n: u64) -> Vec<Event> {
    let mut events = Vec::with_capacity(4 * n as usize + 1);
    for k in 1..=n {
        let t = k * 1_000;
        let writer = (k % 2) as u16;
        events.extend(acked(writer, Target::Global, t, t + 600, k));
        events.push(read(Mode::Strict, (t + 700, t + 800), k, Said::Read));
        events.push(read(Mode::Push, (t + 700, t + 800), k - 1, Said::Vouched));
    }
    events.push(fin(Target::Global, n));
    events
}

#[test]
fn checker_accepts_a_long_clean_history() {
    let report = clean(&long_history(25_000));
    assert_eq!(report.reads["strict"].reads, 25_000);
    assert_eq!(report.writes["ok"], 25_000);
    assert_eq!(report.saves, (25_000, 0));
}

// The report.

#[test]
fn checker_lists_the_first_of_a_kind_and_counts_all() {
    let reads = (0..25).map(|n| read(Mode::Strict, (3_000 + n, 3_100 + n), 0, Said::Read));
    let mut events = base();
    events.push(fault("kill -9, restart empty", 1_500, 2_500));
    events.push(fault("SIGSTOP", 100_000, 200_000));
    let report = only(&with(events, reads), kind::STALE_AS_CURRENT, 25);
    assert_eq!(report.violations.len(), LISTED_PER_KIND as usize);
    let v = &report.violations[0];
    assert_eq!(
        v.excerpt.len(),
        3,
        "the read, the write, the kill: {:?}",
        v.excerpt
    );
    assert!(v.excerpt[2].contains("kill -9"));
    let table = report.table(42);
    for needle in [
        "| kill -9, restart empty | 1 |",
        "| strict | 25 | 0 | 0 (0) |",
        "| ok | 1 |",
        "| accepted | 1 |",
        "| stale as current | 25 |",
        "replay: --seed 42",
    ] {
        assert!(table.contains(needle), "{needle} not in\n{table}");
    }
}

// Recovery.

fn healed(at: Micros) -> Event {
    Event::Healed { at }
}

/// A history healed at 10 s: w1's v1 before, w1's v2 after, and an
/// instance reading v2 as current after the grace.
fn recovered() -> Vec<Event> {
    let mut events = acked(1, Target::Global, 1_000, 2_000, 1).to_vec();
    events.push(healed(10_000_000));
    events.extend(acked(1, Target::Global, 10_500_000, 10_600_000, 2));
    events.push(read(Mode::Strict, (14_000_000, 14_001_000), 2, Said::Read));
    events.push(fin(Target::Global, 2));
    events
}

#[test]
fn checker_accepts_a_fleet_current_again_after_the_heal() {
    let mut events = recovered();
    // Stale within the grace is allowed.
    events.push(read(Mode::Strict, (11_000_000, 11_001_000), 1, Said::Stale));
    clean(&events);
}

#[test]
fn checker_a_stale_answer_after_the_heal_and_its_grace() {
    let events = with(
        recovered(),
        [read(Mode::Strict, (14_100_000, 14_101_000), 2, Said::Stale)],
    );
    let report = only(&events, kind::NOT_RECOVERED, 1);
    assert!(report.violations[0].message.contains("still answered"));
    let events = with(
        recovered(),
        [failed(Mode::KeyedStrict, (14_100_000, 14_101_000), true)],
    );
    only(&events, kind::NOT_RECOVERED, 1);
}

#[test]
fn checker_an_instance_silent_after_the_heal() {
    let mut events = recovered();
    let mut early = read(Mode::Strict, (5_000_000, 5_001_000), 1, Said::Read);
    if let Event::Read(r) = &mut early {
        r.instance = 3;
    }
    events.push(early);
    let report = only(&events, kind::NOT_RECOVERED, 1);
    assert!(report.violations[0].message.contains("#3"));
}

#[test]
fn checker_a_writer_never_told_ok_after_the_heal() {
    // w2 wrote the parent before the heal, and never again after it.
    let mut events = recovered();
    events.extend(acked(2, Target::Parent, 3_000, 4_000, 1));
    events.push(fin(Target::Parent, 1));
    let report = only(&events, kind::NOT_RECOVERED, 1);
    assert!(report.violations[0].message.contains("w2"));
}

#[test]
fn checker_holds_keyed_reads_to_their_own_bound() {
    // 6 s: past a plain check's bound, within a keyed one's.
    let events = with(
        base(),
        [keyed(
            Mode::KeyedStrict,
            1,
            (3_000, 6_003_000),
            (0, 0),
            Said::Read,
        )],
    );
    clean(&events);
    let events = with(
        base(),
        [keyed(
            Mode::KeyedStrict,
            1,
            (3_000, 3_000 + KEYED_BOUND + 1),
            (0, 0),
            Said::Read,
        )],
    );
    only(&events, kind::SLOW_CHECK, 1);
}
