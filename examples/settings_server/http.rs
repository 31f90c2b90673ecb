//! The HTTP side: routes, the write token's check, and answers that tell
//! a client what went wrong in words it can use, while the details
//! (hosts, users, paths, the store's own error text) go to the log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use gensync::reload::{PublishError, Reloader, SettingsReloadLayer, Snapshot};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tower_http::timeout::TimeoutLayer;

use crate::body::{duplicate_key, MAX_BODY};
use crate::files::{kind, Settings};
use crate::ready::{self, Readiness};
use crate::tenants::{self, Tenants};
use crate::token::{self, WriteToken};

/// What the handlers share.
#[derive(Clone)]
pub struct App {
    pub reloader: Reloader<Settings>,
    /// Each tenant's settings, and the directory of their files.
    pub tenants: Tenants,
    pub tenant_dir: PathBuf,
    /// `None`: anyone may write (warned about at start-up beyond loopback).
    pub token: Option<WriteToken>,
    /// How long a `PUT` body may take to arrive, all of it.
    pub body_timeout: Duration,
    /// Numbers the log and a failed `PUT`'s answer share, so an operator
    /// can find the details of what a client was told.
    pub incidents: Arc<AtomicU64>,
    /// What `/readyz` reports: the backend's state and the last load's.
    pub readiness: Readiness,
}

/// The service's routes. Every request is bounded by `request_timeout`
/// (answered 503), a backstop above the body's and the publish's own
/// bounds.
pub fn router(app: App, metrics: PrometheusHandle, request_timeout: Duration) -> Router {
    Router::new()
        .route("/settings", get(get_settings).put(put_settings))
        .layer(SettingsReloadLayer::new(app.reloader.clone()))
        // After that layer: a tenant's request checks its tenant only.
        .route(tenants::ROUTE, tenants::routes(&app))
        // Outside the layer: a probe or a metrics scrape is no settings
        // check (readiness reads the key once, within the backend's bound).
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready::readyz))
        .route("/metrics", get(move || render_metrics(metrics.clone())))
        .layer(middleware::from_fn_with_state(app.clone(), guard_token))
        .with_state(app)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
}

/// `GET /settings`: the settings this request was served, and their
/// generation.
pub async fn get_settings(Extension(snapshot): Extension<Snapshot<Settings>>) -> Json<Value> {
    Json(json!({
        "generation": snapshot.generation().map(|g| g.get()),
        "settings": snapshot.settings(),
    }))
}

/// `PUT /settings`: saves a new settings object and tells every instance.
async fn put_settings(State(app): State<App>, headers: HeaderMap, request: Request) -> Response {
    // Before the body is read: a client without the token costs no more.
    if let Some(refusal) = refuse_without_token(&app, &headers) {
        return refusal;
    }
    let settings = match read_settings_body(&app, request).await {
        Ok(settings) => settings,
        Err(answer) => return answer,
    };
    match app.reloader.publish(settings).await {
        Ok(generation) => {
            tracing::info!(generation = generation.get(), "settings published");
            // Loaded now, so what this instance saved is its last good
            // settings, kept should the file go missing before the next
            // request reloads it.
            let _ = app.reloader.reload_now().await;
            Json(json!({ "generation": generation.get() })).into_response()
        }
        Err(e) => failed_publish(&app, &e, "publishing the settings failed"),
    }
}

/// Counts the writes refused for want of the right token.
pub const UNAUTHORIZED_METRIC: &str = "settings_server_unauthorized_total";

/// Around every write, when the service has a token: two `Authorization`
/// headers are a 400 (proxies and servers disagree on which one counts),
/// and a client (a peer IP) that sent too many wrong tokens is answered
/// 429 with `Retry-After`, before its token is compared.
async fn guard_token(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = app
        .token
        .as_ref()
        .filter(|_| request.method() == Method::PUT)
    else {
        return next.run(request).await;
    };
    if token::ambiguous(request.headers()) {
        return error(
            StatusCode::BAD_REQUEST,
            "send one `Authorization: Bearer <token>` header, not several; nothing was saved"
                .to_owned(),
        );
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let Some(client) = client else {
        return next.run(request).await;
    };
    if let Err(wait) = token.guesses.check(client) {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many wrong write tokens from this address; retry after the time \
             Retry-After gives; nothing was saved"
                .to_owned(),
        );
        // Whole seconds, rounded up: a client that waits that long has a
        // guess again.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return response;
    }
    // Only a token sent counts as a guess: a client that sent none is told
    // how, and has not tried one.
    let guessed = request.headers().contains_key(header::AUTHORIZATION);
    let response = next.run(request).await;
    if guessed && response.status() == StatusCode::UNAUTHORIZED {
        token.guesses.failed(client);
    }
    response
}

/// The 401 a write gets without the right token, when the service has
/// one; `None` when it may go on.
pub fn refuse_without_token(app: &App, headers: &HeaderMap) -> Option<Response> {
    let token = app.token.as_ref()?;
    if token.admits(headers) {
        return None;
    }
    // Counted, for an alert on guessing; the log's rate limit keeps a
    // flood of them to a few lines.
    metrics::counter!(UNAUTHORIZED_METRIC).increment(1);
    tracing::warn!(
        "refused a PUT without the right write token (counted in {UNAUTHORIZED_METRIC})"
    );
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this service needs a write token to change its settings: send \
         `Authorization: Bearer <token>`; nothing was saved"
            .to_owned(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"settings\""),
    );
    Some(response)
}

/// A `PUT`'s body as a settings object, or the answer that says why it is
/// not one (nothing saved).
pub async fn read_settings_body(app: &App, request: Request) -> Result<Settings, Response> {
    // A body announced over the limit is refused at once, not waited for.
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body may take at most {MAX_BODY} bytes; nothing was saved"),
        ));
    }
    // The whole body within its bound: a client trickling a byte now and
    // then would otherwise hold the request open for ever.
    let body = match tokio::time::timeout(app.body_timeout, Bytes::from_request(request, &())).await
    {
        Ok(Ok(body)) => body,
        // 413 for a body over the limit, 400 for one cut off.
        Ok(Err(rejection)) => {
            return Err(error(
                rejection.status(),
                format!("{}; nothing was saved", rejection.body_text()),
            ))
        }
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}; nothing was saved",
                    app.body_timeout
                ),
            ))
        }
    };
    let parsed = serde_json::from_slice::<Value>(&body);
    // serde_json keeps the last of a key named twice; which one the
    // client meant is not for the service to guess.
    if let Some(key) = parsed.as_ref().ok().and_then(|_| duplicate_key(&body)) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "the key {} appears twice in one object; send each key once; nothing was \
                 saved",
                Value::String(key.chars().take(64).collect())
            ),
        ));
    }
    match parsed {
        Ok(Value::Object(settings)) => Ok(settings),
        Ok(other) => Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "the settings must be a JSON object such as {{\"theme\": \"dark\"}}, \
                 not {}; nothing was saved",
                kind(&other)
            ),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "the body is not valid JSON ({e}); send a JSON object such as \
                 {{\"theme\": \"dark\"}}; nothing was saved"
            ),
        )),
    }
}

/// The answer to a failed publish: what happened in the client's terms,
/// under an incident number whose log line (`what`, then the details)
/// holds the rest.
pub fn failed_publish(app: &App, e: &PublishError, what: &str) -> Response {
    let incident = app.incidents.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(incident, "{what}: {e}");
    let (status, message, saved) = publish_failure(e);
    let body = json!({
        "error": format!("{message} (incident {incident} in the service's log)"),
        "saved": saved,
    });
    (status, Json(body)).into_response()
}

/// What a client is told of a failed publish: the status, a message
/// without the service's internals, and whether the settings were saved.
fn publish_failure(e: &PublishError) -> (StatusCode, &'static str, Option<bool>) {
    use StatusCode as S;
    match e {
        PublishError::Locked { .. } => (
            S::SERVICE_UNAVAILABLE,
            "another instance is saving settings right now; nothing was saved; retry shortly",
            Some(false),
        ),
        PublishError::Start(_) | PublishError::Load(_) => (
            S::SERVICE_UNAVAILABLE,
            "the service cannot reach the store it tells other instances through; nothing \
             was saved; retry later",
            Some(false),
        ),
        // The fence refused a writer whose lease lapsed.
        PublishError::Save(_) if e.saved() == Some(false) => (
            S::CONFLICT,
            "a newer change was saved while this one waited; nothing was saved; read the \
             settings and try again",
            Some(false),
        ),
        // This saver replaces the file in one rename: when it fails, the
        // file was not replaced.
        PublishError::Save(_) => (
            S::INTERNAL_SERVER_ERROR,
            "the service could not save its settings file; nothing was saved",
            Some(false),
        ),
        PublishError::LeaseLost { saved: true, .. } => (
            S::SERVICE_UNAVAILABLE,
            "the service stalled while saving: the settings were saved but may have replaced \
             a newer change; check the settings",
            Some(true),
        ),
        PublishError::Bump { .. } => (
            S::SERVICE_UNAVAILABLE,
            "the settings were saved, but other instances could not be told yet; they pick \
             them up shortly, or send them again",
            Some(true),
        ),
        PublishError::LeaseLost { .. } => (
            S::SERVICE_UNAVAILABLE,
            "the service stalled while saving and gave up; check the settings and try again",
            e.saved(),
        ),
        _ => (
            S::INTERNAL_SERVER_ERROR,
            "the settings could not be published",
            e.saved(),
        ),
    }
}

/// `GET /metrics`: the reloader's counters and histograms for Prometheus.
async fn render_metrics(handle: PrometheusHandle) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// A JSON error answer.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
