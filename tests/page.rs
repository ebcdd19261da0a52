//! The status page in a real browser: headless Chromium loads `/` from an exporter fed by the
//! simulated API server, for a live leader and a lost one, then for a blind exporter. The
//! test reads the DOM the browser built and the colours it painted, and keeps the
//! screenshots (their paths are printed).

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::*;
use kubevirt_leader_sim::{lease, pod};

const LOST: &str = "lost-leader";

/// The state colours of the page's cards, as painted.
const GREEN: [u8; 3] = [0x2e, 0x7d, 0x32];
const RED: [u8; 3] = [0xc6, 0x28, 0x28];
const GREY: [u8; 3] = [0x75, 0x75, 0x75];

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=...`).
async fn chromium(url: &str, mode: &str) -> String {
    let profile = artifacts().join(format!("profile-{}", free_addr().port()));
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1300,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finishes")
        .expect("chromium must be installed (Debian package `chromium`)");
    let _ = std::fs::remove_dir_all(profile);
    assert!(
        out.status.success(),
        "chromium {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Saves a screenshot of `url` and returns its RGB pixels.
async fn screenshot(url: &str, name: &str) -> Vec<[u8; 3]> {
    let path = artifacts().join(name);
    let _ = std::fs::remove_file(&path);
    chromium(url, &format!("--screenshot={}", path.display())).await;
    eprintln!("screenshot: {}", path.display());
    let file = std::io::BufReader::new(std::fs::File::open(&path).expect("screenshot written"));
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().expect("PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("frame");
    let channels = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// Enough pixels of `colour` for a card's stripe, not a stray one.
fn painted(pixels: &[[u8; 3]], colour: [u8; 3]) -> bool {
    pixels.iter().filter(|p| **p == colour).count() > 500
}

#[tokio::test]
async fn the_page_shows_leader_lost_leader_and_blind_in_a_browser() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    let renewer = spawn_renewer(bed.store.clone());
    // A namespace whose leader stopped renewing while both pods stay Ready.
    for name in [POD_A, POD_B] {
        bed.store
            .apply(pod(LOST, name, &[("kubevirt.io", OPERATOR)], true));
    }
    bed.store.apply(lease(LOST, OPERATOR, POD_A, LEASE_SECONDS));
    bed.until("one leader, one lost", |s| {
        s.present(NS) == Some(1.0) && s.present(LOST) == Some(0.0)
    })
    .await;
    let url = bed.url("/");

    let dom = chromium(&url, "--dump-dom").await;
    for want in [
        "class=\"card leader\"",
        "class=\"card no_leader\"",
        "NO LEADER",
        "class=\"renewals\"",
        "class=\"lease-age\"",
        "<ol class=\"timeline\">",
        "stopped renewing",
        "First steps",
    ] {
        assert!(dom.contains(want), "{want:?} missing from the page:\n{dom}");
    }
    let pixels = screenshot(&url, "leader-and-lost.png").await;
    assert!(painted(&pixels, GREEN), "no leader green on the page");
    assert!(painted(&pixels, RED), "no lost-leader red on the page");

    let faults = bed.sim.as_ref().expect("sim").faults.clone();
    faults.fail_next(u32::MAX);
    faults.close_watches();
    bed.until("blind", Scrape::blind).await;
    let dom = chromium(&url, "--dump-dom").await;
    assert!(dom.contains("class=\"card blind\""), "{dom}");
    assert!(!dom.contains("class=\"card leader\""), "{dom}");
    assert!(dom.contains("lost sight of the lease"), "{dom}");
    let pixels = screenshot(&url, "blind.png").await;
    assert!(painted(&pixels, GREY), "no blind grey on the page");
    faults.heal();
    renewer.abort();
}
