//! The few DER structures of private keys we read (PKCS#1, SEC1, PKCS#8).
//!
//! x509-parser covers certificates; private keys only need their public half
//! pulled out, which is a handful of TLVs. Every read is bounds-checked and
//! returns `None` on anything unexpected: a malformed key is "unreadable", never
//! a panic.

pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const CONTEXT_0: u8 = 0xA0;
pub const CONTEXT_1: u8 = 0xA1;

/// One tag-length-value read from the front of `input`.
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
}

/// Reads TLVs one after another out of a constructed value.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next TLV, whatever its tag.
    pub fn next_any(&mut self) -> Option<Tlv<'a>> {
        let (&tag, rest) = self.rest.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[count..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Some(Tlv { tag, value })
    }

    /// The next TLV, which must carry `tag`.
    pub fn next(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.next_any().filter(|tlv| tlv.tag == tag).map(|tlv| tlv.value)
    }

    /// The next TLV if it carries `tag`; otherwise nothing is consumed.
    pub fn optional(&mut self, tag: u8) -> Option<&'a [u8]> {
        if self.rest.first() == Some(&tag) {
            self.next(tag)
        } else {
            None
        }
    }
}

/// The content of a single top-level TLV with `tag`, refusing trailing bytes.
pub fn single(input: &[u8], tag: u8) -> Option<&[u8]> {
    let mut reader = Reader::new(input);
    let value = reader.next(tag)?;
    reader.is_empty().then_some(value)
}

/// An unsigned INTEGER's magnitude without the sign-padding zero bytes.
pub fn unsigned(value: &[u8]) -> &[u8] {
    let zeros = value.iter().take_while(|b| **b == 0).count();
    &value[zeros.min(value.len().saturating_sub(1))..]
}

/// A BIT STRING's bytes (only whole-byte strings, as public keys are).
pub fn bit_string_bytes(value: &[u8]) -> Option<&[u8]> {
    match value.split_first() {
        Some((0, bytes)) => Some(bytes),
        _ => None,
    }
}

/// Dotted form of an OBJECT IDENTIFIER, e.g. `1.2.840.10045.2.1`.
pub fn oid_string(value: &[u8]) -> Option<String> {
    let (&first, rest) = value.split_first()?;
    let mut parts = vec![u64::from(first / 40), u64::from(first % 40)];
    let mut acc: u64 = 0;
    for byte in rest {
        acc = acc.checked_mul(128)? | u64::from(byte & 0x7F);
        if byte & 0x80 == 0 {
            parts.push(acc);
            acc = 0;
        }
    }
    Some(parts.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_form_lengths_and_truncation() {
        let mut input = vec![OCTET_STRING, 0x81, 200];
        input.extend(std::iter::repeat_n(7u8, 200));
        assert_eq!(single(&input, OCTET_STRING).map(<[u8]>::len), Some(200));
        assert!(single(&input[..100], OCTET_STRING).is_none());
        // A length that claims more bytes than there are.
        assert!(
            Reader::new(&[OCTET_STRING, 0x84, 0xFF, 0xFF, 0xFF, 0xFF])
                .next_any()
                .is_none()
        );
        // Trailing bytes after the one TLV.
        assert!(single(&[INTEGER, 1, 5, 0], INTEGER).is_none());
    }

    #[test]
    fn oids_and_integers() {
        assert_eq!(
            oid_string(&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]).as_deref(),
            Some("1.2.840.10045.2.1")
        );
        assert_eq!(unsigned(&[0, 0, 0x80, 1]), &[0x80, 1]);
        assert_eq!(unsigned(&[0]), &[0]);
    }
}
