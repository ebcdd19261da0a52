//! Bytes sent to the exporter's HTTP server on one connection: request lines, headers and
//! whatever follows, answered by the real router, over an exporter state whose watches have
//! listed (a baseline of pods and leases, renewed for a while and then left to run out), so
//! that `/metrics`, `/` and `/status.json` carry every per-component series and card.
#![no_main]

use std::sync::OnceLock;

use kube::core::WatchEvent;
use kubevirt_leader_exporter::http::{AppState, router, serve_stream};
use kubevirt_leader_exporter_fuzz::{Bed, STEP, baseline, lease};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn bed() -> &'static Bed {
    static BED: OnceLock<Bed> = OnceLock::new();
    BED.get_or_init(|| {
        let mut bed = Bed::new();
        baseline(&mut bed);
        let mut at = bed.t0;
        bed.list_all(at);
        for renew in ["03:12:11", "03:12:13", "03:12:15"] {
            at += STEP;
            let renewed = lease(
                "kubevirt",
                "virt-operator",
                "virt-operator-6f7d9c5b8-a1b2c",
                &format!("2026-11-27T{renew}Z"),
            );
            bed.lease_line(WatchEvent::Modified(renewed), at);
        }
        bed.judge_and_read(at);
        bed
    })
}

fuzz_target!(|data: &[u8]| {
    let bed = bed();
    let app = router(AppState {
        targets: bed.targets.clone(),
        metrics: bed.metrics.clone(),
    });
    runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let served = tokio::spawn(serve_stream(server, app));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        served.await.expect("the connection task does not panic");
    });
});
