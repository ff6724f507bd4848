//! Proof that a node holds the WireGuard private key it claims, without the
//! Lighthouse ever seeing that key.
//!
//! The Lighthouse sends an ephemeral x25519 public key `E` and a nonce. The
//! node answers `HMAC-SHA256(DH(node_secret, E), LABEL ‖ nonce ‖ node_public ‖ E)`.
//! The Lighthouse computes the same MAC with `DH(e, node_public)`. Only the
//! holder of `node_secret` (or of `e`, which never leaves the Lighthouse's
//! memory) can produce it. A fresh `E` and nonce per connection stop replays.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

const LABEL: &[u8] = b"flatnet-lighthouse-key-proof-v1";

/// Parse a base64 x25519 public key.
pub fn parse_key(b64: &str) -> Option<PublicKey> {
    let v = STANDARD.decode(b64.trim()).ok()?;
    let a: [u8; 32] = v.try_into().ok()?;
    Some(PublicKey::from(a))
}

pub fn encode_key(k: &PublicKey) -> String {
    STANDARD.encode(k.as_bytes())
}

fn mac(shared: &[u8; 32], nonce: &[u8], node: &PublicKey, eph: &PublicKey) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(shared).expect("HMAC takes any key length");
    m.update(LABEL);
    m.update(nonce);
    m.update(node.as_bytes());
    m.update(eph.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The Lighthouse side of one proof exchange.
pub struct Challenge {
    eph: StaticSecret,
    pub nonce: [u8; 32],
}

impl Challenge {
    pub fn new() -> Self {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        Self {
            eph: StaticSecret::random_from_rng(OsRng),
            nonce,
        }
    }

    pub fn server_key(&self) -> PublicKey {
        PublicKey::from(&self.eph)
    }

    /// (nonce, server key), both base64, for the `Challenge` message.
    pub fn message(&self) -> (String, String) {
        (STANDARD.encode(self.nonce), encode_key(&self.server_key()))
    }

    /// Check a node's answer for `node`'s public key.
    pub fn verify(&self, node: &PublicKey, mac_b64: &str) -> bool {
        let Ok(given) = STANDARD.decode(mac_b64.trim()) else {
            return false;
        };
        let shared = self.eph.diffie_hellman(node);
        if !shared.was_contributory() {
            return false;
        }
        let want = mac(shared.as_bytes(), &self.nonce, node, &self.server_key());
        // Constant-time comparison.
        given.len() == want.len() && given.iter().zip(&want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
    }
}

impl Default for Challenge {
    fn default() -> Self {
        Self::new()
    }
}

/// The node side: answer a challenge with our static secret.
pub fn answer(secret: &StaticSecret, nonce_b64: &str, server_key_b64: &str) -> Option<String> {
    let nonce = STANDARD.decode(nonce_b64).ok()?;
    let eph = parse_key(server_key_b64)?;
    let shared = secret.diffie_hellman(&eph);
    if !shared.was_contributory() {
        return None;
    }
    Some(STANDARD.encode(mac(
        shared.as_bytes(),
        &nonce,
        &PublicKey::from(secret),
        &eph,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_node_passes() {
        let node = StaticSecret::random_from_rng(OsRng);
        let c = Challenge::new();
        let (n, k) = c.message();
        let a = answer(&node, &n, &k).unwrap();
        assert!(c.verify(&PublicKey::from(&node), &a));
    }

    #[test]
    fn claiming_someone_elses_key_fails() {
        let victim = StaticSecret::random_from_rng(OsRng);
        let attacker = StaticSecret::random_from_rng(OsRng);
        let c = Challenge::new();
        let (n, k) = c.message();
        let a = answer(&attacker, &n, &k).unwrap();
        assert!(!c.verify(&PublicKey::from(&victim), &a));
    }

    #[test]
    fn replay_against_a_new_challenge_fails() {
        let node = StaticSecret::random_from_rng(OsRng);
        let c1 = Challenge::new();
        let (n, k) = c1.message();
        let a = answer(&node, &n, &k).unwrap();
        let c2 = Challenge::new();
        assert!(!c2.verify(&PublicKey::from(&node), &a));
        assert!(!c1.verify(&PublicKey::from(&node), "not base64!"));
    }

    #[test]
    fn low_order_keys_rejected() {
        let c = Challenge::new();
        assert!(!c.verify(&PublicKey::from([0u8; 32]), "AAAA"));
        assert!(parse_key("short").is_none());
    }
}
