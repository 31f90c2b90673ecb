//! What every part of the fault matrix shares: its sizes and margins, the
//! key, small assertion helpers, and the log capture.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gensync::Key;

/// "Processes" in a fleet.
pub const INSTANCES: usize = 3;
/// Requests the load keeps in flight through every fault.
pub const IN_FLIGHT: usize = 64;
/// Slack on top of a bound, for scheduling on a busy 2-core machine.
pub const MARGIN: Duration = Duration::from_millis(250);
/// The settings an instance is built with, before its first load.
pub const INITIAL: u64 = 0;
/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(5);

/// The key every instance of every row synchronizes on.
pub fn key() -> Key {
    Key::new(["fault-matrix", "settings"]).expect("a valid key")
}

/// `Ok` when the promise held, else the broken promise.
pub fn ensure(held: bool, broken: impl FnOnce() -> String) -> Result<(), String> {
    if held {
        Ok(())
    } else {
        Err(broken())
    }
}

/// Polls `done` until it holds, failing with `broken` at the deadline.
pub async fn until(
    within: Duration,
    mut done: impl FnMut() -> bool,
    broken: impl FnOnce() -> String,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            return Err(broken());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

// Logs: one capture for the whole binary, as a process has one subscriber.

/// Every line the binary logged, shared by the subscriber's writers.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<LogCapture> = OnceLock::new();
/// Debug events are captured only while a row asks for them: they cost a
/// line per check, which would skew every other row's latency.
pub static DEBUG_LOGS: AtomicBool = AtomicBool::new(false);

pub fn install_log_capture() {
    use tracing_subscriber::prelude::*;
    let capture = LOGS.get_or_init(LogCapture::default).clone();
    // Dynamic: a plain `filter_fn` decides once per callsite and caches it.
    let filter = tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
        *meta.level() <= tracing::Level::INFO || DEBUG_LOGS.load(SeqCst)
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || capture.clone())
                .with_filter(filter),
        )
        .init();
}

fn log_text() -> String {
    LOGS.get().map(LogCapture::text).unwrap_or_default()
}

/// Where the logs are now, to read what comes after.
pub fn log_mark() -> usize {
    log_text().len()
}

/// What was logged since `mark`.
pub fn logs_since(mark: usize) -> String {
    log_text().get(mark..).unwrap_or_default().to_owned()
}

/// The payload of an injected loader panic, so the panic hook can keep it
/// out of the output while real panics still print.
pub struct InjectedPanic;

pub fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload().is::<InjectedPanic>() {
            default(info);
        }
    }));
}
