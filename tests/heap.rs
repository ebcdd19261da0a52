//! The live heap as the binary counts it: this test binary installs the same allocator.

mod common;

use std::{hint::black_box, sync::Arc, time::Duration};

use kubevirt_leader_exporter::{config::Settings, heap, metrics::Metrics, targets::Targets};

#[global_allocator]
static ALLOCATOR: heap::CountingAllocator = heap::CountingAllocator(std::alloc::System);

const MIB: u64 = 1024 * 1024;

fn live() -> u64 {
    heap::live_bytes().expect("the counting allocator is installed")
}

// One test, not several: tests run on threads of one process, and the counter is shared.
#[test]
fn the_live_heap_follows_allocations_and_is_served() {
    let before = live();
    let mut block: Vec<u8> = black_box(Vec::with_capacity(8 * MIB as usize));
    let allocated = live();
    assert!(allocated >= before + 8 * MIB, "{before} → {allocated}");
    block.extend(std::iter::repeat_n(1, 8 * MIB as usize));
    block.reserve_exact(8 * MIB as usize);
    let grown = live();
    assert!(grown >= before + 16 * MIB, "{before} → {grown}");
    drop(black_box(block));
    let freed = live();
    assert!(freed < grown - 15 * MIB, "{grown} → {freed}");
    let zeroed = black_box(vec![0u8; 4 * MIB as usize]);
    assert!(live() >= freed + 4 * MIB);
    drop(zeroed);

    let settings = Settings::with_defaults(Duration::from_secs(5));
    let metrics = Metrics::new(Arc::new(Targets::new(&settings))).expect("metrics");
    let body = metrics.render().expect("render");
    let body = std::str::from_utf8(&body).expect("UTF-8");
    let served = common::Scrape(body.to_owned())
        .value("kubevirt_leader_exporter_heap_bytes", &[])
        .expect("the heap series");
    assert!(served > 0.0 && served < 64.0 * MIB as f64, "{served}");
    assert!(body.contains("# TYPE kubevirt_leader_exporter_heap_bytes gauge"));
}
