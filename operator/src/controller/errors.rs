//! I/O failures, named by the request that failed; everything a user must
//! fix is a condition instead.

use kube::Resource;

/// What a request to the API server was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Create,
    Replace,
    Apply,
    ApplyStatus,
    ReplaceStatus,
    /// Server-side apply of `certshift.io/revision` on a workload's pod template.
    Stamp,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "Get",
            Verb::List => "List",
            Verb::Create => "Create",
            Verb::Replace => "Replace",
            Verb::Apply => "Apply",
            Verb::ApplyStatus => "ApplyStatus",
            Verb::ReplaceStatus => "ReplaceStatus",
            Verb::Stamp => "Stamp",
        }
    }
}

/// I/O failures; everything a user must fix is a condition instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} {kind} {namespace}/{name}: {source}", verb.as_str())]
    Kube {
        verb: Verb,
        kind: std::borrow::Cow<'static, str>,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The watch behind a cache ended before its first list (shutdown).
    #[error("the {0} cache stopped before its first list")]
    CacheStopped(&'static str),
    /// What a reconcile looks up in a watch's index is not listed yet (the
    /// watch is failing, e.g. forbidden): looked at again later.
    #[error("the {0} are not listed yet (their watch has not completed a list)")]
    NotListed(&'static str),
}

impl Error {
    /// A fixed metric label: the verb of the request that failed.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { verb, .. } => verb.as_str(),
            Error::CacheStopped(_) => "CacheStopped",
            Error::NotListed(_) => "NotListed",
        }
    }
}

/// The error of a `verb` request for the `K` named `namespace/name`.
pub(super) fn kube_err<K: Resource<DynamicType = ()>>(
    verb: Verb,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    move |source| Error::Kube {
        verb,
        kind: K::kind(&()),
        namespace,
        name,
        source: Box::new(source),
    }
}
