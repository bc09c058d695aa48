//! Is an image in its registry? A manifest lookup through the registry API (`HEAD
//! /v2/<name>/manifests/<tag>`, Docker v2 and OCI manifests and lists accepted), answering a
//! `WWW-Authenticate` challenge: `Bearer` (a token from the realm, asked for with the user's
//! credentials where there are any) or `Basic`. Credentials come from
//! [`super::docker_auth::for_host`] (credential helpers included) and are never printed.
//!
//! The HTTP client here speaks plain HTTP only (the crate is built without TLS), so it looks up
//! registries on loopback addresses itself (which Docker also reaches over plain HTTP); for
//! every other registry it asks the Docker Engine's distribution endpoint, which speaks TLS,
//! with the same credentials.
use super::docker::DockerRuntime;
use super::docker_auth::{self, Credentials};
use base64::Engine as _;
use std::time::Duration;

/// What a registry said about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The registry has it; its manifest digest (empty if the registry did not say).
    Found { digest: String },
    /// The registry answered that it does not have it.
    NotFound,
    /// The registry refused: no or wrong credentials, or no access to the repository.
    Unauthorized { message: String },
    /// No answer from the registry (or no usable one).
    Unreachable { message: String },
}

const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

const TIMEOUT: Duration = Duration::from_secs(10);

/// An image reference split the way the registry API wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// The registry host as written (`docker.io` for Docker Hub).
    pub host: String,
    /// The repository (`library/ubuntu` for Hub's official images).
    pub repository: String,
    /// The tag or `sha256:` digest.
    pub reference: String,
}

impl ImageName {
    pub fn parse(image: &str) -> ImageName {
        let image = image.trim();
        let host = docker_auth::registry_host(image).to_string();
        let rest = image.strip_prefix(&format!("{host}/")).unwrap_or(image);
        let (path, reference) = match rest.split_once('@') {
            Some((path, digest)) => (path, digest.to_string()),
            None => match rest.rsplit_once(':') {
                Some((path, tag)) if !tag.contains('/') => (path, tag.to_string()),
                _ => (rest, "latest".to_string()),
            },
        };
        let repository = if host == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        ImageName {
            host,
            repository,
            reference,
        }
    }

    /// Whether the registry is on this host's loopback, reached over plain HTTP.
    fn is_loopback(&self) -> bool {
        let name = self
            .host
            .rsplit_once(':')
            .map_or(self.host.as_str(), |(h, port)| {
                // `[::1]:5000`, or a host with a port; a bare IPv6 address has no brackets here.
                if port.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    &self.host
                }
            });
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Looks `image` up in its registry. `engine` serves registries the HTTP client cannot reach
/// itself (see the module comment); without it those read as unreachable.
pub async fn lookup(image: &str, engine: Option<&DockerRuntime>) -> Lookup {
    let name = ImageName::parse(image);
    let credentials = docker_auth::for_host(&name.host);
    if name.is_loopback() {
        return lookup_http(
            &format!("http://{}", name.host),
            &name,
            credentials.as_ref(),
        )
        .await;
    }
    match engine {
        Some(engine) => lookup_engine(engine, image, credentials).await,
        None => Lookup::Unreachable {
            message: "no Docker Engine to reach this registry through".into(),
        },
    }
}

async fn lookup_engine(
    engine: &DockerRuntime,
    image: &str,
    credentials: Option<Credentials>,
) -> Lookup {
    use bollard::errors::Error as DockerError;
    let credentials = credentials.map(Credentials::into_docker);
    match engine
        .client()
        .inspect_registry_image(image, credentials)
        .await
    {
        Ok(found) => Lookup::Found {
            digest: found.descriptor.digest.unwrap_or_default(),
        },
        Err(DockerError::DockerResponseServerError {
            status_code,
            message,
        }) => {
            let lower = message.to_lowercase();
            if status_code == 401 || lower.contains("unauthorized") || lower.contains("denied") {
                Lookup::Unauthorized { message }
            } else if status_code == 404
                || lower.contains("manifest unknown")
                || lower.contains("not found")
            {
                Lookup::NotFound
            } else {
                Lookup::Unreachable { message }
            }
        }
        Err(err) => Lookup::Unreachable {
            message: err.to_string(),
        },
    }
}

/// The lookup over the registry API at `base` (`http://host:port`).
pub async fn lookup_http(
    base: &str,
    name: &ImageName,
    credentials: Option<&Credentials>,
) -> Lookup {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return Lookup::Unreachable {
                message: e.to_string(),
            };
        }
    };
    let url = format!("{base}/v2/{}/manifests/{}", name.repository, name.reference);
    let head = |auth: Option<String>| {
        let mut request = client.head(&url).header("Accept", ACCEPT);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        request.send()
    };
    let unreachable = |e: reqwest::Error| Lookup::Unreachable {
        message: format!("{base}: {}", without_url(&e)),
    };
    let first = match head(None).await {
        Ok(r) => r,
        Err(e) => return unreachable(e),
    };
    if first.status() != reqwest::StatusCode::UNAUTHORIZED {
        return answer(&first, false);
    }
    let challenge = first
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let auth = match authorization(&client, &challenge, name, credentials).await {
        Ok(auth) => auth,
        Err(lookup) => return lookup,
    };
    match head(Some(auth)).await {
        Ok(r) => answer(&r, true),
        Err(e) => unreachable(e),
    }
}

/// The `Authorization` value answering `challenge`, or the lookup's final answer.
async fn authorization(
    client: &reqwest::Client,
    challenge: &str,
    name: &ImageName,
    credentials: Option<&Credentials>,
) -> Result<String, Lookup> {
    let basic = credentials.map(|c| {
        let pair = format!("{}:{}", c.username, c.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    });
    let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return basic.ok_or_else(|| Lookup::Unauthorized {
            message: "the registry asks for credentials and there are none".into(),
        });
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Lookup::Unauthorized {
            message: format!("unsupported authentication scheme `{scheme}`"),
        });
    }
    let params = challenge_params(params);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    let Some(realm) = get("realm") else {
        return Err(Lookup::Unauthorized {
            message: "the registry's Bearer challenge names no realm".into(),
        });
    };
    let mut url = reqwest::Url::parse(realm).map_err(|e| Lookup::Unreachable {
        message: format!("token realm {realm}: {e}"),
    })?;
    let scope = format!("repository:{}:pull", name.repository);
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = get("service") {
            query.append_pair("service", service);
        }
        query.append_pair("scope", get("scope").unwrap_or(&scope));
    }
    let mut request = client.get(url);
    if let Some(basic) = &basic {
        request = request.header("Authorization", basic);
    }
    let response = request.send().await.map_err(|e| Lookup::Unreachable {
        message: format!("token realm {realm}: {}", without_url(&e)),
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Lookup::Unauthorized {
            message: format!("the token service refused the credentials ({status})"),
        });
    }
    let bytes = response.bytes().await.map_err(|e| Lookup::Unreachable {
        message: format!("token realm {realm}: {}", without_url(&e)),
    })?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let token = body
        .get("token")
        .or_else(|| body.get("access_token"))
        .and_then(|t| t.as_str())
        .ok_or_else(|| Lookup::Unreachable {
            message: format!("token realm {realm} answered {status} without a token"),
        })?;
    Ok(format!("Bearer {token}"))
}

/// The lookup's answer from a manifest response.
fn answer(response: &reqwest::Response, authenticated: bool) -> Lookup {
    let status = response.status();
    match status.as_u16() {
        200..=299 => Lookup::Found {
            digest: response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        },
        404 => Lookup::NotFound,
        401 | 403 => Lookup::Unauthorized {
            message: if authenticated {
                format!("the registry refused the credentials ({status})")
            } else {
                format!("the registry refused access ({status})")
            },
        },
        _ => Lookup::Unreachable {
            message: format!("the registry answered {status}"),
        },
    }
}

/// reqwest's message without the URL (which carries nothing secret, but is long).
fn without_url(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// `key="value", key=value` pairs of a challenge; commas inside quotes stay (scopes such as
/// `repository:a:pull,push`).
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, tail)) => (value.to_string(), tail),
                None => (quoted.to_string(), ""),
            },
            None => match after.split_once(',') {
                Some((value, tail)) => (value.trim().to_string(), tail),
                None => (after.trim().to_string(), ""),
            },
        };
        pairs.push((key, value));
        rest = tail.trim_start().trim_start_matches(',');
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_like_the_registry_api_wants() {
        let hub = ImageName::parse("ubuntu");
        assert_eq!(
            (
                hub.host.as_str(),
                hub.repository.as_str(),
                hub.reference.as_str()
            ),
            ("docker.io", "library/ubuntu", "latest")
        );
        let local = ImageName::parse("127.0.0.1:5000/team/vllm:abc");
        assert_eq!(
            (
                local.host.as_str(),
                local.repository.as_str(),
                local.reference.as_str()
            ),
            ("127.0.0.1:5000", "team/vllm", "abc")
        );
        assert!(local.is_loopback());
        let pinned = ImageName::parse("ghcr.io/o/i@sha256:00ff");
        assert_eq!(pinned.repository, "o/i");
        assert_eq!(pinned.reference, "sha256:00ff");
        assert!(!pinned.is_loopback());
        assert!(ImageName::parse("localhost:5000/a").is_loopback());
        assert!(ImageName::parse("[::1]:5000/a:b").is_loopback());
        assert!(!ImageName::parse("vllm/vllm-openai:v0.9").is_loopback());
    }

    #[test]
    fn bearer_challenges_keep_commas_inside_quotes() {
        let params = challenge_params(
            r#"realm="http://127.0.0.1:9/token",service="reg",scope="repository:a/b:pull,push", error=insufficient_scope"#,
        );
        assert_eq!(
            params,
            [
                ("realm".to_string(), "http://127.0.0.1:9/token".to_string()),
                ("service".to_string(), "reg".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
                ("error".to_string(), "insufficient_scope".to_string()),
            ]
        );
    }

    /// A registry that only answers with a token from its realm, which wants Basic credentials
    /// (Docker Hub's and GHCR's scheme); over a raw socket, one request per connection.
    async fn token_registry() -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let realm = format!("{base}/token");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let has = |h: &str| request.lines().any(|l| l.eq_ignore_ascii_case(h));
                let basic = format!(
                    "authorization: Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("u:pw")
                );
                let response = if request
                    .starts_with("GET /token?service=reg&scope=repository%3Ateam%2Fimg%3Apull ")
                {
                    if has(&basic) {
                        "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"token\":\"tok\"}"
                            .to_string()
                    } else {
                        "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_string()
                    }
                } else if !has("authorization: Bearer tok") {
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"{realm}\",service=\"reg\",scope=\"repository:team/img:pull\"\r\ncontent-length: 0\r\n\r\n"
                    )
                } else if request.starts_with("HEAD /v2/team/img/manifests/v1 ") {
                    "HTTP/1.1 200 OK\r\ndocker-content-digest: sha256:abc\r\ncontent-length: 0\r\n\r\n".to_string()
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string()
                };
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        base
    }

    #[tokio::test]
    async fn bearer_challenges_are_answered_with_a_token_got_with_the_credentials() {
        let base = token_registry().await;
        let creds = |secret: &str| Credentials {
            username: "u".into(),
            secret: secret.into(),
            server: base.clone(),
        };
        let image = |tag: &str| ImageName::parse(&format!("127.0.0.1:1/team/img:{tag}"));
        assert_eq!(
            lookup_http(&base, &image("v1"), Some(&creds("pw"))).await,
            Lookup::Found {
                digest: "sha256:abc".into()
            }
        );
        assert_eq!(
            lookup_http(&base, &image("v2"), Some(&creds("pw"))).await,
            Lookup::NotFound
        );
        for wrong in [Some(creds("nope")), None] {
            let answer = lookup_http(&base, &image("v1"), wrong.as_ref()).await;
            assert!(matches!(answer, Lookup::Unauthorized { .. }), "{answer:?}");
        }
    }
}
