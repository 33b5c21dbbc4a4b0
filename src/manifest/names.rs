//! Kubernetes' rules for the parts of an object's identity: kind, API group and
//! version, name and namespace. They become folder and file names in the local store,
//! so anything Kubernetes itself would refuse (`kind: ../../x`) is refused at load time.

/// A DNS-1123 label: lower-case letters, digits and `-`, starting and ending with a
/// letter or digit, at most 63 characters (Kubernetes namespaces and API versions).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters (Kubernetes
/// object names and API groups).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A kind as Kubernetes accepts it: a letter, then letters and digits.
pub fn is_kind(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// Checks an object's `kind`.
pub fn check_kind(kind: &str) -> Result<(), String> {
    if is_kind(kind) {
        Ok(())
    } else {
        Err(format!(
            "{kind:?} is not a valid kind: use a letter followed by letters and digits"
        ))
    }
}

/// Checks an `apiVersion`: `version` or `group/version`, the group a DNS subdomain and
/// the version a DNS label.
pub fn check_api_version(api_version: &str) -> Result<(), String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if api_version.contains('/') && !is_dns_subdomain(group) {
        return Err(format!(
            "{api_version:?}: the group {group:?} is not a valid DNS subdomain (lower-case letters, digits, '-' and '.')"
        ));
    }
    if !is_dns_label(version) {
        return Err(format!(
            "{api_version:?}: the version {version:?} is not a valid DNS label (lower-case letters, digits and '-')"
        ));
    }
    Ok(())
}

/// Checks `metadata.name` of an object of `api_version`/`kind`: a DNS subdomain, as
/// Kubernetes requires of most kinds. RBAC objects only need a path segment name (no
/// `/` or `%`, not `.` or `..`), which is how `system:` ClusterRoles are named.
pub fn check_name(api_version: &str, kind: &str, name: &str) -> Result<(), String> {
    let rbac = api_version.starts_with("rbac.authorization.k8s.io/")
        && matches!(
            kind,
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
        );
    if rbac {
        if is_plain_file_name(name) && !name.contains('%') && name.len() <= 253 {
            return Ok(());
        }
        return Err(format!("{name:?} is not a valid name: it may not contain '/' or '%', start with '.', or be empty"));
    }
    if is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"))
    }
}

/// Checks `metadata.namespace`: a DNS label, as Kubernetes requires.
pub fn check_namespace(ns: &str) -> Result<(), String> {
    if is_dns_label(ns) {
        Ok(())
    } else {
        Err(format!("{ns:?} is not a valid namespace: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"))
    }
}

/// Checks a Helm release's name and namespace: Helm's rule for names (a DNS subdomain
/// of at most 53 characters) and a DNS label for the namespace. Both name the file of
/// the release record. Errors start with the field.
pub fn check_release(name: &str, namespace: &str) -> Result<(), String> {
    // The namespace first: a bad targetNamespace also makes the default release name bad.
    check_namespace(namespace).map_err(|e| format!("spec.targetNamespace: {e}"))?;
    if !is_dns_subdomain(name) || name.len() > 53 {
        return Err(format!("spec.releaseName: {name:?} is not a valid release name: use at most 53 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"));
    }
    Ok(())
}

/// One plain, non-hidden file name: no separators, not `.` or `..`, no leading dot.
/// Whatever a caller joins it to, the result stays in that folder.
pub fn is_plain_file_name(part: &str) -> bool {
    let mut components = std::path::Path::new(part).components();
    !part.starts_with('.')
        && !part.contains(['/', '\\', '\0'])
        && matches!(components.next(), Some(std::path::Component::Normal(_)))
        && components.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_groups_versions_names() {
        for ok in ["Deployment", "HelmRelease", "V1Thing"] {
            assert!(check_kind(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../../../../home/u", "a/b", "1Kind", "Kind-x", "Kind.x"] {
            assert!(check_kind(bad).is_err(), "{bad}");
        }
        for ok in ["v1", "apps/v1", "helm.toolkit.fluxcd.io/v2beta1"] {
            assert!(check_api_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../v1", "a/../v1", "/v1", "apps/", "apps/V1", "..", "a..b/v1", "x/y/v1",
        ] {
            assert!(check_api_version(bad).is_err(), "{bad}");
        }
        for ok in ["a", "web-1", "a.b.c"] {
            assert!(check_name("v1", "ConfigMap", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a..b",
            "a/b",
            "-a",
            "a.",
            "A",
            &"a".repeat(254),
        ] {
            assert!(check_name("v1", "ConfigMap", bad).is_err(), "{bad}");
        }
        // RBAC names are path segments: `system:` roles load, traversal still does not.
        let rbac = |kind, name| check_name("rbac.authorization.k8s.io/v1", kind, name);
        assert!(rbac("ClusterRole", "system:controller:gitcanary").is_ok());
        assert!(rbac("RoleBinding", "Admin_Binding").is_ok());
        for bad in ["", ".", "..", "a/b", "a%2f"] {
            assert!(rbac("ClusterRole", bad).is_err(), "{bad}");
        }
        assert!(check_name("v1", "ConfigMap", "system:x").is_err());
        assert!(check_namespace("test").is_ok());
        assert!(check_release("web", "test").is_ok());
        assert!(check_release("../../../../home/u/x", "test").is_err());
        assert!(check_release("web", "../x").is_err());
        assert!(check_release(&"a".repeat(54), "test").is_err());
        for bad in ["", ".", "..", ".tmp-x", "a/b", "a\\b", "a\0"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
        assert!(is_plain_file_name("web.json"));
        for bad in ["a.b", "..", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }
}
