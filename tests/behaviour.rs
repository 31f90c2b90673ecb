//! The backend conformance suite (`gensync::testing::conformance`), run on
//! the memory backend and on a real redis-server (one per test): one test
//! per promise, `memory::NAME` and `redis::NAME`.

use gensync::testing::conformance::MemoryStore;
#[cfg(feature = "redis")]
use gensync::testing::conformance::RedisStore;

gensync::backend_conformance!(memory, MemoryStore::new());
#[cfg(feature = "redis")]
gensync::backend_conformance!(redis, RedisStore::new());
