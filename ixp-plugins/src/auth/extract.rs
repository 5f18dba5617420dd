//! The HTTP side: the [`AuthUser`] extractor, 401 responses, and the oauth2 routes.

use std::sync::Arc;

use ixp_core::axum::extract::FromRequestParts;
use ixp_core::axum::http::request::Parts;
use ixp_core::axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use ixp_core::axum::response::{IntoResponse, Response};
use ixp_core::axum::Json;
use serde_json::json;

use super::jwt::{AuthError, Claims};
use super::Auth;

/// The authenticated caller of a request: the verified claims of its bearer token (or,
/// with oauth2 sessions, of its session cookie). As an extractor it answers 401 with a
/// JSON error when there is none or it is invalid.
///
/// ```
/// use ixp_plugins::auth::AuthUser;
///
/// async fn me(AuthUser(claims): AuthUser) -> String {
///     format!("hello {}", claims.sub)
/// }
/// # let _: ixp_core::axum::routing::MethodRouter = ixp_core::axum::routing::get(me);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AuthUser(pub Claims);

/// A 401 answer: `{"error": <code>, "message": <what>}` and `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRejection(pub AuthError);

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let status = if matches!(self.0, AuthError::CannotIssue(_)) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::UNAUTHORIZED
        };
        let mut response = (
            status,
            Json(json!({ "error": code, "message": self.0.to_string() })),
        )
            .into_response();
        let challenge = if matches!(self.0, AuthError::MissingToken) {
            "Bearer".to_owned()
        } else {
            format!("Bearer error=\"invalid_token\", error_description=\"{code}\"")
        };
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        let Some(auth) = parts.extensions.get::<Arc<Auth>>() else {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({
                    "error": "auth_unavailable",
                    "message": "auth-plugin is not running on this server",
                })),
            )
                .into_response());
        };
        authenticate(auth, &parts.headers)
            .map(AuthUser)
            .map_err(|e| AuthRejection(e).into_response())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
#[cfg(feature = "auth-oauth2")]
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Verifies the request's bearer token, or else (oauth2) its session cookie.
pub(crate) fn authenticate(auth: &Auth, headers: &HeaderMap) -> Result<Claims, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::MissingToken)?;
        return auth.verify(token.trim());
    }
    #[cfg(feature = "auth-oauth2")]
    if let Some(id) = cookie(headers, super::SESSION_COOKIE) {
        return auth
            .session(id)
            .ok_or_else(|| AuthError::Invalid("the session is unknown or expired".into()));
    }
    Err(AuthError::MissingToken)
}

/// Mounts `GET /auth/<provider>/login` and each provider's callback.
#[cfg(feature = "auth-oauth2")]
pub(crate) fn mount_oauth_routes(
    ctx: &ixp_core::PluginContext,
    auth: &Arc<Auth>,
) -> Result<(), ixp_core::BoxError> {
    use std::collections::HashMap;

    use ixp_core::axum::extract::Query;
    use ixp_core::axum::routing::get;

    use super::oauth2::{OAuthError, STATE_COOKIE};

    let Some(oauth) = &auth.oauth else {
        return Ok(());
    };
    for provider in &oauth.providers {
        let (login_auth, login_provider) = (auth.clone(), provider.clone());
        ctx.http().route(
            &format!("/auth/{}/login", provider.name),
            get(move || {
                let (auth, provider) = (login_auth.clone(), login_provider.clone());
                async move {
                    let Some(oauth) = &auth.oauth else {
                        return StatusCode::NOT_FOUND.into_response();
                    };
                    match oauth.login_url(&provider) {
                        Ok((url, state)) => {
                            let cookie = format!(
                                "{STATE_COOKIE}={state}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
                                oauth.login_timeout.as_secs(),
                                secure_attribute(&provider)
                            );
                            (
                                StatusCode::FOUND,
                                [(header::LOCATION, url), (header::SET_COOKIE, cookie)],
                            )
                                .into_response()
                        }
                        Err(e) => sign_in_failed(&e),
                    }
                }
            }),
        )?;
        let (callback_auth, callback_provider) = (auth.clone(), provider.clone());
        let events = ctx.events().clone();
        ctx.http().route(
            &provider.callback_path,
            get(
                move |Query(query): Query<HashMap<String, String>>, headers: HeaderMap| {
                    let (auth, provider, events) = (
                        callback_auth.clone(),
                        callback_provider.clone(),
                        events.clone(),
                    );
                    async move {
                        let Some(oauth) = &auth.oauth else {
                            return StatusCode::NOT_FOUND.into_response();
                        };
                        let state = cookie(&headers, STATE_COOKIE);
                        let user = match oauth.callback(&provider, &query, state).await {
                            Ok(user) => user,
                            Err(e) => return sign_in_failed(&e),
                        };
                        events
                            .emit(
                                "auth.login",
                                json!({ "provider": user.provider, "subject": user.subject }),
                            )
                            .await;
                        let clear_state = format!(
                            "{STATE_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
                            secure_attribute(&provider)
                        );
                        let subject = format!("{}:{}", user.provider, user.subject);
                        let mut extra = serde_json::Map::new();
                        extra.insert("provider".into(), user.provider.clone().into());
                        if let Some(email) = &user.email {
                            extra.insert("email".into(), email.clone().into());
                        }
                        if let Some(name) = &user.name {
                            extra.insert("name".into(), name.clone().into());
                        }
                        match auth.issue(&subject, extra) {
                            Ok(token) => (
                                [(header::SET_COOKIE, clear_state)],
                                Json(json!({ "token": token, "user": user })),
                            )
                                .into_response(),
                            Err(_) => match oauth.open_session(user.clone()) {
                                Ok(id) => {
                                    let session = format!(
                                        "{}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
                                        super::SESSION_COOKIE,
                                        oauth.session_ttl.as_secs(),
                                        secure_attribute(&provider)
                                    );
                                    let mut response =
                                        Json(json!({ "user": user })).into_response();
                                    for cookie in [clear_state, session] {
                                        if let Ok(value) = HeaderValue::from_str(&cookie) {
                                            response
                                                .headers_mut()
                                                .append(header::SET_COOKIE, value);
                                        }
                                    }
                                    response
                                }
                                Err(e) => sign_in_failed(&e),
                            },
                        }
                    }
                },
            ),
        )?;
    }
    /// `; Secure` when the app is served over https (its redirect URI says so).
    fn secure_attribute(provider: &super::oauth2::Provider) -> &'static str {
        if provider.redirect_uri().starts_with("https://") {
            "; Secure"
        } else {
            ""
        }
    }
    fn sign_in_failed(error: &OAuthError) -> Response {
        let code = match error {
            OAuthError::BadState => "invalid_state",
            OAuthError::Refused { .. } => "access_denied",
            OAuthError::Exchange { .. } => "exchange_failed",
            OAuthError::IdToken { .. } => "invalid_id_token",
            _ => "provider_error",
        };
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": code, "message": error.to_string() })),
        )
            .into_response()
    }
    Ok(())
}
