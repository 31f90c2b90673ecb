//! The offline checker: each mode's promise, each write's promise and the
//! availability promise stated as code over a recorded history, and the
//! summary table of what was checked and what broke.
//!
//! Every check is a lookup in tables built in one pass over the history
//! (per-target sorted writes with a prefix maximum, hash maps of saves), so
//! a run of millions of events checks in O(n log n).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

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

    /// The summary as markdown tables; `seed` is the run's, for replay.
    pub fn table(&self, seed: u64) -> String {
        let mut out = String::new();
        let ms = |us: Micros| us as f64 / 1000.0;
        let _ = writeln!(out, "### Faults injected (seed {seed})\n");
        let _ = writeln!(out, "| fault | count |\n|---|---:|");
        for (kind, n) in &self.faults {
            let _ = writeln!(out, "| {kind} | {n} |");
        }
        let total: u64 = self.faults.values().sum();
        let _ = writeln!(out, "| **total** | {total} |");

        let _ = writeln!(out, "\n### Operations checked\n");
        let _ = writeln!(
            out,
            "| reads | count | stale | failed (loader) | max ms |\n|---|---:|---:|---:|---:|"
        );
        for (mode, c) in &self.reads {
            let _ = writeln!(
                out,
                "| {mode} | {} | {} | {} ({}) | {:.3} |",
                c.reads,
                c.stale,
                c.failed,
                c.loader_failed,
                ms(c.max_latency)
            );
        }
        let _ = writeln!(out, "\n| writes | count |\n|---|---:|");
        for (outcome, n) in &self.writes {
            let _ = writeln!(out, "| {outcome} | {n} |");
        }
        let _ = writeln!(
            out,
            "\n| saves | count |\n|---|---:|\n| accepted | {} |\n| refused | {} |",
            self.saves.0, self.saves.1
        );

        let _ = writeln!(out, "\n### Violations\n");
        if self.ok() {
            let _ = writeln!(out, "None.");
            return out;
        }
        let _ = writeln!(out, "| violation | count |\n|---|---:|");
        for (kind, n) in &self.violation_counts {
            let _ = writeln!(out, "| {kind} | {n} |");
        }
        for v in &self.violations {
            let _ = writeln!(
                out,
                "\n#### {} at {:.3} ms\n\n{}\n\n```",
                v.kind,
                ms(v.at),
                v.message
            );
            for line in &v.excerpt {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "```\n\nreplay: --seed {seed}");
        }
        out
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
        for (i, event) in events.iter().enumerate() {
            match event {
                Event::Write(w) => {
                    starts.entry(w.writer).or_default().push(w.start);
                    if let (WriteOutcome::Ok, Some(v)) = (&w.outcome, w.version) {
                        acked.entry(w.target).or_default().push((w.end, v, i));
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
                Event::Read(_) => {}
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
            Event::Final { .. } => {}
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
        if took > params.check_bound {
            found.add(kind::SLOW_CHECK, read.start, || {
                (
                    format!(
                        "the check took {}, past the bound of {}",
                        ms(took),
                        ms(params.check_bound)
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
            if save.version <= before {
                found.add(kind::LOST_UPDATE, save.at, || {
                    (
                        format!(
                            "the store accepted w{}'s {:?} v{} after v{before}: the versions \
                             did not rise",
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

#[cfg(test)]
mod tests {
    //! Hand-made histories: each violation kind caught, each allowed
    //! behaviour accepted. Times in microseconds; the heartbeat is 100 ms.

    use super::*;
    use crate::history::{Fault, Save, Write};

    const HEARTBEAT: Micros = 100_000;
    const BOUND: Micros = 5_000_000;

    fn params() -> Params {
        Params {
            heartbeat: HEARTBEAT,
            check_bound: BOUND,
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
        let events = vec![
            save(1, Target::Global, 1_000, 2, true),
            save(1, Target::Global, 1_100, 3, false),
            save(2, Target::Global, 2_000, 2, true),
            fin(Target::Global, 2),
        ];
        let report = only(&events, kind::LOST_UPDATE, 1);
        assert_eq!(report.violations[0].at, 2_000);
        let events = vec![
            save(1, Target::Global, 1_000, 2, true),
            save(2, Target::Global, 2_000, 1, true),
            fin(Target::Global, 1),
        ];
        only(&events, kind::LOST_UPDATE, 1);
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
}
