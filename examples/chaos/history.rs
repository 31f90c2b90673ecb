//! The history: every read a reader made, every write a writer made, every
//! save the store took or refused, and every fault the nemesis injected,
//! each with its time since the run began. Recorded while the run goes,
//! checked afterwards (`checker/`), and written as JSON lines so a run
//! can be checked again offline (`--check FILE`).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Microseconds since the run began.
pub type Micros = u64;

/// Which shared state an operation is about: the fleet's one settings
/// value, the keyed set's parent, or one tenant of the keyed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// The one settings value the unkeyed reloaders serve.
    Global,
    /// The keyed set's parent: every tenant's settings carry its version.
    Parent,
    /// One tenant of the keyed set.
    Tenant(u16),
}

/// How a reader's reloader checks; the checker judges each by its own
/// promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    Strict,
    Push,
    /// Interval mode, reading every this many microseconds.
    Interval(Micros),
    /// A keyed reloader in strict mode, tenants under a parent.
    KeyedStrict,
    /// A keyed reloader in push mode.
    KeyedPush,
    /// A `BlockingReloader` (strict).
    Blocking,
}

impl Mode {
    /// Whether the reads are of a keyed set (tenants and a parent).
    pub fn keyed(self) -> bool {
        matches!(self, Mode::KeyedStrict | Mode::KeyedPush)
    }

    /// The mode's name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Push => "push",
            Mode::Interval(_) => "interval",
            Mode::KeyedStrict => "keyed strict",
            Mode::KeyedPush => "keyed push",
            Mode::Blocking => "blocking",
        }
    }
}

/// How a check's answer stood against its mode's promise, as the reloader
/// said (`gensync::reload::Freshness`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Said {
    /// The generation was read for this check: the strict promise.
    Read,
    /// Answered without a read, vouched by push tracking or by the
    /// interval's last read: the mode's lag.
    Vouched,
    /// The last good settings, the promise not kept (the backend or the
    /// loader failed, or the wait bound ran out). Allowed; counted.
    Stale,
}

/// What a read got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOutcome {
    /// Settings were served: the version of the read's target and, for a
    /// keyed read, the parent's version they were loaded with.
    Served {
        version: u64,
        parent: Option<u64>,
        said: Said,
    },
    /// No settings were served (only a keyed read can fail: a tenant whose
    /// first load failed). `loader` is true when the cause was the loader
    /// (an injected loader fault), false when it was the synchronizer.
    Failed { loader: bool, error: String },
}

/// One check by one reader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    /// The fleet instance (reloader) the reader checks through.
    pub instance: u16,
    pub mode: Mode,
    /// `Global`, or the tenant read (keyed reads).
    pub target: Target,
    pub start: Micros,
    pub end: Micros,
    pub outcome: ReadOutcome,
}

/// What a writer was told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Saved and announced (bumped).
    Ok,
    /// The writers' lease lapsed before the write finished. `saved`: what
    /// `PublishError::saved` said (`Some(false)` refused or never saved,
    /// `Some(true)` the saver reported it saved, `None` unknown).
    LeaseLost { saved: Option<bool> },
    /// Any other failure, with `PublishError::saved` and the message.
    Failed { saved: Option<bool>, error: String },
    /// The writer was killed by the nemesis with the write in flight (at
    /// `end`): it was told nothing. The save may or may not have landed.
    Died,
}

/// One write (an update: load, add one, save under the lease, bump).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub writer: u16,
    pub target: Target,
    pub start: Micros,
    pub end: Micros,
    /// The version the write tried to save (`None`: it never got to
    /// choose one, its load failed or it never held the lease).
    pub version: Option<u64>,
    pub outcome: WriteOutcome,
}

/// One save the fenced store took (`accepted`) or refused for a stale
/// fencing token, in the store's own order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Save {
    pub writer: u16,
    pub target: Target,
    pub at: Micros,
    pub version: u64,
    pub accepted: bool,
}

/// One injected fault: its kind (`"kill -9, restart empty"`,
/// `"SIGSTOP"`, ...), when it began and ended, and what it hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: String,
    pub start: Micros,
    pub end: Micros,
    pub detail: String,
}

/// One entry of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Read(Read),
    Write(Write),
    Save(Save),
    Fault(Fault),
    /// What the store holds for `target` when the run ends.
    Final {
        target: Target,
        version: u64,
    },
    /// The nemesis stopped and everything it broke was healed: from here
    /// (after a grace) every answer is current and every writer writes.
    Healed {
        at: Micros,
    },
}

impl Event {
    /// When the event began (a save's or final state's one instant).
    pub fn start(&self) -> Micros {
        match self {
            Event::Read(r) => r.start,
            Event::Write(w) => w.start,
            Event::Save(s) => s.at,
            Event::Fault(f) => f.start,
            Event::Final { .. } => Micros::MAX,
            Event::Healed { at } => *at,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: Micros| us as f64 / 1000.0;
        match self {
            Event::Read(r) => write!(
                f,
                "{:>10.3}..{:>10.3} ms  read   #{} {} {:?}: {:?}",
                ms(r.start),
                ms(r.end),
                r.instance,
                r.mode.name(),
                r.target,
                r.outcome
            ),
            Event::Write(w) => write!(
                f,
                "{:>10.3}..{:>10.3} ms  write  w{} {:?} v{:?}: {:?}",
                ms(w.start),
                ms(w.end),
                w.writer,
                w.target,
                w.version,
                w.outcome
            ),
            Event::Save(s) => write!(
                f,
                "{:>10.3}             ms  save   w{} {:?} v{} {}",
                ms(s.at),
                s.writer,
                s.target,
                s.version,
                if s.accepted { "accepted" } else { "refused" }
            ),
            Event::Fault(x) => write!(
                f,
                "{:>10.3}..{:>10.3} ms  fault  {} ({})",
                ms(x.start),
                ms(x.end),
                x.kind,
                x.detail
            ),
            Event::Final { target, version } => {
                write!(f, "        end of run  final  {target:?} v{version}")
            }
            Event::Healed { at } => write!(f, "{:>10.3}             ms  healed", ms(*at)),
        }
    }
}

/// Where the run's events go while it runs: one lock, taken for a push.
#[derive(Clone)]
pub struct Recorder {
    began: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            began: Instant::now(),
            events: Arc::new(Mutex::new(Vec::with_capacity(1 << 20))),
        }
    }

    /// Now, in the history's time.
    pub fn now(&self) -> Micros {
        self.at(Instant::now())
    }

    /// `instant` in the history's time.
    pub fn at(&self, instant: Instant) -> Micros {
        instant.saturating_duration_since(self.began).as_micros() as Micros
    }

    /// How long the run has gone.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    pub fn record(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    /// The events so far, in the order they were recorded.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many events so far.
    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Writes `events` as JSON lines.
pub fn write(events: &[Event], out: impl std::io::Write) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(out);
    for event in events {
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a history written by [`write`].
pub fn read(input: impl std::io::BufRead) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("reading the history: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(
            serde_json::from_str(&line)
                .map_err(|e| format!("line {} of the history is not an event: {e}", n + 1))?,
        );
    }
    Ok(events)
}
