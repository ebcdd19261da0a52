//! The exporter's HTTP side under stress: HTTPS with certificate rotation, clients that send
//! headers byte by byte, and shutdown with scrapes in flight.

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use kubevirt_leader_sim::{SimServer, Store};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, RootCertStore, pki_types::ServerName},
};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("CA").pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// Writes a fresh serving certificate and key for 127.0.0.1, replacing the files the way a
/// secret volume does (a new file renamed over the old one). Returns the certificate's DER.
fn issue(ca: &Ca, cert: &Path, key: &Path) -> Vec<u8> {
    let key_pair = KeyPair::generate().expect("key");
    let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key_pair, &ca.issuer)
        .expect("cert");
    for (path, text) in [(cert, certificate.pem()), (key, key_pair.serialize_pem())] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }
    certificate.der().to_vec()
}

/// One HTTPS GET; returns the response text and the certificate the server presented.
async fn https_get(addr: SocketAddr, ca_pem: &str, path: &str) -> (String, Vec<u8>) {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pki_types_certs(ca_pem) {
        roots.add(cert).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let server = ServerName::IpAddress(addr.ip().into());
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .expect("TLS handshake");
    let presented = tls.get_ref().1.peer_certificates().expect("certificate")[0].to_vec();
    let request = format!("GET {path} HTTP/1.1\r\nHost: exporter\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tls.read_to_string(&mut response).await.expect("read");
    (response, presented)
}

fn rustls_pki_types_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("PEM"))
        .collect()
}

#[tokio::test]
async fn https_with_certificate_rotation() {
    let dir = temp_dir("tls");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ca = ca();
    let first = issue(&ca, &cert, &key);
    let store = Store::default();
    let sim = SimServer::start(store.clone()).await.expect("sim");
    let mut s = settings(&[]);
    s.tls = Some((cert.clone(), key.clone()));
    let exporter = exporter_for(&sim.url(), &s).await;

    let (response, presented) = https_get(exporter.addr, &ca.pem, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("kubevirt_leader_exporter_build_info"));
    assert_eq!(presented, first);

    // cert-manager rotates the files: new connections get the new certificate.
    let second = issue(&ca, &cert, &key);
    let start = Instant::now();
    loop {
        let (response, presented) = https_get(exporter.addr, &ca.pem, "/livez").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        if presented == second {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A half-written rotation keeps the last good certificate in service.
    std::fs::write(&key, "not a key").expect("write");
    let (response, presented) = https_get(exporter.addr, &ca.pem, "/livez").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(presented, second);

    // Plain HTTP on the TLS port gets no metrics.
    let plain = reqwest::get(format!("http://{}/metrics", exporter.addr)).await;
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_tls_files_stop_the_binary_at_start_up() {
    let dir = temp_dir("badtls");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, "garbage").expect("write");
    std::fs::write(&key, "garbage").expect("write");
    // A kubeconfig for an API server that is not there: the certificate is checked first.
    let kubeconfig = dir.join("kubeconfig");
    let nowhere = kubevirt_leader_sim::kubeconfig_for(&format!("http://{}", free_addr()));
    std::fs::write(&kubeconfig, serde_json::to_string(&nowhere).expect("JSON")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_kubevirt-leader-exporter"))
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--tls-cert-file={}", cert.display()))
        .arg(format!("--tls-key-file={}", key.display()))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.crt") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_client_sending_headers_byte_by_byte_is_cut_off() {
    let bed = Bed::start(settings(&[])).await;
    let mut stream = TcpStream::connect(bed.exporter.addr)
        .await
        .expect("connect");
    let request = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nX-Slow: ";
    let start = Instant::now();
    let mut cut_off = false;
    'dribble: for byte in request.iter().chain(std::iter::repeat(&b'a')) {
        if stream.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        // A closed connection shows as EOF or an error on read.
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            cut_off = true;
            break 'dribble;
        }
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    assert!(cut_off, "a slow client held its connection for a minute");
    // Everyone else is still served.
    assert_eq!(bed.get("/livez").await.0, 200);
}

fn signal(child: &std::process::Child, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

async fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(start.elapsed() < PATIENCE, "the exporter did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_scrapes_in_flight_complete_and_exits_zero() {
    let store = Store::default();
    let sim = SimServer::start(store).await.expect("sim");
    let mut binary = start_binary(&sim);
    let http = common::http();
    wait_serving(&http, binary.addr).await;
    let addr = binary.addr;
    let served = Arc::new(AtomicUsize::new(0));
    let scrapers: Vec<_> = (0..50)
        .map(|_| {
            let (http, served) = (http.clone(), served.clone());
            tokio::spawn(async move {
                let mut complete = 0;
                loop {
                    let Ok(response) = http.get(format!("http://{addr}/metrics")).send().await
                    else {
                        return Ok(complete);
                    };
                    // A response that started must finish whole.
                    let status = response.status().as_u16();
                    match response.text().await {
                        Ok(body)
                            if status == 200
                                && body.contains("kubevirt_leader_exporter_build_info") =>
                        {
                            complete += 1;
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(body) => return Err(format!("status {status}: {body}")),
                        Err(error) => return Err(format!("cut short: {error}")),
                    }
                }
            })
        })
        .collect();
    // The signal comes while the scrapers are busy, not before they started.
    let start = Instant::now();
    while served.load(Ordering::Relaxed) < 100 {
        assert!(start.elapsed() < PATIENCE, "the scrapers got no answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&binary.child, "TERM");
    let status = wait_exit(&mut binary.child).await;
    assert!(status.success(), "{status:?}");
    for scraper in scrapers {
        scraper
            .await
            .expect("scraper")
            .expect("every response complete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_live_heap_below_its_resident_memory() {
    let sim = SimServer::start(Store::default()).await.expect("sim");
    let binary = start_binary(&sim);
    let http = common::http();
    wait_serving(&http, binary.addr).await;
    let metrics = scrape(&http, binary.addr).await;
    let heap = metrics
        .value("kubevirt_leader_exporter_heap_bytes", &[])
        .expect("the binary counts its heap");
    let rss = metrics
        .value("process_resident_memory_bytes", &[])
        .expect("resident memory");
    // A running exporter keeps its client, caches and server on the heap, memory it has
    // written to: resident memory holds that and the allocator's slack besides.
    assert!(heap > 64.0 * 1024.0 && heap < rss, "heap {heap}, RSS {rss}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let store = Store::default();
    let sim = SimServer::start(store).await.expect("sim");
    let mut binary = start_binary(&sim);
    wait_serving(&common::http(), binary.addr).await;
    // A client in the middle of its request holds the graceful shutdown open.
    let mut slow = TcpStream::connect(binary.addr).await.expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // Connections are accepted in order: once a later one is answered, the slow one is
    // being served.
    wait_serving(&common::http(), binary.addr).await;
    signal(&binary.child, "TERM");
    // Shutdown has begun once the listener is gone.
    let start = Instant::now();
    while TcpStream::connect(binary.addr).await.is_ok() {
        assert!(start.elapsed() < PATIENCE, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Graceful shutdown waits for the slow request: a clean exit (0) would mean it did not.
    signal(&binary.child, "INT");
    let status = wait_exit(&mut binary.child).await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    // The slow client was cut off, not answered.
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}
