//! Connections: clients that send nothing, half a header, a trickle, or
//! too much; hundreds of silent connections under a low file limit; a
//! closed stdout.

use std::io::Write;
use std::net::TcpStream;

use super::*;

/// A raw connection to the instance, made within 5 s (a listener that
/// stopped accepting fills its backlog, and a connect would retry for
/// minutes).
pub(super) fn connect(instance: &Instance) -> TcpStream {
    let address = instance.address.parse().unwrap();
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Reads until the server closes the connection, within `within`;
/// returns what it sent, or `None` if it kept the connection open.
fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(within)).unwrap();
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(received),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(received),
            Err(_) => return None,
        }
        if Instant::now() > deadline {
            return None;
        }
    }
}

/// Reads an answer's head (up to its blank line), within `within`.
pub(super) fn read_head(stream: &mut TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) => panic!("no answer within {within:?}: {e}; got {received:?}"),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// A client that sends nothing, half a header, a header a byte at a time,
/// or goes quiet after an answer is cut off once the header timeout
/// passes; meanwhile other clients are served at once.
#[tokio::test]
async fn silent_half_sent_trickling_and_idle_connections_are_closed() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(
        &["--settings", path_str(&file), "--header-timeout", "2s"],
        &[],
    );
    let silent = connect(&instance);
    let mut partial = connect(&instance);
    partial.write_all(b"GET /settings HTTP/1.1\r\nHo").unwrap();
    let mut idle = connect(&instance);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // A byte every 200 ms: each arrives well within the timeout, the
    // whole header never does.
    let trickle = connect(&instance);
    let trickler = {
        let mut trickle = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            for byte in b"GET /settings HTTP/1.1\r\nHost: x\r\nX-Slow: yes"
                .iter()
                .cycle()
            {
                if trickle.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Served while those hang, before any of them could time out.
    let started = Instant::now();
    let (status, _) = get(&client(), instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let within = Duration::from_secs(8);
    for (name, mut stream) in [
        ("silent", silent),
        ("partial", partial),
        ("trickle", trickle),
    ] {
        assert!(
            read_to_close(&mut stream, within).is_some(),
            "the {name} connection is still open after {within:?}"
        );
    }
    let answered = read_to_close(&mut idle, within).expect("the idle connection closed");
    assert!(answered.starts_with(b"HTTP/1.1 200"), "{answered:?}");
    trickler.join().unwrap();
}

/// A body that trickles in is cut off at the body timeout with a 408, and
/// nothing is saved.
#[tokio::test]
async fn a_trickling_body_is_answered_408_and_saves_nothing() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(
        &["--settings", path_str(&file), "--body-timeout", "1s"],
        &[],
    );
    let before = std::fs::read(&file).unwrap();
    let mut stream = connect(&instance);
    stream
        .write_all(
            b"PUT /settings HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
              content-length: 64\r\n\r\n{",
        )
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        for _ in 0..60 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let answer = read_head(&mut stream, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    drop(stream);
    trickler.join().unwrap();
}

/// Under a file limit of 128, a few hundred connections that send nothing
/// neither lock out a client that sends its request nor fill the log with
/// accept errors.
#[tokio::test]
async fn hundreds_of_silent_connections_leave_room_for_a_real_client() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance =
        Instance::start_after(Some("ulimit -n 128"), &["--settings", path_str(&file)], &[]);
    let silent: Vec<TcpStream> = (0..300).map(|_| connect(&instance)).collect();

    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..3 {
        let response = quick
            .get(instance.url("/settings"))
            .send()
            .await
            .expect("served despite the silent connections");
        assert_eq!(response.status(), StatusCode::OK);
    }
    drop(silent);
    let stopped = instance.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let accept_errors = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("accept"))
        .count();
    assert!(
        accept_errors <= 2,
        "{accept_errors} lines:\n{}",
        stopped.stderr
    );
}

/// Out of file descriptors (its limit lowered to 64 while it runs, under
/// the connection cap it computed at start-up), the service neither spins
/// nor floods the log: it sheds idle connections to free descriptors, and
/// a client that sends its request is served.
#[tokio::test]
async fn running_out_of_file_descriptors_is_survived_without_a_spin_of_logs() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let pid = libc::pid_t::try_from(instance.child.id()).unwrap();
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: prlimit reads the struct given and writes nothing back.
    let lowered = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(lowered, 0, "prlimit: {}", std::io::Error::last_os_error());
    let silent: Vec<TcpStream> = (0..300).map(|_| connect(&instance)).collect();

    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..3 {
        let response = quick
            .get(instance.url("/settings"))
            .send()
            .await
            .expect("served though out of file descriptors");
        assert_eq!(response.status(), StatusCode::OK);
    }
    drop(silent);
    let stopped = instance.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let accept_errors = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("accept"))
        .count();
    assert!(
        (1..=2).contains(&accept_errors),
        "{accept_errors} accept errors logged (one expected, the rest counted):\n{}",
        stopped.stderr
    );
}

/// A closed stdout (`settings_server | true`) is no reason to stop: the
/// service says so on stderr and serves.
#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_service() {
    let dir = TempDir::new();
    let file = dir.settings();
    let mut child = Reaped(
        command(
            &["--settings", path_str(&file), "--listen", "127.0.0.1:0"],
            &[],
        )
        .spawn()
        .unwrap(),
    );
    // The reading end, closed before the service prints anything.
    drop(child.stdout.take());
    let watchdog = Watchdog::arm(child.id());
    let (stderr, reader) = capture(child.stderr.take().unwrap(), None);
    let said = stderr.wait_for("could not print the start-up line", DEADLINE)
        && stderr.wait_for("settings_server: serving ", DEADLINE);
    // Its address, from the log line that says it serves.
    let address = stderr
        .text()
        .lines()
        .find(|l| l.contains("settings_server: serving "))
        .and_then(|l| l.split("address=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned);
    let served = match &address {
        Some(address) if said => get(&client(), format!("http://{address}/settings")).await.0,
        _ => StatusCode::IM_A_TEAPOT,
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    watchdog.disarm();
    reader.join().unwrap();
    let stderr = stderr.text();
    assert!(said, "{status}: {stderr}");
    assert_eq!(served, StatusCode::OK);
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The size limits: a URI over 64 KiB is 414, a head over 128 KiB 431, a
/// body over 2 MiB 413; none saves anything.
#[tokio::test]
async fn oversized_requests_are_refused_with_414_431_and_413() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let before = std::fs::read(&file).unwrap();

    // Raw: an HTTP client library refuses to send such a URI at all.
    let mut stream = connect(&instance);
    let long_uri = format!("/settings?{}", "a".repeat(70 * 1024));
    stream
        .write_all(format!("GET {long_uri} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let answer = read_head(&mut stream, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");

    // Exactly the limit, and no end of head: the service reads it all, so
    // it closes with nothing unread and its answer is not lost to a reset.
    let mut stream = connect(&instance);
    let mut head = b"GET /settings HTTP/1.1\r\nX-Big: ".to_vec();
    head.resize(128 * 1024, b'b');
    stream.write_all(&head).unwrap();
    let answer = read_head(&mut stream, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A body announced at 3 MiB: answered at once, before any of it is
    // sent (limits.rs has the boundary).
    let mut stream = connect(&instance);
    stream
        .write_all(
            b"PUT /settings HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
              content-length: 3145728\r\n\r\n",
        )
        .unwrap();
    let answer = read_head(&mut stream, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(dir.names(), ["settings.json"]);
}
