//! The promises every [`Backend`](crate::backend::Backend) keeps, as a suite a
//! backend's author runs against their own backend.
//!
//! A backend joins the suite through a [`Store`]: a factory of handles as
//! separate processes would hold them, and three ways to reach behind
//! their backs (write raw text at a key, evict it, read its time to live).
//! [`MemoryStore`] and [`RedisStore`] are the crate's own two.
//!
//! Run it as one test per promise, so a failure names the promise it
//! broke, with [`backend_conformance!`](crate::backend_conformance):
//!
//! ```
//! use gensync::testing::conformance::MemoryStore;
//!
//! // In `tests/conformance.rs`: `memory::clear_expires_everyone` and the
//! // others, each a `#[tokio::test]` on a fresh store.
//! gensync::backend_conformance!(memory, MemoryStore::new());
//! # fn main() {}
//! ```
//!
//! or as one call that runs them all, one after another, with [`run`]:
//!
//! ```
//! use gensync::testing::conformance::{self, MemoryStore};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! conformance::run(MemoryStore::new).await;
//! # }
//! ```
//!
//! Each promise is also a public `async fn` taking a [`Store`], to run
//! alone. A few wait out a lease of 600 ms; the whole suite takes a few
//! seconds.

mod promises;
#[cfg(feature = "redis")]
mod redis_store;
mod store;

pub use self::promises::*;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_store::RedisStore;
pub use self::store::{MemoryStore, Store};

/// Calls `$then!` with its own arguments followed by `;` and the name of
/// every promise: the one list the macro and [`run`] both expand.
#[doc(hidden)]
#[macro_export]
macro_rules! __gensync_conformance_promises {
    ($then:ident! { $($args:tt)* }) => {
        $crate::$then! { $($args)* ;
            two_synchronizers_see_each_others_bumps,
            clear_expires_everyone,
            a_key_recreated_at_once_is_still_a_change,
            garbage_reads_expired_and_mark_updated_repairs_it,
            a_refresh_replaces_garbage_too,
            concurrent_creators_agree_on_one_value,
            the_writers_lease_is_owned_by_its_token_and_fences_grow,
            an_intent_alone_is_no_change,
            concurrent_bumps_are_all_counted,
            a_pending_intent_survives_other_bumps,
            a_key_created_while_an_intent_is_pending_lapses_with_it,
            a_writers_own_bump_ends_its_intent,
            a_writers_bump_onto_a_missing_key_ends_its_intent_too
        }
    };
}

/// Expands to a module `$name` with one `#[tokio::test]` per promise of
/// the [conformance suite](crate::testing::conformance), each on a fresh
/// store made by the expression `$store` (evaluated once per test, in the
/// scope of the macro's caller).
///
/// The tests run on a two-thread tokio runtime, through gensync's own
/// tokio: the caller needs no tokio of its own, but must name this crate
/// `gensync`.
///
/// ```
/// use gensync::testing::conformance::MemoryStore;
///
/// gensync::backend_conformance!(memory, MemoryStore::new());
/// # fn main() {}
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
#[macro_export]
macro_rules! backend_conformance {
    ($name:ident, $store:expr $(,)?) => {
        $crate::__gensync_conformance_promises!(__gensync_conformance_tests! { $name, $store });
    };
}

/// The tests [`backend_conformance!`] expands to.
#[doc(hidden)]
#[macro_export]
macro_rules! __gensync_conformance_tests {
    ($name:ident, $store:expr ; $($promise:ident),*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[$crate::testing::__tokio::test(
                    flavor = "multi_thread",
                    worker_threads = 2,
                    crate = "gensync::testing::__tokio"
                )]
                async fn $promise() {
                    $crate::testing::conformance::$promise($store).await;
                }
            )*
        }
    };
}

/// Defines [`run`] over every promise, where the crate invokes it.
#[doc(hidden)]
#[macro_export]
macro_rules! __gensync_conformance_run {
    (; $($promise:ident),*) => {
        /// Runs every promise of the suite, one after another, each on a
        /// fresh store from `store`; panics at the first one broken.
        ///
        /// Some promises spawn tasks: run it inside a multi-thread tokio
        /// runtime.
        pub async fn run<S: Store>(mut store: impl FnMut() -> S) {
            $(
                $promise(store()).await;
            )*
        }
    };
}

crate::__gensync_conformance_promises!(__gensync_conformance_run! {});
