//! Names and label values derived from object names, fitted to the API's
//! limits. Kubernetes allows object names of up to 253 characters (a DNS
//! subdomain) but label values of only 63, so `<name>-presentation` or a
//! label holding a long name would be refused by the API server. What
//! certshift derives from a name keeps the name whole when it fits and
//! otherwise shortens it the way Kubernetes' own controllers do: a prefix of
//! the name, a hash of the whole name, then the suffix. The hash keeps two
//! long names with a common prefix apart; the full name travels in an
//! annotation of the same key as the label (and in the owner reference).

use std::borrow::Cow;

use sha2::Digest as _;

/// The longest object name (a DNS subdomain, RFC 1123).
pub const MAX_NAME: usize = 253;
/// The longest label value.
pub const MAX_LABEL_VALUE: usize = 63;
/// `-` and eight hex digits of SHA-256.
const HASH_LEN: usize = 9;

/// `<base><suffix>` when it fits in an object name; otherwise a prefix of
/// `base`, `-` and a hash of `base`, then `suffix`, 253 characters at most.
/// `suffix` starts with its separator (`-presentation`, `.17f3…`).
pub fn derived_name(base: &str, suffix: &str) -> String {
    if base.len() + suffix.len() <= MAX_NAME {
        return format!("{base}{suffix}");
    }
    format!("{}{suffix}", shortened(base, MAX_NAME.saturating_sub(suffix.len())))
}

/// `name` as a label value: itself when it fits in 63 characters, otherwise a
/// prefix and a hash of the whole name (see [`owner_annotation`]).
pub fn label_value(name: &str) -> Cow<'_, str> {
    if name.len() <= MAX_LABEL_VALUE {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(shortened(name, MAX_LABEL_VALUE))
    }
}

/// The annotation that carries an owner's full name where its label holds a
/// shortened one: the label's key, the full name. `None` when the label holds
/// the name itself.
pub fn owner_annotation(key: &str, name: &str) -> Option<(String, String)> {
    (name.len() > MAX_LABEL_VALUE).then(|| (key.to_owned(), name.to_owned()))
}

/// At most `limit` characters: `name`'s prefix, then `-` and its hash. The
/// prefix loses trailing `.` and `-` so that the result stays a DNS subdomain
/// and a valid label value (both must have alphanumeric ends and no `.-`).
fn shortened(name: &str, limit: usize) -> String {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    // Object names are ASCII; `floor` keeps a cut inside a character out anyway.
    let mut cut = limit.saturating_sub(HASH_LEN).min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = name[..cut].trim_end_matches(['.', '-']);
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS subdomain as the API server checks object names.
    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= MAX_NAME
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    /// A label value as the API server checks it.
    fn is_label_value(value: &str) -> bool {
        value.len() <= MAX_LABEL_VALUE
            && (value.is_empty()
                || (value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && value.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && value.ends_with(|c: char| c.is_ascii_alphanumeric())))
    }

    /// A valid name of `len` characters: `fill` repeated, ending alphanumeric.
    fn name_of(len: usize, fill: &str) -> String {
        let mut name: String = fill.chars().cycle().take(len).collect();
        if name.ends_with(['.', '-']) {
            name.pop();
            name.push('z');
        }
        name
    }

    #[test]
    fn names_that_fit_are_kept_whole() {
        let name = name_of(63, "cluster-");
        assert_eq!(label_value(&name), name.as_str());
        assert_eq!(owner_annotation("certshift.io/declaration", &name), None);
        assert_eq!(derived_name("cluster", "-presentation"), "cluster-presentation");
        let longest = name_of(MAX_NAME - "-store".len(), "a");
        assert_eq!(derived_name(&longest, "-store"), format!("{longest}-store"));
    }

    #[test]
    fn names_at_every_length_up_to_the_limit_give_valid_names_and_labels() {
        for fill in ["a", "cluster-", "db.example.", "x-y.z"] {
            for len in 1..=MAX_NAME {
                let name = name_of(len, fill);
                assert!(is_dns_subdomain(&name), "fixture {name:?}");
                let label = label_value(&name);
                assert!(is_label_value(&label), "{len} ({fill}): label {label:?}");
                for suffix in ["-presentation", "-validation", "-store", ".18f0c2a9b3d4e5f6"] {
                    let derived = derived_name(&name, suffix);
                    assert!(is_dns_subdomain(&derived), "{len} ({fill}): {derived:?}");
                    assert!(derived.ends_with(suffix));
                }
            }
        }
    }

    #[test]
    fn long_names_with_a_common_prefix_stay_apart() {
        let a = name_of(MAX_NAME, "cluster-");
        let mut b = a.clone();
        b.replace_range(MAX_NAME - 1.., "y");
        assert_ne!(label_value(&a), label_value(&b));
        assert_ne!(derived_name(&a, "-presentation"), derived_name(&b, "-presentation"));
        assert_eq!(label_value(&a).len(), MAX_LABEL_VALUE);
        assert_eq!(derived_name(&a, "-presentation").len(), MAX_NAME);
        assert_eq!(
            owner_annotation("certshift.io/declaration", &a),
            Some(("certshift.io/declaration".to_owned(), a.clone()))
        );
    }

    #[test]
    fn a_shortened_name_is_stable() {
        let name = name_of(100, "members.");
        assert_eq!(label_value(&name), label_value(&name.clone()));
        assert!(label_value(&name).starts_with("members.members"));
    }
}
