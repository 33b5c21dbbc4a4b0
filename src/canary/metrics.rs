//! Metrics providers behind one trait, [`MetricsProvider`], with one result type: the
//! built-in metrics from the target (the local proxy's request window) and
//! MetricTemplates (`flagger.app/v1beta1`) with the prometheus provider, whose query is
//! rendered with `name`, `namespace`, `target`, `service`, `interval` and `variables`,
//! then run over HTTP. An empty or NaN result is "no values" (a failed check, as in
//! Flagger); an unreachable provider is a failed check too: no promotion without data.

use super::router::BoxFuture;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// One metric to measure for a canary.
#[derive(Clone, Debug)]
pub struct MetricQuery<'a> {
    /// The canary's namespace.
    pub namespace: &'a str,
    /// The target Deployment.
    pub target: &'a str,
    /// The metric's name (`request-success-rate`, `request-duration`, or a template's).
    pub metric: &'a str,
    /// The target's template hash: built-in metrics count only its pods' requests.
    pub revision: &'a str,
    /// Only requests from this second (Unix) on: when the analysis started.
    pub since: u64,
    /// The metric's interval.
    pub interval: Duration,
    /// Now (Unix seconds).
    pub now: f64,
    /// The rendered query, for providers that take one (Prometheus); empty otherwise.
    pub query: &'a str,
}

/// Measures metrics. `Ok(None)` is "no values", which Flagger counts as a failed
/// check; `Err` is a provider that could not answer.
pub trait MetricsProvider: Send + Sync {
    /// The metric's current value.
    fn query<'a>(&'a self, q: &'a MetricQuery<'a>) -> BoxFuture<'a, Result<Option<f64>, String>>;
}

/// A Prometheus server answering instant queries.
pub struct Prometheus {
    /// The client.
    pub http: reqwest::Client,
    /// Its address, as this process reaches it.
    pub address: String,
}

impl MetricsProvider for Prometheus {
    fn query<'a>(&'a self, q: &'a MetricQuery<'a>) -> BoxFuture<'a, Result<Option<f64>, String>> {
        Box::pin(query(&self.http, &self.address, q.query))
    }
}

/// What a query is rendered with.
pub struct Model<'a> {
    /// Canary name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Target Deployment.
    pub target: &'a str,
    /// Apex Service.
    pub service: &'a str,
    /// Metric interval, Go-formatted (`1m`).
    pub interval: &'a str,
    /// `templateVariables`.
    pub variables: &'a BTreeMap<String, String>,
}

/// Renders `{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ service }}`,
/// `{{ interval }}` and `{{ variables.key }}`; anything else is an error.
pub fn render(template: &str, m: &Model) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let j = rest[i..].find("}}").ok_or("unclosed {{ in query")? + i;
        let action = rest[i + 2..j].trim();
        let value = match action {
            "name" => m.name.to_string(),
            "namespace" => m.namespace.to_string(),
            "target" => m.target.to_string(),
            "service" => m.service.to_string(),
            "interval" => m.interval.to_string(),
            v if v.starts_with("variables.") => {
                let key = &v["variables.".len()..];
                m.variables
                    .get(key)
                    .cloned()
                    .ok_or_else(|| format!("templateVariables has no {key:?}"))?
            }
            other => return Err(format!("unsupported template action {{{{ {other} }}}}")),
        };
        out.push_str(&value);
        rest = &rest[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The first sample of a Prometheus instant-query response; `None` when empty or NaN.
pub fn first_sample(body: &Value) -> Result<Option<f64>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            body["error"].as_str().unwrap_or("unknown error")
        ));
    }
    let data = &body["data"];
    let raw = match data["resultType"].as_str() {
        Some("vector") => data["result"][0]["value"][1].as_str(),
        Some("scalar") => data["result"][1].as_str(),
        _ => None,
    };
    Ok(raw
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| !v.is_nan()))
}

/// Largest query response read: a check reads one sample, but a query without
/// aggregation may return many series.
const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Runs an instant query against a Prometheus at `address`.
pub async fn query(http: &reqwest::Client, address: &str, q: &str) -> Result<Option<f64>, String> {
    let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", address.trim_end_matches('/')))
        .map_err(|e| format!("address {address:?}: {e}"))?;
    url.query_pairs_mut().append_pair("query", q);
    let resp = http
        .get(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("prometheus unreachable: {}", e.without_url()))?;
    let body = crate::util::http::read_response(resp, MAX_RESPONSE_BYTES, "prometheus")
        .await
        .map_err(|e| e.to_string())?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| format!("prometheus answered garbage: {e}"))?;
    first_sample(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flagger_templates() {
        let vars: BTreeMap<String, String> = [("ingress".to_string(), "web".to_string())].into();
        let m = Model {
            name: "podinfo",
            namespace: "test",
            target: "podinfo",
            service: "podinfo",
            interval: "1m",
            variables: &vars,
        };
        assert_eq!(
            render("sum(rate(response_total{namespace=\"{{ namespace }}\",deployment=~\"{{ target }}\"}[{{ interval }}])) {{variables.ingress}}", &m).unwrap(),
            "sum(rate(response_total{namespace=\"test\",deployment=~\"podinfo\"}[1m])) web"
        );
        assert!(render("{{ .Values.x }}", &m).is_err());
        assert_eq!(first_sample(&serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": []}})).unwrap(), None);
        assert_eq!(first_sample(&serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "99.5"]}]}})).unwrap(), Some(99.5));
        assert_eq!(first_sample(&serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]}})).unwrap(), None);
    }
}
