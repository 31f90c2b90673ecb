//! Certificates for a TLS redis-server, made with the `openssl` command in
//! a temporary directory: a private CA, as a self-hosted Redis has; and
//! how the launchers' servers listen ([`Transport`]): plain TCP, or TLS
//! only.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `openssl req` arguments for a new, unencrypted P-256 key.
const NEW_KEY: [&str; 5] = [
    "-nodes",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
];

/// A private CA and certificates it signed, in a temporary directory
/// removed when dropped. Made with the `openssl` command (on `PATH`, or at
/// `$OPENSSL`), with P-256 keys:
///
/// - [`ca`](Self::ca): the CA, which the server also trusts for clients;
/// - [`server_cert`](Self::server_cert) and [`server_key`](Self::server_key):
///   for `127.0.0.1` (an IP SAN) and `localhost`;
/// - [`misnamed_cert`](Self::misnamed_cert): signed by the CA for the same
///   key, but naming only `elsewhere.invalid`;
/// - [`client_cert`](Self::client_cert) and [`client_key`](Self::client_key):
///   a client certificate the CA signed;
/// - [`other_ca`](Self::other_ca), and [`stranger_cert`](Self::stranger_cert)
///   with [`stranger_key`](Self::stranger_key): an unrelated CA and a client
///   certificate it signed.
///
/// ```no_run
/// use gensync::testing::{RedisServer, TlsCerts};
///
/// let certs = TlsCerts::generate().expect("openssl on PATH");
/// // `true`: the server requires a client certificate.
/// let server = RedisServer::start_tls(certs.redis_args(true)).unwrap();
/// let url = server.tls_url().unwrap(); // rediss://127.0.0.1:<port>
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct TlsCerts {
    dir: tempfile::TempDir,
}

impl TlsCerts {
    /// Makes the CAs, keys and certificates.
    pub fn generate() -> io::Result<Self> {
        let certs = TlsCerts {
            dir: tempfile::Builder::new().prefix("gensync-tls-").tempdir()?,
        };
        certs.ca_named("ca", "gensync test CA")?;
        certs.ca_named("other-ca", "unrelated test CA")?;
        let server = "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
                      extendedKeyUsage=serverAuth\n";
        certs.signed("server", "ca", "localhost", server, None)?;
        let misnamed = "subjectAltName=DNS:elsewhere.invalid\nextendedKeyUsage=serverAuth\n";
        certs.signed(
            "misnamed",
            "ca",
            "elsewhere.invalid",
            misnamed,
            Some("server"),
        )?;
        let client = "extendedKeyUsage=clientAuth\n";
        certs.signed("client", "ca", "gensync client", client, None)?;
        certs.signed("stranger", "other-ca", "stranger", client, None)?;
        Ok(certs)
    }

    /// The private CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// The server's certificate, for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.crt")
    }

    /// The server's private key.
    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }

    /// A certificate for the server's key that names only
    /// `elsewhere.invalid`: a server using it does not match its URL.
    pub fn misnamed_cert(&self) -> PathBuf {
        self.path("misnamed.crt")
    }

    /// A client certificate the private CA signed.
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.crt")
    }

    /// The client certificate's private key (PKCS#8 PEM).
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    /// A CA unrelated to the server's.
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.crt")
    }

    /// A client certificate the unrelated CA signed.
    pub fn stranger_cert(&self) -> PathBuf {
        self.path("stranger.crt")
    }

    /// The stranger certificate's private key.
    pub fn stranger_key(&self) -> PathBuf {
        self.path("stranger.key")
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// redis-server arguments for the server certificate, trusting the
    /// private CA for clients, and requiring a client certificate when
    /// `require_client_cert` (`--tls-auth-clients yes`).
    pub fn redis_args(&self, require_client_cert: bool) -> Vec<String> {
        let auth = if require_client_cert { "yes" } else { "no" };
        vec![
            "--tls-cert-file".into(),
            arg(self.server_cert()),
            "--tls-key-file".into(),
            arg(self.server_key()),
            "--tls-ca-cert-file".into(),
            arg(self.ca()),
            "--tls-auth-clients".into(),
            auth.into(),
        ]
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// How the servers of a topology listen when they speak only TLS:
    /// [`redis_args`](Self::redis_args), their own connections to each
    /// other (replication, the cluster bus, a sentinel's) over TLS with
    /// the client certificate, and the launcher's connections trusting
    /// the private CA and presenting the client certificate.
    #[cfg(feature = "tls")]
    pub(super) fn transport(&self, require_client_cert: bool) -> io::Result<Transport> {
        let mut server_args = self.redis_args(require_client_cert);
        server_args.extend([
            "--tls-replication".into(),
            "yes".into(),
            "--tls-cluster".into(),
            "yes".into(),
            // Else a server presents its own certificate, made for server
            // auth only, which a peer requiring client certificates refuses.
            "--tls-client-cert-file".into(),
            arg(self.client_cert()),
            "--tls-client-key-file".into(),
            arg(self.client_key()),
        ]);
        let cli_args = vec![
            "--tls".into(),
            "--cacert".into(),
            arg(self.ca()),
            "--cert".into(),
            arg(self.client_cert()),
            "--key".into(),
            arg(self.client_key()),
        ];
        let admin = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(self.client_cert())?,
                client_key: std::fs::read(self.client_key())?,
            }),
            root_cert: Some(std::fs::read(self.ca())?),
        };
        Ok(Transport::Tls(Box::new(TlsTransport {
            server_args,
            cli_args,
            admin,
        })))
    }

    /// A self-signed CA, `name.crt` and `name.key`.
    fn ca_named(&self, name: &str, common_name: &str) -> io::Result<()> {
        let (key, crt, subject) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("/CN={common_name}"),
        );
        let mut args = vec!["req", "-x509", "-new"];
        args.extend(NEW_KEY);
        args.extend([
            "-keyout", &key, "-out", &crt, "-days", "3650", "-subj", &subject,
        ]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        self.openssl(&args)
    }

    /// `name.crt` signed by the CA `ca` with the extensions `ext`, for a
    /// new key `name.key`, or for `key_of`'s key when given.
    fn signed(
        &self,
        name: &str,
        ca: &str,
        common_name: &str,
        ext: &str,
        key_of: Option<&str>,
    ) -> io::Result<()> {
        let subject = format!("/CN={common_name}");
        let csr = format!("{name}.csr");
        let key = format!("{}.key", key_of.unwrap_or(name));
        let mut args = vec!["req", "-new"];
        match key_of {
            Some(_) => args.extend(["-key", &key]),
            None => {
                args.extend(NEW_KEY);
                args.extend(["-keyout", &key]);
            }
        }
        args.extend(["-out", &csr, "-subj", &subject]);
        self.openssl(&args)?;
        let ext_file = format!("{name}.ext");
        std::fs::write(
            self.path(&ext_file),
            format!("basicConstraints=critical,CA:FALSE\n{ext}"),
        )?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            &ext_file,
            "-out",
            &format!("{name}.crt"),
        ])
    }

    /// Runs `openssl args` in the directory; its output is shown only when
    /// it fails.
    fn openssl(&self, args: &[&str]) -> io::Result<()> {
        let binary = std::env::var_os("OPENSSL").unwrap_or_else(|| "openssl".into());
        let output = Command::new(&binary)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "could not run {}: {e}; install it (apt-get install openssl) or set \
                         OPENSSL to its path",
                        binary.to_string_lossy()
                    ),
                )
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }
}

/// `path` as a command-line argument.
fn arg(path: PathBuf) -> String {
    path.to_string_lossy().into_owned()
}

/// How a launcher's server listens, and how the launcher reaches it.
#[derive(Clone, Debug, Default)]
pub(super) enum Transport {
    /// A plain TCP port.
    #[default]
    Plain,
    /// A TLS port only (`--port 0`), so nothing can fall back to plain
    /// TCP unseen.
    #[cfg(feature = "tls")]
    Tls(Box<TlsTransport>),
}

/// What [`Transport::Tls`] needs: the servers' arguments, `redis-cli`'s,
/// and the certificates of the launcher's own connections.
#[cfg(feature = "tls")]
#[derive(Clone, Debug)]
pub(super) struct TlsTransport {
    server_args: Vec<String>,
    cli_args: Vec<String>,
    admin: redis::TlsCertificates,
}

impl Transport {
    /// Whether the server listens only for TLS.
    pub(super) fn is_tls(&self) -> bool {
        !matches!(self, Transport::Plain)
    }

    /// The URL scheme of a server listening so: `redis` or `rediss`.
    pub(super) fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// `redis-server` arguments for this transport, but its ports.
    pub(super) fn server_args(&self) -> &[String] {
        match self {
            Transport::Plain => &[],
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &tls.server_args,
        }
    }

    /// `redis-cli` arguments to reach a server listening so.
    pub(super) fn cli_args(&self) -> &[String] {
        match self {
            Transport::Plain => &[],
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &tls.cli_args,
        }
    }

    /// A client for `url`, a server listening so, trusting the private CA
    /// when it is TLS.
    pub(super) fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match self {
            Transport::Plain => redis::Client::open(url),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => redis::Client::build_with_tls(url, tls.admin.clone()),
        }
    }
}
