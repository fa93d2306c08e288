//! Thumbprints as people type them and as certshift compares them.
//!
//! Service Fabric compares thumbprints case-insensitively and ignores whitespace;
//! certificate UIs also paste colons and invisible bidi marks. We normalize all of
//! that away once, here, and every other module works with [`Thumbprint`] only.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A normalized certificate thumbprint: upper-case hex, 40 digits (SHA-1, the
/// Windows/Service Fabric convention) or 64 digits (SHA-256).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Thumbprint(String);

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Thumbprint {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Thumbprint".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "SHA-1 (40) or SHA-256 (64) upper-case hex thumbprint",
        })
    }
}

/// Why a typed thumbprint was refused. Always names the field it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ThumbprintError {
    #[error("{field}: invalid character {ch:?} (U+{code:04X}) at position {position}; a thumbprint is 40 (SHA-1) or 64 (SHA-256) hex digits", code = *.ch as u32)]
    InvalidCharacter {
        field: String,
        ch: char,
        /// 1-based position in the text as typed.
        position: usize,
    },
    #[error("{field}: {digits} hex digits; a thumbprint is 40 (SHA-1) or 64 (SHA-256)")]
    WrongLength { field: String, digits: usize },
}

impl ThumbprintError {
    /// The condition reason for every thumbprint error.
    pub const REASON: &'static str = "InvalidThumbprint";

    pub fn field(&self) -> &str {
        match self {
            Self::InvalidCharacter { field, .. } | Self::WrongLength { field, .. } => field,
        }
    }
}

/// Characters that are dropped before a thumbprint is checked: separators and the
/// invisible marks Windows' certificate dialog puts around copied text.
fn is_ignorable(ch: char) -> bool {
    ch.is_whitespace() || ch == ':' || matches!(ch, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{FEFF}')
}

impl Thumbprint {
    /// Normalizes a thumbprint typed into `field` (e.g. `spec.certificate.thumbprint`).
    pub fn parse(field: &str, raw: &str) -> Result<Self, ThumbprintError> {
        let mut hex = String::with_capacity(64);
        for (index, ch) in raw.chars().enumerate() {
            if is_ignorable(ch) {
                continue;
            }
            if !ch.is_ascii_hexdigit() {
                return Err(ThumbprintError::InvalidCharacter {
                    field: field.to_owned(),
                    ch,
                    position: index + 1,
                });
            }
            hex.push(ch.to_ascii_uppercase());
        }
        match hex.len() {
            40 | 64 => Ok(Self(hex)),
            digits => Err(ThumbprintError::WrongLength {
                field: field.to_owned(),
                digits,
            }),
        }
    }

    /// A thumbprint computed from a digest (never fails: the length is fixed).
    pub fn from_digest(digest: &[u8]) -> Self {
        debug_assert!(digest.len() == 20 || digest.len() == 32);
        let mut hex = String::with_capacity(digest.len() * 2);
        for byte in digest {
            hex.push_str(&format!("{byte:02X}"));
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 thumbprints are 64 digits; SHA-1 ones 40.
    pub fn is_sha256(&self) -> bool {
        self.0.len() == 64
    }

    /// The first eight digits, as `kubectl get` shows them.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Thumbprint {
    type Error = ThumbprintError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse("thumbprint", &raw)
    }
}

impl From<Thumbprint> for String {
    fn from(thumbprint: Thumbprint) -> Self {
        thumbprint.0
    }
}

/// Parses a Service Fabric issuer list: one string, comma-separated. Empty entries
/// (a trailing comma) are ignored; duplicates collapse.
pub fn parse_thumbprint_list(field: &str, raw: &str) -> Result<Vec<Thumbprint>, ThumbprintError> {
    let mut list = Vec::new();
    for (index, entry) in raw.split(',').enumerate() {
        if entry.chars().all(is_ignorable) {
            continue;
        }
        let thumbprint = Thumbprint::parse(&format!("{field}[{index}]"), entry)?;
        if !list.contains(&thumbprint) {
            list.push(thumbprint);
        }
    }
    list.sort();
    Ok(list)
}

/// The Service Fabric form of a thumbprint list.
pub fn join_thumbprints<'a>(list: impl IntoIterator<Item = &'a Thumbprint>) -> String {
    list.into_iter().map(Thumbprint::as_str).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA1: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

    fn parse(raw: &str) -> Result<Thumbprint, ThumbprintError> {
        Thumbprint::parse("spec.certificate.thumbprint", raw)
    }

    #[test]
    fn lower_case_is_upper_cased() {
        assert_eq!(parse(&SHA1.to_lowercase()).unwrap().as_str(), SHA1);
    }

    #[test]
    fn spaces_and_colons_are_removed() {
        let spaced = "01 23 45 67 89 ab cd ef 01 23 45 67 89 AB CD EF 01 23 45 67";
        let colons = "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67";
        assert_eq!(parse(spaced).unwrap().as_str(), SHA1);
        assert_eq!(parse(colons).unwrap().as_str(), SHA1);
        assert_eq!(parse(&format!("\t{SHA1}\n")).unwrap().as_str(), SHA1);
    }

    #[test]
    fn invisible_marks_from_certificate_dialogs_are_removed() {
        for mark in ['\u{200E}', '\u{200F}', '\u{202A}', '\u{202C}', '\u{202E}', '\u{FEFF}'] {
            let pasted = format!("{mark}{SHA1}{mark}");
            assert_eq!(parse(&pasted).unwrap().as_str(), SHA1, "mark U+{:04X}", mark as u32);
        }
    }

    #[test]
    fn sha256_thumbprints_are_accepted() {
        let sha256 = "AB".repeat(32);
        let parsed = parse(&sha256.to_lowercase()).unwrap();
        assert!(parsed.is_sha256());
        assert_eq!(parsed.as_str(), sha256);
    }

    #[test]
    fn wrong_length_names_the_field_and_the_count() {
        let err = parse(&SHA1[..39]).unwrap_err();
        assert_eq!(
            err,
            ThumbprintError::WrongLength {
                field: "spec.certificate.thumbprint".into(),
                digits: 39
            }
        );
        assert!(
            err.to_string()
                .starts_with("spec.certificate.thumbprint: 39 hex digits")
        );
        assert!(matches!(parse(""), Err(ThumbprintError::WrongLength { digits: 0, .. })));
        assert!(matches!(
            parse(&"A".repeat(41)),
            Err(ThumbprintError::WrongLength { digits: 41, .. })
        ));
    }

    #[test]
    fn non_hex_names_the_character_and_its_position() {
        let typed = format!("{}G{}", &SHA1[..4], &SHA1[5..]);
        let err = parse(&typed).unwrap_err();
        assert_eq!(
            err,
            ThumbprintError::InvalidCharacter {
                field: "spec.certificate.thumbprint".into(),
                ch: 'G',
                position: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "spec.certificate.thumbprint: invalid character 'G' (U+0047) at position 5; \
             a thumbprint is 40 (SHA-1) or 64 (SHA-256) hex digits"
        );
    }

    #[test]
    fn other_invisible_characters_are_not_silently_dropped() {
        // U+200B (zero-width space) is not one of the marks certificate UIs paste.
        let err = parse(&format!("\u{200B}{SHA1}")).unwrap_err();
        assert!(matches!(
            err,
            ThumbprintError::InvalidCharacter {
                ch: '\u{200B}',
                position: 1,
                ..
            }
        ));
        assert!(err.to_string().contains("U+200B"));
    }

    #[test]
    fn issuer_lists_are_comma_separated_sorted_and_deduplicated() {
        let b = "B".repeat(40);
        let a = "a".repeat(40);
        let list = parse_thumbprint_list("issuers", &format!(" {b} , {a},{b},")).unwrap();
        assert_eq!(
            list.iter().map(Thumbprint::as_str).collect::<Vec<_>>(),
            ["A".repeat(40), b.clone()]
        );
        assert_eq!(join_thumbprints(&list), format!("{},{b}", "A".repeat(40)));
        assert!(parse_thumbprint_list("issuers", "").unwrap().is_empty());
    }

    #[test]
    fn issuer_list_errors_name_the_entry() {
        let err = parse_thumbprint_list("spec.x.certificateIssuerThumbprint", &format!("{SHA1},XYZ")).unwrap_err();
        assert_eq!(err.field(), "spec.x.certificateIssuerThumbprint[1]");
    }
}
