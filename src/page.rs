//! The status page: a card per component and namespace, coloured by state, with the holder,
//! the lease age against its limit, the recent renewal intervals as a chart, the story as a
//! timeline, and the runbook's first steps when there is no leader. Plain HTML with inline
//! CSS and SVG: no scripts, no external assets (clusters are often offline); it reloads
//! itself every few seconds.

use std::fmt::Write;

use crate::{
    history::RECENT_FOR,
    status::{ComponentStatus, EventView, LeaseView, NamespaceStatus, State, Status},
};

/// Where the alerts' runbooks are published.
pub const RUNBOOKS_URL: &str =
    "https://github.com/kubevirt-leader-exporter/kubevirt-leader-exporter/blob/main/docs/runbooks";

/// The alert that fires for `component` without a leader, whose runbook the page links.
pub fn no_leader_alert(component: &str) -> &'static str {
    match component {
        "virt-operator" => "NoLeadingVirtOperator",
        "virt-controller" => "NoLeadingVirtController",
        _ => "NoLeadingComponent",
    }
}

/// Seconds between reloads of the page.
const REFRESH_SECONDS: u32 = 5;

/// Renewal intervals above this are drawn as slow (three of KubeVirt's 2 s retry periods;
/// the same threshold as the KubevirtLeaderRenewalsSlow alert).
const SLOW_SECONDS: f64 = 6.0;
/// KubeVirt's renew deadline: a leader that cannot renew for this long gives up.
const DEADLINE_SECONDS: f64 = 10.0;
/// The chart's height, in seconds of interval; longer ones are drawn at the top.
const CHART_TOP_SECONDS: f64 = 16.0;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}\
h1{font-size:1.4em}.cards{display:flex;flex-wrap:wrap;gap:1em}\
.card{background:#fff;border:1px solid #ccc;border-left:8px solid #999;border-radius:6px;padding:.8em 1em;width:30em}\
.card.leader{border-left-color:#2e7d32}.card.no_leader{border-left-color:#c62828;background:#fff5f5}\
.card.checking{border-left-color:#f9a825}.card.blind{border-left-color:#757575;background:#f3f3f3}\
.card h2{font-size:1.1em;margin:0}.card h2 small{font-weight:normal;color:#555}\
.state{display:inline-block;font-weight:bold;padding:.1em .5em;border-radius:4px;color:#fff;margin:.3em 0}\
.leader .state{background:#2e7d32}.no_leader .state{background:#c62828}.checking .state{background:#f9a825;color:#222}\
.blind .state{background:#757575}dl{display:grid;grid-template-columns:9em auto;margin:.4em 0}dt{color:#555}dd{margin:0}\
.reason{color:#333;font-size:.9em}.origin{color:#555;font-size:.85em;margin:.2em 0}.help{background:#fff;border:1px solid #c62828;padding:.3em .8em;font-size:.9em}\
ol.timeline{list-style:none;padding:0;margin:.4em 0;font-size:.85em;max-height:14em;overflow-y:auto}\
ol.timeline li{border-left:3px solid #ccc;padding-left:.5em;margin:.15em 0}\
ol.timeline li.lost,ol.timeline li.released,ol.timeline li.deleted{border-left-color:#c62828}\
ol.timeline li.blind{border-left-color:#757575}ol.timeline li.back,ol.timeline li.acquired,ol.timeline li.changed{border-left-color:#2e7d32}\
time{color:#555;font-family:monospace}figure{margin:.4em 0}figcaption{font-size:.8em;color:#555}";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole page.
pub fn render(status: &Status) -> String {
    let mut page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>kubevirt-leader-exporter</title><style>{STYLE}</style></head><body>\
         <h1>KubeVirt leaders</h1><p>As seen by kubevirt-leader-exporter {} at <time>{}</time>. \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/status.json\">/status.json</a></p>",
        escape(&status.exporter_version),
        escape(&status.generated_at),
    );
    if !status.ready {
        page.push_str("<p><b>Starting:</b> the watches have not listed pods and leases yet.</p>");
    }
    page.push_str("<div class=\"cards\">");
    for component in &status.components {
        if component.namespaces.is_empty() && component.found_in.is_none() {
            blind_component(&mut page, component);
        }
        for ns in &component.namespaces {
            card(&mut page, component, ns);
        }
    }
    page.push_str("</div>");
    let nowhere: Vec<&str> = status
        .components
        .iter()
        .filter(|c| c.found_in == Some(0))
        .map(|c| c.component.as_str())
        .collect();
    if !nowhere.is_empty() {
        let _ = write!(
            page,
            "<p><b>Found in no namespace:</b> {}. Check --namespace, the component's pod \
             selector and Lease name, and the exporter's RBAC, or install KubeVirt.</p>",
            escape(&nowhere.join(", "))
        );
    }
    page.push_str("</body></html>\n");
    page
}

/// A component whose watches have never listed, or are failing with nothing seen yet.
fn blind_component(page: &mut String, component: &ComponentStatus) {
    let _ = write!(
        page,
        "<section class=\"card blind\"><h2>{} <small>in {}</small></h2>{}\
         <span class=\"state\">BLIND</span>\
         <p class=\"reason\">The exporter cannot see: its watches have not listed yet or are \
         failing. Nothing is known, which is not \"no leader\".</p></section>",
        escape(&component.component),
        escape(&component.scope),
        origin(component),
    );
}

/// Where a discovered component's pods come from; nothing for a configured one.
fn origin(component: &ComponentStatus) -> String {
    match (&component.workload, component.discovered) {
        (Some(w), _) if w.namespace != component.scope => format!(
            "<p class=\"origin\">discovered: {} {} in namespace {}</p>",
            escape(&w.kind),
            escape(&w.name),
            escape(&w.namespace)
        ),
        (Some(w), _) => format!(
            "<p class=\"origin\">discovered: {} {}</p>",
            escape(&w.kind),
            escape(&w.name)
        ),
        (None, true) => {
            "<p class=\"origin\">discovered, abandoned: no holder pod, no workload</p>".to_owned()
        }
        (None, false) => String::new(),
    }
}

fn card(page: &mut String, component: &ComponentStatus, ns: &NamespaceStatus) {
    let (class, label) = match ns.state {
        State::Leader => ("leader", "LEADER"),
        State::NoLeader => ("no_leader", "NO LEADER"),
        State::Checking => ("checking", "CHECKING"),
        State::Blind => ("blind", "BLIND"),
    };
    let _ = write!(
        page,
        "<section class=\"card {class}\" data-component=\"{}\" data-namespace=\"{}\">\
         <h2>{} <small>in {}</small></h2>{}<span class=\"state\">{label}</span>",
        escape(&component.component),
        escape(&ns.namespace),
        escape(&component.component),
        escape(&ns.namespace),
        origin(component),
    );
    match &ns.reason {
        Some(reason) => {
            let _ = write!(page, "<p class=\"reason\">{}</p>", escape(reason));
        }
        None => page.push_str(
            "<p class=\"reason\">The exporter cannot see this lease now (a watch is failing); \
             below is what it saw before.</p>",
        ),
    }
    facts(page, ns);
    if let Some(lease) = &ns.lease {
        lease_bar(page, lease);
    }
    renewal_chart(page, ns);
    if component.abandoned() {
        abandoned(page, component, ns);
    } else if ns.state == State::NoLeader {
        first_steps(page, component, ns);
    }
    timeline(page, &ns.events);
    page.push_str("</section>");
}

fn facts(page: &mut String, ns: &NamespaceStatus) {
    if ns.state == State::Blind {
        return;
    }
    let holder = match (&ns.holder, ns.holder_ready) {
        (None, _) => "none".to_owned(),
        (Some(h), Some(true)) => format!("{} (pod Ready)", escape(h)),
        (Some(h), Some(false)) => format!("{} (pod <b>not Ready</b>)", escape(h)),
        (Some(h), None) => format!("{} (no such pod)", escape(h)),
    };
    let _ = write!(page, "<dl><dt>holder</dt><dd>{holder}</dd>");
    if let Some(since) = ns.holder_since_seconds {
        let _ = write!(page, "<dt>held for</dt><dd>{}</dd>", span(since));
    }
    if let (Some(ready), Some(pods)) = (ns.pods_ready, ns.pods) {
        let _ = write!(page, "<dt>pods Ready</dt><dd>{ready} of {pods}</dd>");
    }
    match ns.standbys {
        Some(0) => page.push_str(
            "<dt>standby</dt><dd><b>none</b>: if the leader goes, nobody takes over until a \
             pod restarts</dd>",
        ),
        Some(n) => {
            let _ = write!(page, "<dt>standby</dt><dd>{n} Ready</dd>");
        }
        None => {}
    }
    if let Some(t) = ns.lease.as_ref().and_then(|l| l.transitions) {
        let _ = write!(page, "<dt>transitions</dt><dd>{t}</dd>");
    }
    page.push_str("</dl>");
}

/// "1h 2m", "3m 4s", "5.0s".
fn span(seconds: f64) -> String {
    let whole = seconds as u64;
    match whole {
        0..60 => format!("{seconds:.1}s"),
        60..3600 => format!("{}m {}s", whole / 60, whole % 60),
        _ => format!("{}h {}m", whole / 3600, whole % 3600 / 60),
    }
}

/// The lease age against its duration and limit.
fn lease_bar(page: &mut String, lease: &LeaseView) {
    const WIDTH: f64 = 300.0;
    let Some(limit) = lease.limit_seconds.filter(|l| *l > 0.0) else {
        return;
    };
    let duration = lease.duration_seconds.unwrap_or(limit);
    let fill = (lease.age_seconds / limit).clamp(0.0, 1.0) * WIDTH;
    let colour = if lease.age_seconds <= duration {
        "#2e7d32"
    } else if lease.age_seconds <= limit {
        "#f9a825"
    } else {
        "#c62828"
    };
    let mark = duration / limit * WIDTH;
    let _ = write!(
        page,
        "<figure><svg class=\"lease-age\" width=\"{WIDTH}\" height=\"14\" role=\"img\" \
         aria-label=\"lease age {age:.1}s of {limit:.0}s\">\
         <rect width=\"{WIDTH}\" height=\"14\" fill=\"#eee\"/>\
         <rect width=\"{fill:.1}\" height=\"14\" fill=\"{colour}\"/>\
         <line x1=\"{mark:.1}\" x2=\"{mark:.1}\" y1=\"0\" y2=\"14\" stroke=\"#555\"/></svg>\
         <figcaption>lease age {age:.1}s; the mark is its {duration:.0}s duration, the end the \
         {limit:.0}s limit (duration + grace)</figcaption></figure>",
        age = lease.age_seconds,
    );
}

/// The renewal intervals of the last few minutes, one bar each, placed by when they were
/// seen, with lines at 2 s (KubeVirt's retry period), the slow threshold and the renew
/// deadline.
fn renewal_chart(page: &mut String, ns: &NamespaceStatus) {
    const WIDTH: f64 = 300.0;
    const HEIGHT: f64 = 60.0;
    let recent = &ns.renewals.recent;
    let window = RECENT_FOR.as_secs_f64();
    let y = |seconds: f64| HEIGHT - (seconds.min(CHART_TOP_SECONDS) / CHART_TOP_SECONDS) * HEIGHT;
    let _ = write!(
        page,
        "<figure><svg class=\"renewals\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" \
         aria-label=\"{} renewal intervals in the last {} minutes\">\
         <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#f7f7f7\"/>",
        recent.len(),
        window / 60.0
    );
    for (seconds, colour) in [
        (2.0, "#bbb"),
        (SLOW_SECONDS, "#f9a825"),
        (DEADLINE_SECONDS, "#c62828"),
    ] {
        let _ = write!(
            page,
            "<line x1=\"0\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-dasharray=\"3 3\"/>",
            y = y(seconds)
        );
    }
    for renewal in recent {
        let x = WIDTH - (renewal.ago_seconds / window).clamp(0.0, 1.0) * WIDTH;
        let colour = match renewal.interval_seconds {
            s if s > DEADLINE_SECONDS => "#c62828",
            s if s > SLOW_SECONDS => "#f9a825",
            _ => "#2e7d32",
        };
        let _ = write!(
            page,
            "<line class=\"renewal\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{HEIGHT}\" y2=\"{:.1}\" \
             stroke=\"{colour}\" stroke-width=\"2\"><title>{:.1}s</title></line>",
            y(renewal.interval_seconds),
            renewal.interval_seconds
        );
    }
    let _ = write!(
        page,
        "</svg><figcaption>renewal intervals, last {} minutes ({} seen, {} in all); dashed: \
         2s retry period, {SLOW_SECONDS:.0}s slow, {DEADLINE_SECONDS:.0}s renew deadline\
         </figcaption></figure>",
        window / 60.0,
        recent.len(),
        ns.renewals.count
    );
}

fn first_steps(page: &mut String, component: &ComponentStatus, ns: &NamespaceStatus) {
    let n = escape(&ns.namespace);
    let (lease, pods) = (escape(&component.lease), escape(&component.pod_selector));
    let alert = no_leader_alert(&component.component);
    let _ = write!(
        page,
        "<div class=\"help\"><p><b>No live leader.</b> First steps:</p><ol>\
         <li>Who holds the lease, and since when: <code>kubectl -n {n} get lease {lease} -o yaml</code></li>\
         <li>Are the pods there and Ready: <code>kubectl -n {n} get pods -l {pods} -o wide</code></li>\
         <li>Why they do not lead: <code>kubectl -n {n} logs -l {pods} --tail=200 | grep -i lease</code> \
         (forbidden, a webhook, throttling)</li></ol>\
         <p><a href=\"{RUNBOOKS_URL}/{alert}.md\">The runbook</a> goes on from there.</p></div>"
    );
}

/// In place of the first steps: a Lease that nothing runs for is most likely left over.
fn abandoned(page: &mut String, component: &ComponentStatus, ns: &NamespaceStatus) {
    let (n, lease) = (escape(&ns.namespace), escape(&component.lease));
    let _ = write!(
        page,
        "<div class=\"help\"><p><b>Abandoned:</b> no pod holds this Lease and no workload \
         runs for it, most likely because the operator that held it was uninstalled. No \
         leader alert fires for it, as it has no Ready pods. Who held it last: \
         <code>kubectl -n {n} get lease {lease} -o yaml</code></p></div>"
    );
}

fn timeline(page: &mut String, events: &[EventView]) {
    if events.is_empty() {
        return;
    }
    page.push_str("<ol class=\"timeline\">");
    for e in events.iter().rev() {
        let _ = write!(
            page,
            "<li class=\"{}\"><time datetime=\"{at}\" title=\"{at}\">{}</time> {}</li>",
            e.kind,
            clock_time(&e.at),
            describe(e),
            at = escape(&e.at),
        );
    }
    page.push_str("</ol>");
}

/// "12:34:56" of an RFC 3339 time, for a compact timeline; the full time is in the title.
fn clock_time(at: &str) -> String {
    let time = at.split_once('T').map_or(at, |(_, t)| t);
    escape(time.get(..8).unwrap_or(time))
}

fn describe(e: &EventView) -> String {
    let holder = escape(e.holder.as_deref().unwrap_or("nobody"));
    let previous = escape(e.previous.as_deref().unwrap_or("nobody"));
    match e.kind.as_ref() {
        "seen" if e.holder.is_some() => format!("first seen, held by {holder}"),
        "seen" => "first seen, with no holder".to_owned(),
        "acquired" => format!("{holder} acquired the lease"),
        "changed" => format!("{holder} took over from {previous}"),
        "released" => format!("{previous} released the lease"),
        "lost" => format!("<b>{holder} stopped renewing</b>: the lease ran out"),
        "back" => format!("{holder} renewed again"),
        "deleted" => "the Lease was deleted".to_owned(),
        "blind" => "the exporter lost sight of the lease (watch failing)".to_owned(),
        "saw_again" => "the exporter sees the lease again".to_owned(),
        "holder_restarted" => format!(
            "<b>{holder}'s container restarted</b> ({} restarts in all)",
            e.restarts.unwrap_or_default()
        ),
        other => escape(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovered_cards_name_their_workload_or_say_abandoned() {
        let page = render(&crate::status::tests::with_discovered());
        let card = |component: &str| {
            let start = page
                .find(&format!("data-component=\"{component}\""))
                .unwrap_or_else(|| panic!("no card of {component}: {page}"));
            let end = page[start..].find("</section>").expect("card end") + start;
            page[start..end].to_owned()
        };
        let db = card("db-leader");
        assert!(db.contains("discovered: StatefulSet db"), "{db}");
        assert!(!db.contains("abandoned"), "{db}");
        let old = card("old-lock");
        assert!(
            old.contains("abandoned: no holder pod, no workload"),
            "{old}"
        );
        assert!(old.contains("<b>Abandoned:</b>"), "{old}");
        assert!(old.contains("kubectl -n data get lease old-lock"), "{old}");
        assert!(!page.contains("discovered: Deployment"), "{page}");
    }
}
