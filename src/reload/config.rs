//! The settings both builders share: a reloader's bounds, pacing and check
//! mode. [`ReloaderBuilder`](super::ReloaderBuilder) and
//! [`KeyedReloaderBuilder`](crate::keyed::KeyedReloaderBuilder) each set
//! one, and it validates itself, so both refuse the same bounds in the
//! same words.

use std::time::Duration;

use super::backoff::Backoff;
use super::mode::CheckMode;
use crate::error::Error;
use crate::synchronizer::WriteSettings;

/// Bounds and pacing of a [`Reloader`](super::Reloader), set through its
/// builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) max_wait: Duration,
    pub(crate) load_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) write: WriteSettings,
    pub(crate) mode: CheckMode,
    /// The spread window for loads after a change (zero: load at once).
    pub(crate) spread: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_wait: Duration::from_secs(1),
            load_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            write: WriteSettings::default(),
            mode: CheckMode::default(),
            spread: Duration::ZERO,
        }
    }
}

impl Config {
    /// The backoff after a first failed load.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_initial)
    }

    /// Refuses bounds no reloader could keep, saying which.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("max_wait", self.max_wait),
            ("load_timeout", self.load_timeout),
            ("backoff initial", self.backoff_initial),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(Error::Config(format!("{name} must be greater than zero")));
        }
        self.mode.validate()?;
        if !self.spread.is_zero() && self.mode == CheckMode::Strict {
            return Err(Error::Config(format!(
                "spread_loads ({:?}) needs push or interval mode: strict mode answers every \
                 check with settings at least as new as every completed bump, so it cannot put \
                 a load off; choose .mode(CheckMode::Push) or drop spread_loads",
                self.spread
            )));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(Error::Config(format!(
                "the backoff maximum ({:?}) is below its initial pause ({:?})",
                self.backoff_max, self.backoff_initial
            )));
        }
        self.write.validate()
    }
}
