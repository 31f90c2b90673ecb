//! The synchronizer underneath the reloader, by hand: two "processes"
//! sharing settings through the in-memory backend check, reload and record
//! the generation they saw, and one reloads when the other marks a change.
//! (`Reloader` does all of this for you; see the README's quick start.)
//!
//! `cargo run --example quickstart` (or `-- redis://127.0.0.1:6379` to run
//! it against a Redis server).

use std::sync::{Arc, Mutex};

use gensync::backend::Backend;
use gensync::{GenerationSynchronizer, Key, MemoryBackend, RedisBackend, Synchronizer};

/// The "database": where the settings really live.
type Source = Arc<Mutex<String>>;

/// One process's view: its copy of the settings and its synchronizer.
struct Process<B> {
    name: &'static str,
    sync: Synchronizer<B>,
    settings: String,
}

impl<B: Backend> Process<B> {
    /// What a request handler does first: reload if expired.
    async fn ensure_current(&mut self, source: &Source) -> Result<(), gensync::Error> {
        let check = self.sync.check().await;
        if !check.is_expired() {
            let local = check.local.map_or("none".to_owned(), |g| g.to_string());
            println!(
                "{}: current (generation {local}), settings {:?}",
                self.name, self.settings
            );
            return Ok(());
        }
        // The reload fence: the generation to record is the one seen
        // before loading, so a change during the load is not lost.
        let generation = match check.observed() {
            Some(g) => g,
            None => self.sync.fetch_or_create().await?,
        };
        self.settings = source.lock().unwrap().clone();
        self.sync.record(generation);
        println!(
            "{}: reloaded at generation {generation}, settings {:?}",
            self.name, self.settings
        );
        Ok(())
    }
}

async fn run<B: Backend + Clone>(backend: B) -> Result<(), gensync::Error> {
    let key = Key::new(["quickstart", "settings"])?;
    let source: Source = Arc::new(Mutex::new("theme=light".to_owned()));
    let mut web = Process {
        name: "web",
        sync: Synchronizer::new(backend.clone(), key.clone()),
        settings: String::new(),
    };
    let mut worker = Process {
        name: "worker",
        sync: Synchronizer::new(backend, key),
        settings: String::new(),
    };

    web.ensure_current(&source).await?;
    worker.ensure_current(&source).await?;
    web.ensure_current(&source).await?;

    println!("worker: saving theme=dark, then marking the settings updated");
    *source.lock().unwrap() = "theme=dark".to_owned();
    let bumped = worker.sync.mark_updated().await?;
    println!("worker: shared generation is now {bumped}");

    web.ensure_current(&source).await?;
    worker.ensure_current(&source).await?;
    web.ensure_current(&source).await?;
    assert_eq!(web.settings, "theme=dark");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let result = match std::env::args().nth(1) {
        None => {
            println!("backend: in-memory");
            run(MemoryBackend::new()).await
        }
        Some(url) => match RedisBackend::open(&url) {
            Ok(backend) => {
                println!("backend: {}", backend.describe());
                run(backend).await
            }
            Err(e) => Err(e.into()),
        },
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
