//! Tenants: one settings object per tenant, in its own file
//! `<dir>/<id>.json`, with its own generation (a member of the set key
//! `<--key>:tenants`), reloaded by every instance when any instance saves
//! it. Bumping the set key itself reloads every tenant.
//!
//! A tenant exists while its file does: `GET` of a tenant without one is
//! a 404 (checked before anything is loaded, so no instance remembers the
//! miss, and a tenant another instance just created is served at once),
//! and `PUT` creates it. Its file is saved exactly as the settings file
//! is (the fenced atomic writer of `files.rs`), with `<id>.json.fence`
//! and `<id>.json.lock` beside it: an id holds no dot, so no tenant's
//! file can be another's companion. Unlike the settings file, these are
//! regular files in the folder: a symlink there (dangling or not) is
//! refused, neither read nor written through, so whoever can plant one
//! cannot have the service create or overwrite another file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use gensync::backend::{Backend, Fence};
use gensync::keyed::{KeyRejection, KeyedError, KeyedReloadLayer, KeyedReloader};
use gensync::reload::{BoxError, CheckMode};
use gensync::{Key, KeyError};
use serde_json::json;

use crate::companions::refuse_link;
use crate::files::{encode, read_settings, save_fenced_no_links, Settings};
use crate::http::{
    error, failed_publish, get_settings, read_settings_body, refuse_without_token, App,
};

/// The tenants' settings, by tenant id.
pub type Tenants = KeyedReloader<String, Settings>;

/// The longest tenant id.
pub const MAX_ID: usize = 64;

/// Where the tenant routes live: `/tenants/<id>/settings`. One catch-all
/// route, so every malformed path under it (an empty id, an id holding a
/// `/`) gets the same clear 400 as any other bad id.
pub const ROUTE: &str = "/tenants/{*rest}";
const PREFIX: &str = "/tenants/";
const SUFFIX: &str = "/settings";

/// The set key of the tenants of the service whose own key is `key`:
/// `<key>:tenants`.
pub fn set_key(key: &str) -> Result<Key, KeyError> {
    Key::parse(&format!("{key}:tenants"))
}

/// The tenant directory used when `--tenants` is not given: `tenants/`
/// beside the settings file.
pub fn default_dir(settings: &Path) -> PathBuf {
    match settings.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("tenants"),
        _ => PathBuf::from("tenants"),
    }
}

/// A tenant's file.
pub fn file_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Why `id` is no tenant id, if it is not one: 1 to [`MAX_ID`] ASCII
/// letters, digits, `_` or `-`, taken as sent (a percent-escape is not
/// decoded: no valid id needs one).
pub fn check_id(id: &str) -> Result<(), String> {
    let rule = format!(
        "a tenant id is 1 to {MAX_ID} ASCII letters, digits, `_` or `-`, sent without \
         percent-escapes"
    );
    if id.is_empty() {
        return Err(format!("the tenant id is empty: {rule}"));
    }
    if id.len() > MAX_ID {
        return Err(format!("the tenant id is {} bytes long: {rule}", id.len()));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "the tenant id holds a character not allowed: {rule}"
        ));
    }
    Ok(())
}

/// The tenant a path names (`/tenants/<id>/settings`, as sent), or the
/// answer to give instead: 404 for a path that is no tenant route, 400 for
/// a bad id. Nothing is read for either.
pub fn tenant_of(path: &str) -> Result<String, KeyRejection> {
    let id = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .ok_or_else(|| {
            KeyRejection::not_found(
                "no such route: a tenant's settings are at /tenants/<id>/settings",
            )
        })?;
    check_id(id)
        .map_err(|e| KeyRejection::bad_request(format!("{e}; nothing was read or saved")))?;
    Ok(id.to_owned())
}

/// Builds the tenants' keyed reloader over `backend`: the loader reads
/// `<dir>/<id>.json`, the saver writes it with the fenced atomic writer.
pub fn build(
    backend: impl Backend + 'static,
    set: Key,
    dir: &Path,
    mode: CheckMode,
    capacity: u64,
) -> Result<Tenants, String> {
    let read_from = Arc::new(dir.to_owned());
    let write_to = Arc::clone(&read_from);
    KeyedReloader::builder(
        backend,
        set,
        |id: &String| id.clone(),
        move |id: String| {
            let path = file_of(&read_from, &id);
            async move {
                tokio::task::spawn_blocking(move || {
                    // Not read through a link: it could serve any file.
                    refuse_link(&path).map_err(|e| e.to_string())?;
                    read_settings(&path)
                })
                .await
                .map_err(|e| format!("the read task stopped: {e}"))?
            }
        },
    )
    .saver(move |id: String, settings: &Settings, fence: Fence| {
        let dir = Arc::clone(&write_to);
        let bytes = encode(settings);
        async move {
            let bytes = bytes.map_err(|e| format!("could not serialise the settings: {e}"))?;
            tokio::task::spawn_blocking(move || {
                // The first tenant's save makes the directory: a service
                // with no tenants leaves nothing beside its settings file.
                std::fs::create_dir_all(&*dir).map_err(|e| {
                    format!(
                        "could not create the tenants' directory {}: {e}",
                        dir.display()
                    )
                })?;
                save_fenced_no_links(&file_of(&dir, &id), &bytes, fence)
            })
            .await
            .map_err(|e| BoxError::from(format!("the write task stopped: {e}")))?
        }
    })
    .mode(mode)
    .capacity(capacity)
    .build()
    .map_err(|e| e.to_string())
}

/// The tenant routes' handlers: `GET` through the keyed middleware (the
/// key from the path; a tenant without a file is a 404), `PUT` as `PUT
/// /settings` is, on the tenant's file. Every answer is JSON.
pub fn routes(app: &App) -> MethodRouter<App> {
    let dir = Arc::new(app.tenant_dir.clone());
    let key = move |request: &Request| {
        let id = tenant_of(request.uri().path())?;
        // A stat of a local file, on the request's thread: cheaper than
        // handing it to the blocking pool.
        if file_of(&dir, &id).is_file() {
            Ok(id)
        } else {
            Err(KeyRejection::not_found(format!(
                "there is no tenant {id:?}: PUT its settings to create it"
            )))
        }
    };
    let layer = KeyedReloadLayer::new(app.tenants.clone(), key);
    get(get_settings.layer(layer))
        .put(put_tenant)
        .layer(axum::middleware::map_response(as_json))
}

/// `PUT /tenants/<id>/settings`: saves the tenant's settings (creating
/// the tenant) and tells every instance. The write token is checked first,
/// so a client without it learns nothing, not even whether an id is valid.
async fn put_tenant(State(app): State<App>, headers: HeaderMap, request: Request) -> Response {
    if let Some(refusal) = refuse_without_token(&app, &headers) {
        return refusal;
    }
    let id = match tenant_of(request.uri().path()) {
        Ok(id) => id,
        Err(rejection) => return error(rejection.status(), rejection.message().to_owned()),
    };
    let settings = match read_settings_body(&app, request).await {
        Ok(settings) => settings,
        Err(answer) => return answer,
    };
    match app.tenants.publish(&id, settings).await {
        Ok(generation) => {
            tracing::info!(tenant = %id, generation = generation.get(), "tenant settings published");
            // Loaded now, so what this instance saved is the tenant's last
            // good settings (as for `PUT /settings`).
            if let Ok(reloader) = app.tenants.reloader(&id).await {
                let _ = reloader.reload_now().await;
            }
            Json(json!({ "generation": generation.get() })).into_response()
        }
        Err(KeyedError::Publish(e)) => {
            failed_publish(&app, &e, &format!("publishing tenant {id:?} failed"))
        }
        // The id was checked, so no key can be refused; said all the same.
        Err(e) => {
            tracing::warn!(tenant = %id, "publishing a tenant's settings failed: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the tenant's settings could not be published; nothing was saved; retry later"
                    .to_owned(),
            )
        }
    }
}

/// The keyed middleware answers in plain text (a rejected key, a tenant
/// that could not be loaded): here, as every other answer of the service,
/// a JSON `{"error": ...}`, its status and `Retry-After` kept.
async fn as_json(response: Response) -> Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if response.status().is_success() || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The middleware's own short messages; a longer body is not one.
    let text = to_bytes(body, 4096).await.unwrap_or_default();
    let mut answer = error(parts.status, String::from_utf8_lossy(&text).into_owned());
    if let Some(retry) = parts.headers.get(header::RETRY_AFTER) {
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, retry.clone());
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_id_names_a_tenant() {
        assert_eq!(tenant_of("/tenants/acme_2-b/settings").unwrap(), "acme_2-b");
        let longest = "a".repeat(MAX_ID);
        assert_eq!(
            tenant_of(&format!("/tenants/{longest}/settings")).unwrap(),
            longest
        );
        for bad in ["", "a.b", "..", "..%2F..", "%41", "a/b", "a b", "é"] {
            let rejection = tenant_of(&format!("/tenants/{bad}/settings")).unwrap_err();
            assert_eq!(rejection.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let too_long = "a".repeat(MAX_ID + 1);
        let rejection = tenant_of(&format!("/tenants/{too_long}/settings")).unwrap_err();
        assert!(rejection.message().contains("65 bytes"), "{rejection:?}");
        let elsewhere = tenant_of("/tenants/acme").unwrap_err();
        assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
    }
}
