//! Settings kept current in a program with no async runtime: a worker
//! thread, a batch job, a script that runs for a while.
//!
//! `BlockingReloader` brings its own small tokio runtime, so it takes the
//! same synchronizer as async code (over `RedisBackend`, or here the
//! in-memory backend), a loader written as plain blocking code
//! (`blocking_loader`) and a saver too (`blocking_saver`). Code that only
//! reads or bumps a generation, with no settings to hold, uses
//! `BlockingSynchronizer` over `BlockingRedisBackend` instead, as the
//! `gensync` command does.
//!
//! `cargo run --example blocking` (or `-- redis://127.0.0.1:6379`).

use std::path::{Path, PathBuf};

use gensync::backend::Backend;
use gensync::reload::{blocking_loader, blocking_saver, BlockingReloader, Reloader};
use gensync::{Key, MemoryBackend, RedisBackend, Synchronizer};

fn run<B: Backend>(backend: B, file: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::write(file, "batch_size=100")?;
    let (read, write) = (file.to_owned(), file.to_owned());
    let builder = Reloader::builder(
        Synchronizer::new(backend, Key::new(["blocking", "settings"])?),
        blocking_loader(move || std::fs::read_to_string(&read)),
    )
    .saver(blocking_saver(move |settings: &String, _fence| {
        std::fs::write(&write, settings)
    }));
    let reloader = BlockingReloader::new(builder, String::new())?;

    for batch in 1..=2 {
        let settings = reloader.check();
        println!("batch {batch}: working with {}", *settings);
    }
    reloader.publish(String::from("batch_size=500"))?;
    let settings = reloader.check();
    println!("after a change: working with {}", *settings);
    assert_eq!(*settings, "batch_size=500");
    Ok(())
}

fn main() {
    let file: PathBuf =
        std::env::temp_dir().join(format!("gensync-blocking-{}.txt", std::process::id()));
    let result = match std::env::args().nth(1) {
        None => {
            println!("backend: in-memory");
            run(MemoryBackend::new(), &file)
        }
        Some(url) => match RedisBackend::open(&url) {
            Ok(backend) => {
                println!("backend: {}", backend.describe());
                run(backend, &file)
            }
            Err(e) => Err(e.into()),
        },
    };
    let _ = std::fs::remove_file(&file);
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
