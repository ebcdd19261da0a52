//! A flood of connections against a secured exporter, for the test that bounds what it
//! costs and for the benchmark that measures the release binary under it: TLS connections
//! that send 400 KB of headers each, and TLS connections that ask for the status page many
//! times at once and read none of the answers; meanwhile a probe and a scraper ask on new
//! connections.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream, rustls::pki_types::ServerName};

use super::{ANSWER_PATIENCE, PATIENCE};

/// Connections that send this much of a request head and never end it...
pub const FLOODERS: usize = 1000;
pub const FLOOD_HEAD_BYTES: usize = 400_000;
/// ... and connections that ask for the status page this many times at once and read none
/// of the answers.
pub const STALLERS: usize = 200;
pub const PIPELINED: usize = 100;
/// What a stalled client's socket takes in while nobody reads, so that the exporter's
/// writes stall soon.
pub const STALLED_RECEIVE_BUFFER: u32 = 4096;

/// A TLS connection to `addr` that does not verify the server; with `receive_buffer`, the
/// client's socket takes in no more than that while nobody reads.
pub async fn tls_connect(
    addr: SocketAddr,
    receive_buffer: Option<u32>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let tcp = socket.connect(addr).await?;
    let config = kubevirt_leader_exporter::tls::unverified_client_config(None)
        .map_err(std::io::Error::other)?;
    TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// Reads until the server closes the connection or `patience` runs out: what was read, and
/// whether it closed. What came before an error counts too: a server that closes with
/// unread data resets the connection.
pub async fn read_until_closed(
    stream: &mut (impl AsyncRead + Unpin),
    patience: Duration,
) -> (String, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(patience, stream.read_to_end(&mut got))
        .await
        .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// The start of a request for `/livez` whose head is `bytes` long, or a few bytes longer,
/// not yet ended by its empty line.
pub fn long_head(bytes: usize) -> String {
    let mut head = String::from("GET /livez HTTP/1.1\r\nHost: exporter\r\n");
    for i in 0.. {
        if head.len() >= bytes {
            break;
        }
        let name = format!("X-Padding-{i}: ");
        let value = (bytes - head.len()).saturating_sub(name.len() + 2);
        head.push_str(&name);
        head.push_str(&"a".repeat(value.clamp(1, 1000)));
        head.push_str("\r\n");
    }
    head
}

/// How many answers with `status` a read holds.
pub fn answers(text: &str, status: &str) -> usize {
    text.matches(&format!("HTTP/1.1 {status}")).count()
}

/// Sends `FLOOD_HEAD_BYTES` of a request head that never ends, then waits for the answer:
/// its first line, and whether the connection closed.
async fn flood_head(addr: SocketAddr) -> Result<(String, bool), String> {
    let mut tls = tls_connect(addr, None).await.map_err(|e| e.to_string())?;
    // Refused part of the way through once the exporter has answered.
    let _ = tls.write_all(long_head(FLOOD_HEAD_BYTES).as_bytes()).await;
    let (answer, closed) = read_until_closed(&mut tls, Duration::from_secs(60)).await;
    Ok((answer.lines().next().unwrap_or_default().to_owned(), closed))
}

/// Asks for the status page `PIPELINED` times at once, reads nothing for `hold`, then reads
/// what comes until the connection closes: the number of answers, and whether it closed.
async fn stall(addr: SocketAddr, token: String, hold: Duration) -> Result<(usize, bool), String> {
    let mut tls = tls_connect(addr, Some(STALLED_RECEIVE_BUFFER))
        .await
        .map_err(|e| e.to_string())?;
    let request =
        format!("GET / HTTP/1.1\r\nHost: exporter\r\nAuthorization: Bearer {token}\r\n\r\n");
    let start = Instant::now();
    // The writes, too, stop once the exporter stops reading to answer.
    let _ = tokio::time::timeout(hold, tls.write_all(request.repeat(PIPELINED).as_bytes())).await;
    tokio::time::sleep(hold.saturating_sub(start.elapsed())).await;
    let (answer, closed) = read_until_closed(&mut tls, PATIENCE).await;
    Ok((answers(&answer, "200"), closed))
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count()
}

/// A field of `/proc/<pid>/status` in KiB: `VmHWM` (the peak resident memory), `VmRSS`.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// How long a request of the scraper or the probe took, and its status or error.
pub type Sample = (Duration, Result<u16, String>);

/// Asks for `url` with `http` (which should keep no idle connection, so that each request
/// comes on a new one, as the kubelet's probes do), until `stop`.
fn keep_asking(
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while !*stop.borrow() {
            let sent = Instant::now();
            let mut request = http.get(&url).timeout(ANSWER_PATIENCE);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let sample = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.bytes().await;
                    body.map(|_| status).map_err(|e| e.to_string())
                }
                Err(error) => Err(kubevirt_leader_exporter::error_chain(&error)),
            };
            samples.push((sent.elapsed(), sample));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        samples
    })
}

/// What the exporter saw of a flood, and what it cost.
#[derive(Debug)]
pub struct Flood {
    /// The first line of the answer each head got (and whether the connection closed), by
    /// how many heads got it.
    pub heads: BTreeMap<String, usize>,
    pub heads_took: Duration,
    /// The answers each stalled client got before the connection closed, by how many got
    /// them.
    pub stalled: BTreeMap<String, usize>,
    /// Stalled clients cut off before all their answers came.
    pub cut_off: usize,
    pub took: Duration,
    pub scrapes: Vec<Sample>,
    pub probes: Vec<Sample>,
    /// The exporter's resident memory before the flood and at its peak (VmHWM), in KiB.
    pub rss_before: u64,
    pub peak: u64,
}

impl Flood {
    /// Heads that got 431.
    pub fn refused_heads(&self) -> usize {
        self.heads
            .iter()
            .filter(|(answer, _)| answer.starts_with("Ok((\"HTTP/1.1 431"))
            .map(|(_, n)| n)
            .sum()
    }

    /// The slowest of `samples`.
    pub fn slowest(samples: &[Sample]) -> Duration {
        samples.iter().map(|s| s.0).max().unwrap_or_default()
    }
}

/// Floods the exporter at `addr` (process `pid`) while `http` scrapes `/metrics` with
/// `token`, which must be let in, and asks for `/livez`, at `base` (`https://host:port`).
/// Stalled clients read nothing for `hold`, which should outlast the exporter's write
/// timeout.
pub async fn flood(
    addr: SocketAddr,
    pid: u32,
    base: &str,
    http: reqwest::Client,
    token: &str,
    hold: Duration,
) -> Flood {
    let rss_before = status_kib(pid, "VmRSS");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = format!("{base}/metrics");
    let scraper = keep_asking(http.clone(), metrics, Some(token.into()), stopped.clone());
    let prober = keep_asking(http, format!("{base}/livez"), None, stopped);
    let started = Instant::now();
    let stallers: Vec<_> = (0..STALLERS)
        .map(|_| tokio::spawn(stall(addr, token.to_owned(), hold)))
        .collect();
    let heads: Vec<_> = (0..FLOODERS)
        .map(|_| tokio::spawn(flood_head(addr)))
        .collect();
    let mut answered = BTreeMap::<String, usize>::new();
    for head in heads {
        let outcome = head.await.expect("flooder");
        *answered.entry(format!("{outcome:?}")).or_default() += 1;
    }
    let heads_took = started.elapsed();
    let (mut stalled, mut cut_off) = (BTreeMap::<String, usize>::new(), 0);
    for staller in stallers {
        let outcome = staller.await.expect("staller");
        if matches!(outcome, Ok((answers, true)) if answers < PIPELINED) {
            cut_off += 1;
        }
        *stalled.entry(format!("{outcome:?}")).or_default() += 1;
    }
    let took = started.elapsed();
    let _ = stop.send(true);
    Flood {
        heads: answered,
        heads_took,
        stalled,
        cut_off,
        took,
        scrapes: scraper.await.expect("scraper"),
        probes: prober.await.expect("prober"),
        rss_before,
        peak: status_kib(pid, "VmHWM"),
    }
}
