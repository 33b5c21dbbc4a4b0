//! The Kubernetes target against a real kube-apiserver (envtest): each test takes its
//! own namespace on the control plane this binary shares.

mod common;
#[path = "common/envtest.rs"]
mod envtest;

#[tokio::test]
#[ignore = "needs KUBEBUILDER_ASSETS"]
async fn the_client_reaches_the_api_server_through_the_kubeconfig() {
    use k8s_openapi::api::core::v1::Namespace;
    let plane = envtest::shared();
    let client = plane.client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let ns = plane.namespace(&client, "smoke").await;
    let got = kube::Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .unwrap();
    assert_eq!(got.metadata.name.as_deref(), Some(ns.as_str()));
    // The create went through gitcanary's client, so the audit log names it.
    let writes = plane.gitcanary_writes(0);
    assert!(
        writes.contains(&format!("create namespaces//{ns}")),
        "{writes:?}"
    );
}
