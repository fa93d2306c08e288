//! Replays the fuzz corpora (`fuzz/corpus/<target>/`, minimized by
//! `hack/fuzz.sh`) through the same entry points the fuzz targets call.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    assert!(inputs.len() >= 5, "{}: only {} inputs", dir.display(), inputs.len());
    for input in inputs {
        let bytes = std::fs::read(&input).expect("corpus input");
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{} panicked", input.display());
    }
}

#[test]
fn certificate_source_corpus() {
    replay("certificate_source", certshift::fuzzing::certificate_source);
}

#[test]
fn thumbprint_corpus() {
    replay("thumbprint", certshift::fuzzing::thumbprint);
}

#[test]
fn plan_input_corpus() {
    replay("plan_input", certshift::fuzzing::plan_input);
}

#[test]
fn revocation_list_corpus() {
    replay("revocation_list", certshift::fuzzing::revocation_list);
}
