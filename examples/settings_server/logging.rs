//! The service's log: to stderr, where a failed write is dropped (a full
//! disk, a closed pipe, a closed descriptor must not end the process or a
//! request), and where each log statement gets at most [`BURST`] lines
//! per [`WINDOW`], the rest counted and reported in one line, so a client
//! that repeats a request cannot fill the disk through the log.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::Metadata;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// How many lines one log statement may write per [`WINDOW`].
pub const BURST: u32 = 10;
/// The window [`BURST`] counts over, and how often the lines held back are
/// reported.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Stderr, with write errors swallowed: `tracing-subscriber` reports a
/// failed write with `eprintln!`, which panics when stderr itself fails.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Dropped, not retried: a log line is not worth a stuck request.
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Installs the subscriber (`RUST_LOG`, default `info`) and returns the
/// rate limit, for [`RateLimit::report`].
pub fn init() -> RateLimit {
    let limit = RateLimit::default();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(|| Stderr)
                .with_ansi(io::stderr().is_terminal())
                // The writer never fails; should it, still no eprintln.
                .log_internal_errors(false)
                // Counted only once the level filter let a line through.
                .with_filter(filter.and(limit.clone())),
        )
        .init();
    limit
}

/// Lets [`BURST`] lines per [`WINDOW`] through for each log statement (its
/// callsite), counting the rest.
#[derive(Clone, Default)]
pub struct RateLimit(Arc<Mutex<HashMap<Identifier, Site>>>);

struct Site {
    /// The statement's target and place, for its report.
    target: String,
    from: String,
    began: Instant,
    passed: u32,
    suppressed: u64,
}

impl RateLimit {
    fn sites(&self) -> MutexGuard<'_, HashMap<Identifier, Site>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one line per log statement whose lines were held back since
    /// its last report; called every [`WINDOW`] and at exit.
    pub fn report(&self) {
        let lines: Vec<String> = self
            .sites()
            .values_mut()
            .filter(|site| site.suppressed > 0)
            .map(|site| {
                let count = std::mem::take(&mut site.suppressed);
                summary(site, count)
            })
            .collect();
        for line in lines {
            let _ = Stderr.write_all(line.as_bytes());
        }
    }

    /// Reports every [`WINDOW`], for as long as the runtime runs.
    pub fn report_periodically(&self) {
        let limit = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WINDOW);
            every.tick().await;
            loop {
                every.tick().await;
                limit.report();
            }
        });
    }

    fn admit(&self, metadata: &Metadata<'_>) -> bool {
        let now = Instant::now();
        let mut sites = self.sites();
        let site = sites.entry(metadata.callsite()).or_insert_with(|| Site {
            target: metadata.target().to_owned(),
            from: match (metadata.file(), metadata.line()) {
                (Some(file), Some(line)) => format!("{file}:{line}"),
                _ => metadata.name().to_owned(),
            },
            began: now,
            passed: 0,
            suppressed: 0,
        });
        if now.duration_since(site.began) >= WINDOW {
            site.began = now;
            site.passed = 0;
        }
        if site.passed < BURST {
            site.passed += 1;
            true
        } else {
            site.suppressed += 1;
            false
        }
    }
}

/// The report of `count` lines held back from `site`, formatted as the
/// fmt layer formats its lines. Written directly, not logged: it is
/// written from the filter, where tracing drops nested events.
fn summary(site: &Site, count: u64) -> String {
    let mut time = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut time));
    format!(
        "{time}  WARN {}: {count} similar log lines suppressed (more than {BURST} per {WINDOW:?} \
         from {})\n",
        site.target, site.from
    )
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        // Spans pass: only events write lines.
        !metadata.is_event() || self.admit(metadata)
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked again for every event, never cached.
        Interest::sometimes()
    }
}
