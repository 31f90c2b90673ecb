//! A runtime a test can stall: one thread, held by a blocking task until
//! the test lets go. What was spawned there (push mode's tracking session,
//! its connection, its timeouts) then runs nothing at all, while the
//! test's own runtime goes on.

use std::marker::PhantomData;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A one-thread runtime on a thread of its own.
pub struct Stallable {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Holds a [`Stallable`]'s thread until dropped.
pub struct Stall<'a> {
    _release: std::sync::mpsc::Sender<()>,
    _runtime: PhantomData<&'a Stallable>,
}

impl Stallable {
    pub fn new() -> Self {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            handle_tx.send(runtime.handle().clone()).unwrap();
            runtime.block_on(async {
                let _ = stopped.await;
            });
        });
        Stallable {
            handle: handle_rx.recv().expect("the runtime's handle"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where to spawn what is to be stalled.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Returns once the runtime's thread is held; it stays held until the
    /// [`Stall`] is dropped.
    pub async fn stall(&self) -> Stall<'_> {
        let (held, is_held) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        self.handle.spawn(async move {
            let _ = held.send(());
            // Blocks the runtime's only thread: nothing else runs there.
            let _ = released.recv();
        });
        is_held.await.expect("the stalling task ran");
        Stall {
            _release: release,
            _runtime: PhantomData,
        }
    }
}

impl Drop for Stallable {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
