//! The offline checker: each mode's promise, each write's promise and the
//! availability promise stated as code over a recorded history, and the
//! summary table of what was checked and what broke.
//!
//! Every check is a lookup in tables built in one pass over the history
//! (per-target sorted writes with a prefix maximum, hash maps of saves), so
//! a run of millions of events checks in O(n log n).
//!
//! The summary table is rendered in `table.rs`; the tests are in
//! `tests.rs`.

mod table;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{Event, Micros, Mode, Read, ReadOutcome, Said, Target, WriteOutcome};

/// The violation kinds, one per promise; stable strings for tables and
/// tests.
pub mod kind {
    /// A read served, as current or vouched, a version older than a write
    /// acknowledged before the read began (beyond its mode's lag).
    pub const STALE_AS_CURRENT: &str = "stale as current";
    /// A read served a version no accepted save had stored by its end.
    pub const NEVER_SAVED: &str = "never saved";
    /// A write told `Ok` whose save is missing, or whose version the store
    /// no longer holds at the end.
    pub const ACK_LOST: &str = "acknowledged write lost";
    /// The store took a save that did not raise the version, or two
    /// writes were told `Ok` for one version.
    pub const LOST_UPDATE: &str = "lost update";
    /// A write told its save was refused or never made, whose save the
    /// store took.
    pub const TOLD_UNSAVED: &str = "told unsaved but saved";
    /// The store's final version differs from its last accepted save.
    pub const FINAL_STATE: &str = "final state";
    /// A check took longer than its documented bound.
    pub const SLOW_CHECK: &str = "slow check";
    /// A read failed because of the synchronizer (not the loader).
    pub const REQUEST_FAILED: &str = "request failed";
    /// Once the nemesis stopped and Redis was healed (after a grace), an
    /// answer was still stale or failed, an instance stopped reading, or a
    /// writer never wrote `Ok` again.
    pub const NOT_RECOVERED: &str = "not recovered";
}

/// How many violations of one kind the report lists in full; the rest are
/// only counted.
const LISTED_PER_KIND: u64 = 20;

/// The most lines of history one violation quotes.
const EXCERPT_LINES: usize = 15;

/// How far before the write (or read) a violation concerns its excerpt
/// looks for faults: a fault that just ended may be the cause.
const FAULT_LOOKBACK: Micros = 1_000_000;

/// What the checker needs to know beyond the history.
#[derive(Clone, Debug)]
pub struct Params {
    /// Push mode's heartbeat: a push read the reloader said was `Vouched`
    /// may miss writes acknowledged up to 2 heartbeats before it began.
    pub heartbeat: Micros,
    /// The most any check may take (the documented wait bound plus the
    /// backend's call bound plus a margin): a read longer than this is an
    /// availability violation.
    pub check_bound: Micros,
    /// The same for a keyed read, which may wait for a tenant's first load
    /// (and its key's creation) before its own check.
    pub keyed_check_bound: Micros,
    /// How long after [`Event::Healed`] the fleet may take to be current
    /// again (reconnects, backoffs, push re-armed).
    pub recovery: Micros,
    /// The version every target starts at (the store's initial value).
    pub initial: u64,
}

/// One broken promise.
#[derive(Clone, Debug)]
pub struct Violation {
    /// One of the [`kind`] strings.
    pub kind: &'static str,
    /// When the violating read or write began (a save's instant for a lost
    /// update, the last save's for a final state).
    pub at: Micros,
    /// What was served or told against what was required, and which write
    /// or save it concerns.
    pub message: String,
    /// The violating event, the events it concerns and the faults around
    /// them, one `Event` per line.
    pub excerpt: Vec<String>,
}

/// The reads of one mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModeCount {
    /// Checks made, whatever they got.
    pub reads: u64,
    /// Served settings (current, vouched or stale).
    pub served: u64,
    /// Served settings said `Stale`: allowed, counted.
    pub stale: u64,
    /// Failed, for any cause.
    pub failed: u64,
    /// Failed because of the loader (injected): allowed, counted.
    pub loader_failed: u64,
    /// The longest read, end - start.
    pub max_latency: Micros,
}

/// What was checked and what broke.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Per mode (`Mode::name`).
    pub reads: BTreeMap<&'static str, ModeCount>,
    /// Per outcome: "ok", "lease lost", "failed", "died".
    pub writes: BTreeMap<&'static str, u64>,
    /// The store's saves: (accepted, refused).
    pub saves: (u64, u64),
    /// Faults injected, per `Fault::kind`.
    pub faults: BTreeMap<String, u64>,
    /// Every violation counted, per kind.
    pub violation_counts: BTreeMap<&'static str, u64>,
    /// The first [`LISTED_PER_KIND`] violations of each kind found (in
    /// history order), sorted by time.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether no promise was broken.
    pub fn ok(&self) -> bool {
        self.violation_counts.is_empty()
    }
}

/// Checks `events` (in the order they were recorded) against every
/// promise.
pub fn check(events: &[Event], params: &Params) -> Report {
    let index = Index::new(events);
    let mut found = Found::new(events, &index);
    let mut report = Report::default();

    count(events, &mut report);
    check_reads(events, &index, params, &mut found);
    check_writes(events, &index, &mut found);
    check_saves(events, &index, params, &mut found);
    check_recovery(events, params, &mut found);

    report.violation_counts = found.counts;
    report.violations = found.listed;
    report.violations.sort_by_key(|v| v.at);
    report
}

/// An instant and the index of the event there.
type At = (Micros, usize);

/// The tables every check looks up, built in one pass.
struct Index {
    /// Per target, the writes told `Ok` that have a version, as (end,
    /// version, event index) sorted by end.
    acked: HashMap<Target, Vec<(Micros, u64, usize)>>,
    /// Per target, the prefix maximum of `acked`'s versions: (version,
    /// event index of the write that reached it).
    acked_max: HashMap<Target, Vec<(u64, usize)>>,
    /// Per (target, version), the earliest accepted save.
    first_save: HashMap<(Target, u64), Micros>,
    /// Per (target, version), every save, accepted or not (event indices).
    saves_of: HashMap<(Target, u64), Vec<usize>>,
    /// Per (target, version, writer), the accepted saves, sorted.
    by_writer: HashMap<(Target, u64, u16), Vec<At>>,
    /// Per writer, when each of its writes began, sorted: a writer writes
    /// one at a time, so its save between two starts is the first one's.
    starts: HashMap<u16, Vec<Micros>>,
    /// Per target, the final version and its event index.
    finals: HashMap<Target, (u64, usize)>,
    /// The (target, version, writer) of every write told `Ok`.
    acked_by_writer: HashSet<(Target, u64, u16)>,
    /// The faults' event indices.
    faults: Vec<usize>,
}

impl Index {
    fn new(events: &[Event]) -> Index {
        let mut acked: HashMap<Target, Vec<(Micros, u64, usize)>> = HashMap::new();
        let mut first_save: HashMap<(Target, u64), Micros> = HashMap::new();
        let mut saves_of: HashMap<(Target, u64), Vec<usize>> = HashMap::new();
        let mut by_writer: HashMap<(Target, u64, u16), Vec<At>> = HashMap::new();
        let mut starts: HashMap<u16, Vec<Micros>> = HashMap::new();
        let mut finals = HashMap::new();
        let mut faults = Vec::new();
        let mut acked_by_writer = HashSet::new();
        for (i, event) in events.iter().enumerate() {
            match event {
                Event::Write(w) => {
                    starts.entry(w.writer).or_default().push(w.start);
                    if let (WriteOutcome::Ok, Some(v)) = (&w.outcome, w.version) {
                        acked.entry(w.target).or_default().push((w.end, v, i));
                        acked_by_writer.insert((w.target, v, w.writer));
                    }
                }
                Event::Save(s) => {
                    saves_of.entry((s.target, s.version)).or_default().push(i);
                    if s.accepted {
                        let at = first_save.entry((s.target, s.version)).or_insert(s.at);
                        *at = (*at).min(s.at);
                        by_writer
                            .entry((s.target, s.version, s.writer))
                            .or_default()
                            .push((s.at, i));
                    }
                }
                Event::Fault(_) => faults.push(i),
                Event::Final { target, version } => {
                    finals.insert(*target, (*version, i));
                }
                Event::Read(_) | Event::Healed { .. } => {}
            }
        }
        by_writer
            .values_mut()
            .for_each(|saves| saves.sort_unstable());
        starts
            .values_mut()
            .for_each(|starts| starts.sort_unstable());
        let mut acked_max = HashMap::new();
        for (target, writes) in acked.iter_mut() {
            writes.sort_unstable();
            let mut max: Option<(u64, usize)> = None;
            let prefix = writes
                .iter()
                .map(|&(_, v, i)| {
                    if max.is_none_or(|(m, _)| v > m) {
                        max = Some((v, i));
                    }
                    max.expect("set above")
                })
                .collect::<Vec<_>>();
            acked_max.insert(*target, prefix);
        }
        Index {
            acked,
            acked_max,
            first_save,
            saves_of,
            by_writer,
            starts,
            finals,
            faults,
            acked_by_writer,
        }
    }

    /// The first save of `version` of `target` by `writer` the store
    /// accepted within `from..=to`.
    fn own_save(
        &self,
        target: Target,
        version: u64,
        writer: u16,
        (from, to): (Micros, Micros),
    ) -> Option<At> {
        let saves = self.by_writer.get(&(target, version, writer))?;
        let first = saves.partition_point(|&(at, _)| at < from);
        saves.get(first).filter(|&&(at, _)| at <= to).copied()
    }

    /// The last instant before `writer`'s next write after one that began
    /// at `start`.
    fn until_next(&self, writer: u16, start: Micros) -> Micros {
        let starts = &self.starts[&writer];
        let next = starts.partition_point(|&s| s <= start);
        starts.get(next).map_or(Micros::MAX, |&s| s - 1)
    }

    /// The highest version of `target` acknowledged by a write that ended
    /// more than `lag` before `start`, with that write's event index.
    fn required(&self, target: Target, start: Micros, lag: Micros) -> Option<(u64, usize)> {
        let writes = self.acked.get(&target)?;
        // Strictly before: a write that ended exactly `lag` before the read
        // began may still be concurrent with it.
        let n = writes.partition_point(|&(end, _, _)| end.saturating_add(lag) < start);
        n.checked_sub(1).map(|last| self.acked_max[&target][last])
    }
}

/// The violations found: all counted, the first of each kind kept.
struct Found<'a> {
    events: &'a [Event],
    index: &'a Index,
    counts: BTreeMap<&'static str, u64>,
    listed: Vec<Violation>,
}

impl<'a> Found<'a> {
    fn new(events: &'a [Event], index: &'a Index) -> Found<'a> {
        Found {
            events,
            index,
            counts: BTreeMap::new(),
            listed: Vec::new(),
        }
    }

    /// Counts one violation of `kind`; builds it with `describe` (message,
    /// the events it concerns, the window to quote faults from) only when
    /// it is listed, so a run full of one violation stays fast.
    fn add(
        &mut self,
        kind: &'static str,
        at: Micros,
        describe: impl FnOnce() -> (String, Vec<usize>, (Micros, Micros)),
    ) {
        let n = self.counts.entry(kind).or_insert(0);
        *n += 1;
        if *n > LISTED_PER_KIND {
            return;
        }
        let (message, concerns, (from, to)) = describe();
        let mut excerpt: Vec<String> = concerns
            .iter()
            .map(|&i| self.events[i].to_string())
            .collect();
        for &i in &self.index.faults {
            if excerpt.len() >= EXCERPT_LINES {
                break;
            }
            if let Event::Fault(f) = &self.events[i] {
                if f.start <= to && f.end >= from {
                    excerpt.push(self.events[i].to_string());
                }
            }
        }
        excerpt.truncate(EXCERPT_LINES);
        self.listed.push(Violation {
            kind,
            at,
            message,
            excerpt,
        });
    }
}

/// Milliseconds, for messages.
fn ms(us: Micros) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// The reads, writes, saves and faults per kind.
fn count(events: &[Event], report: &mut Report) {
    for event in events {
        match event {
            Event::Read(r) => {
                let c = report.reads.entry(r.mode.name()).or_default();
                c.reads += 1;
                c.max_latency = c.max_latency.max(r.end.saturating_sub(r.start));
                match &r.outcome {
                    ReadOutcome::Served { said, .. } => {
                        c.served += 1;
                        if *said == Said::Stale {
                            c.stale += 1;
                        }
                    }
                    ReadOutcome::Failed { loader, .. } => {
                        c.failed += 1;
                        if *loader {
                            c.loader_failed += 1;
                        }
                    }
                }
            }
            Event::Write(w) => {
                let outcome = match w.outcome {
                    WriteOutcome::Ok => "ok",
                    WriteOutcome::LeaseLost { .. } => "lease lost",
                    WriteOutcome::Failed { .. } => "failed",
                    WriteOutcome::Died => "died",
                };
                *report.writes.entry(outcome).or_insert(0) += 1;
            }
            Event::Save(s) => {
                if s.accepted {
                    report.saves.0 += 1;
                } else {
                    report.saves.1 += 1;
                }
            }
            Event::Fault(f) => *report.faults.entry(f.kind.clone()).or_insert(0) += 1,
            Event::Final { .. } | Event::Healed { .. } => {}
        }
    }
}

/// How long before a read began a write may have been acknowledged and
/// still be missed by it, for what the reader said.
fn lag(mode: Mode, said: Said, params: &Params) -> Micros {
    match (mode, said) {
        (Mode::Interval(interval), _) => interval,
        (Mode::Push | Mode::KeyedPush, Said::Vouched) => params.heartbeat.saturating_mul(2),
        _ => 0,
    }
}

/// Freshness, phantoms and availability, per read.
fn check_reads(events: &[Event], index: &Index, params: &Params, found: &mut Found<'_>) {
    for (i, event) in events.iter().enumerate() {
        let Event::Read(read) = event else { continue };
        let took = read.end.saturating_sub(read.start);
        let bound = if read.mode.keyed() {
            params.keyed_check_bound
        } else {
            params.check_bound
        };
        if took > bound {
            found.add(kind::SLOW_CHECK, read.start, || {
                (
                    format!(
                        "the check took {}, past the bound of {}",
                        ms(took),
                        ms(bound)
                    ),
                    vec![i],
                    (read.start.saturating_sub(FAULT_LOOKBACK), read.end),
                )
            });
        }
        match &read.outcome {
            ReadOutcome::Failed {
                loader: false,
                error,
            } => {
                found.add(kind::REQUEST_FAILED, read.start, || {
                    (
                        format!("the synchronizer failed the request: {error}"),
                        vec![i],
                        (read.start.saturating_sub(FAULT_LOOKBACK), read.end),
                    )
                });
            }
            ReadOutcome::Failed { loader: true, .. } => {}
            ReadOutcome::Served {
                version,
                parent,
                said,
            } => {
                let mut served = vec![(read.target, *version)];
                if read.mode.keyed() {
                    // A keyed read without its parent's version recorded
                    // has nothing to check there.
                    served.extend(parent.map(|p| (Target::Parent, p)));
                }
                for (target, version) in served {
                    let served = Served {
                        i,
                        read,
                        said: *said,
                        target,
                        version,
                    };
                    never_saved(&served, index, params, found);
                    if *said != Said::Stale {
                        fresh(&served, events, index, params, found);
                    }
                }
            }
        }
    }
}

/// One version one read served: the read's own target's, or a keyed
/// read's parent's.
struct Served<'a> {
    /// The read's event index.
    i: usize,
    read: &'a Read,
    said: Said,
    target: Target,
    version: u64,
}

/// A served version must be the initial one or one the store took by the
/// read's end.
fn never_saved(s: &Served<'_>, index: &Index, params: &Params, found: &mut Found<'_>) {
    if s.version == params.initial
        || index
            .first_save
            .get(&(s.target, s.version))
            .is_some_and(|&at| at <= s.read.end)
    {
        return;
    }
    found.add(kind::NEVER_SAVED, s.read.start, || {
        let saves = index
            .saves_of
            .get(&(s.target, s.version))
            .cloned()
            .unwrap_or_default();
        let how = if saves.is_empty() {
            "was never saved"
        } else {
            "the store had not accepted by the read's end"
        };
        let mut concerns = vec![s.i];
        concerns.extend(saves.into_iter().take(4));
        (
            format!("served {:?} v{}, which {how}", s.target, s.version),
            concerns,
            (s.read.start.saturating_sub(FAULT_LOOKBACK), s.read.end),
        )
    });
}

/// A served version said current or vouched must be no older than any
/// write acknowledged before the read began, less the mode's lag.
fn fresh(s: &Served<'_>, events: &[Event], index: &Index, params: &Params, found: &mut Found<'_>) {
    let lag = lag(s.read.mode, s.said, params);
    let Some((required, w)) = index.required(s.target, s.read.start, lag) else {
        return;
    };
    if s.version >= required {
        return;
    }
    found.add(kind::STALE_AS_CURRENT, s.read.start, || {
        let Event::Write(write) = &events[w] else {
            unreachable!("the index's acked writes are writes")
        };
        (
            format!(
                "{} read said {:?} and served {:?} v{}; required v{required}: w{}'s write \
                 of v{required} ended at {}, more than the lag of {} before the read began \
                 at {}",
                s.read.mode.name(),
                s.said,
                s.target,
                s.version,
                write.writer,
                ms(write.end),
                ms(lag),
                ms(s.read.start)
            ),
            vec![s.i, w],
            (write.start.saturating_sub(FAULT_LOOKBACK), s.read.end),
        )
    });
}

/// Per write: an acknowledged one saved before it was acknowledged and
/// kept to the end, a refused one not saved, no version acknowledged
/// twice.
fn check_writes(events: &[Event], index: &Index, found: &mut Found<'_>) {
    // (target, version) -> the first write told Ok for it.
    let mut acked_by: HashMap<(Target, u64), usize> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        let Event::Write(write) = event else { continue };
        let window = (write.start.saturating_sub(FAULT_LOOKBACK), write.end);
        match (&write.outcome, write.version) {
            (WriteOutcome::Ok, None) => {
                // Nothing to look for: the history cannot show it kept.
                found.add(kind::ACK_LOST, write.start, || {
                    (
                        format!("w{} was told Ok with no version recorded", write.writer),
                        vec![i],
                        window,
                    )
                });
            }
            (WriteOutcome::Ok, Some(v)) => {
                let during = (write.start, write.end);
                if index
                    .own_save(write.target, v, write.writer, during)
                    .is_none()
                {
                    found.add(kind::ACK_LOST, write.start, || {
                        let other = index.own_save(write.target, v, write.writer, (0, Micros::MAX));
                        let mut concerns = vec![i];
                        concerns.extend(other.map(|(_, s)| s));
                        (
                            format!(
                                "w{} was told Ok for {:?} v{v} at {}, but the store accepted \
                                 no save of it by w{} {}",
                                write.writer,
                                write.target,
                                ms(write.end),
                                write.writer,
                                if other.is_some() {
                                    "during the write"
                                } else {
                                    "ever"
                                }
                            ),
                            concerns,
                            window,
                        )
                    });
                }
                let last = index.finals.get(&write.target);
                if let Some(&(last, f)) = last.filter(|&&(last, _)| last < v) {
                    found.add(kind::ACK_LOST, write.start, || {
                        (
                            format!(
                                "w{} was told Ok for {:?} v{v}, but the store ends at v{last}",
                                write.writer, write.target
                            ),
                            vec![i, f],
                            (window.0, Micros::MAX),
                        )
                    });
                }
                if let Some(&other) = acked_by.get(&(write.target, v)) {
                    found.add(kind::LOST_UPDATE, write.start, || {
                        (
                            format!(
                                "two writes were told Ok for {:?} v{v}: one of them was \
                                 overwritten",
                                write.target
                            ),
                            vec![other, i],
                            (
                                events[other].start().saturating_sub(FAULT_LOOKBACK),
                                write.end,
                            ),
                        )
                    });
                } else {
                    acked_by.insert((write.target, v), i);
                }
            }
            (
                WriteOutcome::LeaseLost { saved: Some(false) }
                | WriteOutcome::Failed {
                    saved: Some(false), ..
                },
                Some(v),
            ) => {
                // Its own save, if any, landed before the writer's next
                // write began (a later save of v may be a retry's).
                let own = (write.start, index.until_next(write.writer, write.start));
                if let Some((at, s)) = index.own_save(write.target, v, write.writer, own) {
                    found.add(kind::TOLD_UNSAVED, write.start, || {
                        (
                            format!(
                                "w{} was told {:?} v{v} was not saved, but the store accepted \
                                 it at {}",
                                write.writer,
                                write.target,
                                ms(at)
                            ),
                            vec![i, s],
                            (window.0, window.1.max(at)),
                        )
                    });
                }
            }
            _ => {}
        }
    }
}

/// Per save and final state: a target's accepted versions only rise, and
/// its final state is its last accepted save.
fn check_saves(events: &[Event], index: &Index, params: &Params, found: &mut Found<'_>) {
    // target -> (version, event index) of its last accepted save.
    let mut last: HashMap<Target, (u64, usize)> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        let Event::Save(save) = event else { continue };
        if !save.accepted {
            continue;
        }
        if let Some(&(before, b)) = last.get(&save.target) {
            // A save that did not raise the version overwrote the one
            // before it: a lost update if that one's writer was told Ok (a
            // writer told its lease lapsed was told it may be replaced).
            let overwritten_acked = match &events[b] {
                Event::Save(b) => index
                    .acked_by_writer
                    .contains(&(b.target, b.version, b.writer)),
                _ => false,
            };
            if save.version <= before && overwritten_acked {
                found.add(kind::LOST_UPDATE, save.at, || {
                    (
                        format!(
                            "the store accepted w{}'s {:?} v{} after v{before}, whose writer \
                             was told Ok: the versions did not rise",
                            save.writer, save.target, save.version
                        ),
                        vec![b, i],
                        (events[b].start().saturating_sub(FAULT_LOOKBACK), save.at),
                    )
                });
            }
        }
        last.insert(save.target, (save.version, i));
    }
    let mut targets: Vec<Target> = last.keys().chain(index.finals.keys()).copied().collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        let expected = last.get(&target).map_or(params.initial, |&(v, _)| v);
        let at = last.get(&target).map_or(0, |&(_, s)| events[s].start());
        let Some(&(version, f)) = index.finals.get(&target) else {
            found.add(kind::FINAL_STATE, at, || {
                (
                    format!("no final state was recorded for {target:?} (expected v{expected})"),
                    last.get(&target).map(|&(_, s)| s).into_iter().collect(),
                    (at, at),
                )
            });
            continue;
        };
        if version != expected {
            found.add(kind::FINAL_STATE, at, || {
                let mut concerns: Vec<usize> =
                    last.get(&target).map(|&(_, s)| s).into_iter().collect();
                concerns.push(f);
                (
                    format!(
                        "the store ends with {target:?} v{version}, but its last accepted save \
                         was v{expected}"
                    ),
                    concerns,
                    (at.saturating_sub(FAULT_LOOKBACK), Micros::MAX),
                )
            });
        }
    }
}

/// After the nemesis stopped and everything was healed, and a grace for
/// reconnects and backoffs: every answer is current (said `Read` or
/// `Vouched`), every instance still reads, and every writer is told `Ok`
/// again. A fleet that silently stopped serving or writing would otherwise
/// pass every other check.
fn check_recovery(events: &[Event], params: &Params, found: &mut Found<'_>) {
    let Some((h, healed)) = events.iter().enumerate().find_map(|(i, e)| match e {
        Event::Healed { at } => Some((i, *at)),
        _ => None,
    }) else {
        return;
    };
    let from = healed.saturating_add(params.recovery);
    let mut instances: BTreeMap<u16, bool> = BTreeMap::new();
    let mut writers: BTreeMap<u16, bool> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        match event {
            Event::Read(read) => {
                let after = read.start >= from;
                *instances.entry(read.instance).or_default() |= after;
                let current = matches!(
                    read.outcome,
                    ReadOutcome::Served { said, .. } if said != Said::Stale
                );
                if after && !current {
                    found.add(kind::NOT_RECOVERED, read.start, || {
                        (
                            format!(
                                "{} ms after Redis was healed, instance #{} still answered \
                                 {:?}",
                                params.recovery / 1000,
                                read.instance,
                                read.outcome
                            ),
                            vec![h, i],
                            (healed, read.end),
                        )
                    });
                }
            }
            Event::Write(write) => {
                let ok = write.start >= healed && write.outcome == WriteOutcome::Ok;
                *writers.entry(write.writer).or_default() |= ok;
            }
            _ => {}
        }
    }
    for (instance, read) in instances {
        if !read {
            found.add(kind::NOT_RECOVERED, from, || {
                (
                    format!("instance #{instance} made no check once Redis was healed"),
                    vec![h],
                    (healed, Micros::MAX),
                )
            });
        }
    }
    for (writer, ok) in writers {
        if !ok {
            found.add(kind::NOT_RECOVERED, healed, || {
                (
                    format!("w{writer} was never told Ok again once Redis was healed"),
                    vec![h],
                    (healed, Micros::MAX),
                )
            });
        }
    }
}
