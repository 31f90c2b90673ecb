//! A small TCP proxy between the fleet's clients and a single Redis, so
//! the nemesis can slow the network down and cut it: latency added to
//! every chunk each way, every open connection dropped at once, new
//! connections refused for a while.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the proxy waits for the server to accept a connection before
/// it drops the client's.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the controls change and every connection reads.
struct State {
    upstream: SocketAddr,
    /// Latency added to each chunk each way, in microseconds.
    latency_us: AtomicU64,
    /// While true, new connections are closed at once.
    refusing: AtomicBool,
    /// Bumped by [`Proxy::cut`]: every connection alive ends when it
    /// changes.
    cuts: watch::Sender<u64>,
}

/// A proxy listening on `127.0.0.1:0`, forwarding to one server; stopped
/// (listener and every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `upstream`, on the current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            latency_us: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            cuts: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(Proxy {
            addr,
            state,
            accept,
        })
    }

    /// The address clients dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds `latency` to every chunk forwarded, each way, from now on
    /// (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_us
            .store(latency.as_micros() as u64, SeqCst);
    }

    /// Drops every open connection now.
    pub fn cut(&self) {
        self.state.cuts.send_modify(|n| *n += 1);
    }

    /// While `refuse` is true, new connections are closed as soon as they
    /// are accepted.
    pub fn refuse(&self, refuse: bool) {
        self.state.refusing.store(refuse, SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // Out of descriptors and the like: try again shortly rather
            // than spin or stop serving.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if state.refusing.load(SeqCst) {
            drop(client);
            continue;
        }
        tokio::spawn(serve(client, state.clone()));
    }
}

/// Forwards one connection until either side closes or the proxy cuts it;
/// then both are dropped.
async fn serve(client: TcpStream, state: Arc<State>) {
    // Subscribed before connecting, so a cut during the connect counts.
    let mut cuts = state.cuts.subscribe();
    let server =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(state.upstream)).await {
            Ok(Ok(server)) => server,
            _ => return,
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::select! {
        _ = pump(&mut client_read, &mut server_write, &state) => {}
        _ = pump(&mut server_read, &mut client_write, &state) => {}
        _ = cuts.changed() => {}
    }
}

/// Copies chunks from `from` to `to`, each after the latency set now,
/// until either side closes or fails.
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    state: &State,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = state.latency_us.load(SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `msg` and reads the echo back.
    async fn round_trip(conn: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        conn.write_all(msg).await?;
        let mut back = vec![0; msg.len()];
        conn.read_exact(&mut back).await?;
        Ok(back)
    }

    /// Whether the peer closed `conn`: a read returns end of file or an
    /// error (a reset) within a second.
    async fn closed(conn: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn proxy_forwards_and_adds_latency_each_way() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut conn, b"ping").await.unwrap(), b"ping");
        let fast = Instant::now();
        round_trip(&mut conn, b"ping").await.unwrap();
        let fast = fast.elapsed();

        proxy.set_latency(Duration::from_millis(100));
        let slow = Instant::now();
        assert_eq!(round_trip(&mut conn, b"pong").await.unwrap(), b"pong");
        let slow = slow.elapsed();
        // 100 ms to the server, 100 ms back.
        assert!(slow >= Duration::from_millis(200), "{slow:?}");
        assert!(fast < Duration::from_millis(100), "{fast:?}");

        proxy.set_latency(Duration::ZERO);
        let again = Instant::now();
        round_trip(&mut conn, b"ping").await.unwrap();
        assert!(again.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn proxy_cut_closes_every_open_connection() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut a, b"a").await.unwrap();
        round_trip(&mut b, b"b").await.unwrap();
        proxy.cut();
        assert!(closed(&mut a).await, "a survived the cut");
        assert!(closed(&mut b).await, "b survived the cut");
        // A new connection after the cut works.
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut c, b"c").await.unwrap(), b"c");
    }

    #[tokio::test]
    async fn proxy_refuses_new_connections_while_told_and_keeps_old_ones() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut old, b"x").await.unwrap();
        proxy.refuse(true);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(closed(&mut refused).await, "a new connection was served");
        assert_eq!(round_trip(&mut old, b"y").await.unwrap(), b"y");
        proxy.refuse(false);
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut new, b"z").await.unwrap(), b"z");
    }
}
