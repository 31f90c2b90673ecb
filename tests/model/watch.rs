//! Watching the writers' processes' backends for when each lease is let
//! go, and how far the store's fencing tokens had gone by then: a write
//! runs on a task of its own, so its caller may hear `Ok` after the next
//! writer already took the lease and saved, and only the release tells
//! what the write itself saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gensync::backend::Fence;
use gensync::testing::{Answer, Call, Observer};
use gensync::{BackendError, Generation};

use super::world::World;

/// Per lease (by its fencing token): the greatest token the store had
/// accepted when the lease was released.
#[derive(Default)]
pub struct Releases {
    tokens: Mutex<HashMap<Generation, Fence>>,
    at_release: Mutex<HashMap<Fence, Fence>>,
}

impl Releases {
    /// The greatest accepted token when the lease with `fence` was let go,
    /// if its release got through.
    pub fn top_at_release(&self, fence: Fence) -> Option<Fence> {
        self.at_release.lock().unwrap().get(&fence).copied()
    }
}

/// Notes leases taken and released in the world's [`Releases`], as a
/// [`FaultyBackend`](gensync::testing::FaultyBackend)'s observer.
pub struct Watch(pub Arc<World>);

#[async_trait]
impl Observer for Watch {
    async fn answered(&self, call: Call<'_>, answer: Result<&Answer, &BackendError>) {
        let releases = &self.0.releases;
        match (call, answer) {
            (Call::Lock { token, .. }, Ok(Answer::Lease(Some(fence)))) => {
                releases.tokens.lock().unwrap().insert(token, *fence);
            }
            (Call::Unlock { token, .. }, Ok(_)) => {
                let fence = releases.tokens.lock().unwrap().get(&token).copied();
                if let Some(fence) = fence {
                    let top = self.0.top_fence();
                    releases.at_release.lock().unwrap().insert(fence, top);
                }
            }
            _ => {}
        }
    }
}
