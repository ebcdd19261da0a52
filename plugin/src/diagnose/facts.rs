//! What `diagnose` gathers about a component in a namespace, each look-up kept with its
//! outcome: a look-up the user was not allowed to make is a fact too, and says what it means.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::{
        admissionregistration::v1::{
            MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
        },
        authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
        coordination::v1::Lease,
        core::v1::{Event, Pod},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde::Serialize;
use serde_json::Value;

use kubevirt_leader_exporter::{error_chain, objects::lease_record};

/// The outcome of one look-up.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", content = "value", rename_all = "snake_case")]
pub enum Lookup<T> {
    Found(T),
    /// The user may not make it (HTTP 403).
    Forbidden(String),
    /// The API server had nothing to give: no log for a pod that never ran on a node.
    Unavailable(String),
    Failed(String),
}

impl<T> Lookup<T> {
    fn from_result(result: kube::Result<T>) -> Self {
        match result {
            Ok(value) => Lookup::Found(value),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                Lookup::Forbidden(status.message.clone())
            }
            Err(error) => Lookup::Failed(error_chain(&error)),
        }
    }

    pub fn found(&self) -> Option<&T> {
        match self {
            Lookup::Found(value) => Some(value),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodFacts {
    pub name: String,
    pub phase: Option<String>,
    pub ready: bool,
    pub deleting: bool,
    pub node: Option<String>,
    pub age_seconds: Option<f64>,
    pub restarts: i32,
    /// The last termination of any of its containers: reason (OOMKilled, Error) and exit code.
    pub last_termination: Option<(String, i32)>,
    /// Why a container is not running, when it waits: CrashLoopBackOff, ImagePullBackOff, ...
    pub waiting: Option<String>,
    pub service_account: String,
}

impl PodFacts {
    fn of(pod: &Pod, now: Timestamp) -> Self {
        let status = pod.status.as_ref();
        let containers = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        let last_termination = containers
            .iter()
            .filter_map(|c| c.last_state.as_ref()?.terminated.as_ref())
            .max_by_key(|t| t.finished_at.as_ref().map(|f| f.0))
            .map(|t| (t.reason.clone().unwrap_or_default(), t.exit_code));
        let waiting = containers
            .iter()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
        let ready = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let spec = pod.spec.as_ref();
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            phase: status.and_then(|s| s.phase.clone()),
            ready: ready && !deleting,
            deleting,
            node: spec.and_then(|s| s.node_name.clone()),
            age_seconds: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| now.duration_since(t.0).as_secs_f64()),
            restarts: containers.iter().map(|c| c.restart_count).sum(),
            last_termination,
            waiting,
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        }
    }

    /// Running and not on its way out: a pod that could be renewing a lease.
    pub fn running(&self) -> bool {
        self.phase.as_deref() == Some("Running") && !self.deleting
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeaseFacts {
    pub holder: Option<String>,
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub duration_seconds: Option<i32>,
    pub transitions: Option<i32>,
    /// `renewTime` against the API server's own clock (its `Date` header), never the local
    /// one: node clocks differ.
    pub renewed_seconds_ago_by_server: Option<f64>,
}

/// Whether the lease record changed while this process watched it, by its own clock.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Observation {
    pub seconds: f64,
    pub changed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Right {
    pub service_account: String,
    pub verb: String,
    pub allowed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Webhook {
    /// `validating` or `mutating`.
    pub kind: &'static str,
    pub configuration: String,
    pub name: String,
    pub failure_policy: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventFacts {
    pub object: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub count: Option<i32>,
    pub last_seen: Option<String>,
}

/// Everything gathered about one component in one namespace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Facts {
    pub component: String,
    pub namespace: String,
    pub lease_name: String,
    pub pods: Vec<PodFacts>,
    /// False when the pods could not be listed: `pods` is then empty for want of data.
    pub pods_listed: bool,
    pub lease: Lookup<Option<LeaseFacts>>,
    pub observation: Option<Observation>,
    pub rights: Lookup<Vec<Right>>,
    pub webhooks: Lookup<Vec<Webhook>>,
    pub events: Lookup<Vec<EventFacts>>,
    pub logs: Vec<LogExcerpt>,
    /// The objects these facts come from, for a bundle; not part of the report.
    #[serde(skip)]
    pub objects: Objects,
}

/// Objects as the API server gave them, less their managed fields (noise in a bug report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub pods: Vec<Value>,
    pub lease: Option<Value>,
    pub events: Vec<Value>,
    /// Only the configurations with a webhook that matches leases.
    pub webhook_configurations: Vec<Value>,
}

fn plain<K: Serialize>(object: &K) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    value
}

/// The lines of a pod's recent log that concern leader election or a rejection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogExcerpt {
    pub pod: String,
    pub lines: Lookup<Vec<String>>,
    /// Whether any line read (not only those kept) shows the pod trying to acquire the
    /// lease: a standby says so once, when it starts, and may have said much since.
    pub tries_to_acquire: bool,
}

/// Words that mark a log line worth showing: leader election, and what rejects it.
const LOG_WORDS: [&str; 6] = [
    "leader",
    "lease",
    "forbidden",
    "denied",
    "webhook",
    "throttl",
];
/// How much of each log is read, and how many matching lines are kept. The byte limit is a
/// safety net only: the API server applies it from the start of the tail, so reaching it
/// would drop the newest lines.
const LOG_TAIL_LINES: i64 = 2000;
const LOG_LIMIT_BYTES: i64 = 16 << 20;
const LOG_LINES_KEPT: usize = 30;

/// Namespaces named by KubeVirt custom resources; `Found(empty)` when the CRD is absent.
pub async fn kubevirt_namespaces(client: &Client) -> Lookup<Vec<String>> {
    let gvk = GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Lookup::Found(Vec::new()),
        result => Lookup::from_result(result.map(|list| {
            list.items
                .into_iter()
                .filter_map(|kv| kv.metadata.namespace)
                .collect()
        })),
    }
}

pub async fn api_server_version(client: &Client) -> Lookup<String> {
    Lookup::from_result(client.apiserver_version().await.map(|v| v.git_version))
}

/// The component's pods by its label selector, in `namespaces` or, when none are named, in
/// every namespace (a person with rights in one namespace only names it).
pub async fn pods(client: &Client, selector: &str, namespaces: &[String]) -> Lookup<Vec<Pod>> {
    let params = ListParams::default().labels(selector);
    Lookup::from_result(list_in(client, &params, namespaces).await)
}

/// Objects of kind `K` that `params` select, in `namespaces`, or in every namespace when
/// none are named.
pub async fn list_in<K>(
    client: &Client,
    params: &ListParams,
    namespaces: &[String],
) -> kube::Result<Vec<K>>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if namespaces.is_empty() {
        return Ok(Api::<K>::all(client.clone()).list(params).await?.items);
    }
    let mut found = Vec::new();
    for ns in namespaces {
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        found.extend(api.list(params).await?.items);
    }
    Ok(found)
}

/// Gathers the facts of `component` in `namespace`, watching the lease for `observe`.
pub async fn gather(
    client: &Client,
    component: &kubevirt_leader_exporter::components::Component,
    namespace: &str,
    pods: Option<&[Pod]>,
    webhooks: &LeaseWebhooks,
    observe: Duration,
) -> Facts {
    let pods_listed = pods.is_some();
    let pods = pods.unwrap_or_default();
    let now = Timestamp::now();
    let raw_pods = pods.iter().map(plain).collect();
    let pods: Vec<PodFacts> = pods.iter().map(|p| PodFacts::of(p, now)).collect();
    let (lease, raw_lease, observation) = lease(client, namespace, &component.lease, observe).await;
    let mut accounts: Vec<String> = pods.iter().map(|p| p.service_account.clone()).collect();
    accounts.sort();
    accounts.dedup();
    let mut names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
    names.push(component.lease.clone());
    let logs = logs(client, namespace, &pods).await;
    let (events, raw_events) = events(client, namespace, &names).await;
    Facts {
        component: component.name.clone(),
        namespace: namespace.to_owned(),
        lease_name: component.lease.clone(),
        pods,
        pods_listed,
        lease,
        observation,
        rights: rights(client, namespace, &accounts).await,
        webhooks: webhooks.hooks.clone(),
        events,
        logs,
        objects: Objects {
            pods: raw_pods,
            lease: raw_lease,
            events: raw_events,
            webhook_configurations: webhooks.configurations.clone(),
        },
    }
}

/// Recent log lines of each pod that concern leader election or a rejection.
async fn logs(client: &Client, namespace: &str, pods: &[PodFacts]) -> Vec<LogExcerpt> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = kube::api::LogParams {
        tail_lines: Some(LOG_TAIL_LINES),
        limit_bytes: Some(LOG_LIMIT_BYTES),
        ..Default::default()
    };
    let mut out = Vec::new();
    for pod in pods {
        // The API server answers an empty log for a pod on no node: say there is none.
        if pod.node.is_none() {
            out.push(LogExcerpt {
                pod: pod.name.clone(),
                lines: Lookup::Unavailable("not scheduled to a node".into()),
                tries_to_acquire: false,
            });
            continue;
        }
        let (lines, tries_to_acquire) = match api.logs(&pod.name, &params).await {
            Ok(log) => (Lookup::Found(matching_lines(&log)), tries_to_acquire(&log)),
            Err(kube::Error::Api(status)) if matches!(status.code, 400 | 404) => {
                (Lookup::Unavailable(status.message.clone()), false)
            }
            Err(error) => (Lookup::from_result(Err(error)), false),
        };
        out.push(LogExcerpt {
            pod: pod.name.clone(),
            lines,
            tries_to_acquire,
        });
    }
    out
}

/// client-go's elector logs "attempting to acquire leader lease" when it starts trying.
fn tries_to_acquire(log: &str) -> bool {
    log.lines().any(|line| {
        let lower = line.to_lowercase();
        lower.contains("attempting to acquire") || lower.contains("acquire leader")
    })
}

/// A log line that says an update of the lease was rejected, not merely one that mentions a
/// webhook (virt-operator manages webhook configurations and logs about them).
pub fn rejects_the_lease(line: &str) -> bool {
    let lower = line.to_lowercase();
    ["forbidden", "denied", "webhook"]
        .iter()
        .any(|w| lower.contains(w))
        && ["lease", "leader", "resource lock"]
            .iter()
            .any(|w| lower.contains(w))
}

fn matching_lines(log: &str) -> Vec<String> {
    let matching: Vec<&str> = log
        .lines()
        .filter(|line| {
            let lower = line.to_lowercase();
            LOG_WORDS.iter().any(|w| lower.contains(w))
        })
        .collect();
    let skip = matching.len().saturating_sub(LOG_LINES_KEPT);
    matching[skip..].iter().map(|l| (*l).to_owned()).collect()
}

/// Reads the lease, with the API server's clock from the response's `Date` header, then
/// watches it for `observe` by reading it again every second.
async fn lease(
    client: &Client,
    namespace: &str,
    name: &str,
    observe: Duration,
) -> (
    Lookup<Option<LeaseFacts>>,
    Option<Value>,
    Option<Observation>,
) {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let first = match api.get_opt(name).await {
        Ok(lease) => lease,
        Err(error) => return (Lookup::from_result(Err(error)), None, None),
    };
    let server_now = server_date(client).await;
    let facts = first.as_ref().map(|l| lease_facts(l, server_now));
    let observation = match &first {
        Some(lease) if !observe.is_zero() => Some(watch_record(&api, name, lease, observe).await),
        _ => None,
    };
    (Lookup::Found(facts), first.as_ref().map(plain), observation)
}

fn lease_facts(lease: &Lease, server_now: Option<Timestamp>) -> LeaseFacts {
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    LeaseFacts {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        acquire_time: spec.acquire_time.map(|t| t.0.to_string()),
        renew_time: renewed.map(|t| t.to_string()),
        duration_seconds: spec.lease_duration_seconds,
        transitions: spec.lease_transitions,
        renewed_seconds_ago_by_server: server_now
            .zip(renewed)
            .map(|(now, at)| now.duration_since(at).as_secs_f64()),
    }
}

/// The API server's clock, from the `Date` header of a cheap request.
async fn server_date(client: &Client) -> Option<Timestamp> {
    let request = hyper::http::Request::get("/version")
        .body(kube::client::Body::from(Vec::new()))
        .ok()?;
    let response = client.send(request).await.ok()?;
    let date = response
        .headers()
        .get(hyper::http::header::DATE)?
        .to_str()
        .ok()?;
    httpdate_to_timestamp(date)
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_to_timestamp(date: &str) -> Option<Timestamp> {
    let parsed = k8s_openapi::jiff::fmt::rfc2822::parse(date).ok()?;
    Some(parsed.timestamp())
}

async fn watch_record(
    api: &Api<Lease>,
    name: &str,
    first: &Lease,
    observe: Duration,
) -> Observation {
    let start = Instant::now();
    let before = lease_record(first);
    let mut changed = false;
    while start.elapsed() < observe && !changed {
        tokio::time::sleep(Duration::from_secs(1).min(observe)).await;
        if let Ok(Some(now)) = api.get_opt(name).await {
            changed = lease_record(&now) != before;
        }
    }
    Observation {
        seconds: start.elapsed().as_secs_f64(),
        changed,
    }
}

/// May each service account get, create and update leases in `namespace`?
async fn rights(client: &Client, namespace: &str, accounts: &[String]) -> Lookup<Vec<Right>> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut rights = Vec::new();
    for account in accounts {
        for verb in ["get", "create", "update"] {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(format!("system:serviceaccount:{namespace}:{account}")),
                    groups: Some(vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{namespace}"),
                    ]),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some("coordination.k8s.io".into()),
                        resource: Some("leases".into()),
                        verb: Some(verb.into()),
                        namespace: Some(namespace.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &review).await {
                Ok(answer) => rights.push(Right {
                    service_account: account.clone(),
                    verb: verb.into(),
                    allowed: answer.status.is_some_and(|s| s.allowed),
                }),
                Err(error) => return Lookup::from_result(Err(error)),
            }
        }
    }
    Lookup::Found(rights)
}

/// Whether an admission rule applies to updates of leases.
fn matches_leases(rule: &RuleWithOperations) -> bool {
    let any = |list: &Option<Vec<String>>, want: &str| {
        list.iter()
            .flatten()
            .any(|v| v == "*" || v == want || v.starts_with(&format!("{want}/")))
    };
    any(&rule.api_groups, "coordination.k8s.io")
        && any(&rule.resources, "leases")
        && (any(&rule.operations, "UPDATE") || any(&rule.operations, "CREATE"))
}

/// The admission webhooks whose rules match lease updates, and their configurations: the
/// same for every component, so looked up once.
#[derive(Clone, Debug)]
pub struct LeaseWebhooks {
    pub hooks: Lookup<Vec<Webhook>>,
    pub configurations: Vec<Value>,
}

/// Lists both kinds of webhook configuration.
pub async fn lease_webhooks(client: &Client) -> LeaseWebhooks {
    let validating = matching_webhooks::<ValidatingWebhookConfiguration>(client, "validating");
    let mutating = matching_webhooks::<MutatingWebhookConfiguration>(client, "mutating");
    match (validating.await, mutating.await) {
        (Ok((mut hooks, mut configurations)), Ok((more, more_configurations))) => {
            hooks.extend(more);
            configurations.extend(more_configurations);
            LeaseWebhooks {
                hooks: Lookup::Found(hooks),
                configurations,
            }
        }
        (Err(error), _) | (_, Err(error)) => LeaseWebhooks {
            hooks: Lookup::from_result(Err(error)),
            configurations: Vec::new(),
        },
    }
}

/// The webhooks of configurations of kind `K` that match leases. Both kinds are read from
/// their common JSON form (`webhooks[].name`, `.rules`, `.failurePolicy`), which the bundle
/// keeps anyway.
async fn matching_webhooks<K>(
    client: &Client,
    kind: &'static str,
) -> kube::Result<(Vec<Webhook>, Vec<Value>)>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let mut found = Vec::new();
    let mut configs = Vec::new();
    for config in Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        let config = plain(&config);
        let before = found.len();
        found.extend(webhooks_on_leases(&config, kind));
        if found.len() > before {
            configs.push(config);
        }
    }
    Ok((found, configs))
}

fn webhooks_on_leases(config: &Value, kind: &'static str) -> Vec<Webhook> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let configuration = text(&config["metadata"]["name"]).unwrap_or_default();
    let hooks = config["webhooks"].as_array().into_iter().flatten();
    hooks
        .filter(|hook| {
            let rules: Vec<RuleWithOperations> =
                serde_json::from_value(hook["rules"].clone()).unwrap_or_default();
            rules.iter().any(matches_leases)
        })
        .map(|hook| Webhook {
            kind,
            configuration: configuration.clone(),
            name: text(&hook["name"]).unwrap_or_default(),
            failure_policy: text(&hook["failurePolicy"]),
        })
        .collect()
}

/// Events in `namespace` about the named objects (the pods and the lease).
async fn events(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> (Lookup<Vec<EventFacts>>, Vec<Value>) {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let about: Vec<Event> = match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object
                    .name
                    .as_ref()
                    .is_some_and(|n| names.contains(n))
            })
            .collect(),
        Err(error) => return (Lookup::from_result(Err(error)), Vec::new()),
    };
    let raw = about.iter().map(plain).collect();
    let facts = about
        .into_iter()
        .map(|e| EventFacts {
            object: format!(
                "{}/{}",
                e.involved_object.kind.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default()
            ),
            reason: e.reason,
            message: e.message,
            count: e.count,
            last_seen: e.last_timestamp.map(|t| t.0.to_string()),
        })
        .collect();
    (Lookup::Found(facts), raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_about_leadership_and_rejections_are_kept() {
        let log = "starting\nattempting to acquire leader lease kubevirt/virt-operator...\n\
                   reconciling\nerror retrieving resource lock: leases is Forbidden\nok\n";
        assert_eq!(
            matching_lines(log),
            [
                "attempting to acquire leader lease kubevirt/virt-operator...",
                "error retrieving resource lock: leases is Forbidden"
            ]
        );
        let long: String = (0..100).map(|i| format!("lease {i}\n")).collect();
        let kept = matching_lines(&long);
        assert_eq!(kept.len(), LOG_LINES_KEPT);
        assert_eq!(kept.last().map(String::as_str), Some("lease 99"));
    }

    #[test]
    fn rejections_of_the_lease_are_told_from_mentions_of_webhooks() {
        assert!(rejects_the_lease(
            "error retrieving resource lock kubevirt/virt-operator: leases.coordination.k8s.io \"virt-operator\" is forbidden"
        ));
        assert!(rejects_the_lease(
            "failed to update lease: admission webhook \"leases.policy.example.com\" denied the request"
        ));
        assert!(!rejects_the_lease(
            "reconciling webhook configuration virt-api-validator"
        ));
        assert!(tries_to_acquire(
            "I1127 attempting to acquire leader lease kubevirt/virt-operator..."
        ));
        assert!(!tries_to_acquire(
            "I1127 successfully acquired lease kubevirt/virt-operator"
        ));
    }

    #[test]
    fn http_dates_parse() {
        let t = httpdate_to_timestamp("Fri, 27 Nov 2026 00:47:50 GMT").expect("date");
        assert_eq!(t.to_string(), "2026-11-27T00:47:50Z");
        assert!(httpdate_to_timestamp("yesterday").is_none());
    }

    #[test]
    fn webhooks_on_leases_are_read_from_a_configuration() {
        let config = serde_json::json!({
            "metadata": {"name": "policy"},
            "webhooks": [
                {"name": "leases.example.com", "failurePolicy": "Fail",
                 "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                            "operations": ["UPDATE"], "apiVersions": ["v1"]}]},
                {"name": "pods.example.com",
                 "rules": [{"apiGroups": [""], "resources": ["pods"], "operations": ["CREATE"]}]},
                {"name": "no-rules.example.com"},
            ]
        });
        let found = webhooks_on_leases(&config, "validating");
        assert_eq!(
            found,
            [Webhook {
                kind: "validating",
                configuration: "policy".into(),
                name: "leases.example.com".into(),
                failure_policy: Some("Fail".into()),
            }]
        );
        assert!(webhooks_on_leases(&serde_json::json!({}), "mutating").is_empty());
    }

    #[test]
    fn lease_rules() {
        let rule = |groups: &[&str], resources: &[&str], ops: &[&str]| RuleWithOperations {
            api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
            resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
            operations: Some(ops.iter().map(|s| (*s).to_owned()).collect()),
            ..Default::default()
        };
        assert!(matches_leases(&rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["UPDATE"]
        )));
        assert!(matches_leases(&rule(&["*"], &["*"], &["*"])));
        assert!(!matches_leases(&rule(
            &["apps"],
            &["deployments"],
            &["UPDATE"]
        )));
        assert!(!matches_leases(&rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["DELETE"]
        )));
    }
}
