//! Alerts and event webhooks of the canary executor: which events alert at which
//! severity, and where an AlertProvider's address comes from (a Secret, an env var or
//! the spec). The payloads and the POST are `notify::providers`, shared with the
//! global `notifications:`.

use super::*;
use crate::notify::providers;

impl Core {
    /// Sends events to `event` webhooks (all of them) and to alert providers (the
    /// noteworthy ones, at or above each alert's severity).
    pub(super) async fn notify_events(&self, c: &CanarySpec, plan: &decide::Plan, rev: &str) {
        for e in &plan.events {
            for w in c
                .analysis
                .webhooks
                .iter()
                .filter(|w| w.kind == HookType::Event)
            {
                let mut w = w.clone();
                w.metadata.insert("eventMessage".into(), e.message.clone());
                w.metadata.insert(
                    "eventType".into(),
                    if e.severity == Severity::Info {
                        "Normal".into()
                    } else {
                        "Warning".into()
                    },
                );
                let _ = self.call_hook(c, &w, plan.status.phase, rev).await;
            }
            let Some(severity) = alert_severity(&e.message) else {
                continue;
            };
            for (name, ns, filter) in &c.analysis.alerts {
                if severity
                    < providers::Severity::parse(filter).unwrap_or(providers::Severity::Info)
                {
                    continue;
                }
                if let Err(err) = self.send_alert(c, name, ns, severity, &e.message).await {
                    tracing::warn!("alert provider {ns}/{name}: {err}");
                }
            }
        }
    }

    async fn send_alert(
        &self,
        c: &CanarySpec,
        name: &str,
        ns: &str,
        severity: providers::Severity,
        message: &str,
    ) -> Result<(), String> {
        let key = ObjectKey::new("flagger.app/v1beta1", "AlertProvider", ns, name);
        let p = self
            .get_object(key)
            .await?
            .ok_or("AlertProvider not found")?;
        // The address is a secret: gitcanary reads it from the env var the spec names.
        // Flagger's `secretRef`: a Secret in the provider's namespace whose `address`
        // key holds the URL.
        let from_secret = match p["spec"]["secretRef"]["name"].as_str() {
            None => None,
            Some(secret) => {
                let obj = self
                    .get_object(ObjectKey::new("v1", "Secret", ns, secret))
                    .await?
                    .ok_or_else(|| format!("spec.secretRef: Secret {ns}/{secret} not found"))?;
                let value = crate::manifest::object::data_value(&obj, "Secret", "address")
                    .map_err(|e| format!("spec.secretRef: Secret {ns}/{secret}: {e}"))?
                    .ok_or_else(|| {
                        format!("spec.secretRef: Secret {ns}/{secret} has no address key")
                    })?;
                Some(value.trim().to_string())
            }
        };
        let address = match (
            from_secret,
            p["spec"]["addressEnv"].as_str(),
            p["spec"]["address"].as_str(),
        ) {
            (Some(a), _, _) => a,
            (None, Some(var), _) => {
                address_from_env(var, &self.alert_env_prefix, |v| std::env::var(v).ok())?
            }
            (None, None, Some(a)) => a.to_string(),
            (None, None, None) => {
                return Err("spec.secretRef, spec.addressEnv or spec.address is required".into())
            }
        };
        let kind = providers::Kind::parse(p["spec"]["type"].as_str().unwrap_or("generic"))?;
        let style = providers::Style {
            channel: p["spec"]["channel"].as_str().map(str::to_string),
            username: p["spec"]["username"].as_str().map(str::to_string),
        };
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), c.name.clone().into());
        fields.insert("namespace".into(), c.namespace.clone().into());
        let id = c.id();
        let alert = providers::Alert {
            subject: &id,
            severity,
            message,
            fields,
        };
        let body = providers::body(kind, &style, &alert);
        let url = self.local_url(&address, &c.namespace).await;
        providers::post(&self.http, &url, &body).await?;
        Ok(())
    }
}

/// `spec.addressEnv`: the variable must start with `prefix`, or a pusher could send any
/// of gitcanary's variables (a Git token, the webhook secret) to an address of theirs.
fn address_from_env(
    var: &str,
    prefix: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if prefix.is_empty() || !var.starts_with(prefix) {
        return Err(format!(
            "spec.addressEnv: {var} does not start with {prefix:?} (canary.alertAddressEnvPrefix)"
        ));
    }
    lookup(var)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("spec.addressEnv: environment variable {var} is not set"))
}

/// The severity an event alerts with, if it is one worth alerting on. Beyond Flagger's
/// alerts, pre-rollout failures and progress-deadline rollbacks alert too (flagger #1663).
fn alert_severity(message: &str) -> Option<providers::Severity> {
    if message.starts_with("New revision detected! Scaling up")
        || message.starts_with("Promotion completed!")
    {
        Some(providers::Severity::Info)
    } else if message.contains("pre-rollout check")
        || message.contains("manual webhook invoked")
        || message.contains("aborted by")
    {
        Some(providers::Severity::Warn)
    } else if message.starts_with("Canary failed!")
        || message.contains("progress deadline exceeded")
        || message.contains("failed checks threshold reached")
    {
        Some(providers::Severity::Error)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::address_from_env;

    #[test]
    fn address_env_is_limited_to_the_prefix() {
        let env = |v: &str| match v {
            "GITCANARY_ALERT_SLACK" => Some("https://hooks.example/x".to_string()),
            "GIT_TOKEN" => Some("s3cr3t".to_string()),
            _ => None,
        };
        assert_eq!(
            address_from_env("GITCANARY_ALERT_SLACK", "GITCANARY_ALERT_", env).unwrap(),
            "https://hooks.example/x"
        );
        let e = address_from_env("GIT_TOKEN", "GITCANARY_ALERT_", env).unwrap_err();
        assert_eq!(
            e,
            "spec.addressEnv: GIT_TOKEN does not start with \"GITCANARY_ALERT_\" (canary.alertAddressEnvPrefix)"
        );
        assert!(!e.contains("s3cr3t"));
        assert!(
            address_from_env("GIT_TOKEN", "", env).is_err(),
            "no prefix, no access"
        );
        assert_eq!(
            address_from_env("GITCANARY_ALERT_NONE", "GITCANARY_ALERT_", env).unwrap_err(),
            "spec.addressEnv: environment variable GITCANARY_ALERT_NONE is not set"
        );
    }
}
