//! Registry credentials for pulls, read from the Docker CLI's config (`$DOCKER_CONFIG/config.json`
//! or `~/.docker/config.json`, the `auths` entries that `docker login` writes). The engine does not
//! read that file itself: API clients must send the credentials with each pull.
//!
//! Credential helpers (`credsStore`, `credHelpers`) are not consulted; with one of those in use,
//! pulls from private registries fail as `pull_failed` (unauthorized).
use base64::Engine as _;
use bollard::auth::DockerCredentials;

/// The key Docker Hub's credentials are stored under.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// Credentials for the registry of `reference`, if the user logged in to it.
pub(super) fn for_reference(reference: &str) -> Option<DockerCredentials> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    let config = std::fs::read_to_string(dir.join("config.json")).ok()?;
    from_config(&config, reference)
}

/// The registry host of a reference: its first component if that names a host.
fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

fn from_config(config: &str, reference: &str) -> Option<DockerCredentials> {
    let config: serde_json::Value = serde_json::from_str(config).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let host = registry_host(reference);
    let matches = |key: &str| {
        let key_host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let key_host = key_host.split('/').next().unwrap_or(key_host);
        key_host == host
            || (host == "docker.io" && (key == DOCKER_HUB || key_host == "index.docker.io"))
    };
    let (key, entry) = auths.iter().find(|(key, _)| matches(key))?;
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let (username, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some(DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: Some(key.clone()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "auths": {
            "https://index.docker.io/v1/": {"auth": "aHViLXVzZXI6aHViLXBhc3M="},
            "registry.example.com:5000": {"auth": "bWU6czNjcjN0OndpdGgtY29sb24="}
        }
    }"#;

    #[test]
    fn hub_and_private_registries_are_told_apart() {
        let hub = from_config(CONFIG, "anonymous/vllm-baseline:abc").unwrap();
        assert_eq!(hub.username.as_deref(), Some("hub-user"));
        assert_eq!(hub.password.as_deref(), Some("hub-pass"));
        assert_eq!(hub.serveraddress.as_deref(), Some(DOCKER_HUB));

        let private = from_config(CONFIG, "registry.example.com:5000/team/vllm:x").unwrap();
        assert_eq!(private.username.as_deref(), Some("me"));
        assert_eq!(
            private.password.as_deref(),
            Some("s3cr3t:with-colon"),
            "only the first ':' splits"
        );

        assert!(from_config(CONFIG, "127.0.0.1:5000/isobench-test/sim:fast").is_none());
        assert!(from_config("{}", "ubuntu").is_none());
        assert!(from_config("not json", "ubuntu").is_none());
    }

    #[test]
    fn registry_hosts_are_read_like_docker_does() {
        assert_eq!(registry_host("ubuntu:22.04"), "docker.io");
        assert_eq!(registry_host("anonymous/vllm-baseline:x"), "docker.io");
        assert_eq!(registry_host("ghcr.io/org/img:x"), "ghcr.io");
        assert_eq!(registry_host("localhost/img"), "localhost");
        assert_eq!(registry_host("127.0.0.1:5000/a/b:c"), "127.0.0.1:5000");
    }
}
