//! Facts worked out from bytes, kept by the bytes' SHA-256. Every reconcile
//! of every declaration over a store assembles that store again, and
//! parsing it is most of the work (each signature verified with its
//! issuer's key, each private key loaded): with many declarations over one
//! store, or a trust bundle of a hundred roots, the same bytes were parsed
//! on every reconcile. Parsing is a pure function of the bytes, so a kept
//! result is the result; the memo changes only how often it is worked out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::facts::{CertificateBundle, CertificateFacts, FactsError, TlsMaterial, parse_bundle};

/// Results kept of each kind; beyond it the older generation is dropped,
/// so memory is bounded whatever the store sizes (a kept bundle is a few KiB).
const KEPT: usize = 256;

/// A parsed PEM file: each certificate's facts and DER.
pub type ParsedFile = Result<Vec<(CertificateFacts, Vec<u8>)>, FactsError>;

/// The memo: one per operator process, shared by every reconcile.
#[derive(Default)]
pub struct FactsMemo {
    bundles: Generations<Result<CertificateBundle, FactsError>>,
    files: Generations<ParsedFile>,
}

impl FactsMemo {
    /// [`CertificateBundle::from_tls`] of `material`.
    pub fn bundle(&self, material: &TlsMaterial<'_>) -> Arc<Result<CertificateBundle, FactsError>> {
        let key = digest(&[
            material.tls_crt,
            material.tls_key.unwrap_or_default(),
            material.ca_crt.unwrap_or_default(),
        ]);
        self.bundles.get_or(key, || CertificateBundle::from_tls(material))
    }

    /// [`parse_bundle`] of `bytes` (errors name `field`).
    pub fn file(&self, field: &str, bytes: &[u8]) -> Arc<ParsedFile> {
        let key = digest(&[field.as_bytes(), bytes]);
        self.files.get_or(key, || parse_bundle(field, bytes))
    }
}

/// The SHA-256 of the parts, each length-prefixed (no two splits of the
/// same bytes collide). A missing part and an empty one parse alike.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Two generations: lookups promote from the older one, and when the newer
/// one is full it becomes the older (what no reconcile asked for since goes).
struct Generations<V> {
    maps: Mutex<[HashMap<[u8; 32], Arc<V>>; 2]>,
}

impl<V> Default for Generations<V> {
    fn default() -> Self {
        Self {
            maps: Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }
}

impl<V> Generations<V> {
    fn get_or(&self, key: [u8; 32], make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(kept) = self.kept(&key) {
            return kept;
        }
        // FactsMemo outside the lock: it is the slow part.
        let made = Arc::new(make());
        self.keep(key, made.clone());
        made
    }

    fn kept(&self, key: &[u8; 32]) -> Option<Arc<V>> {
        let mut maps = self.lock();
        if let Some(kept) = maps[0].get(key) {
            return Some(kept.clone());
        }
        let older = maps[1].remove(key)?;
        drop(maps);
        self.keep(*key, older.clone());
        Some(older)
    }

    fn keep(&self, key: [u8; 32], value: Arc<V>) {
        let mut maps = self.lock();
        if maps[0].len() >= KEPT {
            maps[1] = std::mem::take(&mut maps[0]);
        }
        maps[0].insert(key, value);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [HashMap<[u8; 32], Arc<V>>; 2]> {
        // The maps hold no invariant a panic elsewhere could break.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let maps = self.lock();
        maps[0].len() + maps[1].len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_result_is_worked_out_once_and_the_memo_stays_bounded() {
        let generations: Generations<usize> = Generations::default();
        let made = Cell::new(0);
        let make = |n: usize| {
            made.set(made.get() + 1);
            n
        };
        let key = |n: usize| digest(&[&n.to_le_bytes()]);
        assert_eq!(*generations.get_or(key(1), || make(1)), 1);
        assert_eq!(*generations.get_or(key(1), || make(99)), 1, "kept, not made again");
        assert_eq!(made.get(), 1);
        for n in 2..=3 * KEPT {
            generations.get_or(key(n), || make(n));
        }
        assert!(generations.len() <= 2 * KEPT, "bounded: {}", generations.len());
        // The newest are kept; the first, asked for only once, is gone.
        let before = made.get();
        generations.get_or(key(3 * KEPT), || make(0));
        assert_eq!(made.get(), before);
        assert_eq!(*generations.get_or(key(1), || make(1)), 1);
        assert_eq!(made.get(), before + 1, "made again once dropped");
    }

    #[test]
    fn parts_are_told_apart_by_where_they_split() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_ne!(digest(&[b"abc", b""]), digest(&[b"", b"abc"]));
    }

    #[test]
    fn a_kept_bundle_is_the_bundle_parsed_again() {
        use crate::testing::cert;
        let ca = cert("Memo CA").ca().self_signed();
        let leaf = cert("memo.example").dns("memo.example").signed_by(&ca);
        let other = cert("other.example").dns("other.example").signed_by(&ca);
        let (key, other_key) = (leaf.key_pem(), other.key_pem());
        let material = TlsMaterial {
            tls_crt: leaf.pem.as_bytes(),
            tls_key: Some(key.as_bytes()),
            ca_crt: Some(ca.pem.as_bytes()),
        };
        let memo = FactsMemo::default();
        let first = memo.bundle(&material);
        assert!(Arc::ptr_eq(&first, &memo.bundle(&material)), "kept");
        let fresh = CertificateBundle::from_tls(&material).expect("facts");
        let kept = first.as_ref().as_ref().expect("facts");
        assert_eq!((&kept.leaf, &kept.chain_der), (&fresh.leaf, &fresh.chain_der));
        // Another key is another entry, not the kept result.
        let with_other_key = TlsMaterial {
            tls_key: Some(other_key.as_bytes()),
            ..material
        };
        let mismatched = memo.bundle(&with_other_key);
        let mismatched = mismatched.as_ref().as_ref().expect("facts");
        assert_eq!(kept.leaf.private_key, crate::facts::PrivateKeyState::Matches);
        assert_ne!(mismatched.leaf.private_key, kept.leaf.private_key);
        let file = memo.file("bundle", ca.pem.as_bytes());
        assert!(Arc::ptr_eq(&file, &memo.file("bundle", ca.pem.as_bytes())));
        assert_eq!(*file, parse_bundle("bundle", ca.pem.as_bytes()));
    }
}
