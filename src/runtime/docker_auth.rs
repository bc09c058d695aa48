//! Registry credentials, read the way the Docker CLI reads them from its config
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`): a credential helper named for the
//! registry host in `credHelpers` first, else the default store `credsStore`, else the
//! base64 `auth` of the `auths` entry that `docker login` writes. A helper is the program
//! `docker-credential-<name>`, run as `get` with the server URL on stdin; it answers
//! `{"ServerURL", "Username", "Secret"}` on stdout. The engine does not read any of this
//! itself: API clients send the credentials with each pull and push, and the registry client
//! ([`super::registry`]) sends them in its manifest lookups.
//!
//! Secrets are never printed: [`Credentials`] redacts itself in `Debug`, and a failing helper's
//! output is not quoted.
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The key Docker Hub's credentials are stored under.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// A user name and secret (password or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
    /// The server address the credentials were stored under.
    pub server: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .field("server", &self.server)
            .finish()
    }
}

impl Credentials {
    /// Helpers answer `<token>` as the user name for an identity token (an OAuth refresh
    /// token), which the engine takes in its own field.
    pub(super) fn into_docker(self) -> DockerCredentials {
        if self.username == "<token>" {
            return DockerCredentials {
                identitytoken: Some(self.secret),
                serveraddress: Some(self.server),
                ..Default::default()
            };
        }
        DockerCredentials {
            username: Some(self.username),
            password: Some(self.secret),
            serveraddress: Some(self.server),
            ..Default::default()
        }
    }
}

/// Credentials for the registry of `reference` (for the engine's pull and push), if any.
pub(super) fn for_reference(reference: &str) -> Option<DockerCredentials> {
    for_host(registry_host(reference)).map(Credentials::into_docker)
}

/// Credentials for the registry `host` (`docker.io` for Docker Hub), if any.
pub fn for_host(host: &str) -> Option<Credentials> {
    let config = std::fs::read_to_string(config_dir()?.join("config.json")).ok()?;
    from_config(&config, host, &run_helper)
}

fn config_dir() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(PathBuf::from(std::env::var_os("HOME")?).join(".docker")),
    }
}

/// The registry host of a reference: its first component if that names a host.
pub fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// Whether a key of `auths`/`credHelpers` (a host or a URL) names `host`.
fn key_names_host(key: &str, host: &str) -> bool {
    let key_host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key_host = key_host.split('/').next().unwrap_or(key_host);
    key_host == host
        || (host == "docker.io" && (key == DOCKER_HUB || key_host == "index.docker.io"))
}

/// Runs a credential helper: `(helper name, server URL) -> its JSON answer`, `None` when it
/// has no credentials or cannot be run.
type Helper<'a> = &'a dyn Fn(&str, &str) -> Option<String>;

fn from_config(config: &str, host: &str, helper: Helper) -> Option<Credentials> {
    let config: serde_json::Value = serde_json::from_str(config).ok()?;
    let server = if host == "docker.io" {
        DOCKER_HUB.to_string()
    } else {
        host.to_string()
    };
    let named_helper = config
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| h.iter().find(|(key, _)| key_names_host(key, host)))
        .and_then(|(_, name)| name.as_str());
    // As the Docker CLI: a host's own helper wins; with a default store the `auths` file
    // entries are only placeholders.
    if let Some(name) = named_helper.or_else(|| config.get("credsStore")?.as_str()) {
        return from_helper_answer(&helper(name, &server)?, &server);
    }
    let auths = config.get("auths")?.as_object()?;
    let (key, entry) = auths.iter().find(|(key, _)| key_names_host(key, host))?;
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let (username, secret) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some(Credentials {
        username,
        secret,
        server: key.clone(),
    })
}

fn from_helper_answer(answer: &str, server: &str) -> Option<Credentials> {
    let json: serde_json::Value = serde_json::from_str(answer).ok()?;
    let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let secret = field("Secret").filter(|s| !s.is_empty())?;
    Some(Credentials {
        username: field("Username").unwrap_or_default(),
        secret,
        server: field("ServerURL").unwrap_or_else(|| server.to_string()),
    })
}

/// `docker-credential-<name> get` with `server` on stdin; its stdout when it succeeded.
/// Its stderr is dropped: helpers may echo what they were given.
fn run_helper(name: &str, server: &str) -> Option<String> {
    // A helper name is a suffix of a program name, never a path.
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let mut child = Command::new(format!("docker-credential-{name}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Dropping stdin after the write closes it, so the helper sees the end of its input.
    let written = child.stdin.take()?.write_all(server.as_bytes());
    let output = child.wait_with_output().ok()?;
    (written.is_ok() && output.status.success())
        .then(|| String::from_utf8(output.stdout).ok())
        .flatten()
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

    fn no_helper(_: &str, _: &str) -> Option<String> {
        panic!("no helper is configured")
    }

    fn file_only(config: &str, reference: &str) -> Option<Credentials> {
        from_config(config, registry_host(reference), &no_helper)
    }

    #[test]
    fn hub_and_private_registries_are_told_apart() {
        let hub = file_only(CONFIG, "anonymous/vllm-baseline:abc").unwrap();
        assert_eq!(hub.username, "hub-user");
        assert_eq!(hub.secret, "hub-pass");
        assert_eq!(hub.server, DOCKER_HUB);

        let private = file_only(CONFIG, "registry.example.com:5000/team/vllm:x").unwrap();
        assert_eq!(private.username, "me");
        assert_eq!(
            private.secret, "s3cr3t:with-colon",
            "only the first ':' splits"
        );

        assert!(file_only(CONFIG, "127.0.0.1:5000/isobench-test/sim:fast").is_none());
        assert!(file_only("{}", "ubuntu").is_none());
        assert!(file_only("not json", "ubuntu").is_none());
    }

    #[test]
    fn helpers_come_first_and_get_the_server_url() {
        let config = r#"{
            "auths": {"ghcr.io": {"auth": "ZmlsZTpmaWxl"}, "quay.io": {}},
            "credHelpers": {"ghcr.io": "gh"},
            "credsStore": "desktop"
        }"#;
        let asked = std::cell::RefCell::new(Vec::new());
        let helper = |name: &str, server: &str| {
            asked.borrow_mut().push(format!("{name} {server}"));
            match name {
                "gh" => Some(r#"{"ServerURL":"ghcr.io","Username":"u","Secret":"tok"}"#.into()),
                "desktop" if server == DOCKER_HUB => {
                    Some(r#"{"ServerURL":"","Username":"<token>","Secret":"refresh"}"#.into())
                }
                _ => None,
            }
        };
        let gh = from_config(config, "ghcr.io", &helper).unwrap();
        assert_eq!((gh.username.as_str(), gh.secret.as_str()), ("u", "tok"));
        // The default store covers every other host, and its "not found" is final.
        assert!(from_config(config, "quay.io", &helper).is_none());
        let hub = from_config(config, "docker.io", &helper)
            .unwrap()
            .into_docker();
        assert_eq!(hub.identitytoken.as_deref(), Some("refresh"));
        assert_eq!(hub.username, None);
        assert_eq!(
            asked.into_inner(),
            [
                "gh ghcr.io",
                "desktop quay.io",
                &format!("desktop {DOCKER_HUB}")
            ]
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = Credentials {
            username: "u".into(),
            secret: "hunter2".into(),
            server: "r".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_missing_helper_program_gives_no_credentials() {
        let config = r#"{"credHelpers": {"r.example": "isobench-no-such-helper"}}"#;
        assert!(from_config(config, "r.example", &run_helper).is_none());
        assert!(run_helper("../x", "r").is_none());
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
