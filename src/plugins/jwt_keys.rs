//! Keys of `rs-jwt`: from the configuration (HMAC secrets, PEM public
//! keys) and from a JWKS URL, with the JWKS cache.
//!
//! # The JWKS cache
//!
//! Two levels, so the hit path makes no call into Lua at all:
//! - **per worker**: the parsed keys of the last JWKS this worker saw, in
//!   the plugin instance (an `Rc` snapshot: keys are parsed once per fetch,
//!   not per request). While it is younger than `jwks_ttl`, a request only
//!   looks its `kid` up in it.
//! - **across workers**: the JWKS document and when it was fetched, in a
//!   shared dict (`cache_dict`, Kong's `kong` dict by default), stored for
//!   `jwks_ttl + max_stale`. A worker whose copy is too old reads the
//!   dict first: another worker may have fetched already.
//!
//! Fetches are rationed node-wide by one dict key,
//! `rs-jwt:jwks-refresh:<url>`, added (`dict:add`, atomic) for
//! `refresh_interval`: whoever adds it fetches, nobody else fetches until it
//! expires. So a token with an unknown `kid` (key rotation at the identity
//! provider) triggers at most one fetch per `refresh_interval` on the whole
//! node, however many such tokens arrive, and a scheduled refresh (copy
//! older than `jwks_ttl`) is one fetch for all workers. When a fetch fails
//! the old keys are served, while younger than `jwks_ttl + max_stale`
//! (logged as a warning); past that, or with no keys ever fetched, the
//! request fails (500, Kong's answer when its own key store is down): an
//! authentication plugin does not pass what it could not check.
//!
//! Why not `kong_rs::cache` (kong.cache): it caches a value for a ttl, but
//! cannot serve a value past its ttl while the source is down, nor be told
//! "refresh now, this kid is unknown" from Rust; the shared dict gives
//! both with three operations (`get`, `set`, `add`).

use super::jwt_token::{Alg, Family};
use crate::pdk::Pdk;
use crate::{Error, Result};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// A verification key.
#[derive(Clone)]
pub struct Key {
    /// Its key id, matched against the token's `kid`.
    pub kid: Option<String>,
    /// The kind of key: only algorithms of this family use it.
    pub family: Family,
    /// The algorithms it may verify (a JWK's `alg`, an EC key's curve);
    /// `None`: any of its family allowed by the config.
    pub algs: Option<Vec<Alg>>,
    /// The key itself.
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("algs", &self.algs)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Alg) -> bool {
        alg.family() == self.family && self.algs.as_ref().is_none_or(|algs| algs.contains(&alg))
    }

    /// An HMAC secret (`base64`: the secret is given base64-encoded, as
    /// Kong's `secret_is_base64`).
    ///
    /// # Errors
    /// An empty secret, bad base64, or a secret that is a PEM document (a
    /// public key used as an HMAC secret is the classic algorithm-confusion
    /// hole: refused at configuration time).
    pub fn secret(kid: Option<String>, secret: &str, base64: bool) -> Result<Key> {
        if secret.contains("-----BEGIN") {
            return Err(Error::msg(
                "a secret must not be a PEM document: give public keys as public_key",
            ));
        }
        let bytes = if base64 {
            use base64::Engine as _;
            let trimmed = secret.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
                .map_err(|e| Error::msg(format!("secret is not base64: {e}")))?
        } else {
            secret.as_bytes().to_vec()
        };
        if bytes.is_empty() {
            return Err(Error::msg("a secret must not be empty"));
        }
        Ok(Key {
            kid,
            family: Family::Hmac,
            algs: None,
            key: DecodingKey::from_secret(&bytes),
        })
    }

    /// A PEM public key (`-----BEGIN PUBLIC KEY-----` SPKI or
    /// `-----BEGIN RSA PUBLIC KEY-----`): RSA, EC (P-256 or P-384) or
    /// Ed25519.
    ///
    /// # Errors
    /// A private key, or PEM that is none of those.
    pub fn public_pem(kid: Option<String>, pem: &str) -> Result<Key> {
        if pem.contains("PRIVATE KEY") {
            return Err(Error::msg(
                "public_key is a private key: give the public key only",
            ));
        }
        let bytes = pem.as_bytes();
        let (family, key) = if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
            (Family::Rsa, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
            (Family::Ec, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
            (Family::Ed, key)
        } else {
            return Err(Error::msg(
                "public_key is not a PEM RSA, EC or Ed25519 public key",
            ));
        };
        // A P-384 SPKI is longer than a P-256 one: the curve decides the alg.
        let algs = (family == Family::Ec).then(|| {
            if pem_der_len(pem) > 100 {
                vec![Alg::ES384]
            } else {
                vec![Alg::ES256]
            }
        });
        Ok(Key {
            kid,
            family,
            algs,
            key,
        })
    }

    /// A key of a JWKS: `None` for keys not for signatures (`use` other
    /// than `sig`), symmetric ones (`kty: oct` has no place in a public
    /// document) and kinds not supported.
    pub fn from_jwk(value: &Value) -> Option<Key> {
        let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            return None;
        }
        let declared = value
            .get("alg")
            .and_then(Value::as_str)
            .map(|name| Alg::from_name(name).ok_or(()));
        let (family, curve_alg) = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => (Family::Rsa, None),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => (Family::Ec, Some(Alg::ES256)),
                EllipticCurve::P384 => (Family::Ec, Some(Alg::ES384)),
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                (Family::Ed, None)
            }
            _ => return None,
        };
        let algs = match (declared, curve_alg) {
            (Some(Err(())), _) => return None, // an alg we do not verify
            (Some(Ok(alg)), curve) => {
                if alg.family() != family || curve.is_some_and(|c| c != alg) {
                    return None;
                }
                Some(vec![alg])
            }
            (None, curve) => curve.map(|c| vec![c]),
        };
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some(Key {
            kid: jwk.common.key_id.clone(),
            family,
            algs,
            key,
        })
    }
}

fn pem_der_len(pem: &str) -> usize {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    body.trim().len() * 3 / 4
}

/// The keys of a JWKS document (`{"keys": [...]}`), unusable ones left out.
///
/// # Errors
/// A body that is not JSON with a `keys` array, or without any usable key.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<Key>> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| Error::msg(format!("JWKS is not JSON: {e}")))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::msg("JWKS has no \"keys\" array"))?;
    let keys: Vec<Key> = keys.iter().filter_map(Key::from_jwk).collect();
    if keys.is_empty() {
        return Err(Error::msg("JWKS has no usable signature key"));
    }
    Ok(keys)
}

/// The keys one worker holds from a JWKS, and when they were fetched.
#[derive(Debug)]
pub struct Snapshot {
    /// Wall-clock seconds of the fetch.
    pub fetched_at: f64,
    /// The parsed keys.
    pub keys: Vec<Key>,
}

impl Snapshot {
    /// The key with id `kid`.
    pub fn find(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// How a [`JwksCache`] fetches and keeps a JWKS.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// The JWKS URL (`http://` or `https://`).
    pub url: String,
    /// Keys younger than this are used without asking anyone.
    pub ttl: Duration,
    /// At most one fetch per this interval on the node.
    pub refresh_interval: Duration,
    /// How long past `ttl` keys are served while fetches fail.
    pub max_stale: Duration,
    /// Timeout of one fetch.
    pub timeout: Duration,
    /// Verify the identity provider's TLS certificate.
    pub ssl_verify: bool,
    /// The shared dict holding the document for every worker.
    pub dict: String,
}

/// The JWKS of one plugin instance: see the [module](self) documentation.
#[derive(Debug)]
pub struct JwksCache {
    settings: JwksSettings,
    doc_key: Vec<u8>,
    refresh_key: Vec<u8>,
    local: RefCell<Option<Rc<Snapshot>>>,
    /// No dict look-up before this time (seconds) while the copy is stale:
    /// a failing identity provider costs the hit path nothing.
    quiet_until: Cell<f64>,
}

/// Where a key came from: why a lookup found nothing.
#[derive(Debug)]
pub enum Lookup {
    /// The key with the `kid` asked for.
    Found(Rc<Snapshot>),
    /// The JWKS (the snapshot given) has no key with that `kid`, even after
    /// a refresh allowed by `refresh_interval`.
    Unknown(Rc<Snapshot>),
}

impl JwksCache {
    /// A cache for `settings`; nothing is fetched before the first request.
    ///
    /// # Errors
    /// A URL [`crate::http::Request`] refuses.
    pub fn new(settings: JwksSettings) -> Result<JwksCache> {
        crate::http::Request::get(&settings.url)?;
        let doc_key = format!("rs-jwt:jwks:{}", settings.url).into_bytes();
        let refresh_key = format!("rs-jwt:jwks-refresh:{}", settings.url).into_bytes();
        Ok(JwksCache {
            settings,
            doc_key,
            refresh_key,
            local: RefCell::new(None),
            quiet_until: Cell::new(0.0),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// This worker's copy, as it is (no I/O).
    pub fn local(&self) -> Option<Rc<Snapshot>> {
        self.local.borrow().clone()
    }

    fn fresh(&self, snapshot: &Snapshot, now: f64) -> bool {
        now - snapshot.fetched_at < self.settings.ttl.as_secs_f64()
    }

    fn usable(&self, snapshot: &Snapshot, now: f64) -> bool {
        now - snapshot.fetched_at < (self.settings.ttl + self.settings.max_stale).as_secs_f64()
    }

    /// The keys to verify with at `now` (wall-clock seconds), fetching
    /// when this node's copy is older than `ttl` (see the module docs).
    ///
    /// # Errors
    /// No keys younger than `ttl + max_stale` and the fetch failed; the
    /// shared dict missing.
    pub async fn keys(&self, kong: &mut dyn Pdk, now: f64) -> Result<Rc<Snapshot>> {
        let local = self.local();
        if let Some(snapshot) = &local
            && (self.fresh(snapshot, now) || now < self.quiet_until.get())
            && self.usable(snapshot, now)
        {
            return Ok(snapshot.clone());
        }
        // Another worker may have fetched.
        if let Some(snapshot) = self.read_dict(kong)?
            && self.fresh(&snapshot, now)
        {
            return Ok(snapshot);
        }
        self.refresh(kong, now).await
    }

    /// The snapshot holding `kid`, refreshing once (if `refresh_interval`
    /// allows) when the current keys do not have it.
    ///
    /// # Errors
    /// As [`JwksCache::keys`].
    pub async fn find(&self, kong: &mut dyn Pdk, kid: &str, now: f64) -> Result<Lookup> {
        let snapshot = self.keys(kong, now).await?;
        if snapshot.find(kid).is_some() {
            return Ok(Lookup::Found(snapshot));
        }
        // Rotated? Another worker may know already; else fetch if allowed.
        if let Some(newer) = self.read_dict(kong)?
            && newer.fetched_at > snapshot.fetched_at
            && newer.find(kid).is_some()
        {
            return Ok(Lookup::Found(newer));
        }
        let snapshot = self.refresh(kong, now).await.unwrap_or(snapshot);
        if snapshot.find(kid).is_some() {
            Ok(Lookup::Found(snapshot))
        } else {
            Ok(Lookup::Unknown(snapshot))
        }
    }

    /// Reads the shared dict's copy into this worker when it is newer.
    fn read_dict(&self, kong: &mut dyn Pdk) -> Result<Option<Rc<Snapshot>>> {
        let dict = kong.shared_dict(&self.settings.dict)?;
        let Some(value) = dict.get(&self.doc_key)? else {
            return Ok(self.local());
        };
        let Some((fetched_at, body)) = split_record(&value) else {
            return Ok(self.local());
        };
        if let Some(local) = self.local()
            && local.fetched_at >= fetched_at
        {
            return Ok(Some(local));
        }
        match parse_jwks(body) {
            Ok(keys) => {
                let snapshot = Rc::new(Snapshot { fetched_at, keys });
                *self.local.borrow_mut() = Some(snapshot.clone());
                Ok(Some(snapshot))
            }
            Err(_) => Ok(self.local()),
        }
    }

    /// Fetches if this worker wins the node's refresh slot; otherwise (or
    /// when the fetch fails) answers what is usable.
    async fn refresh(&self, kong: &mut dyn Pdk, now: f64) -> Result<Rc<Snapshot>> {
        let settings = &self.settings;
        let won = kong.shared_dict(&settings.dict)?.add(
            &self.refresh_key,
            b"1",
            Some(settings.refresh_interval),
        )?;
        if won {
            let fetched = self.fetch().await;
            match fetched {
                Ok((body, keys)) => {
                    let snapshot = Rc::new(Snapshot {
                        fetched_at: now,
                        keys,
                    });
                    let mut record = format!("{now} ").into_bytes();
                    record.extend_from_slice(&body);
                    let keep = settings.ttl + settings.max_stale;
                    if let Err(e) =
                        kong.shared_dict(&settings.dict)?
                            .set(&self.doc_key, &record, Some(keep))
                    {
                        kong.log().warn(&format!(
                            "JWKS {}: not shared with the other workers: {e}",
                            settings.url
                        ))?;
                    }
                    *self.local.borrow_mut() = Some(snapshot.clone());
                    self.quiet_until.set(0.0);
                    return Ok(snapshot);
                }
                Err(e) => {
                    kong.log()
                        .warn(&format!("JWKS {}: fetch failed: {e}", settings.url))?;
                    return self.stale_or(now, e);
                }
            }
        }
        // Someone else fetches (or fetched and failed) within this interval.
        if let Some(snapshot) = self.local()
            && self.usable(&snapshot, now)
        {
            self.quiet_until.set(now + 1.0);
            return Ok(snapshot);
        }
        // Nothing at all yet: wait for the worker that fetches.
        let deadline = now + settings.timeout.as_secs_f64();
        let mut waited = 0.0;
        while now + waited < deadline {
            crate::io::sleep(Duration::from_millis(20)).await?;
            waited += 0.02;
            if let Some(snapshot) = self.read_dict(kong)?
                && self.usable(&snapshot, now)
            {
                return Ok(snapshot);
            }
        }
        Err(Error::msg(format!(
            "JWKS {}: no keys yet (another worker's fetch did not complete in time)",
            settings.url
        )))
    }

    fn stale_or(&self, now: f64, error: Error) -> Result<Rc<Snapshot>> {
        match self.local() {
            Some(snapshot) if self.usable(&snapshot, now) => {
                self.quiet_until.set(now + 1.0);
                Ok(snapshot)
            }
            _ => Err(error),
        }
    }

    async fn fetch(&self) -> Result<(Vec<u8>, Vec<Key>)> {
        let settings = &self.settings;
        let response = crate::http::Request::get(&settings.url)?
            .header("accept", "application/json")
            .timeout(settings.timeout)
            .verify(settings.ssl_verify)
            .max_body(1024 * 1024)
            .send()
            .await?;
        if response.status != 200 {
            return Err(Error::msg(format!(
                "GET {} answered {}",
                settings.url, response.status
            )));
        }
        let keys = parse_jwks(&response.body)?;
        Ok((response.body, keys))
    }
}

/// `"<fetched_at> <document>"` as stored in the dict.
fn split_record(value: &[u8]) -> Option<(f64, &[u8])> {
    let space = value.iter().position(|&b| b == b' ')?;
    let fetched_at: f64 = std::str::from_utf8(&value[..space]).ok()?.parse().ok()?;
    Some((fetched_at, &value[space + 1..]))
}
