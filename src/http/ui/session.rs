//! Status-page sessions: a login with the admin or viewer token opens one,
//! kept in the store for 12 h under a digest of its id; the cookie holds
//! only the random id. Every form POST carries the session's CSRF token.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::ApiCaller;
use crate::http::{ApiError, AppState};
use crate::store::SessionRecord;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "enac_cd_session";
/// How long a session lasts (contract §11).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Who opened a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::Viewer]
            .into_iter()
            .find(|role| role.as_str() == text)
    }

    /// The jobs API caller a session acts as.
    pub fn caller(self) -> ApiCaller {
        match self {
            Role::Admin => ApiCaller::Admin,
            Role::Viewer => ApiCaller::Viewer,
        }
    }
}

/// A random value, hex: session ids and CSRF tokens.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The store's key for a session id: a replayed store dump opens nothing.
fn store_key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The session id the request's cookie carries, if any.
fn cookie_id(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, id)| id.to_owned())
        .filter(|id| id.len() == 64 && id.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The session of a page request; without one, pages answer 303 to the login.
pub struct UiSession {
    pub role: Role,
    pub csrf: String,
    key: String,
}

impl UiSession {
    /// Whether a form's CSRF token is this session's.
    pub fn csrf_matches(&self, given: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(given.as_bytes()))
    }

    pub async fn end(&self, state: &AppState) -> Result<(), ApiError> {
        Ok(state.store.end_session(&self.key).await?)
    }
}

/// What a request without a live session gets.
pub enum NoSession {
    ToLogin,
    Failed(ApiError),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::ToLogin => Redirect::to("/ui/login").into_response(),
            NoSession::Failed(error) => error.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for UiSession {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NoSession> {
        let id = cookie_id(parts).ok_or(NoSession::ToLogin)?;
        let key = store_key(&id);
        let record = state
            .store
            .session(&key)
            .await
            .map_err(|error| NoSession::Failed(error.into()))?
            .ok_or(NoSession::ToLogin)?;
        let role = Role::parse(&record.role).ok_or(NoSession::ToLogin)?;
        Ok(UiSession {
            role,
            csrf: record.csrf,
            key,
        })
    }
}

/// Opens a session for `role`; returns the `Set-Cookie` value.
pub async fn open(state: &AppState, role: Role) -> Result<HeaderValue, ApiError> {
    let id = random_hex();
    let record = SessionRecord {
        role: role.as_str().to_owned(),
        csrf: random_hex(),
    };
    let lifetime = SESSION_LIFETIME.as_millis() as i64;
    state
        .store
        .save_session(&store_key(&id), &record, lifetime)
        .await?;
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE_NAME}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_LIFETIME.as_secs()
    );
    HeaderValue::from_str(&cookie).map_err(|_| ApiError::Unavailable("session cookie".into()))
}

/// The `Set-Cookie` header that removes the cookie from the browser.
pub fn cleared() -> (axum::http::HeaderName, HeaderValue) {
    (
        SET_COOKIE,
        HeaderValue::from_static(
            "enac_cd_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    )
}
