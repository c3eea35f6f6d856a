//! `rs-jwt`: verifies a bearer JWT, in Rust.
//!
//! Finds the token as Kong 3.9's `jwt` plugin does (query parameters
//! `uri_param_names`, cookies `cookie_names`, `Bearer` in the headers
//! `header_names`; several different tokens are refused), parses it
//! ([`super::jwt_token`]), verifies its signature with a key of the
//! configuration (`keys`: HMAC secrets, PEM public keys) or of a JWKS
//! fetched from `jwks_url` ([`super::jwt_keys`], cached across workers),
//! checks its claims (`exp`, `nbf` with `leeway`, `claims_to_verify`,
//! `maximum_expiration`, `allowed_iss`, `allowed_aud`, `required_claims`),
//! forwards chosen claims upstream as headers (`claims_to_headers`) and, with
//! `consumer_claim`, makes the Kong consumer that claim names the
//! authenticated one. `anonymous` works as in Kong's auth plugins.
//!
//! Refusals are Kong's: 401 with `{"message":"Unauthorized"}`, the jwt
//! plugin's messages (`Invalid signature`, `Bad token; invalid JSON`, …) or
//! its claim errors (`{"exp":"token expired"}`), `WWW-Authenticate: Bearer`
//! (with `error="invalid_token"` once a token was found).
//!
//! Differences from Kong's `jwt` plugin, plainly:
//! - keys come from the plugin's configuration or a JWKS, not from
//!   `jwt_secrets` credentials of consumers; a token names its key with the
//!   JWS header's `kid` (Kong: `key_claim_name`, `iss` by default);
//! - `exp` and `nbf` are checked whenever present (RFC 7519 §4.1.4/5);
//!   `claims_to_verify` makes them required, as in Kong;
//! - a token whose header or claims name a member twice, or that carries
//!   `crit`, is refused; ES512 is not offered.

use super::jwt_keys::{JwksCache, JwksSettings, Key, Lookup, Snapshot};
use super::jwt_token::{self, Alg, Token};
use crate::cache::{CacheOptions, get_or_load};
use crate::pdk::{Entity, Pdk, Value};
use crate::{Error, Exit, Flow, Plugin, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A registered claim `claims_to_verify` can require (Kong's set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegisteredClaim {
    /// The expiration time: required, a number, not past.
    Exp,
    /// The not-before time: required, a number, not in the future.
    Nbf,
}

/// A key of the configuration: an HMAC secret or a PEM public key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id a token names in its header's `kid`; a token without `kid` is tried against every key of its algorithm.
    pub kid: Option<String>,
    /// An HMAC secret (HS256/384/512), base64-encoded when `secret_is_base64` is set.
    pub secret: Option<String>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519) for RS*, PS*, ES* or EdDSA tokens.
    pub public_key: Option<String>,
}

fn default_uri_param_names() -> Vec<String> {
    vec!["jwt".into()]
}
fn default_header_names() -> Vec<String> {
    vec!["authorization".into()]
}
fn default_algorithms() -> Vec<Alg> {
    vec![Alg::RS256, Alg::ES256]
}
fn default_true() -> bool {
    true
}
fn default_jwks_ttl() -> f64 {
    300.0
}
fn default_refresh_interval() -> f64 {
    30.0
}
fn default_max_stale() -> f64 {
    3600.0
}
fn default_jwks_timeout() -> u32 {
    2000
}
fn default_cache_dict() -> String {
    "kong".into()
}
fn default_consumer_cache_ttl() -> f64 {
    60.0
}

/// Configuration of `rs-jwt`: Kong 3.9 `jwt`'s fields, plus keys, JWKS and claims checks.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// A list of querystring parameters that Kong will inspect to retrieve JWTs.
    #[serde(default = "default_uri_param_names")]
    pub uri_param_names: Vec<String>,
    /// A list of cookie names that Kong will inspect to retrieve JWTs.
    #[serde(default)]
    pub cookie_names: Vec<String>,
    /// A list of HTTP header names that Kong will inspect to retrieve JWTs.
    #[serde(default = "default_header_names")]
    pub header_names: Vec<String>,
    /// A list of registered claims (according to RFC 7519) that Kong can verify as well. Accepted values: one of exp or nbf.
    #[serde(default)]
    pub claims_to_verify: Vec<RegisteredClaim>,
    /// A value between 0 and 31536000 (365 days) limiting the lifetime of the JWT to maximum_expiration seconds in the future.
    #[serde(default)]
    #[schemars(range(min = 0, max = 31536000))]
    pub maximum_expiration: f64,
    /// Seconds of clock skew allowed when checking exp and nbf.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub leeway: f64,
    /// The signature algorithms accepted; a token with any other alg (and always `none`) is refused.
    #[serde(default = "default_algorithms")]
    #[schemars(length(min = 1))]
    pub algorithms: Vec<Alg>,
    /// Keys of the configuration: HMAC secrets and PEM public keys, each with an optional kid.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// If true, the plugin assumes the configured HMAC secrets to be base64 encoded.
    #[serde(default)]
    pub secret_is_base64: bool,
    /// A JWKS URL (http or https) of the identity provider, whose signature keys verify tokens by kid.
    pub jwks_url: Option<String>,
    /// Seconds the fetched JWKS is used before it is fetched again.
    #[serde(default = "default_jwks_ttl")]
    #[schemars(range(min = 1, max = 86400))]
    pub jwks_ttl: f64,
    /// Minimum seconds between two JWKS fetches on a node, also when a token names an unknown kid.
    #[serde(default = "default_refresh_interval")]
    #[schemars(range(min = 1, max = 86400))]
    pub refresh_interval: f64,
    /// Seconds past jwks_ttl the last JWKS is still used while the identity provider cannot be reached.
    #[serde(default = "default_max_stale")]
    #[schemars(range(min = 0, max = 604800))]
    pub max_stale: f64,
    /// Timeout of a JWKS fetch, in milliseconds.
    #[serde(default = "default_jwks_timeout")]
    #[schemars(range(min = 1, max = 60000))]
    pub jwks_timeout: u32,
    /// Verify the TLS certificate of an https jwks_url.
    #[serde(default = "default_true")]
    pub jwks_ssl_verify: bool,
    /// The lua_shared_dict holding the JWKS for every worker (Kong declares `kong`).
    #[serde(default = "default_cache_dict")]
    #[schemars(length(min = 1))]
    pub cache_dict: String,
    /// When not empty, the iss claim must be one of these issuers.
    #[serde(default)]
    pub allowed_iss: Vec<String>,
    /// When not empty, the aud claim (a string or an array) must hold one of these audiences.
    #[serde(default)]
    pub allowed_aud: Vec<String>,
    /// Claims a token must carry, whatever their value.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claims sent to the upstream, claim name to header name; a header of an absent claim is removed.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// The claim naming the Kong consumer (its id or username) to authenticate, e.g. sub.
    pub consumer_claim: Option<String>,
    /// Seconds a consumer looked up by consumer_claim (or anonymous) is cached; 0 reads it every time.
    #[serde(default = "default_consumer_cache_ttl")]
    #[schemars(range(min = 0, max = 86400))]
    pub consumer_cache_ttl: f64,
    /// An optional string (consumer UUID or username) value to use as an “anonymous” consumer if authentication fails.
    pub anonymous: Option<String>,
    /// A boolean value that indicates whether the plugin should run (and try to authenticate) on OPTIONS preflight requests. If set to false, then OPTIONS requests will always be allowed.
    #[serde(default = "default_true")]
    pub run_on_preflight: bool,
    /// When authentication fails the plugin sends `WWW-Authenticate` header with `realm` attribute value.
    pub realm: Option<String>,
}

/// Kong's `kong.constants.HEADERS` an authentication plugin sets.
const CONSUMER_ID: &str = "X-Consumer-ID";
const CONSUMER_CUSTOM_ID: &str = "X-Consumer-Custom-ID";
const CONSUMER_USERNAME: &str = "X-Consumer-Username";
const CREDENTIAL_IDENTIFIER: &str = "X-Credential-Identifier";
const ANONYMOUS: &str = "X-Anonymous-Consumer";

/// Keys tried for a token without `kid`, at most.
const MAX_CANDIDATES: usize = 8;

/// `rs-jwt`: Kong's `jwt` authentication (token lookup, messages, claims
/// checks, consumer headers) with keys of its own, from the configuration
/// ([`KeyConfig`]) or a JWKS ([`super::jwt_keys::JwksCache`]); signatures
/// by [`super::jwt_token`]. See README.md, "rs-jwt".
#[derive(Debug)]
pub struct Jwt {
    uri_param_names: Vec<Vec<u8>>,
    cookie_names: Vec<Vec<u8>>,
    header_names: Vec<String>,
    require_exp: bool,
    require_nbf: bool,
    maximum_expiration: f64,
    leeway: f64,
    algorithms: Vec<Alg>,
    keys: Vec<Key>,
    jwks: Option<JwksCache>,
    allowed_iss: Vec<String>,
    allowed_aud: Vec<String>,
    required_claims: Vec<String>,
    claims_to_headers: Vec<(String, String)>,
    consumer_claim: Option<String>,
    consumer_cache_ttl: Duration,
    anonymous: Option<String>,
    run_on_preflight: bool,
    www_authenticate: String,
    www_authenticate_error: String,
}

/// Why a request is not authenticated: the 401 to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `{"message": …}`; `invalid_token`: the `WWW-Authenticate` header says
    /// `error="invalid_token"` (a token was found), `None`: no such header.
    Message(String, Option<bool>),
    /// Claim errors, `{"exp":"token expired", …}` in Kong's words.
    Claims(Vec<(String, String)>),
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::Message(message.into(), Some(true))
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn seconds(value: f64, name: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Error::msg(format!("{name}: must be a number of seconds, got {value}")))
}

#[crate::plugin]
impl Plugin for Jwt {
    type Config = JwtConfig;
    type State = ();
    const NAME: &'static str = "rs-jwt";
    const VERSION: &'static str = "0.1.0";
    // Kong's jwt plugin runs at 1450.
    const PRIORITY: i32 = 1450;

    fn new(config: JwtConfig) -> Result<Self> {
        let require_exp = config.claims_to_verify.contains(&RegisteredClaim::Exp);
        let require_nbf = config.claims_to_verify.contains(&RegisteredClaim::Nbf);
        if !(0.0..=31_536_000.0).contains(&config.maximum_expiration) {
            return Err("maximum_expiration: value should be between 0 and 31536000".into());
        }
        if config.maximum_expiration > 0.0 && !require_exp {
            return Err("claims_to_verify: expected to contain: exp".into());
        }
        if !(0.0..=3600.0).contains(&config.leeway) {
            return Err("leeway: value should be between 0 and 3600".into());
        }
        if config.algorithms.is_empty() {
            return Err("algorithms: length must be at least 1".into());
        }
        let mut keys = Vec::with_capacity(config.keys.len());
        for (i, key) in config.keys.iter().enumerate() {
            let kid = key.kid.clone().filter(|k| !k.is_empty());
            let parsed = match (&key.secret, &key.public_key) {
                (Some(secret), None) => Key::secret(kid, secret, config.secret_is_base64),
                (None, Some(pem)) => Key::public_pem(kid, pem),
                _ => Err(Error::msg(
                    "exactly one of secret and public_key is required",
                )),
            };
            keys.push(parsed.map_err(|e| Error::msg(format!("keys.{}: {}", i + 1, e.message())))?);
        }
        let jwks = match &config.jwks_url {
            None => None,
            Some(url) => Some(
                JwksCache::new(JwksSettings {
                    url: url.clone(),
                    ttl: seconds(config.jwks_ttl, "jwks_ttl")?,
                    refresh_interval: seconds(config.refresh_interval, "refresh_interval")?,
                    max_stale: seconds(config.max_stale, "max_stale")?,
                    timeout: Duration::from_millis(u64::from(config.jwks_timeout)),
                    ssl_verify: config.jwks_ssl_verify,
                    dict: config.cache_dict.clone(),
                })
                .map_err(|e| Error::msg(format!("jwks_url: {}", e.message())))?,
            ),
        };
        if keys.is_empty() && jwks.is_none() {
            return Err(
                "at least one of these fields must be non-empty: 'config.keys', 'config.jwks_url'"
                    .into(),
            );
        }
        let mut claims_to_headers = Vec::new();
        for (claim, header) in &config.claims_to_headers {
            if claim.is_empty() || header.is_empty() || !header.bytes().all(is_token_char) {
                return Err(format!(
                    "claims_to_headers: bad header name {header:?} for claim {claim:?}"
                )
                .into());
            }
            claims_to_headers.push((claim.clone(), header.clone()));
        }
        let www_authenticate = match &config.realm {
            Some(realm) => {
                if realm.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'"') {
                    return Err("realm: must not contain control characters or quotes".into());
                }
                format!("Bearer realm=\"{realm}\"")
            }
            None => "Bearer".to_string(),
        };
        Ok(Jwt {
            uri_param_names: config
                .uri_param_names
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            cookie_names: config
                .cookie_names
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            header_names: config.header_names,
            require_exp,
            require_nbf,
            maximum_expiration: config.maximum_expiration,
            leeway: config.leeway,
            algorithms: config.algorithms,
            keys,
            jwks,
            allowed_iss: config.allowed_iss,
            allowed_aud: config.allowed_aud,
            required_claims: config.required_claims,
            claims_to_headers,
            consumer_claim: config.consumer_claim.filter(|c| !c.is_empty()),
            consumer_cache_ttl: seconds(config.consumer_cache_ttl, "consumer_cache_ttl")?,
            anonymous: config.anonymous.filter(|a| !a.is_empty()),
            run_on_preflight: config.run_on_preflight,
            www_authenticate_error: format!("{www_authenticate} error=\"invalid_token\""),
            www_authenticate,
        })
    }

    async fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        if !self.run_on_preflight && kong.request().get_method()? == "OPTIONS" {
            return Ok(Flow::Continue);
        }
        if let Some(anonymous) = &self.anonymous {
            // Logical OR with other auth plugins: already authenticated.
            if kong.client().get_credential()?.is_some() {
                return Ok(Flow::Continue);
            }
            if self.authenticate(kong, now()).await?.is_err() {
                let consumer = self.load_consumer(kong, anonymous).await?.ok_or_else(|| {
                    Error::msg(format!("anonymous consumer {anonymous:?} not found"))
                })?;
                self.clear_claim_headers(kong)?;
                self.set_consumer(kong, Some(&consumer), None, None)?;
            }
            return Ok(Flow::Continue);
        }
        match self.authenticate(kong, now()).await? {
            Ok(()) => Ok(Flow::Continue),
            Err(refusal) => Ok(Flow::Exit(self.exit(&refusal))),
        }
    }
}

/// Wall-clock seconds, whole (as `ngx.time()`).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or(0.0)
}

/// A token found in the request: a value, or a query flag without `=`
/// (Kong's `true`, an "Unrecognizable token").
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Value(Vec<u8>),
    Flag,
}

fn push_unique(found: &mut Vec<Found>, token: Found) {
    if !found.contains(&token) {
        found.push(token);
    }
}

fn is_pcre_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What Kong's `\s*[Bb]earer\s+(.+)` (unanchored) captures in a header value.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    while i + 6 <= value.len() {
        if matches!(value[i], b'B' | b'b') && &value[i + 1..i + 6] == b"earer" {
            let start = i + 6;
            let spaces = value[start..]
                .iter()
                .take_while(|&&b| is_pcre_space(b))
                .count();
            let rest = &value[start + spaces..];
            let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
            if spaces >= 1 && !line.is_empty() {
                return Some(line);
            }
            // `.+` takes back the last blank `\s+` matched, when there were two.
            if spaces >= 2 && value[start + spaces - 1] != b'\n' {
                return Some(&value[start + spaces - 1..start + spaces]);
            }
        }
        i += 1;
    }
    None
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `ngx.unescape_uri` of a query component (`+` is a space).
fn unescape(component: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(component.len());
    let mut i = 0;
    while i < component.len() {
        match component[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < component.len() => {
                match (hex(component[i + 1]), hex(component[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn claim_text(value: &Json) -> Vec<u8> {
    match value {
        Json::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

impl Jwt {
    /// Kong's `retrieve_tokens`: every distinct token of the query, the
    /// cookies and the headers.
    fn find_tokens(&self, kong: &mut dyn Pdk) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        if !self.uri_param_names.is_empty() {
            let query = kong.request().get_raw_query()?;
            for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
                let (name, value) = match pair.iter().position(|&b| b == b'=') {
                    Some(eq) => (&pair[..eq], Some(&pair[eq + 1..])),
                    None => (pair, None),
                };
                let name = unescape(name);
                if !self.uri_param_names.contains(&name) {
                    continue;
                }
                match value {
                    None => push_unique(&mut found, Found::Flag),
                    Some(v) if !v.is_empty() => push_unique(&mut found, Found::Value(unescape(v))),
                    Some(_) => {}
                }
            }
        }
        if !self.cookie_names.is_empty()
            && let Some(cookies) = kong.request().get_header("cookie")?
        {
            for name in &self.cookie_names {
                let value = cookies.split(|&b| b == b';').find_map(|part| {
                    let part = part.trim_ascii_start();
                    let eq = part.iter().position(|&b| b == b'=')?;
                    (part[..eq] == name[..]).then(|| &part[eq + 1..])
                });
                if let Some(value) = value.filter(|v| !v.is_empty()) {
                    push_unique(&mut found, Found::Value(value.to_vec()));
                }
            }
        }
        for name in &self.header_names {
            if let Some(value) = kong.request().get_header(name)?
                && let Some(token) = bearer(&value)
            {
                push_unique(&mut found, Found::Value(token.to_vec()));
            }
        }
        Ok(found)
    }

    /// The answer to a refusal.
    pub fn exit(&self, refusal: &Refusal) -> Exit {
        let (body, www) = match refusal {
            Refusal::Message(message, www) => {
                let mut map = Map::new();
                map.insert("message".into(), Json::String(message.clone()));
                let www = www.map(|invalid| {
                    if invalid {
                        &self.www_authenticate_error
                    } else {
                        &self.www_authenticate
                    }
                });
                (Json::Object(map), www)
            }
            Refusal::Claims(errors) => {
                let mut map = Map::new();
                for (claim, error) in errors {
                    map.entry(claim.clone())
                        .or_insert_with(|| Json::String(error.clone()));
                }
                (Json::Object(map), Some(&self.www_authenticate_error))
            }
        };
        let mut exit = Exit::new(401)
            .body(body.to_string())
            .header("Content-Type", "application/json; charset=utf-8");
        if let Some(www) = www {
            exit = exit.header("WWW-Authenticate", www.as_bytes());
        }
        exit
    }

    /// Authenticates the request at `now` (seconds): `Ok(Err(refusal))`
    /// when it is not, `Err` when it could not be checked (500).
    ///
    /// # Errors
    /// No JWKS keys usable, the shared dict or a PDK call failing.
    pub async fn authenticate(
        &self,
        kong: &mut dyn Pdk,
        now: f64,
    ) -> Result<std::result::Result<(), Refusal>> {
        let found = self.find_tokens(kong)?;
        let raw = match found.as_slice() {
            [] => return Ok(Err(Refusal::Message("Unauthorized".into(), Some(false)))),
            [Found::Value(raw)] => raw,
            [Found::Flag] => return Ok(Err(Refusal::invalid("Unrecognizable token"))),
            _ => return Ok(Err(Refusal::invalid("Multiple tokens provided"))),
        };
        let token = match jwt_token::parse(raw) {
            Ok(token) => token,
            Err(e) => return Ok(Err(Refusal::invalid(e.message()))),
        };
        if !self.algorithms.contains(&token.alg) {
            return Ok(Err(Refusal::invalid("Invalid algorithm")));
        }
        if let Err(refusal) = self.verify_signature(kong, &token, now).await? {
            return Ok(Err(refusal));
        }
        if let Err(refusal) = self.check_claims(&token.claims, now) {
            return Ok(Err(refusal));
        }
        let consumer = match &self.consumer_claim {
            None => None,
            Some(claim) => {
                let id = match token.claims.get(claim) {
                    None => {
                        return Ok(Err(Refusal::invalid(format!(
                            "No mandatory '{claim}' in claims"
                        ))));
                    }
                    Some(Json::String(s)) if !s.is_empty() => s.clone(),
                    Some(Json::Number(n)) => n.to_string(),
                    Some(_) => {
                        return Ok(Err(Refusal::invalid(format!(
                            "Invalid '{claim}' in claims"
                        ))));
                    }
                };
                match self.load_consumer(kong, &id).await? {
                    Some(consumer) => Some(consumer),
                    None => {
                        return Ok(Err(Refusal::Message(
                            format!("Could not find consumer for '{claim}={id}'"),
                            None,
                        )));
                    }
                }
            }
        };
        let sub = token.claims.get("sub").map(claim_text);
        let mut credential = Map::new();
        if let Some(sub) = &sub {
            let sub = String::from_utf8_lossy(sub).into_owned();
            credential.insert("id".into(), Json::String(sub.clone()));
            credential.insert("key".into(), Json::String(sub));
        }
        if let Some(kid) = &token.kid {
            credential.insert("kid".into(), Json::String(kid.clone()));
        }
        if let Some(consumer) = &consumer {
            credential.insert("consumer".into(), serde_json::json!({ "id": consumer.id }));
        }
        let service = kong.service_request();
        for (claim, header) in &self.claims_to_headers {
            match token.claims.get(claim) {
                Some(value) => service.set_header(header, &claim_text(value))?,
                None => service.clear_header(header)?,
            }
        }
        self.set_consumer(
            kong,
            consumer.as_ref(),
            Some(&Json::Object(credential)),
            Some(raw),
        )?;
        Ok(Ok(()))
    }

    /// Finds the key and checks the signature.
    async fn verify_signature(
        &self,
        kong: &mut dyn Pdk,
        token: &Token<'_>,
        now: f64,
    ) -> Result<std::result::Result<(), Refusal>> {
        let no_key = || Refusal::invalid("No credentials found for given 'kid'");
        let wrong_alg = || Refusal::invalid("Invalid algorithm");
        let bad_signature = || Refusal::invalid("Invalid signature");
        if let Some(kid) = &token.kid {
            let key: &Key;
            let snapshot: Rc<Snapshot>;
            if let Some(found) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                key = found;
            } else if let Some(jwks) = &self.jwks {
                snapshot = match jwks.find(kong, kid, now).await? {
                    Lookup::Found(snapshot) => snapshot,
                    Lookup::Unknown(_) => return Ok(Err(no_key())),
                };
                match snapshot.find(kid) {
                    Some(found) => key = found,
                    None => return Ok(Err(no_key())),
                }
            } else {
                return Ok(Err(no_key()));
            }
            if !key.accepts(token.alg) {
                return Ok(Err(wrong_alg()));
            }
            return Ok(if token.verify(key.family, &key.key) {
                Ok(())
            } else {
                Err(bad_signature())
            });
        }
        // No kid: every key of the token's algorithm, configured ones first.
        let snapshot = match &self.jwks {
            Some(jwks) if !self.keys.iter().any(|k| k.accepts(token.alg)) => {
                Some(jwks.keys(kong, now).await?)
            }
            _ => None,
        };
        let from_jwks = snapshot.iter().flat_map(|s| s.keys.iter());
        let mut candidates = self
            .keys
            .iter()
            .chain(from_jwks)
            .filter(|k| k.accepts(token.alg))
            .take(MAX_CANDIDATES)
            .peekable();
        if candidates.peek().is_none() {
            return Ok(Err(no_key()));
        }
        Ok(if candidates.any(|k| token.verify(k.family, &k.key)) {
            Ok(())
        } else {
            Err(bad_signature())
        })
    }

    /// `exp`, `nbf`, `maximum_expiration`, `iss`, `aud`, required claims.
    fn check_claims(
        &self,
        claims: &Map<String, Json>,
        now: f64,
    ) -> std::result::Result<(), Refusal> {
        let mut errors: Vec<(String, String)> = Vec::new();
        let mut error = |claim: &str, message: &str| errors.push((claim.into(), message.into()));
        match claims.get("exp") {
            None if self.require_exp => error("exp", "must be a number"),
            None => {}
            Some(Json::Number(exp)) if exp.as_f64().is_none_or(|exp| exp + self.leeway <= now) => {
                error("exp", "token expired")
            }
            Some(Json::Number(_)) => {}
            Some(_) => error("exp", "must be a number"),
        }
        match claims.get("nbf") {
            None if self.require_nbf => error("nbf", "must be a number"),
            None => {}
            Some(Json::Number(nbf)) if nbf.as_f64().is_none_or(|nbf| nbf > now + self.leeway) => {
                error("nbf", "token not valid yet")
            }
            Some(Json::Number(_)) => {}
            Some(_) => error("nbf", "must be a number"),
        }
        if !errors.is_empty() {
            return Err(Refusal::Claims(errors));
        }
        if self.maximum_expiration > 0.0 {
            let exp = claims.get("exp").and_then(Json::as_f64);
            if exp.is_none_or(|exp| exp - now > self.maximum_expiration) {
                return Err(Refusal::Claims(vec![(
                    "exp".into(),
                    "exceeds maximum allowed expiration".into(),
                )]));
            }
        }
        let mut errors: Vec<(String, String)> = Vec::new();
        if !self.allowed_iss.is_empty() {
            let ok = claims
                .get("iss")
                .and_then(Json::as_str)
                .is_some_and(|iss| self.allowed_iss.iter().any(|a| a == iss));
            if !ok {
                errors.push(("iss".into(), "not an allowed issuer".into()));
            }
        }
        if !self.allowed_aud.is_empty() {
            let allowed = |aud: &Json| {
                aud.as_str()
                    .is_some_and(|aud| self.allowed_aud.iter().any(|a| a == aud))
            };
            let ok = match claims.get("aud") {
                Some(Json::Array(auds)) => auds.iter().any(allowed),
                Some(aud) => allowed(aud),
                None => false,
            };
            if !ok {
                errors.push(("aud".into(), "not an allowed audience".into()));
            }
        }
        for claim in &self.required_claims {
            if !claims.contains_key(claim) {
                errors.push((claim.clone(), "is required".into()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Claims(errors))
        }
    }

    /// The consumer with this id or username, cached for
    /// `consumer_cache_ttl` (through `kong.cache`).
    async fn load_consumer(&self, kong: &mut dyn Pdk, id: &str) -> Result<Option<Entity>> {
        let lookup = kong.client().load_consumer(id, true);
        if self.consumer_cache_ttl.is_zero() {
            return lookup.await;
        }
        let options = CacheOptions {
            ttl: self.consumer_cache_ttl,
            neg_ttl: self.consumer_cache_ttl,
        };
        let key = format!("rs-jwt:consumer:{id}");
        let cached = get_or_load(&key, options, move || async move {
            match lookup.await? {
                Some(consumer) => serde_json::to_vec(&consumer.to_json())
                    .map(Some)
                    .map_err(|e| Error::msg(format!("consumer {}: {e}", consumer.id))),
                None => Ok(None),
            }
        })
        .await?;
        match cached {
            None => Ok(None),
            Some(json) => {
                let value: Json = serde_json::from_slice(&json)
                    .map_err(|e| Error::msg(format!("cached consumer {id}: {e}")))?;
                Ok(Some(Entity::consumer(value)))
            }
        }
    }

    fn clear_claim_headers(&self, kong: &mut dyn Pdk) -> Result<()> {
        for (_, header) in &self.claims_to_headers {
            kong.service_request().clear_header(header)?;
        }
        Ok(())
    }

    /// Kong's `set_consumer`: authenticates, sets or clears the consumer
    /// headers, keeps the token in `kong.ctx.shared.authenticated_jwt_token`.
    fn set_consumer(
        &self,
        kong: &mut dyn Pdk,
        consumer: Option<&Entity>,
        credential: Option<&Json>,
        token: Option<&[u8]>,
    ) -> Result<()> {
        let consumer_json = consumer.map(Entity::to_json);
        kong.client()
            .authenticate(consumer_json.as_ref(), credential)?;
        let text = |entity: Option<&Entity>, field: &str| {
            entity
                .and_then(|e| e.field(field))
                .and_then(Json::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let consumer_id = consumer.map(|c| c.id.clone()).filter(|id| !id.is_empty());
        let custom_id = text(consumer, "custom_id");
        let username = text(consumer, "username");
        let key = credential
            .and_then(|c| c.get("key"))
            .and_then(Json::as_str)
            .filter(|k| !k.is_empty());
        let service = kong.service_request();
        for (header, value) in [
            (CONSUMER_ID, consumer_id.as_deref()),
            (CONSUMER_CUSTOM_ID, custom_id.as_deref()),
            (CONSUMER_USERNAME, username.as_deref()),
            (CREDENTIAL_IDENTIFIER, key),
        ] {
            match value {
                Some(value) => service.set_header(header, value.as_bytes())?,
                None => service.clear_header(header)?,
            }
        }
        if credential.is_some() {
            service.clear_header(ANONYMOUS)?;
        } else {
            service.set_header(ANONYMOUS, b"true")?;
        }
        kong.ctx().shared_set(
            "authenticated_jwt_token",
            token.map_or(Value::Nil, |t| Value::String(t.to_vec())),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MockPdk, MockSharedDicts, Phase};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    /// Throwaway keys made by `openssl` for this test run (never stored).
    struct Keys {
        rsa_private: String,
        rsa_public: String,
        rsa_modulus: Vec<u8>,
        ec_private: String,
        ec_public: String,
        ed_private: String,
        ed_public: String,
    }

    fn openssl(args: &[&str], input: Option<&str>) -> Vec<u8> {
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl runs");
        if let Some(input) = input {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl {args:?}");
        out.stdout
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let rsa_private = text(openssl(&["genrsa", "-traditional", "2048"], None));
            let rsa_public = text(openssl(&["rsa", "-pubout"], Some(&rsa_private)));
            let modulus = text(openssl(&["rsa", "-noout", "-modulus"], Some(&rsa_private)));
            let hex = modulus.trim().trim_start_matches("Modulus=");
            let rsa_modulus = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let ec_private = text(openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ],
                None,
            ));
            let ec_public = text(openssl(&["pkey", "-pubout"], Some(&ec_private)));
            let ed_private = text(openssl(&["genpkey", "-algorithm", "ED25519"], None));
            let ed_public = text(openssl(&["pkey", "-pubout"], Some(&ed_private)));
            Keys {
                rsa_private,
                rsa_public,
                rsa_modulus,
                ec_private,
                ec_public,
                ed_private,
                ed_public,
            }
        })
    }

    fn now_i() -> i64 {
        now() as i64
    }

    fn sign(
        alg: jsonwebtoken::Algorithm,
        kid: Option<&str>,
        claims: &Json,
        key: &EncodingKey,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        encode(&header, claims, key).unwrap()
    }

    fn hs(secret: &str, kid: Option<&str>, claims: &Json) -> String {
        sign(
            jsonwebtoken::Algorithm::HS256,
            kid,
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
    }

    fn rs(alg: jsonwebtoken::Algorithm, kid: Option<&str>, claims: &Json) -> String {
        let key = EncodingKey::from_rsa_pem(keys().rsa_private.as_bytes()).unwrap();
        sign(alg, kid, claims, &key)
    }

    /// A raw token: header and claims JSON as given, signature bytes as given.
    fn raw(header: &str, claims: &str, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            jwt_token::base64url(header.as_bytes()),
            jwt_token::base64url(claims.as_bytes()),
            jwt_token::base64url(signature)
        )
    }

    fn config(json: Json) -> JwtConfig {
        serde_json::from_value(json).expect("a valid config")
    }

    fn plugin(json: Json) -> Rc<Jwt> {
        Rc::new(Jwt::new(config(json)).expect("accepted"))
    }

    fn hs_plugin() -> Rc<Jwt> {
        plugin(json!({
            "algorithms": ["HS256"],
            "keys": [{ "kid": "k1", "secret": "s3cr3t" }],
            "claims_to_headers": { "sub": "X-Jwt-Sub", "scope": "X-Jwt-Scope" },
        }))
    }

    fn bearer_request(token: &str) -> MockPdk {
        MockPdk::get("/").with_header("authorization", format!("Bearer {token}"))
    }

    /// One access phase; returns the flow and the mock after it.
    fn access(plugin: &Rc<Jwt>, mut kong: MockPdk) -> (Flow, MockPdk) {
        let plugin = plugin.clone();
        crate::io::block_on(async move {
            kong.phase = Some(Phase::Access);
            let flow = plugin.access_async(&mut kong, &mut ()).await;
            (flow.expect("no 500"), kong)
        })
        .expect("the task runs")
    }

    fn refused(flow: &Flow) -> (Json, Option<String>) {
        let Flow::Exit(exit) = flow else {
            panic!("not refused: {flow:?}");
        };
        assert_eq!(exit.status, 401);
        let body = serde_json::from_slice(exit.body.as_deref().unwrap()).unwrap();
        let www = exit
            .headers
            .iter()
            .find(|(n, _)| n == "WWW-Authenticate")
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap());
        assert!(
            exit.headers
                .iter()
                .any(|(n, v)| n == "Content-Type" && v.starts_with(b"application/json"))
        );
        (body, www)
    }

    fn message(flow: &Flow) -> String {
        refused(flow).0["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn a_valid_hs256_token_is_accepted_with_kongs_headers_and_claims_forwarded() {
        let token = hs(
            "s3cr3t",
            Some("k1"),
            &json!({ "sub": "alice", "exp": now_i() + 60 }),
        );
        let (flow, kong) = access(
            &hs_plugin(),
            bearer_request(&token).with_header("x-jwt-scope", "spoofed"),
        );
        assert_eq!(flow, Flow::Continue);
        assert_eq!(kong.upstream_header("x-jwt-sub"), Some(&b"alice"[..]));
        assert_eq!(
            kong.upstream_header("x-jwt-scope"),
            None,
            "absent claim: header removed"
        );
        assert_eq!(
            kong.upstream_header("x-credential-identifier"),
            Some(&b"alice"[..])
        );
        assert_eq!(kong.upstream_header("x-anonymous-consumer"), None);
        assert_eq!(
            kong.credential.as_ref().map(|c| c.id.as_str()),
            Some("alice")
        );
        assert!(
            kong.ctx_shared
                .iter()
                .any(|(k, v)| k == "authenticated_jwt_token"
                    && *v == Value::String(token.as_bytes().to_vec()))
        );
    }

    #[test]
    fn every_asymmetric_algorithm_verifies_with_its_pem_key() {
        use jsonwebtoken::Algorithm as A;
        let k = keys();
        let plugin = plugin(json!({
            "algorithms": ["RS256", "RS384", "RS512", "PS256", "ES256", "EdDSA"],
            "keys": [
                { "kid": "rsa", "public_key": k.rsa_public },
                { "kid": "ec", "public_key": k.ec_public },
                { "kid": "ed", "public_key": k.ed_public },
            ],
        }));
        let claims = json!({ "sub": "bob" });
        for alg in [A::RS256, A::RS384, A::RS512, A::PS256] {
            let (flow, _) = access(&plugin, bearer_request(&rs(alg, Some("rsa"), &claims)));
            assert_eq!(flow, Flow::Continue, "{alg:?}");
        }
        let ec = EncodingKey::from_ec_pem(k.ec_private.as_bytes()).unwrap();
        let (flow, _) = access(
            &plugin,
            bearer_request(&sign(A::ES256, Some("ec"), &claims, &ec)),
        );
        assert_eq!(flow, Flow::Continue, "ES256");
        let ed = EncodingKey::from_ed_pem(k.ed_private.as_bytes()).unwrap();
        let (flow, _) = access(
            &plugin,
            bearer_request(&sign(A::EdDSA, Some("ed"), &claims, &ed)),
        );
        assert_eq!(flow, Flow::Continue, "EdDSA");
        // Without kid: tried against the keys of its algorithm.
        let (flow, _) = access(&plugin, bearer_request(&sign(A::EdDSA, None, &claims, &ed)));
        assert_eq!(flow, Flow::Continue, "EdDSA without kid");
        // A signature that is not the key's fails.
        let forged = raw(
            r#"{"alg":"ES256","kid":"ec"}"#,
            r#"{"sub":"bob"}"#,
            &[7u8; 64],
        );
        assert_eq!(
            message(&access(&plugin, bearer_request(&forged)).0),
            "Invalid signature"
        );
    }

    #[test]
    fn alg_confusion_with_the_public_key_as_hmac_secret_is_refused() {
        let k = keys();
        let plugin = plugin(json!({
            "algorithms": ["RS256", "HS256"],
            "keys": [{ "kid": "rsa", "public_key": k.rsa_public }],
        }));
        let claims = json!({ "sub": "mallory" });
        let forged = hs(&k.rsa_public, Some("rsa"), &claims);
        assert_eq!(
            message(&access(&plugin, bearer_request(&forged)).0),
            "Invalid algorithm"
        );
        let forged = hs(&k.rsa_public, None, &claims);
        assert_eq!(
            message(&access(&plugin, bearer_request(&forged)).0),
            "No credentials found for given 'kid'"
        );
        // And a PEM document is refused as a secret at configuration time.
        let err = Jwt::new(config(
            json!({ "algorithms": ["HS256"], "keys": [{ "secret": k.rsa_public }] }),
        ))
        .expect_err("PEM secret");
        assert!(
            err.message().contains("must not be a PEM document"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn refusals_carry_kongs_messages_and_www_authenticate() {
        let p = hs_plugin();
        let (flow, _) = access(&p, MockPdk::get("/"));
        let (body, www) = refused(&flow);
        assert_eq!(body, json!({ "message": "Unauthorized" }));
        assert_eq!(www.as_deref(), Some("Bearer"));

        let none = raw(r#"{"alg":"none","kid":"k1"}"#, r#"{"sub":"a"}"#, b"");
        let (body, www) = refused(&access(&p, bearer_request(&format!("{none}AAAA"))).0);
        assert_eq!(body, json!({ "message": "Bad token; invalid alg" }));
        assert_eq!(www.as_deref(), Some("Bearer error=\"invalid_token\""));

        let rs_token = rs(jsonwebtoken::Algorithm::RS256, Some("k1"), &json!({}));
        assert_eq!(
            message(&access(&p, bearer_request(&rs_token)).0),
            "Invalid algorithm"
        );
        let wrong = hs("other", Some("k1"), &json!({}));
        assert_eq!(
            message(&access(&p, bearer_request(&wrong)).0),
            "Invalid signature"
        );
        let unknown = hs("s3cr3t", Some("k9"), &json!({}));
        assert_eq!(
            message(&access(&p, bearer_request(&unknown)).0),
            "No credentials found for given 'kid'"
        );
        assert_eq!(
            message(&access(&p, bearer_request("abc")).0),
            "Bad token; invalid JSON"
        );
        let two = MockPdk::get(&format!(
            "/?jwt={}",
            hs("s3cr3t", Some("k1"), &json!({"a": 1}))
        ))
        .with_header(
            "authorization",
            format!("Bearer {}", hs("s3cr3t", Some("k1"), &json!({"a": 2}))),
        );
        assert_eq!(message(&access(&p, two).0), "Multiple tokens provided");
        assert_eq!(
            message(&access(&p, MockPdk::get("/?jwt")).0),
            "Unrecognizable token"
        );
    }

    #[test]
    fn tokens_are_found_in_the_query_in_cookies_and_in_configured_headers() {
        let p = plugin(json!({
            "algorithms": ["HS256"],
            "keys": [{ "secret": "s3cr3t" }],
            "uri_param_names": ["jwt", "token"],
            "cookie_names": ["session"],
            "header_names": ["authorization", "x-token"],
        }));
        let t = hs("s3cr3t", None, &json!({ "sub": "q" }));
        for kong in [
            MockPdk::get(&format!("/?a=1&token={t}")),
            MockPdk::get("/").with_header("cookie", format!("a=b; session={t}; c=d")),
            MockPdk::get("/").with_header("x-token", format!("bearer   {t}")),
            MockPdk::get("/").with_header("authorization", format!("Bearer {t}")),
            // The same token twice is one token.
            MockPdk::get(&format!("/?jwt={t}")).with_header("authorization", format!("Bearer {t}")),
        ] {
            assert_eq!(access(&p, kong).0, Flow::Continue);
        }
        // Not "Bearer": no token.
        let (flow, _) = access(
            &p,
            MockPdk::get("/").with_header("authorization", format!("Basic {t}")),
        );
        assert_eq!(message(&flow), "Unauthorized");
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"xbearerBearer\tabc def"), Some(&b"abc def"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer  "), Some(&b" "[..]));
    }

    #[test]
    fn claims_are_checked_as_kong_does_with_leeway() {
        let p = plugin(json!({
            "algorithms": ["HS256"],
            "keys": [{ "kid": "k1", "secret": "s3cr3t" }],
            "claims_to_verify": ["exp", "nbf"],
        }));
        let t = |claims: Json| bearer_request(&hs("s3cr3t", Some("k1"), &claims));
        let (body, www) = refused(&access(&p, t(json!({ "sub": "a" }))).0);
        assert_eq!(
            body,
            json!({ "exp": "must be a number", "nbf": "must be a number" })
        );
        assert_eq!(www.as_deref(), Some("Bearer error=\"invalid_token\""));
        let n = now_i();
        let (body, _) = refused(&access(&p, t(json!({ "exp": n - 10, "nbf": n - 10 }))).0);
        assert_eq!(body, json!({ "exp": "token expired" }));
        let (body, _) = refused(&access(&p, t(json!({ "exp": n + 10, "nbf": n + 5 }))).0);
        assert_eq!(body, json!({ "nbf": "token not valid yet" }));
        assert_eq!(
            access(&p, t(json!({ "exp": n + 10, "nbf": n - 5 }))).0,
            Flow::Continue
        );

        let lenient = plugin(json!({
            "algorithms": ["HS256"], "keys": [{ "secret": "s3cr3t" }], "leeway": 30,
        }));
        let t = |claims: Json| bearer_request(&hs("s3cr3t", None, &claims));
        assert_eq!(
            access(&lenient, t(json!({ "exp": n - 10, "nbf": n + 10 }))).0,
            Flow::Continue
        );
        let (body, _) = refused(&access(&lenient, t(json!({ "exp": n - 40 }))).0);
        assert_eq!(body, json!({ "exp": "token expired" }));
        let (body, _) = refused(&access(&lenient, t(json!({ "exp": "soon" }))).0);
        assert_eq!(body, json!({ "exp": "must be a number" }));
        assert_eq!(
            access(&lenient, t(json!({}))).0,
            Flow::Continue,
            "not required"
        );

        let max = plugin(json!({
            "algorithms": ["HS256"], "keys": [{ "secret": "s3cr3t" }],
            "claims_to_verify": ["exp"], "maximum_expiration": 300,
        }));
        let (body, _) = refused(&access(&max, t(json!({ "exp": n + 3600 }))).0);
        assert_eq!(body, json!({ "exp": "exceeds maximum allowed expiration" }));
        assert_eq!(access(&max, t(json!({ "exp": n + 270 }))).0, Flow::Continue);
    }

    #[test]
    fn issuer_audience_and_required_claims() {
        let p = plugin(json!({
            "algorithms": ["HS256"], "keys": [{ "secret": "s3cr3t" }],
            "allowed_iss": ["https://idp.example"], "allowed_aud": ["api", "web"],
            "required_claims": ["sub"],
        }));
        let t = |claims: Json| bearer_request(&hs("s3cr3t", None, &claims));
        let ok = json!({ "iss": "https://idp.example", "aud": ["x", "web"], "sub": "a" });
        assert_eq!(access(&p, t(ok)).0, Flow::Continue);
        let (body, _) = refused(&access(&p, t(json!({ "iss": "https://evil", "aud": "x" }))).0);
        assert_eq!(
            body,
            json!({ "iss": "not an allowed issuer", "aud": "not an allowed audience", "sub": "is required" })
        );
    }

    #[test]
    fn consumer_claim_authenticates_the_consumer_and_anonymous_falls_back() {
        let alice = json!({ "id": "c-alice", "username": "alice", "custom_id": "A1" });
        let anon = json!({ "id": "c-anon", "username": "nobody" });
        let with_consumers = |mut kong: MockPdk| {
            kong.known_consumers = vec![alice.clone(), anon.clone()];
            kong
        };
        let p = plugin(json!({
            "algorithms": ["HS256"], "keys": [{ "secret": "s3cr3t" }], "consumer_claim": "sub",
        }));
        let t = |sub: &str| bearer_request(&hs("s3cr3t", None, &json!({ "sub": sub })));
        let (flow, kong) = access(&p, with_consumers(t("alice")));
        assert_eq!(flow, Flow::Continue);
        assert_eq!(
            kong.consumer.as_ref().map(|c| c.id.as_str()),
            Some("c-alice")
        );
        assert_eq!(kong.upstream_header("x-consumer-id"), Some(&b"c-alice"[..]));
        assert_eq!(
            kong.upstream_header("x-consumer-username"),
            Some(&b"alice"[..])
        );
        assert_eq!(
            kong.upstream_header("x-consumer-custom-id"),
            Some(&b"A1"[..])
        );
        let (flow, _) = access(&p, with_consumers(t("carol")));
        let (body, www) = refused(&flow);
        assert_eq!(
            body,
            json!({ "message": "Could not find consumer for 'sub=carol'" })
        );
        assert_eq!(www, None);
        let no_sub = bearer_request(&hs("s3cr3t", None, &json!({})));
        assert_eq!(
            message(&access(&p, with_consumers(no_sub)).0),
            "No mandatory 'sub' in claims"
        );

        let anonymous = plugin(json!({
            "algorithms": ["HS256"], "keys": [{ "secret": "s3cr3t" }], "consumer_claim": "sub",
            "anonymous": "nobody",
        }));
        let (flow, kong) = access(&anonymous, with_consumers(MockPdk::get("/")));
        assert_eq!(flow, Flow::Continue);
        assert_eq!(
            kong.consumer.as_ref().map(|c| c.id.as_str()),
            Some("c-anon")
        );
        assert_eq!(
            kong.upstream_header("x-anonymous-consumer"),
            Some(&b"true"[..])
        );
        let (flow, kong) = access(&anonymous, with_consumers(t("alice")));
        assert_eq!(flow, Flow::Continue);
        assert_eq!(
            kong.consumer.as_ref().map(|c| c.id.as_str()),
            Some("c-alice")
        );
        // An anonymous consumer that does not exist is a 500, as in Kong.
        let missing = plugin(json!({
            "algorithms": ["HS256"], "keys": [{ "secret": "s3cr3t" }], "anonymous": "ghost",
        }));
        let err = crate::io::block_on(async move {
            let mut kong = MockPdk::get("/");
            kong.phase = Some(Phase::Access);
            missing.access_async(&mut kong, &mut ()).await
        })
        .unwrap()
        .expect_err("500");
        assert!(
            err.message().contains("anonymous consumer"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn bad_configs_are_refused_with_clear_messages() {
        let refuse = |json: Json| {
            Jwt::new(config(json))
                .expect_err("refused")
                .message()
                .to_string()
        };
        assert!(refuse(json!({})).contains("'config.keys', 'config.jwks_url'"));
        assert_eq!(
            refuse(
                json!({ "keys": [{ "secret": "s" }], "maximum_expiration": 60, "claims_to_verify": ["nbf"] })
            ),
            "claims_to_verify: expected to contain: exp"
        );
        assert!(
            refuse(json!({ "keys": [{ "public_key": keys().rsa_private }] }))
                .contains("private key")
        );
        assert!(refuse(json!({ "keys": [{ "public_key": "nope" }] })).contains("not a PEM"));
        assert!(refuse(json!({ "keys": [{}] })).contains("exactly one of secret and public_key"));
        assert!(refuse(json!({ "jwks_url": "ftp://x/jwks" })).contains("jwks_url"));
        assert!(
            refuse(
                json!({ "keys": [{ "secret": "s" }], "claims_to_headers": { "sub": "Bad Header" } })
            )
            .contains("bad header name")
        );
    }

    /// A JWKS server on 127.0.0.1: answers every request with `doc` (or 503
    /// when `down`), counting requests.
    struct Idp {
        url: String,
        doc: Arc<Mutex<(u16, String)>>,
        hits: Arc<AtomicUsize>,
    }

    fn idp() -> Idp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let doc = Arc::new(Mutex::new((200, String::new())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let (status, body) = d.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Idp { url, doc, hits }
    }

    fn rsa_jwks(kids: &[&str]) -> String {
        let n = jwt_token::base64url(&keys().rsa_modulus);
        let keys: Vec<Json> = kids
            .iter()
            .map(|kid| json!({ "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB" }))
            .chain([json!({ "kty": "oct", "kid": "sym", "k": "c2VjcmV0" })])
            .collect();
        json!({ "keys": keys }).to_string()
    }

    /// `authenticate` at a given clock, the mock's dicts advanced alike.
    fn auth_at(
        plugin: &Rc<Jwt>,
        dicts: &MockSharedDicts,
        token: &str,
        at: f64,
    ) -> std::result::Result<std::result::Result<(), Refusal>, Error> {
        let plugin = plugin.clone();
        let mut kong = bearer_request(token);
        kong.shared_dicts = dicts.clone();
        kong.phase = Some(Phase::Access);
        crate::io::block_on(async move { plugin.authenticate(&mut kong, at).await }).unwrap()
    }

    #[test]
    fn jwks_is_fetched_once_cached_refreshed_on_rotation_and_served_stale() {
        let server = idp();
        *server.doc.lock().unwrap() = (200, rsa_jwks(&["a"]));
        let p = plugin(json!({
            "jwks_url": server.url, "jwks_ttl": 60, "refresh_interval": 10, "max_stale": 100,
        }));
        let dicts = MockSharedDicts::new();
        dicts.declare("kong");
        let claims = json!({ "sub": "x" });
        let a = rs(jsonwebtoken::Algorithm::RS256, Some("a"), &claims);
        let b = rs(jsonwebtoken::Algorithm::RS256, Some("b"), &claims);
        let t0 = 1_000_000.0;
        assert_eq!(auth_at(&p, &dicts, &a, t0).unwrap(), Ok(()));
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        for i in 1..50 {
            assert_eq!(
                auth_at(&p, &dicts, &a, t0 + f64::from(i) / 10.0).unwrap(),
                Ok(())
            );
        }
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            1,
            "cached: no fetch per request"
        );
        // Another worker (a fresh instance) finds the document in the dict.
        let other = plugin(
            json!({ "jwks_url": server.url, "jwks_ttl": 60, "refresh_interval": 10, "max_stale": 100 }),
        );
        assert_eq!(auth_at(&other, &dicts, &a, t0 + 1.0).unwrap(), Ok(()));
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            1,
            "shared across workers"
        );

        // Rotation: kid b is unknown; within refresh_interval of the fetch: no fetch.
        *server.doc.lock().unwrap() = (200, rsa_jwks(&["a", "b"]));
        let unknown = Refusal::invalid("No credentials found for given 'kid'");
        for _ in 0..20 {
            assert_eq!(
                auth_at(&p, &dicts, &b, t0 + 5.0).unwrap(),
                Err(unknown.clone())
            );
        }
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            1,
            "rate-limited by refresh_interval"
        );
        dicts.advance(Duration::from_secs(11));
        assert_eq!(auth_at(&p, &dicts, &b, t0 + 11.0).unwrap(), Ok(()));
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            2,
            "one refresh for the new kid"
        );
        for _ in 0..20 {
            let _ = auth_at(
                &p,
                &dicts,
                &rs(jsonwebtoken::Algorithm::RS256, Some("zz"), &claims),
                t0 + 12.0,
            );
        }
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            2,
            "random kids cannot force fetches"
        );

        // The identity provider goes down: keys served stale up to max_stale.
        *server.doc.lock().unwrap() = (503, "down".into());
        dicts.advance(Duration::from_secs(60));
        assert_eq!(auth_at(&p, &dicts, &a, t0 + 71.0 + 1.0).unwrap(), Ok(()));
        assert_eq!(server.hits.load(Ordering::SeqCst), 3, "tried once");
        for i in 0..20 {
            assert_eq!(
                auth_at(&p, &dicts, &a, t0 + 72.0 + f64::from(i) / 100.0).unwrap(),
                Ok(())
            );
        }
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            3,
            "no retry before refresh_interval"
        );
        dicts.advance(Duration::from_secs(150));
        let err =
            auth_at(&p, &dicts, &a, t0 + 11.0 + 160.0 + 1.0).expect_err("past max_stale: 500");
        assert!(err.message().contains("answered 503"), "{}", err.message());

        // Back up: fetched again.
        *server.doc.lock().unwrap() = (200, rsa_jwks(&["a"]));
        dicts.advance(Duration::from_secs(11));
        assert_eq!(auth_at(&p, &dicts, &a, t0 + 200.0).unwrap(), Ok(()));
    }

    #[test]
    fn a_jwks_never_yields_symmetric_keys_or_keys_for_other_uses() {
        let n = jwt_token::base64url(&keys().rsa_modulus);
        let doc = json!({ "keys": [
            { "kty": "oct", "kid": "s", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB" },
            { "kty": "RSA", "kid": "weird", "alg": "RSA-OAEP", "n": n, "e": "AQAB" },
            { "kty": "RSA", "kid": "ok", "n": n, "e": "AQAB" },
            { "kty": "EC", "kid": "bad-ec", "crv": "P-256", "x": "AA", "y": "AA" },
        ]});
        let keys = super::super::jwt_keys::parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert!(kids.contains(&"ok"));
        assert!(
            !kids.contains(&"s") && !kids.contains(&"enc") && !kids.contains(&"weird"),
            "{kids:?}"
        );
        assert!(super::super::jwt_keys::parse_jwks(b"{\"keys\":[]}").is_err());
        assert!(super::super::jwt_keys::parse_jwks(b"nope").is_err());
    }
}
