//! Sign-in with OAuth2 / OpenID Connect providers: the authorization-code flow with
//! PKCE (S256), `state` bound to the browser by a cookie and used once, a `nonce` in the
//! ID token, and the ID token verified against the provider's JWKS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;

use super::config::{callback_path, AuthConfig, ProviderConfig};

/// The cookie that binds a sign-in's `state` to the browser that started it.
pub const STATE_COOKIE: &str = "ixp_oauth_state";
/// The most sign-ins in progress at once; beyond, new ones are refused until some
/// finish or expire (bounds memory under a flood of login requests).
const MAX_PENDING: usize = 10_000;
/// The most live sessions.
const MAX_SESSIONS: usize = 100_000;

/// The cookie that carries a server-side session id.
pub const SESSION_COOKIE: &str = "ixp_session";

/// A signed-in user, from the provider's ID token (or user API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The provider's name in the config.
    pub provider: String,
    /// The provider's subject id.
    pub subject: String,
    /// E-mail, if the provider gave one.
    pub email: Option<String>,
    /// Display name, if the provider gave one.
    pub name: Option<String>,
}

/// Why a sign-in failed. Messages name the provider and the step, never a secret,
/// code or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// Discovery or JWKS could not be read.
    #[error("provider `{provider}`: {message}")]
    Provider {
        /// The provider.
        provider: String,
        /// What failed.
        message: String,
    },
    /// The callback's `state` is unknown, used, expired, or not this browser's.
    #[error("the sign-in state is invalid or expired; start again")]
    BadState,
    /// The provider refused (e.g. the user denied access).
    #[error("provider `{provider}` refused the sign-in: {error}")]
    Refused {
        /// The provider.
        provider: String,
        /// The provider's `error` code.
        error: String,
    },
    /// The code exchange failed.
    #[error("provider `{provider}`: the code exchange failed: {message}")]
    Exchange {
        /// The provider.
        provider: String,
        /// What failed.
        message: String,
    },
    /// The ID token did not verify.
    #[error("provider `{provider}`: the ID token is invalid: {message}")]
    IdToken {
        /// The provider.
        provider: String,
        /// What failed.
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Debug, Clone)]
enum Endpoints {
    /// An OpenID Connect provider.
    Oidc {
        issuer: String,
        authorization: String,
        token: String,
        jwks_uri: String,
    },
    /// GitHub: OAuth2 without ID tokens; the user comes from its API.
    Github,
}

impl Provider {
    /// The configured redirect URI.
    pub(crate) fn redirect_uri(&self) -> &str {
        &self.config.redirect_uri
    }
}

/// One configured provider, with its discovered endpoints.
#[derive(Debug)]
pub(crate) struct Provider {
    pub(crate) name: String,
    config: ProviderConfig,
    pub(crate) callback_path: String,
    endpoints: Endpoints,
    jwks: Mutex<(JwkSet, Option<Instant>)>,
}

struct Pending {
    provider: String,
    verifier: String,
    nonce: String,
    expires: Instant,
}

/// The OAuth2 side of the `auth` service.
pub(crate) struct OAuth {
    pub(crate) providers: Vec<Arc<Provider>>,
    pending: Mutex<HashMap<String, Pending>>,
    sessions: Mutex<HashMap<String, (User, Instant)>>,
    pub(crate) login_timeout: Duration,
    pub(crate) session_ttl: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field(
                "providers",
                &self.providers.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_token() -> Result<String, OAuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| OAuthError::Provider {
        provider: "-".into(),
        message: format!("no randomness: {e}"),
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn provider_error(provider: &str, message: impl Into<String>) -> OAuthError {
    OAuthError::Provider {
        provider: provider.to_owned(),
        message: message.into(),
    }
}

impl OAuth {
    /// Reads every provider's discovery document and keys.
    pub(crate) async fn connect(config: &AuthConfig) -> Result<Self, OAuthError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| provider_error("-", e.to_string()))?;
        let mut providers = Vec::new();
        for (name, provider) in &config.providers {
            let callback_path = callback_path(&provider.redirect_uri)
                .ok_or_else(|| provider_error(name, "redirectUri has no path"))?;
            let endpoints = if name == "github" && provider.issuer.is_none() {
                Endpoints::Github
            } else {
                let issuer = provider
                    .issuer
                    .clone()
                    .or_else(|| (name == "google").then(|| "https://accounts.google.com".into()));
                let url = match (&provider.discovery_url, &issuer) {
                    (Some(url), _) => url.clone(),
                    (None, Some(issuer)) => format!(
                        "{}/.well-known/openid-configuration",
                        issuer.trim_end_matches('/')
                    ),
                    (None, None) => return Err(provider_error(name, "no issuer")),
                };
                let discovery: Discovery = fetch_json(&client, &url)
                    .await
                    .map_err(|e| provider_error(name, format!("discovery at {url}: {e}")))?;
                if let Some(issuer) = &issuer {
                    if discovery.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                        return Err(provider_error(
                            name,
                            format!(
                                "discovery says issuer `{}`, the config says `{issuer}`",
                                discovery.issuer
                            ),
                        ));
                    }
                }
                Endpoints::Oidc {
                    issuer: discovery.issuer,
                    authorization: discovery.authorization_endpoint,
                    token: discovery.token_endpoint,
                    jwks_uri: discovery.jwks_uri,
                }
            };
            let jwks =
                match &endpoints {
                    Endpoints::Oidc { jwks_uri, .. } => fetch_json::<JwkSet>(&client, jwks_uri)
                        .await
                        .map_err(|e| provider_error(name, format!("keys at {jwks_uri}: {e}")))?,
                    Endpoints::Github => JwkSet { keys: Vec::new() },
                };
            providers.push(Arc::new(Provider {
                name: name.clone(),
                config: provider.clone(),
                callback_path,
                endpoints,
                jwks: Mutex::new((jwks, Some(Instant::now()))),
            }));
        }
        Ok(Self {
            providers,
            pending: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            login_timeout: super::config::duration(&config.login_timeout)
                .map_err(|e| provider_error("-", e))?,
            session_ttl: super::config::duration(&config.session_ttl)
                .map_err(|e| provider_error("-", e))?,
            client,
        })
    }

    /// Starts a sign-in: the provider URL to send the browser to, and the `state` to
    /// set in the [`STATE_COOKIE`].
    pub(crate) fn login_url(&self, provider: &Provider) -> Result<(String, String), OAuthError> {
        let state = random_token()?;
        let verifier = random_token()?;
        let nonce = random_token()?;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let (authorization, scopes) = match &provider.endpoints {
            Endpoints::Oidc { authorization, .. } => {
                let mut scopes = provider.config.scopes.clone();
                if !scopes.iter().any(|s| s == "openid") {
                    scopes.insert(0, "openid".into());
                }
                (authorization.clone(), scopes)
            }
            Endpoints::Github => (
                "https://github.com/login/oauth/authorize".to_owned(),
                provider.config.scopes.clone(),
            ),
        };
        let url = reqwest::Url::parse_with_params(
            &authorization,
            &[
                ("response_type", "code"),
                ("client_id", provider.config.client_id.as_str()),
                ("redirect_uri", provider.config.redirect_uri.as_str()),
                ("scope", scopes.join(" ").as_str()),
                ("state", state.as_str()),
                ("nonce", nonce.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|e| provider_error(&provider.name, format!("authorization endpoint: {e}")))?;
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, p| p.expires > now);
            if pending.len() >= MAX_PENDING {
                return Err(provider_error(
                    &provider.name,
                    format!("{MAX_PENDING} sign-ins are in progress; try again later"),
                ));
            }
        }
        pending.insert(
            state.clone(),
            Pending {
                provider: provider.name.clone(),
                verifier,
                nonce,
                expires: now + self.login_timeout,
            },
        );
        Ok((url.into(), state))
    }

    /// Finishes a sign-in at the callback: checks `state` (against the cookie and the
    /// pending sign-ins, once), exchanges the code with the PKCE verifier, verifies the
    /// ID token, and returns the user.
    pub(crate) async fn callback(
        &self,
        provider: &Provider,
        query: &HashMap<String, String>,
        cookie_state: Option<&str>,
    ) -> Result<User, OAuthError> {
        let state = query.get("state").ok_or(OAuthError::BadState)?;
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state)
            .ok_or(OAuthError::BadState)?;
        if cookie_state != Some(state.as_str())
            || pending.provider != provider.name
            || pending.expires < Instant::now()
        {
            return Err(OAuthError::BadState);
        }
        if let Some(error) = query.get("error") {
            return Err(OAuthError::Refused {
                provider: provider.name.clone(),
                error: error.clone(),
            });
        }
        if let (Some(iss), Endpoints::Oidc { issuer, .. }) = (query.get("iss"), &provider.endpoints)
        {
            if iss != issuer {
                return Err(OAuthError::Exchange {
                    provider: provider.name.clone(),
                    message: format!("the callback names issuer `{iss}`, expected `{issuer}`"),
                });
            }
        }
        let code = query.get("code").ok_or_else(|| OAuthError::Exchange {
            provider: provider.name.clone(),
            message: "the callback carries no code".into(),
        })?;
        let tokens = self.exchange(provider, code, &pending.verifier).await?;
        match &provider.endpoints {
            Endpoints::Oidc { .. } => {
                let id_token = tokens
                    .get("id_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| OAuthError::IdToken {
                        provider: provider.name.clone(),
                        message: "the token response has no id_token".into(),
                    })?;
                self.verify_id_token(provider, id_token, &pending.nonce)
                    .await
            }
            Endpoints::Github => self.github_user(provider, &tokens).await,
        }
    }

    async fn exchange(
        &self,
        provider: &Provider,
        code: &str,
        verifier: &str,
    ) -> Result<Map<String, Value>, OAuthError> {
        let fail = |message: String| OAuthError::Exchange {
            provider: provider.name.clone(),
            message,
        };
        let token_url = match &provider.endpoints {
            Endpoints::Oidc { token, .. } => token.clone(),
            Endpoints::Github => "https://github.com/login/oauth/access_token".into(),
        };
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", provider.config.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut request = self
            .client
            .post(&token_url)
            .header("accept", "application/json");
        match &provider.config.client_secret {
            Some(secret) => {
                request = request.basic_auth(
                    form_encode(&provider.config.client_id),
                    Some(form_encode(secret.expose())),
                );
            }
            None => form.push(("client_id", provider.config.client_id.as_str())),
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| fail(format!("{token_url}: {e}")))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| fail(format!("{token_url} answered {status} with no JSON: {e}")))?;
        if !status.is_success() || body.get("error").is_some() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("?");
            return Err(fail(format!("{token_url} answered {status}: {error}")));
        }
        match body {
            Value::Object(map) => Ok(map),
            _ => Err(fail("the token response is not a JSON object".into())),
        }
    }

    async fn verify_id_token(
        &self,
        provider: &Provider,
        id_token: &str,
        nonce: &str,
    ) -> Result<User, OAuthError> {
        let fail = |message: String| OAuthError::IdToken {
            provider: provider.name.clone(),
            message,
        };
        let Endpoints::Oidc {
            issuer, jwks_uri, ..
        } = &provider.endpoints
        else {
            return Err(fail("not an OpenID Connect provider".into()));
        };
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| fail(e.to_string()))?;
        let algorithm = header.alg;
        if !matches!(
            algorithm,
            jsonwebtoken::Algorithm::RS256
                | jsonwebtoken::Algorithm::ES256
                | jsonwebtoken::Algorithm::PS256
        ) {
            return Err(fail(format!("algorithm {algorithm:?} is not accepted")));
        }
        let mut key = find_key(&provider.jwks, header.kid.as_deref());
        if key.is_none() {
            // The provider may have rotated its keys: read them again, at most every 10 s.
            let stale = provider
                .jwks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .is_none_or(|at| at.elapsed() > Duration::from_secs(10));
            if stale {
                let fresh: JwkSet = fetch_json(&self.client, jwks_uri)
                    .await
                    .map_err(|e| fail(format!("keys at {jwks_uri}: {e}")))?;
                *provider.jwks.lock().unwrap_or_else(|e| e.into_inner()) =
                    (fresh, Some(Instant::now()));
                key = find_key(&provider.jwks, header.kid.as_deref());
            }
        }
        let key = key.ok_or_else(|| fail(format!("no key `{:?}` in the JWKS", header.kid)))?;
        let key = DecodingKey::from_jwk(&key).map_err(|e| fail(e.to_string()))?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[&provider.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &validation)
            .map_err(|e| fail(e.to_string()))?
            .claims;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(fail("the nonce does not match this sign-in".into()));
        }
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let subject = text("sub")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| fail("the ID token has no subject".into()))?;
        // An address the provider has not verified must not identify anyone.
        let verified = claims.get("email_verified") == Some(&Value::Bool(true));
        Ok(User {
            provider: provider.name.clone(),
            subject,
            email: text("email").filter(|_| verified),
            name: text("name"),
        })
    }

    async fn github_user(
        &self,
        provider: &Provider,
        tokens: &Map<String, Value>,
    ) -> Result<User, OAuthError> {
        let fail = |message: String| OAuthError::Exchange {
            provider: provider.name.clone(),
            message,
        };
        let access = tokens
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("no access_token".into()))?;
        let response = self
            .client
            .get("https://api.github.com/user")
            .bearer_auth(access)
            .header("user-agent", "ixp")
            .header("accept", "application/vnd.github+json")
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("the user API answered {}", response.status())));
        }
        let user: Value = response.json().await.map_err(|e| fail(e.to_string()))?;
        let subject = user
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| fail("the user API gave no numeric id".into()))?;
        Ok(User {
            provider: provider.name.clone(),
            subject: subject.to_string(),
            // GitHub's profile e-mail is user-editable and unverified: not an identity.
            email: None,
            name: user
                .get("name")
                .or_else(|| user.get("login"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Opens a server-side session for `user`; returns its id.
    pub(crate) fn open_session(&self, user: User) -> Result<String, OAuthError> {
        let id = random_token()?;
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, (_, expires)| *expires > now);
            if sessions.len() >= MAX_SESSIONS {
                return Err(provider_error(
                    &user.provider,
                    format!("{MAX_SESSIONS} sessions are open; try again later"),
                ));
            }
        }
        sessions.insert(id.clone(), (user, now + self.session_ttl));
        Ok(id)
    }

    /// The user of a live session.
    pub(crate) fn session(&self, id: &str) -> Option<(User, Instant)> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .filter(|(_, expires)| *expires > Instant::now())
            .cloned()
    }

    /// Pending sign-ins and live sessions (for health).
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).len(),
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
        )
    }

    /// Reads each provider's discovery document again (for health).
    pub(crate) async fn probe(&self) -> Result<(), OAuthError> {
        for provider in &self.providers {
            if let Endpoints::Oidc { jwks_uri, .. } = &provider.endpoints {
                fetch_json::<JwkSet>(&self.client, jwks_uri)
                    .await
                    .map_err(|e| {
                        provider_error(&provider.name, format!("keys at {jwks_uri}: {e}"))
                    })?;
            }
        }
        Ok(())
    }
}

fn find_key(
    jwks: &Mutex<(JwkSet, Option<Instant>)>,
    kid: Option<&str>,
) -> Option<jsonwebtoken::jwk::Jwk> {
    let jwks = jwks.lock().unwrap_or_else(|e| e.into_inner());
    match kid {
        Some(kid) => jwks.0.find(kid).cloned(),
        None if jwks.0.keys.len() == 1 => jwks.0.keys.first().cloned(),
        None => None,
    }
}

/// `application/x-www-form-urlencoded` encoding, as RFC 6749 2.3.1 asks for the client
/// id and secret of HTTP Basic client authentication.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    response.json().await.map_err(|e| e.to_string())
}
