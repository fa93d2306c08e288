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

/// Results kept of each kind per generation, and the bytes they were parsed
/// from: a generation that would exceed either becomes the older one, so
/// memory is bounded whatever the inputs (a stored instance is a few KiB; a
/// trust bundle may be MiBs, and one larger than the budget is not kept).
const KEPT: usize = 256;
const KEPT_BYTES: usize = 4 << 20;

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
        let bytes =
            material.tls_crt.len() + material.tls_key.map_or(0, <[u8]>::len) + material.ca_crt.map_or(0, <[u8]>::len);
        self.bundles
            .get_or(key, bytes, || CertificateBundle::from_tls(material))
    }

    /// [`parse_bundle`] of `bytes` (errors name `field`).
    pub fn file(&self, field: &str, bytes: &[u8]) -> Arc<ParsedFile> {
        let key = digest(&[field.as_bytes(), bytes]);
        self.files.get_or(key, bytes.len(), || parse_bundle(field, bytes))
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
    maps: Mutex<[Generation<V>; 2]>,
}

struct Generation<V> {
    entries: HashMap<[u8; 32], (Arc<V>, usize)>,
    bytes: usize,
}

impl<V> Default for Generation<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
        }
    }
}

impl<V> Default for Generations<V> {
    fn default() -> Self {
        Self {
            maps: Mutex::new([Generation::default(), Generation::default()]),
        }
    }
}

impl<V> Generations<V> {
    /// The result kept for `key`, else `make`'s (kept when `bytes`, the size
    /// of what it is parsed from, fits the budget).
    fn get_or(&self, key: [u8; 32], bytes: usize, make: impl FnOnce() -> V) -> Arc<V> {
        {
            let mut maps = self.lock();
            if let Some((kept, _)) = maps[0].entries.get(&key) {
                return kept.clone();
            }
            if let Some((kept, bytes)) = maps[1].entries.remove(&key) {
                maps[1].bytes -= bytes;
                keep(&mut maps, key, kept.clone(), bytes);
                return kept;
            }
        }
        // Parsed outside the lock: it is the slow part.
        let made = Arc::new(make());
        keep(&mut self.lock(), key, made.clone(), bytes);
        made
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Generation<V>; 2]> {
        // The maps hold no invariant a panic elsewhere could break.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let maps = self.lock();
        maps[0].entries.len() + maps[1].entries.len()
    }
}

fn keep<V>(maps: &mut [Generation<V>; 2], key: [u8; 32], value: Arc<V>, bytes: usize) {
    if bytes > KEPT_BYTES {
        return;
    }
    if maps[0].entries.len() >= KEPT || maps[0].bytes + bytes > KEPT_BYTES {
        maps[1] = std::mem::take(&mut maps[0]);
    }
    maps[0].bytes += bytes;
    maps[0].entries.insert(key, (value, bytes));
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
        assert_eq!(*generations.get_or(key(1), 1, || make(1)), 1);
        assert_eq!(*generations.get_or(key(1), 1, || make(99)), 1, "kept, not made again");
        assert_eq!(made.get(), 1);
        for n in 2..=3 * KEPT {
            generations.get_or(key(n), 1, || make(n));
        }
        assert!(generations.len() <= 2 * KEPT, "bounded: {}", generations.len());
        // The newest are kept; the first, asked for only once, is gone.
        let before = made.get();
        generations.get_or(key(3 * KEPT), 1, || make(0));
        assert_eq!(made.get(), before);
        assert_eq!(*generations.get_or(key(1), 1, || make(1)), 1);
        assert_eq!(made.get(), before + 1, "made again once dropped");
        // By bytes too: what exceeds the budget is made each time, never kept,
        // and what fills it pushes the newer generation out.
        let big: Generations<usize> = Generations::default();
        big.get_or(key(1), KEPT_BYTES + 1, || make(1));
        assert_eq!(big.len(), 0);
        for n in 0..5 {
            big.get_or(key(n), KEPT_BYTES / 2, || make(n));
        }
        assert!(big.len() <= 4, "two generations of two halves: {}", big.len());
        let maps = big.lock();
        assert!(maps.iter().all(|g| g.bytes <= KEPT_BYTES));
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
