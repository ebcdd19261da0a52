//! `diagnose --component NAME` for a component that no preset or file names: one the
//! exporter discovers from its Lease. Each Lease of that name that is a leader election is
//! resolved to its workload, as discovery does, and judged in the Lease's namespace.

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{Api, Client, ResourceExt, api::ListParams};

use kubevirt_leader_exporter::{
    components::Component,
    discovery::{leases::not_an_election, resolve},
    error_chain,
};

use super::facts::list_in;

/// One Lease named as asked: the component it stands for, in its namespace, and its pods
/// (`None` when they could not be listed, with why in `unchecked`).
pub struct Elected {
    pub namespace: String,
    pub component: Component,
    pub pods: Option<Vec<Pod>>,
    pub unchecked: Vec<String>,
}

/// The leader elections whose Lease is called `name`, in `only` (every namespace when
/// empty).
pub async fn elections(client: &Client, name: &str, only: &[String]) -> kube::Result<Vec<Elected>> {
    let params = ListParams::default().fields(&format!("metadata.name={name}"));
    let leases: Vec<Lease> = list_in(client, &params, only).await?;
    let mut found = Vec::new();
    for lease in leases.iter().filter(|l| not_an_election(l).is_none()) {
        found.push(elected(client, lease).await);
    }
    Ok(found)
}

async fn elected(client: &Client, lease: &Lease) -> Elected {
    let namespace = lease.namespace().unwrap_or_default();
    let name = lease.name_any();
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default();
    // Judged without its pods, for `why`.
    let unlooked = |why: String| Elected {
        component: Component::discovered(&name, None),
        namespace: namespace.clone(),
        pods: None,
        unchecked: vec![why],
    };
    let workload = match resolve::workload(client, &namespace, &name, holder).await {
        Ok(found) => found,
        Err(error) => {
            return unlooked(format!(
                "{name}'s holder {holder:?} could not be followed to its workload, so its \
                 pods were not looked at: {}",
                error_chain(&error)
            ));
        }
    };
    if let Some(found) = workload.as_ref().filter(|f| f.namespace != namespace) {
        return unlooked(format!(
            "{name}'s holder runs in {} {} of namespace {}, not the Lease's: its pods were \
             not looked at",
            found.kind.as_str(),
            found.name,
            found.namespace
        ));
    }
    let mut unchecked = Vec::new();
    let component = resolve::component(&namespace, &name, workload);
    let pods = if component.watches_pods() {
        let params = ListParams::default().labels(&component.label_selector());
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        match api.list(&params).await {
            Ok(list) => Some(list.items),
            Err(error) => {
                unchecked.push(format!(
                    "{name}'s pods could not be listed: {}",
                    error_chain(&error)
                ));
                None
            }
        }
    } else {
        // Abandoned: no workload, so no pods to list.
        Some(Vec::new())
    };
    Elected {
        namespace,
        component,
        pods,
        unchecked,
    }
}
