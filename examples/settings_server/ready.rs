//! Readiness, `GET /readyz`: whether this instance should be sent traffic,
//! beside `/healthz`, which only says the process answers (liveness).
//!
//! Not ready (503) while Redis refuses this instance's credentials (or its
//! ACL, or the TLS handshake): a configuration only a restart with a fix
//! or a change on the server mends, and meanwhile the instance cannot tell
//! the others of its changes. Not ready either while the last load of the
//! settings failed (or none finished yet): what it serves is not the file.
//! A Redis that does not answer is reported but leaves the instance ready:
//! every instance shares that Redis, so failing them all would turn an
//! outage the service rides out (serving the file) into a total one.
//!
//! The answer names states, not hosts, paths or the store's error text:
//! those are in the log.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gensync::backend::Backend;
use gensync::backend::BackendErrorKind;
use gensync::{BackendError, Key};
use serde_json::json;

use crate::http::App;

/// A read of the settings' key, as the reloader's checks do it.
type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send>> + Send + Sync>;

/// The last load's outcome and a way to ask the backend, shared by the
/// loader and the handler.
#[derive(Clone)]
pub struct Readiness {
    last_load: Arc<Mutex<Load>>,
    probe: Probe,
}

#[derive(Clone, Copy)]
enum Load {
    /// No load has finished yet.
    Pending,
    Succeeded,
    Failed,
}

impl Readiness {
    /// Probes `backend` by reading `key` (`GETRANGE`, which every role's
    /// ACL allows, unlike `PING`).
    pub fn new<B: Backend>(backend: B, key: Key) -> Self {
        let backend = Arc::new(backend);
        let probe: Probe = Arc::new(move || {
            let (backend, key) = (Arc::clone(&backend), key.clone());
            Box::pin(async move { backend.get(&key).await.map(drop) })
        });
        Readiness {
            last_load: Arc::new(Mutex::new(Load::Pending)),
            probe,
        }
    }

    /// Records a load's outcome, and passes it on: the loader's result
    /// goes through here.
    pub fn record<T, E>(&self, loaded: Result<T, E>) -> Result<T, E> {
        let outcome = if loaded.is_ok() {
            Load::Succeeded
        } else {
            Load::Failed
        };
        *self.last_load.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
        loaded
    }

    fn last_load(&self) -> Load {
        *self.last_load.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `GET /readyz`: 200 when ready, 503 when not, with the states and what
/// to do about each in a JSON body.
pub async fn readyz(State(app): State<App>) -> Response {
    let readiness = &app.readiness;
    let mut reasons = Vec::new();
    let mut ready = true;
    let backend = match (readiness.probe)().await {
        Ok(()) => "ok",
        Err(e)
            if matches!(
                e.kind(),
                BackendErrorKind::Auth
                    | BackendErrorKind::Denied
                    | BackendErrorKind::Tls
                    | BackendErrorKind::Config
            ) =>
        {
            ready = false;
            reasons.push(
                "Redis refuses this instance (its credentials, its ACL or the TLS handshake): \
                 fix the configuration as the service's log says",
            );
            "refused"
        }
        Err(_) => {
            reasons.push(
                "Redis does not answer: serving the settings file without telling other \
                 instances of changes (still ready: every instance shares that Redis)",
            );
            "unavailable"
        }
    };
    let last_load = match readiness.last_load() {
        Load::Succeeded => "ok",
        Load::Failed => {
            ready = false;
            reasons.push(
                "the last load of the settings file failed: restore or fix the file as the \
                 service's log says",
            );
            "failed"
        }
        Load::Pending => {
            ready = false;
            reasons.push("the settings have not been loaded yet");
            "pending"
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "backend": backend,
        "last_load": last_load,
        "generation": app.reloader.current().generation().map(|g| g.get()),
        "reasons": reasons,
    });
    (status, Json(body)).into_response()
}
