//! Join tokens.
//!
//! A token is `flatnet1_<base64url(JSON)>` with the Lighthouse address, the
//! SHA-256 fingerprint of its certificate (so the node pins it: no
//! trust-on-first-use) and a 256-bit secret; with several Lighthouses on
//! one registry, the others' addresses and fingerprints too (`also`). The Lighthouse stores only
//! SHA-256(secret), so its database does not hold usable tokens.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "flatnet1_";

/// What a token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Lighthouse address as `host:port`.
    #[serde(rename = "lh")]
    pub lighthouse: String,
    /// Hex SHA-256 of the Lighthouse certificate (DER).
    #[serde(rename = "fp")]
    pub fingerprint: String,
    /// Hex secret.
    #[serde(rename = "sk")]
    pub secret: String,
    /// The other Lighthouses sharing the registry, each pinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<OtherLighthouse>,
}

/// Another Lighthouse in a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherLighthouse {
    #[serde(rename = "lh")]
    pub lighthouse: String,
    #[serde(rename = "fp")]
    pub fingerprint: String,
}

/// The Lighthouse's record of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Hex SHA-256 of the secret; also the token's id.
    pub id: String,
    pub created: u64,
    pub expires: Option<u64>,
    pub reusable: bool,
    pub revoked: bool,
    pub uses: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a Flatnet join token (expected it to start with {PREFIX})")]
    Prefix,
    #[error("the join token is damaged ({}); copy the whole token again", .0.trim_end_matches('.'))]
    Corrupt(String),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex SHA-256.
pub fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

impl Token {
    /// A new token for `lighthouse` with a fresh secret.
    pub fn generate(lighthouse: &str, fingerprint: &str) -> Self {
        let mut s = [0u8; 32];
        OsRng.fill_bytes(&mut s);
        Token {
            lighthouse: lighthouse.to_string(),
            fingerprint: fingerprint.to_string(),
            secret: hex(&s),
            also: Vec::new(),
        }
    }

    /// Every Lighthouse the token pins, `(address, fingerprint)`, its own
    /// first.
    pub fn lighthouses(&self) -> Vec<(String, String)> {
        std::iter::once((self.lighthouse.clone(), self.fingerprint.clone()))
            .chain(
                self.also
                    .iter()
                    .map(|o| (o.lighthouse.clone(), o.fingerprint.clone())),
            )
            .collect()
    }

    /// The id under which the Lighthouse stores this token.
    pub fn id(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(s: &str) -> Result<Self, TokenError> {
        let body = s.trim().strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        if body.len() > 4096 {
            return Err(TokenError::Corrupt("too long".into()));
        }
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Corrupt(e.to_string()))?;
        let t: Token =
            serde_json::from_slice(&json).map_err(|e| TokenError::Corrupt(e.to_string()))?;
        let is_hex = |v: &str, n: usize| v.len() == n && v.bytes().all(|c| c.is_ascii_hexdigit());
        let pins_ok = t
            .lighthouses()
            .iter()
            .all(|(a, fp)| is_hex(fp, 64) && !a.is_empty());
        if !pins_ok || !is_hex(&t.secret, 64) || t.also.len() > 16 {
            return Err(TokenError::Corrupt(
                "bad fingerprint, secret or address".into(),
            ));
        }
        Ok(t)
    }
}

impl TokenRecord {
    /// Why this token cannot admit a new node at `now`, if it cannot.
    pub fn refuse(&self, now: u64) -> Option<&'static str> {
        if self.revoked {
            Some("the join token was revoked")
        } else if self.expires.is_some_and(|e| now >= e) {
            Some("the join token has expired")
        } else if !self.reusable && self.uses > 0 {
            Some("the join token was already used")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_id() {
        let t = Token::generate("lh.example:7871", &"ab".repeat(32));
        let s = t.encode();
        assert!(s.starts_with("flatnet1_"));
        let back = Token::decode(&s).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.id().len(), 64);
        assert_ne!(back.id(), t.secret);
    }

    #[test]
    fn several_lighthouses_are_all_pinned() {
        let mut t = Token::generate("lh1:7871", &"ab".repeat(32));
        t.also.push(OtherLighthouse {
            lighthouse: "lh2:7871".into(),
            fingerprint: "cd".repeat(32),
        });
        let back = Token::decode(&t.encode()).unwrap();
        assert_eq!(back.lighthouses().len(), 2);
        assert_eq!(back.lighthouses()[1].0, "lh2:7871");
        t.also[0].fingerprint = "zz".into();
        assert!(matches!(
            Token::decode(&t.encode()),
            Err(TokenError::Corrupt(_))
        ));
        // An older token (no `also`) still reads.
        let old = format!(
            "flatnet1_{}",
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"lh":"x:1","fp":"{}","sk":"{}"}}"#,
                "ab".repeat(32),
                "00".repeat(32)
            ))
        );
        assert!(Token::decode(&old).unwrap().also.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Token::decode("hello"), Err(TokenError::Prefix));
        assert!(matches!(
            Token::decode("flatnet1_!!!"),
            Err(TokenError::Corrupt(_))
        ));
        let bad = format!(
            "flatnet1_{}",
            URL_SAFE_NO_PAD.encode(br#"{"lh":"x","fp":"zz","sk":"00"}"#)
        );
        assert!(matches!(Token::decode(&bad), Err(TokenError::Corrupt(_))));
    }

    #[test]
    fn refusals() {
        let mut r = TokenRecord {
            id: "x".into(),
            created: 0,
            expires: Some(100),
            reusable: false,
            revoked: false,
            uses: 0,
        };
        assert_eq!(r.refuse(50), None);
        assert!(r.refuse(100).unwrap().contains("expired"));
        r.uses = 1;
        assert!(r.refuse(50).unwrap().contains("used"));
        r.reusable = true;
        assert_eq!(r.refuse(50), None);
        r.revoked = true;
        assert!(r.refuse(50).unwrap().contains("revoked"));
    }
}
