//! What clients may cost the exporter: connections beyond `--max-connections` wait in the
//! kernel's accept queue, TLS handshakes beyond `--max-tls-handshakes` wait for a turn, a
//! request head beyond `--max-header-bytes` gets 431, a client that stops reading is cut off
//! after `--write-timeout`, and an idle connection is closed after the 10 s header timeout.
//! Against the secured binary on a real API server, a flood of 1,000 TLS connections that
//! send 400 KB of headers each and 200 that ask for the status page and stop reading adds
//! less than [`FLOOD_BOUND_KIB`] to its resident memory, which stays under
//! [`RSS_BOUND_KIB`], while the probe and a scraper with a bound token are answered.

mod common;
mod envtest;

use std::time::{Duration, Instant};

use common::{
    flood::{
        Flood, PIPELINED, STALLED_RECEIVE_BUFFER, answers, long_head, open_fds, read_until_closed,
        status_kib, tls_connect,
    },
    *,
};
use envtest::{MONITORING, PROMETHEUS, Secured, ServingCert};
use kubevirt_leader_exporter::http::Limits;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// What the flood may add to the exporter's resident memory: 256 connections (the default
/// limit) of about 100 KiB at most.
const FLOOD_BOUND_KIB: u64 = 24 * 1024;
/// The most resident memory the exporter may reach under the flood: the debug build the
/// tests run, about 26 MiB at rest (the release build about 10), and the flood's share.
const RSS_BOUND_KIB: u64 = 48 * 1024;

#[test]
fn long_heads_are_as_long_as_asked() {
    for bytes in [100, 1000, 16_384, 400_000] {
        let head = long_head(bytes);
        assert!((bytes..bytes + 20).contains(&head.len()), "{}", head.len());
        assert!(head.ends_with("\r\n") && !head.ends_with("\r\n\r\n"));
    }
}

#[tokio::test]
async fn a_request_head_beyond_the_limit_gets_431() {
    let bed = Bed::start(settings(&[])).await;
    let limit = Limits::DEFAULT.header_bytes;
    let within = format!("{}\r\n", long_head(limit - 100));
    let mut stream = TcpStream::connect(bed.exporter.addr)
        .await
        .expect("connect");
    stream.write_all(within.as_bytes()).await.expect("write");
    let mut answer = vec![0; 1024];
    let n = stream.read(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let beyond = format!("{}\r\n", long_head(limit + 1000));
    let mut stream = TcpStream::connect(bed.exporter.addr)
        .await
        .expect("connect");
    // Once the exporter has answered it may close before reading the rest.
    let _ = stream.write_all(beyond.as_bytes()).await;
    let (answer, closed) = read_until_closed(&mut stream, PATIENCE).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(closed, "the connection stayed open after 431");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    let bed = Bed::start(settings(&[])).await;
    let mut stream = TcpStream::connect(bed.exporter.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: exporter\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\nok\n") {
        let mut buf = [0; 512];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    // Kept alive for the next request, which never comes.
    let idle = Instant::now();
    let (rest, closed) = read_until_closed(&mut stream, PATIENCE).await;
    assert!(closed, "an idle connection stayed open for {PATIENCE:?}");
    assert_eq!(
        rest, "",
        "the exporter said something on an idle connection"
    );
    report(&format!(
        "an idle connection was closed after {:.1?}",
        idle.elapsed()
    ));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    let mut s = settings(&[]);
    s.limits.write_timeout = Duration::from_secs(1);
    let bed = Bed::start(s).await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(STALLED_RECEIVE_BUFFER)
        .expect("receive buffer");
    let mut stream = socket.connect(bed.exporter.addr).await.expect("connect");
    let requests = "GET / HTTP/1.1\r\nHost: exporter\r\n\r\n".repeat(PIPELINED);
    // The writes, too, stop once the exporter stops reading to answer.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        stream.write_all(requests.as_bytes()),
    )
    .await;
    // Well past the write timeout before reading at all.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (answer, closed) = read_until_closed(&mut stream, PATIENCE).await;
    let answered = answers(&answer, "200");
    assert!(closed, "a client that read nothing was never cut off");
    assert!(
        (1..PIPELINED).contains(&answered),
        "{answered} of {PIPELINED} requests answered"
    );
    report(&format!(
        "a client that stopped reading got {answered} of {PIPELINED} answers before it was cut off"
    ));
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_ends() {
    let mut s = settings(&[]);
    s.limits.connections = 2;
    let bed = Bed::start(s).await;
    let addr = bed.exporter.addr;
    // Two connections in the middle of their request heads hold both places.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /livez HTTP/1.1\r\n")
            .await
            .expect("write");
        held.push(stream);
    }
    // A third is accepted by the kernel and sends its request, but is not served meanwhile.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    third
        .write_all(b"GET /livez HTTP/1.1\r\nHost: exporter\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), third.peek(&mut buf)).await;
    assert!(early.is_err(), "served beyond the limit: {early:?}");
    drop(held.pop());
    let (answer, _) = read_until_closed(&mut third, PATIENCE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn tls_handshakes_beyond_the_limit_wait_for_a_turn() {
    let dir = temp_dir("handshakes");
    let files = ServingCert::new(&dir);
    let mut s = settings(&[]);
    s.tls = Some((files.cert.clone(), files.key.clone()));
    s.limits.handshakes = 1;
    let bed = Bed::start(s).await;
    let addr = bed.exporter.addr;
    install_crypto();
    // A client that connects and says nothing holds the only turn until it goes.
    let silent = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handshake = tokio::spawn(tls_connect(addr, None));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!handshake.is_finished(), "a handshake beyond the limit");
    drop(silent);
    let mut tls = tokio::time::timeout(PATIENCE, handshake)
        .await
        .expect("the handshake never had its turn")
        .expect("task")
        .expect("handshake");
    tls.write_all(b"GET /livez HTTP/1.1\r\nHost: exporter\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_until_closed(&mut tls, PATIENCE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_stays_within_memory_while_probes_and_scrapes_are_answered() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let bed = Secured::start(&assets, &[]).await;
    bed.until_ready().await;
    let token = bed.reader_token(MONITORING, PROMETHEUS, true).await;
    let addr = bed.exporter.addr;
    let pid = bed.exporter.process.0.id();
    let fresh = || {
        common::verifying_https(&bed.serving_ca, None)
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
    };
    let scraped = fresh()
        .get(bed.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("scrape");
    assert_eq!(scraped.status(), 200);
    let fds_before = open_fds(pid);
    // Past the write timeout: stalled clients are cut off before they read.
    let hold = Limits::DEFAULT.write_timeout + Duration::from_secs(5);
    let base = bed.url("");
    let flood = common::flood::flood(addr, pid, &base, fresh(), &token, hold).await;

    // Gone with the flood: the exporter's connections; and new ones are served.
    let start = Instant::now();
    while open_fds(pid) > fds_before + 2 {
        assert!(
            start.elapsed() < PATIENCE,
            "{} open files after the flood, {fds_before} before",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = fresh()
        .get(bed.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("scrape after the flood");
    assert_eq!(after.status(), 200);
    let rss_after = status_kib(pid, "VmRSS");
    let Flood {
        heads,
        heads_took,
        stalled,
        cut_off,
        took,
        scrapes,
        probes,
        rss_before,
        peak,
    } = &flood;
    report(&format!(
        "flood: {} heads of {} bytes answered in {:.1} s: {heads:?}; {} stalled clients in \
         {:.1} s, {cut_off} cut off: {stalled:?}; {} scrapes (slowest {:.1?}), {} probes \
         (slowest {:.1?}); RSS {rss_before} KiB before, peak {peak} KiB, {rss_after} KiB \
         after; {fds_before} open files before",
        common::flood::FLOODERS,
        common::flood::FLOOD_HEAD_BYTES,
        heads_took.as_secs_f64(),
        common::flood::STALLERS,
        took.as_secs_f64(),
        scrapes.len(),
        Flood::slowest(scrapes),
        probes.len(),
        Flood::slowest(probes),
    ));

    assert!(
        *peak < RSS_BOUND_KIB && peak - rss_before < FLOOD_BOUND_KIB,
        "peak RSS {peak} KiB under the flood, {rss_before} KiB before: over {RSS_BOUND_KIB} KiB \
         or {FLOOD_BOUND_KIB} KiB more"
    );
    assert!(scrapes.len() >= 10, "{} scrapes", scrapes.len());
    assert!(scrapes.iter().all(|s| s.1 == Ok(200)), "{scrapes:?}");
    assert!(probes.len() >= 10, "{} probes", probes.len());
    assert!(probes.iter().all(|s| s.1 == Ok(200)), "{probes:?}");
    assert_eq!(flood.refused_heads(), common::flood::FLOODERS, "{heads:?}");
    assert_eq!(*cut_off, common::flood::STALLERS, "{stalled:?}");
}
