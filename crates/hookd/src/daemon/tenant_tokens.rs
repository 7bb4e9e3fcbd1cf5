//! Tenant tokens: 256 random bits, shown once, stored only as their SHA-256. Pure apart
//! from the random source.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every tenant token starts with this, so a leaked one is recognisable (secret scanners,
/// logs) and never mistaken for the admin token.
pub const PREFIX: &str = "hkt_";

/// A new token, and the hash to store.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&token);
    (token, hash)
}

/// What is stored of a token: its SHA-256, hex. A token has 256 random bits, so no salt
/// or slow hash is needed: the hash cannot be reversed or guessed.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` is the one `stored` is the hash of, compared in constant time.
pub fn matches(token: &str, stored: &str) -> bool {
    hash(token).as_bytes().ct_eq(stored.as_bytes()).into()
}

/// Whether a bearer credential looks like a tenant token (and not the admin token).
pub fn is_tenant_token(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, hash_a) = generate();
        let (b, _) = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && is_tenant_token(&a));
        // 32 bytes in unpadded base64url.
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert_eq!(hash_a.len(), 64);
        assert!(!hash_a.contains(&a[PREFIX.len()..]));
        assert!(matches(&a, &hash_a));
        assert!(!matches(&b, &hash_a));
        assert!(!matches(&a, &hash_a[..63]));
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
