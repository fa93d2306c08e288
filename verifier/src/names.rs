//! Name matching for validation (docs/trust.md): a leaf of the core that the
//! facts (SAN coverage) and the rules (declared names) share.

/// Name matching for validation: case-insensitive; a leading `*.` (on either
/// side) stands for exactly one DNS label.
pub fn names_match(declared: &str, presented: &str) -> bool {
    declared.eq_ignore_ascii_case(presented)
        || wildcard_matches(declared, presented)
        || wildcard_matches(presented, declared)
}

fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => {
            !label.is_empty() && label != "*" && !suffix.is_empty() && rest.eq_ignore_ascii_case(suffix)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_stand_for_exactly_one_label() {
        assert!(names_match("*.cluster.example", "node1.cluster.example"));
        assert!(names_match("node1.cluster.example", "*.Cluster.Example"));
        assert!(!names_match("*.cluster.example", "a.b.cluster.example"));
        assert!(!names_match("*.cluster.example", "cluster.example"));
        assert!(!names_match("*.example", "*.example.org"));
        assert!(!names_match("x.*.example", "x.y.example"));
        assert!(names_match("*.cluster.example", "*.cluster.example"));
    }
}
