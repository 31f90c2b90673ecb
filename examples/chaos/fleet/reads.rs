//! The readers: each check through `answer`, recorded with what it said.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use gensync::keyed::KeyedError;
use gensync::reload::{Answer, BlockingReloader, CheckMode, Freshness};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::loader::{plain, LoaderFaults, Tenant};
use super::settings::{backend, INITIAL};
use super::store::Db;
use crate::history::{Event, Micros, Mode, Read, ReadOutcome, Recorder, Said, Target};

/// A reader's pause between checks: a few milliseconds, so a run of an
/// hour records a few million reads.
pub(super) async fn pace(rng: &mut StdRng) {
    let ms = rng.random_range(3..12);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn said(freshness: Freshness) -> Said {
    match freshness {
        Freshness::Read => Said::Read,
        Freshness::Vouched => Said::Vouched,
        _ => Said::Stale,
    }
}

pub(super) fn record_plain(
    recorder: &Recorder,
    instance: u16,
    mode: Mode,
    start: Micros,
    answer: &Answer<u64>,
) {
    recorder.record(Event::Read(Read {
        instance,
        mode,
        target: Target::Global,
        start,
        end: recorder.now(),
        outcome: ReadOutcome::Served {
            version: *answer.snapshot,
            parent: None,
            said: said(answer.freshness),
        },
    }));
}

pub(super) fn record_keyed(
    recorder: &Recorder,
    instance: u16,
    mode: Mode,
    tenant: u16,
    start: Micros,
    answer: Result<Answer<Tenant>, KeyedError>,
) {
    let end = recorder.now();
    let outcome = match answer {
        Ok(answer) => ReadOutcome::Served {
            version: answer.snapshot.0,
            parent: Some(answer.snapshot.1),
            said: said(answer.freshness),
        },
        Err(error) => ReadOutcome::Failed {
            // A tenant whose first load failed: the loader's doing (here,
            // only the nemesis makes it fail, hang or panic).
            loader: matches!(error, KeyedError::Unavailable { .. }),
            error: error.to_string(),
        },
    };
    recorder.record(Event::Read(Read {
        instance,
        mode,
        target: Target::Tenant(tenant),
        start,
        end,
        outcome,
    }));
}

pub(super) fn blocking_reader(
    url: &str,
    db: &Arc<Db>,
    faults: &Arc<LoaderFaults>,
    instance: u16,
    recorder: &Recorder,
    stop: &AtomicBool,
    seed: u64,
) {
    let built = backend(url).and_then(|backend| {
        BlockingReloader::new(plain(db, faults, backend, CheckMode::Strict), INITIAL)
            .map_err(|e| format!("the blocking reloader: {e}"))
    });
    let reloader = match built {
        Ok(reloader) => reloader,
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2);
        }
    };
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(SeqCst) {
        let start = recorder.now();
        let answer = reloader.answer();
        record_plain(recorder, instance, Mode::Blocking, start, &answer);
        std::thread::sleep(Duration::from_millis(rng.random_range(3..12)));
    }
}
