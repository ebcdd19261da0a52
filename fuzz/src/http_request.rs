//! Bytes sent to the exporter's HTTP server on one connection: request lines, headers and
//! whatever follows, answered by the real router (without the authentication gate), over an
//! exporter state whose watches have listed (a baseline of pods and leases, renewed for a
//! while and then left to run out), so that `/metrics`, `/` and `/status.json` carry every
//! per-component series and card.

use std::{sync::OnceLock, time::Duration};

use kube::core::WatchEvent;
use kubevirt_leader_exporter::http::{AppState, router, serve_stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Bed, STEP, baseline, has_component_series, lease};

/// The clock is paused: once the server has answered every complete request and waits for
/// the next one, the runtime is idle and the clock jumps to the server's header timeout,
/// which closes the connection at once. The client keeps its own side open: a connection the
/// client half-closes is closed by the server (hyper's default) without an answer.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

/// Longer than any timeout of the server's (in paused time, so it costs nothing): a
/// connection still open then is dropped.
const ANSWERED_WITHIN: Duration = Duration::from_secs(600);

/// Built once: every input is answered from the same state, as a running exporter answers.
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

/// Runs one input; returns whether the answer carried per-component series, that is
/// whether a request reached `/metrics` (see [`crate::has_component_series`]).
pub fn run(data: &[u8]) -> bool {
    let bed = bed();
    let app = router(AppState {
        targets: bed.targets.clone(),
        metrics: bed.metrics.clone(),
        gate: None,
    });
    let answer = runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let served = tokio::spawn(serve_stream(server, app));
        let _ = client.write_all(data).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(ANSWERED_WITHIN, client.read_to_end(&mut answer)).await;
        drop(client);
        served.await.expect("the connection task does not panic");
        answer
    });
    has_component_series(&answer)
}
