//! `rediss://` as it is deployed: a private CA trusted beside the system's
//! roots, a client certificate for servers that ask for one, files checked
//! when the backend is opened, and certificate failures told apart from a
//! server that is down.

#[cfg(feature = "tls")]
use std::path::Path;
use std::path::PathBuf;

use redis::{ConnectionAddr, ConnectionInfo, RedisError, RedisResult};

use crate::error::BackendError;

/// The TLS files a [`RedisConfig`](super::RedisConfig) names: paths only,
/// read by [`Tls::load`] when the backend is opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct TlsFiles {
    /// A PEM file of CA certificates to trust beside the system's roots.
    pub(super) ca: Option<PathBuf>,
    /// A client certificate (PEM, chain allowed) and its private key.
    pub(super) client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// The files, for a message.
    fn describe(&self) -> String {
        let mut named = Vec::new();
        if let Some(ca) = &self.ca {
            named.push(format!("CA file {}", ca.display()));
        }
        if let Some((cert, key)) = &self.client {
            named.push(format!(
                "client certificate {} and key {}",
                cert.display(),
                key.display()
            ));
        }
        named.join(", ")
    }
}

/// The TLS material loaded from [`TlsFiles`], ready for redis' client
/// builders. Nothing when no file was given: redis then trusts the
/// system's roots and sends no client certificate.
#[derive(Clone, Default)]
pub(super) struct Tls {
    #[cfg(feature = "tls")]
    certificates: Option<redis::TlsCertificates>,
    /// What was loaded, for `Debug`: paths, never the key.
    files: TlsFiles,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.files.ca)
            .field("client", &self.files.client)
            .finish()
    }
}

/// Whether redis will dial `info` with TLS.
pub(super) fn uses_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

impl Tls {
    /// Reads and checks `files` now, so a wrong path or a file that is not
    /// what it should be fails when the backend is opened, not at its
    /// first connection. `url_uses_tls` is whether the URL is `rediss://`:
    /// TLS files with any other URL would be ignored, which is refused.
    pub(super) fn load(files: &TlsFiles, url_uses_tls: bool) -> Result<Tls, BackendError> {
        if files.is_empty() {
            return Ok(Tls::default());
        }
        if !url_uses_tls {
            return Err(BackendError::config(format!(
                "TLS files were given ({}), but the Redis URL does not use TLS: write it as \
                 rediss://host:port, with the server's TLS port (its `tls-port`)",
                files.describe()
            )));
        }
        load_files(files)
    }

    /// A client for `info`: with this material when the address is TLS
    /// and there is some, else as redis makes it from the address alone.
    pub(super) fn client(&self, info: ConnectionInfo) -> RedisResult<redis::Client> {
        #[cfg(feature = "tls")]
        if let (Some(certificates), true) = (&self.certificates, uses_tls(&info)) {
            return redis::Client::build_with_tls(info, certificates.clone());
        }
        redis::Client::open(info)
    }

    /// The material in the form redis' Sentinel and Cluster builders take;
    /// `None` when no file was given (the system's roots, no client
    /// certificate).
    #[cfg(feature = "tls")]
    pub(super) fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.certificates.clone()
    }
}

#[cfg(not(feature = "tls"))]
fn load_files(_: &TlsFiles) -> Result<Tls, BackendError> {
    // Unreached: a `rediss://` URL is refused first without the feature.
    Err(BackendError::config(
        "TLS files were given, but gensync was built without its `tls` feature",
    ))
}

#[cfg(feature = "tls")]
fn load_files(files: &TlsFiles) -> Result<Tls, BackendError> {
    use redis::{ClientTlsConfig, TlsCertificates};

    let root_cert = files.ca.as_deref().map(trusted_roots).transpose()?;
    let client_tls = match &files.client {
        Some((cert, key)) => {
            let (client_cert, client_key) = client_pair(cert, key)?;
            Some(ClientTlsConfig {
                client_cert,
                client_key,
            })
        }
        None => None,
    };
    Ok(Tls {
        certificates: Some(TlsCertificates {
            client_tls,
            root_cert,
        }),
        files: files.clone(),
    })
}

/// Reads `path`, for the file named `what` in messages.
#[cfg(feature = "tls")]
fn read(what: &str, path: &Path) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|e| {
        BackendError::config(format!(
            "cannot read the TLS {what} {}: {e}; check the path and that this process may read it",
            path.display()
        ))
    })
}

/// The certificates in a PEM file, at least one.
#[cfg(feature = "tls")]
fn certificates_in(
    what: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, BackendError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            BackendError::config(format!(
                "the TLS {what} {} is not valid PEM ({e}); give the certificate in PEM form \
                 (-----BEGIN CERTIFICATE-----)",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(BackendError::config(format!(
            "the TLS {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----); \
             give the certificate in PEM form (convert DER with `openssl x509 -inform der`)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The PEM redis is handed as its roots: the CA file's certificates and
/// the system's roots. redis' `root_cert` replaces the system's roots
/// rather than adding to them, so they are added here.
#[cfg(feature = "tls")]
fn trusted_roots(ca: &Path) -> Result<Vec<u8>, BackendError> {
    let what = "CA file";
    let certs = certificates_in(what, ca, &read(what, ca)?)?;
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| {
            BackendError::config(format!(
                "the TLS CA file {} holds a certificate that cannot be a trust anchor ({e}); \
                 give the CA certificate that signed the server's certificate",
                ca.display()
            ))
        })?;
    }
    // A system without roots (a bare container) still trusts the CA file;
    // the roots it could read are kept.
    let system = rustls_native_certs::load_native_certs().certs;
    Ok(pem_certificates(certs.iter().chain(&system)))
}

/// DER certificates as one PEM text.
#[cfg(feature = "tls")]
fn pem_certificates<'a>(
    certs: impl Iterator<Item = &'a rustls::pki_types::CertificateDer<'a>>,
) -> Vec<u8> {
    use base64::Engine as _;

    let mut pem = String::new();
    for cert in certs {
        let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        // PEM lines are at most 64 characters; base64 is ASCII.
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

/// The client certificate and key files' contents, once they are known to
/// parse and to belong together.
#[cfg(feature = "tls")]
fn client_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), BackendError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;

    let cert_pem = read("client certificate", cert)?;
    let chain = certificates_in("client certificate", cert, &cert_pem)?;
    let key_pem = read("client key", key)?;
    // The parser's error can quote the file; a key file's text is a secret.
    let parsed = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        BackendError::config(format!(
            "the TLS client key {} holds no PEM private key (-----BEGIN PRIVATE KEY-----, \
             or RSA/EC PRIVATE KEY); give the unencrypted key of the client certificate {}",
            key.display(),
            cert.display()
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, parsed, &provider).map_err(|e| {
        BackendError::config(format!(
            "the TLS client key {} cannot sign for the client certificate {} ({}); give the \
             key the certificate was issued for",
            key.display(),
            cert.display(),
            match e {
                rustls::Error::InconsistentKeys(_) => "it belongs to another certificate".into(),
                other => other.to_string(),
            }
        ))
    })?;
    Ok((cert_pem, key_pem))
}

/// What to check when `e` is a TLS failure (a certificate refused by
/// either side, or a handshake that could not be made), `None` otherwise.
///
/// Read from the error's text: redis wraps rustls' error in an I/O error
/// whose chain does not lead back to it, and the text names the cause
/// (rustls' `CertificateError` and TLS alert names).
pub(super) fn certificate_failure(e: &RedisError) -> Option<String> {
    let text = e.to_string();
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    let advice = if has(&["received fatal alert"]) {
        // The server's verdict, sent as an alert.
        if has(&["CertificateRequired"]) {
            "the server requires a client certificate (`tls-auth-clients yes`): give one \
             with RedisConfig::tls_client_auth or --tls-cert and --tls-key"
        } else if has(&[
            "UnknownCA",
            "BadCertificate",
            "CertificateUnknown",
            "UnsupportedCertificate",
            "CertificateExpired",
            "CertificateRevoked",
            "AccessDenied",
        ]) {
            "the server refused this client's certificate: it must be signed by the CA the \
             server trusts (its `tls-ca-cert-file`), unexpired, and made for client auth"
        } else {
            "the TLS handshake failed: check that the port is the server's `tls-port` and \
             that its `tls-protocols` include TLS 1.2 or 1.3"
        }
    } else if has(&["invalid peer certificate"]) {
        // This client's verdict on the server's certificate.
        if has(&["UnknownIssuer"]) {
            "the server's certificate is not signed by a CA this client trusts: give the CA \
             certificate that signed it (PEM) with RedisConfig::tls_ca_file or --tls-ca"
        } else if has(&["CaUsedAsEndEntity"]) {
            "the server presents a CA (or self-signed) certificate as its own: give the \
             server a certificate signed by a CA (its `tls-cert-file`) and this client that \
             CA with RedisConfig::tls_ca_file or --tls-ca"
        } else if has(&["NotValidForName", "not valid for name"]) {
            "the server's certificate does not name the host in the URL: connect with a name \
             its subjectAltName lists (an IP address needs an IP SAN), or reissue it with \
             that name"
        } else if has(&["Expired", "expired", "NotValidYet", "not valid yet"]) {
            "the server's certificate is expired or not yet valid: renew it, or check this \
             machine's clock"
        } else {
            "the server's certificate was refused: check that it is signed by the CA given \
             with --tls-ca (or a system root), names the host in the URL and is valid now"
        }
    } else if has(&["peer sent no certificates"]) {
        "the server sent no certificate: check that the port is its `tls-port`"
    } else if has(&["received corrupt message", "InvalidContentType"]) {
        "the server did not answer in TLS: is the port in the URL its `tls-port`, not its \
         plain port?"
    } else if has(&["peer is incompatible", "peer misbehaved"]) {
        "the TLS handshake failed: check that the port is the server's `tls-port` and that \
         its `tls-protocols` include TLS 1.2 or 1.3"
    } else {
        return None;
    };
    Some(advice.to_owned())
}
