//! Endpoint secrets and bearer tokens encrypted at rest, with the key from
//! `HOOKD_SECRET_KEY` (32 random bytes, base64: `openssl rand -base64 32`).
//!
//! AES-256-GCM with a random 96-bit nonce per value; the endpoint id is the associated
//! data, so a sealed value copied into another endpoint's row does not open. Stored as
//! `sealed:v1:<base64(nonce || ciphertext)>`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use hookd_store::{Sealer, SEALED_PREFIX};

const VERSION: &str = "v1:";
const NONCE_BYTES: usize = 12;

pub struct AesGcmSealer {
    cipher: Aes256Gcm,
}

/// Never shows the key.
impl std::fmt::Debug for AesGcmSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesGcmSealer(..)")
    }
}

impl AesGcmSealer {
    /// From the configured key: base64 of exactly 32 bytes.
    pub fn from_base64(key: &str) -> Result<AesGcmSealer, String> {
        let bytes = BASE64
            .decode(key.trim())
            .map_err(|_| "HOOKD_SECRET_KEY must be base64 (openssl rand -base64 32)".to_string())?;
        if bytes.len() != 32 {
            return Err(format!(
                "HOOKD_SECRET_KEY must be 32 bytes, not {}",
                bytes.len()
            ));
        }
        Ok(AesGcmSealer {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }
}

impl Sealer for AesGcmSealer {
    fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{VERSION}{}", BASE64.encode(out))
    }

    fn open(&self, sealed: &str, context: &str) -> Result<String, String> {
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|s| s.strip_prefix(VERSION))
            .ok_or("not a sealed value of a known version")?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| "sealed value is not base64")?;
        if bytes.len() <= NONCE_BYTES {
            return Err("sealed value is too short".into());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| "wrong HOOKD_SECRET_KEY, or the value was altered")?;
        String::from_utf8(plain).map_err(|_| "sealed value is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";

    #[test]
    fn seals_and_opens() {
        let s = AesGcmSealer::from_base64(KEY).unwrap();
        let sealed = s.seal("whsec_secret", "ep_1");
        assert!(sealed.starts_with("sealed:v1:"));
        assert!(!sealed.contains("whsec_secret"));
        assert_ne!(
            sealed,
            s.seal("whsec_secret", "ep_1"),
            "a fresh nonce each time"
        );
        assert_eq!(s.open(&sealed, "ep_1").unwrap(), "whsec_secret");
        assert!(s.open(&sealed, "ep_2").is_err(), "bound to its endpoint");
        let other = AesGcmSealer::from_base64(&BASE64.encode([7u8; 32])).unwrap();
        assert!(other
            .open(&sealed, "ep_1")
            .unwrap_err()
            .contains("wrong HOOKD_SECRET_KEY"));
        let mut tampered = sealed.clone();
        tampered.replace_range(tampered.len() - 3.., "AAA");
        assert!(s.open(&tampered, "ep_1").is_err());
    }

    #[test]
    fn keys_must_be_32_base64_bytes() {
        assert!(AesGcmSealer::from_base64("short").is_err());
        assert!(AesGcmSealer::from_base64(&BASE64.encode([1u8; 16]))
            .unwrap_err()
            .contains("32 bytes"));
        assert!(AesGcmSealer::from_base64(&BASE64.encode([1u8; 32])).is_ok());
    }
}
