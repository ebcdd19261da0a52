//! Bytes sent to the exporter's HTTP server on one connection: request lines, headers and
//! whatever follows, answered by the real router.
#![no_main]

use std::sync::OnceLock;

use kubevirt_leader_exporter::http::{AppState, router, serve_stream};
use kubevirt_leader_exporter_fuzz::bed;
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
