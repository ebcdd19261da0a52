//! kubectl's own flags for reaching the cluster, which a kubectl plugin user types without
//! thinking, read as kubectl reads them: `--kubeconfig` alone when given, else every file of
//! `KUBECONFIG` merged, else `~/.kube/config`, else the pod's service account.

use std::{path::PathBuf, time::Duration};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

#[derive(Clone, Debug, Default, clap::Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file. Default: the files of KUBECONFIG (separated by `:`),
    /// merged as kubectl merges them, else ~/.kube/config, else the in-cluster service
    /// account.
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use. Default: its current-context.
    #[arg(long, global = true)]
    pub context: Option<String>,

    /// The kubeconfig cluster to use, instead of the context's.
    #[arg(long, global = true)]
    pub cluster: Option<String>,

    /// The kubeconfig user to use, instead of the context's.
    #[arg(long, global = true)]
    pub user: Option<String>,

    /// How long to wait for a single request to the API server (1s, 2m, ...; a bare number
    /// is seconds, as kubectl's), `0` for no limit. Default: 30 s to connect and 295 s to
    /// read, as the Kubernetes client sets them.
    #[arg(long, global = true, value_parser = parse_request_timeout, value_name = "DURATION")]
    pub request_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigLoadError {
    #[error("kubeconfig {path}: {error}")]
    File {
        path: String,
        error: KubeconfigError,
    },
    #[error(
        "no kubeconfig (KUBECONFIG, ~/.kube/config: {kubeconfig}) and not in a pod ({in_cluster})"
    )]
    Nothing {
        kubeconfig: KubeconfigError,
        in_cluster: kube::config::InClusterError,
    },
}

impl KubeArgs {
    fn options(&self) -> KubeConfigOptions {
        KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }

    fn chose(&self) -> bool {
        self.context.is_some() || self.cluster.is_some() || self.user.is_some()
    }

    /// The client configuration these flags and the environment give.
    pub async fn config(&self) -> Result<kube::Config, KubeconfigLoadError> {
        let (kubeconfig, origin) = match &self.kubeconfig {
            Some(path) => (Kubeconfig::read_from(path), path.display().to_string()),
            None => (
                Kubeconfig::read(),
                "from KUBECONFIG or ~/.kube/config".to_owned(),
            ),
        };
        let mut config = match kubeconfig {
            Ok(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &self.options())
                .await
                .map_err(|error| KubeconfigLoadError::File {
                    path: origin,
                    error,
                })?,
            // As kubectl: no kubeconfig at all, inside a pod, is the pod's service account.
            Err(error) if self.kubeconfig.is_none() && !self.chose() => {
                kube::Config::incluster().map_err(|in_cluster| KubeconfigLoadError::Nothing {
                    kubeconfig: error,
                    in_cluster,
                })?
            }
            Err(error) => {
                return Err(KubeconfigLoadError::File {
                    path: origin,
                    error,
                });
            }
        };
        if let Some(timeout) = self.request_timeout {
            let limit = (!timeout.is_zero()).then_some(timeout);
            config.connect_timeout = limit;
            config.read_timeout = limit;
            config.write_timeout = limit;
        }
        Ok(config)
    }
}

/// kubectl's `--request-timeout`: a duration with its unit, or a bare number of seconds.
fn parse_request_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    if text.starts_with('-') {
        return Err("must not be negative".into());
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (write it as 30s, 2m, 0 for none)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeouts_read_as_kubectl_reads_them() {
        assert_eq!(parse_request_timeout("0"), Ok(Duration::ZERO));
        assert_eq!(parse_request_timeout("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_request_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_request_timeout("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert!(parse_request_timeout("-1s").is_err());
        assert!(parse_request_timeout("soon").is_err());
    }
}
